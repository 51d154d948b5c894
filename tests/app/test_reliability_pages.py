"""Safe to share: nothing a link (or an upload) carries may speak for the app.

Every query parameter of every page is fed markdown and HTML payloads; each message the page then shows is
rendered with markdown-it (GFM-like, raw HTML and linkify on, as permissive as Streamlit's renderer) and must
hold no link, image, HTML tag or formatting made from the payload. Links that quietly fall back to something
else (an out-of-range batch, an unreadable comparison set, an unknown tour, a refused checkpoint) must say so.
"""
import io
import json
import re

import pytest
import torch
from explorer.text import WORD_JOINER, escape_markdown
from tests.markdown_support import MD, shown_text
from tests.page_support import open_page

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")

MARKER = "zq"  # in every payload: finds the elements that show one (letters are never escaped)
PAYLOADS = [
    f"![{MARKER}](http://evil.test/t.png)",
    f"[Click here to re-login {MARKER}](http://evil.test)",
    f"<img src=x onerror=alert(1)>{MARKER}",
    f'<a href="http://evil.test">{MARKER}</a>',
    f"{MARKER} http://evil.test/login",
    f"{MARKER} www.evil.test",
    f"`{MARKER}`](http://evil.test)",
    f"**{MARKER} bold**",
    f"# {MARKER} heading",
    f"javascript:alert(1) {MARKER}",
    f"| {MARKER} | b |\n|---|---|\n| c | d |",
    f"{MARKER}@evil.test",
    f"&#104;ttp://evil.test {MARKER} :red[{MARKER}] $x^{MARKER}$",
]
# Two payloads that carry most of the above at once: for the parameters that are not the findings' own.
COMPOSITE = [
    f"![{MARKER}](http://evil.test/t.png) [re-login {MARKER}](http://evil.test) <img src=x onerror=alert(1)> "
    f"{MARKER}@evil.test www.evil.test",
    f"# {MARKER} **{MARKER}** `{MARKER}`](http://evil.test) <a href='http://evil.test'>{MARKER}</a> &#104;ttp://evil.test",
]

assert MD.options["linkify"] and MD.options["html"]  # linkify needs linkify-it-py
# Streamlit's renderer (remark-gfm) also turns URLs and e-mail addresses in the *resolved* text into links,
# after backslash escapes are gone; these are its own two patterns (mdast-util-gfm-autolink-literal).
REMARK_URL = re.compile(r"(https?://|www(?=\.))([-.\w]+)", re.IGNORECASE)
REMARK_EMAIL = re.compile(r"(?<![-.\w+])([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)")  # not linked: a domain ending in -, _, 0-9
FORMATTING = {"em_open", "strong_open", "s_open", "link_open"}
BLOCKS = {"heading_open", "table_open", "blockquote_open", "bullet_list_open", "ordered_list_open"}


def markdown_texts(at) -> list[str]:
    """Every string on the page that Streamlit renders as markdown: message bodies, headings, captions,
    widget and expander labels, help texts and radio options."""
    texts = []
    for node in at._tree:
        proto = getattr(node, "proto", None)
        fields = getattr(getattr(proto, "DESCRIPTOR", None), "fields_by_name", {})
        for name in ("body", "label", "help"):
            if name in fields and isinstance(getattr(proto, name), str) and getattr(proto, name):
                texts.append(getattr(proto, name))
        if node.type == "radio":
            texts.extend(proto.options)
    return texts


