"""Text from outside (a link, a form, an upload, a CLI flag) made safe to show inside markdown.

Plain Python, no streamlit: the app's messages go through it, and a CLI or report that writes markdown can too.
"""
from __future__ import annotations

import re

# Every ASCII punctuation mark that opens or closes markdown syntax in CommonMark, GFM or Streamlit's renderer:
# emphasis, code spans, links and images, headings, lists, tables, HTML tags, strikethrough, Streamlit's
# :directives[...] and :icons:, math between $, entities like &#58;, and setext headings underlined with =.
# A backslash before any ASCII punctuation shows that character as typed.
MARKDOWN_PUNCTUATION = frozenset("\\`*_{}[]()#+-.!|<>~:$&=")

# Invisible and not a line-break opportunity: the text still reads (and wraps) as typed.
WORD_JOINER = "\u2060"

# GFM turns http://…, https://…, www.… and name@host.domain into links even in plain text, and Streamlit's
# renderer looks for them again in the text after backslash escapes are resolved, so a backslash cannot stop
# them; a word joiner after the scheme's colon, between www and its dot, or after the @ of an address does.
# Only there (joiners are copied with the text, and a copied swap such as conv:igcv2@layer1.0.conv1 must still
# parse): an address is what GFM links, a name, @, then a dotted domain that does not end in -, _ or a digit.
_EMAIL_DOMAIN = r"[-\w]+(?:\.[-\w]+)+(?<![-\d_])(?![-\w]|\.[-\w])"
_AUTOLINK_SEAMS = re.compile(rf"(?<=:)(?=//)|(?i:(?<=www))(?=\.)|(?<=[-.\w+]@)(?={_EMAIL_DOMAIN})")
# :smile: and :material/home: become an emoji or an icon, found in the resolved text too: break the closing colon.
_SHORTCODE = re.compile(r"(:[\w+\-/]+)(?=:)")


def escape_markdown(text: object, limit: int | None = None) -> str:
    """`text` shown literally by any markdown renderer: no link, image, HTML, heading, list, table, emphasis,
    code span or icon survives, while names such as layer4.*.conv2, __init__ or timm:vit_base read as typed.
    With `limit`, text longer than that many characters is cut there and ends in '…'."""
    text = str(text)
    if limit is not None and len(text) > limit:
        text = text[:limit] + "…"
    text = _SHORTCODE.sub(lambda m: m.group(1) + WORD_JOINER, text)
    text = _AUTOLINK_SEAMS.sub(WORD_JOINER, text)
    return "".join("\\" + c if c in MARKDOWN_PUNCTUATION else c for c in text)
