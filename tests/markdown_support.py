"""What a reader sees of a page's markdown: shared by the page tests (messages are escaped markdown)."""
from markdown_it import MarkdownIt

from explorer.text import WORD_JOINER

# CommonMark + tables, strikethrough, raw HTML and (with linkify-it-py) bare links: as permissive as
# Streamlit's renderer, so what it makes of a message, Streamlit would make too.
MD = MarkdownIt("gfm-like")


def shown_text(text: str) -> str:
    """The text a reader sees of markdown `text`: escapes resolved, formatting marks gone, word joiners
    (invisible) dropped."""
    plain = []
    for token in MD.parse(text):
        for child in token.children or []:
            if child.type in ("text", "text_special", "code_inline"):
                plain.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                plain.append("\n")
    return "".join(plain).replace(WORD_JOINER, "")