def what_the_payload_made(text: str) -> list[str]:
    """Links, images, HTML, code spans, formatting and blocks that came out of the payload in `text`, or bare
    URLs Streamlit would link; empty when the payload shows as plain text."""
    made = []
    inside_blocks = []
    for token in MD.parse(text):
        if token.type in BLOCKS:
            inside_blocks.append(token.type)
        elif token.type.endswith("_close") and token.type.replace("_close", "_open") in BLOCKS:
            inside_blocks.pop()
        elif token.type in ("html_block", "fence", "code_block"):
            made.append(f"{token.type}: {token.content!r}")
        elif token.type == "inline":
            if inside_blocks and MARKER in token.content:
                made.append(f"{inside_blocks[-1]} around {token.content!r}")
            open_formatting, plain = [], []
            for child in token.children:
                if child.type in ("link_open", "image", "html_inline"):
                    made.append(f"{child.type}: {child.attrs or child.content!r}")
                if child.type in FORMATTING:
                    open_formatting.append(child.type)
                elif child.type.endswith("_close") and open_formatting:
                    open_formatting.pop()
                elif child.type == "code_inline" and MARKER in child.content:
                    made.append(f"code span {child.content!r}")
                elif child.type in ("text", "text_special"):
                    if open_formatting and MARKER in child.content:
                        made.append(f"{open_formatting[-1]} around {child.content!r}")
                    plain.append(child.content)
                elif child.type in ("softbreak", "hardbreak"):
                    plain.append("\n")
            shown = "".join(plain)
            made += [f"bare link {m.group(0)!r}" for m in REMARK_URL.finditer(shown)]
            made += [f"bare e-mail link {m.group(0)!r}" for m in REMARK_EMAIL.finditer(shown)
                     if not re.search(r"[-\d_]$", m.group(2))]
    return made


def assert_payload_is_plain_text(at, payload: str, echoed: bool) -> None:
    """Nothing the payload made; with `echoed`, at least one message quotes the payload exactly as typed."""
    assert not at.exception, [e.value for e in at.exception]
    showing = [t for t in markdown_texts(at) if MARKER in t]
    for text in showing:
        assert not what_the_payload_made(text), (text, what_the_payload_made(text))
    if echoed:  # as typed, or as Python's repr quotes it (ExplorerError messages do, for a newline)
        quoted = (payload, repr(payload)[1:-1])
        assert any(q in shown_text(t) for t in showing for q in quoted), (payload, [shown_text(t) for t in showing])


# --- the escaping function itself --------------------------------------------------------------------

@pytest.mark.parametrize("payload", PAYLOADS + COMPOSITE)
def test_escaped_payloads_render_as_the_text_typed(payload):
    escaped = escape_markdown(payload)
    assert not what_the_payload_made(escaped)
    assert shown_text(escaped) == payload


def test_names_read_as_typed_and_unescaped_payloads_would_not():
    names = "layer4.*.conv2 __init__ timm:vit_base_patch16_224 conv:dcnv2@layer4.*.conv2 {\"num_classes\": 10} a-b+c!"
    assert shown_text(escape_markdown(names)) == names
    # The check above can fail: every payload, unescaped, makes something (a javascript: URL is harmless as
    # text; it is a payload for the link targets the others would make).
    for payload in PAYLOADS + COMPOSITE:
        if not payload.startswith("javascript:"):
            assert what_the_payload_made(payload), payload


def test_swap_syntax_in_a_message_copies_back_as_typed():
    """Word joiners (invisible, but copied with the text) go only where a link would start: an example such as
    attn:se@all copied from an error message must parse."""
    text = "attn:se@all conv:dcnv2@layer4.*.conv2 conv:igcv2@layer1.0.conv1 timm:vit_base ACTION:BLOCK@WHERE"
    assert WORD_JOINER not in escape_markdown(text)
    assert WORD_JOINER in escape_markdown("zq@evil.test") and WORD_JOINER in escape_markdown("www.evil.test")


def test_long_text_is_cut_with_an_ellipsis():
    assert shown_text(escape_markdown("a_b" * 100, limit=10)) == ("a_b" * 100)[:10] + "…"


# --- every query parameter of every page ---------------------------------------------------------------

# (page, the parameter carrying the payload, the other parameters of the link: valid and cheap to render,
# whether a message must quote the payload as typed)
PARAMETERS = [
    ("pages/2_Model.py", "arch", {}, True),
    ("pages/2_Model.py", "input", {"arch": "lenet5"}, True),
    ("pages/2_Model.py", "batch", {"arch": "lenet5"}, True),
    ("pages/2_Model.py", "options", {"arch": "lenet5"}, False),  # a JSON error names the position, not the text
    # a name with a colon reads as library:model, and the message quotes the part before the colon
    ("pages/3_Inside.py", "arch", {"view": "Spatial transformer"}, False),
    # swaps split at ';' (the entity's), so a message quotes one piece; Receptive fields builds the model
    ("pages/3_Inside.py", "swaps", {"arch": "lenet5", "view": "Receptive fields"}, False),
    ("pages/3_Inside.py", "input", {"arch": "lenet5", "view": "Spatial transformer"}, True),
    ("pages/4_Swap.py", "arch", {"swaps": "act:relu6@all"}, False),
    ("pages/4_Swap.py", "swaps", {"arch": "lenet5"}, False),
    ("pages/4_Swap.py", "input", {"arch": "lenet5", "swaps": "act:relu6@all"}, True),
    ("pages/5_Latency.py", "batch", {}, True),
    ("pages/5_Latency.py", "input", {}, False),  # read into the Input box, checked when Run is pressed
    ("pages/6_Compare.py", "set", {}, False),  # not JSON: the message names the JSON error, not the text
    ("pages/6_Compare.py", "ready", {"set": '["lenet5"]'}, True),
    ("pages/7_Tours.py", "tour", {}, True),
    ("pages/7_Tours.py", "step", {}, True),
    ("pages/7_Tours.py", "present", {}, True),
]
# The findings' own parameters get every payload.
FINDINGS = [("pages/3_Inside.py", "view", {"arch": "lenet5"}),
            ("pages/5_Latency.py", "arch", {}),
            ("pages/6_Compare.py", "set", {})]


@pytest.mark.slow
@pytest.mark.parametrize("page,param,others,echoed", PARAMETERS,
                         ids=[f"{p.split('_', 1)[1][:-3]}-{q}" for p, q, _, _ in PARAMETERS])
@pytest.mark.parametrize("payload", COMPOSITE, ids=["images-links-html", "heading-code-entity"])
def test_every_parameter_shows_a_payload_as_plain_text(page, param, others, echoed, payload):
    at = open_page(page, **others, **{param: payload})
    assert_payload_is_plain_text(at, payload, echoed)


@pytest.mark.slow
@pytest.mark.parametrize("page,param,others", FINDINGS, ids=["Inside-view", "Latency-arch", "Compare-set"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=range(len(PAYLOADS)))
def test_the_findings_parameters_show_every_payload_as_plain_text(page, param, others, payload):
    value = json.dumps([payload]) if param == "set" else payload  # a set entry is quoted by the message
    at = open_page(page, **others, **{param: value})
    # Latency splits ?arch= at commas: the table payload has none, so every payload is quoted whole.
    assert_payload_is_plain_text(at, payload, echoed=True)


@pytest.mark.parametrize("payload", COMPOSITE, ids=["images-links-html", "heading-code-entity"])
def test_latency_input_from_the_link_is_quoted_plainly_when_run(payload):
    at = open_page("pages/5_Latency.py", input=payload)
    at.button[0].click().run()  # the input is read when Run is pressed: refused before anything is timed
    assert at.error and not at.dataframe
    assert_payload_is_plain_text(at, payload, echoed=True)


@pytest.mark.slow
@pytest.mark.parametrize("page", ["pages/1_Catalog.py", "pages/2_Model.py", "pages/8_Losses.py"])
def test_a_parameter_a_page_does_not_read_is_named_plainly_and_dropped(page):
    payload = COMPOSITE[0]
    at = open_page(page, **({"arch": "lenet5"} if "Model" in page else {}), **{payload: "1"})
    assert_payload_is_plain_text(at, payload, echoed=False)  # a parameter's name is cut to 40 characters
    assert any("does not use" in w.value and "ignored" in w.value for w in at.warning)
    assert payload not in at.query_params


# --- fallbacks say what was ignored and why ---------------------------------------------------------------

def warnings_of(at) -> str:
    return " ".join(shown_text(w.value) for w in at.warning)


@pytest.mark.slow
@pytest.mark.parametrize("batch", ["100000", "0", "abc", "-3", "1e3"])
def test_model_page_names_a_batch_it_cannot_use(batch):
    at = open_page("pages/2_Model.py", arch="lenet5", batch=batch)
    assert f"batch size '{batch}' is not a whole number from 1 to 1024" in warnings_of(at)
    assert at.number_input(key="model_batch").value == 1


def test_model_page_takes_a_valid_batch_and_names_a_link_setting_it_does_not_use():
    at = open_page("pages/2_Model.py", arch="lenet5", batch="8", swaps="attn:se@all")
    assert at.number_input(key="model_batch").value == 8
    # The Model page builds no swaps: the link's must not be dropped without a word.
    assert "does not use 'swaps' from its link" in warnings_of(at)


def test_latency_page_takes_batches_and_input_from_the_link_and_names_the_rest():
    at = open_page("pages/5_Latency.py", arch="resnet18", batch="100000,8,abc,1", input="3,160,160")
    assert at.text_input(key="lat_batch_text").value == "1, 8"
    assert at.text_input(key="lat_input").value == "3,160,160"
    warned = warnings_of(at)
    assert "batch sizes 100000, abc are not whole numbers from 1 to 1,024: ignored, timing 1, 8" in warned
    at = open_page("pages/5_Latency.py", batch="100000")
    assert "100000" in warnings_of(at) and at.text_input(key="lat_batch_text").value == "1, 2"  # the CPU default


@pytest.mark.slow
@pytest.mark.parametrize("raw,why", [('{"a":1}', "it is an object, not a list"),
                                     ('"resnet18"', "it is a string, not a list"),
                                     ("[resnet18", "it is not valid JSON (Expecting value, at character 1)")])
def test_compare_page_says_why_a_set_could_not_be_read(raw, why):
    at = open_page("pages/6_Compare.py", set=raw)
    assert f"The comparison set in the link could not be read: {why}" in warnings_of(at)
    assert at.session_state.compare_set == []  # what the message says, not a default set in silence
    assert "The comparison set is empty" in at.info[0].value


@pytest.mark.slow
def test_compare_page_keeps_an_empty_set_and_opens_a_ready_made_comparison_by_name():
    at = open_page("pages/6_Compare.py", set="[]")
    assert at.session_state.compare_set == [] and not at.warning
    at = open_page("pages/6_Compare.py", ready="vovnet_vs_densenet")
    assert at.selectbox(key="compare_ready").value == "vovnet_vs_densenet"
    assert at.selectbox(key="compare_y").value == "memory access (MB)"
    from explorer.compare import READY_MADE

    assert at.session_state.compare_set == READY_MADE["vovnet_vs_densenet"]["specs"]
    assert at.query_params["ready"] in ("vovnet_vs_densenet", ["vovnet_vs_densenet"])
    at = open_page("pages/6_Compare.py", ready="nosuch", set='["lenet5"]')
    assert "ready-made comparison named 'nosuch', which this page does not have" in warnings_of(at)


def test_compare_page_caps_the_models_a_link_may_ask_for():
    at = open_page("pages/6_Compare.py", set=json.dumps(["nosuch"] * 30))
    assert "lists 30 models; a link may list at most 24: showing the first 24" in warnings_of(at)
    assert len(at.session_state.compare_set) == 24


def test_tours_page_names_an_unknown_tour_step_and_view():
    at = open_page("pages/7_Tours.py", tour="nosuch", step="99", present="yes")
    warned = warnings_of(at)
    assert "tour named 'nosuch', which does not exist" in warned
    assert "step (of this tour) '99' is not a whole number from 1 to 3" in warned  # LeNet-5's tour has 3 steps
    assert "present='yes' is neither 1 (presenter view) nor 0" in warned
    assert at.selectbox(key="tour_id").value == "lenet5" and at.session_state.tour_step == 0
    at = open_page("pages/7_Tours.py", tour="resnet", step="2")
    assert not at.warning and at.session_state.tour_step == 1


# --- refused weights: no map drawn from random weights as if they were the checkpoint's ---------------------

def cam_captions(at) -> list[str]:
    """Titles of the CAM overlays drawn ("gradcam++ for class …"): each is a plotly figure over the image."""
    import json

    titles = [json.loads(chart.proto.spec)["layout"].get("title", {}).get("text", "") for chart in at.get("plotly_chart")]
    return [t for t in titles if " for " in t]


def torch_checkpoint(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.mark.slow
def test_inside_cam_draws_nothing_when_the_checkpoint_is_missing_or_refused():
    at = open_page("pages/3_Inside.py", arch="lenet5", view="Grad-CAM++ and attributions")
    assert len(cam_captions(at)) == 1  # random weights, chosen: the map is drawn

    at.radio(key="inside_cam_weights").set_value("checkpoint").run()  # nothing uploaded, or over the limit
    assert not cam_captions(at)
    assert any("Nothing is drawn until a checkpoint loads" in i.value and "at most 200 MB" in i.value
               for i in at.info)

    at.file_uploader(key="inside_cam_ckpt").set_value(("bad.pt", b"not a checkpoint", "application/octet-stream"))
    at.run()
    assert not cam_captions(at)
    errors = [shown_text(e.value) for e in at.error]
    assert any(e.startswith("Nothing is drawn: the checkpoint was refused: ") and "bad.pt" in e for e in errors), errors

    at.file_uploader(key="inside_cam_ckpt").set_value(
        ("other.pt", torch_checkpoint({"head.weight": torch.zeros(3)}), "application/octet-stream"))
    at.run()
    assert not cam_captions(at)
    assert any("none of the 1 tensors in other.pt matches a tensor of this model" in shown_text(e.value)
               for e in at.error)

    # The model's own weights load, and the map is drawn from them.
    from explorer.models import build_model
    from explorer.spec import ModelSpec

    state = build_model(ModelSpec("lenet5"), device="cpu").state_dict()
    at.file_uploader(key="inside_cam_ckpt").set_value(("lenet5.pt", torch_checkpoint(state), "application/octet-stream"))
    at.run()
    assert not at.error and len(cam_captions(at)) == 1
    assert any(shown_text(c.value) == f"Loaded {len(state)} tensors from lenet5.pt." for c in at.caption)


@pytest.mark.slow
def test_swap_cams_draw_nothing_when_the_checkpoint_is_refused():
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="attn:se@all", input="3,64,64")
    at.radio(key="swap_inside_view").set_value("Grad-CAM++ and friends").run()
    assert sum(c.value.startswith("gradcam++ for ") for c in at.caption) == 2  # random weights, chosen
    at.radio(key="swap_cam_weights").set_value("checkpoint").run()
    assert not any(c.value.startswith("gradcam++ for ") for c in at.caption)
    assert any("Nothing is drawn until a checkpoint loads" in i.value for i in at.info)
    at.file_uploader(key="swap_cam_ckpt").set_value(("bad.pt", b"not a checkpoint", "application/octet-stream"))
    at.run()
    assert not any(c.value.startswith("gradcam++ for ") for c in at.caption)
    refusals = [e.value for e in at.error if "the checkpoint was refused" in e.value]
    assert len(refusals) == 1, [e.value for e in at.error]  # one message, not one per model
