"""Inside a model: attributions, attention, offsets, receptive fields, Swin's windows, fusion weights and channel
connectivity, on the model a person picked (swaps included)."""
import streamlit as st

from explorer.catalog import load_catalog, resolve
from explorer.errors import ExplorerError
from explorer.models import check_input, input_size_of
from explorer.spec import ModelSpec, parse_size
from explorer.text import escape_markdown
from explorer.views.registry import inside_views, view_by_label
from ui.common import QUOTED_LINK_TEXT, arch_from_link, drop_unused_link_params, guard, page_setup, start_from_link
from ui.inside import INSIDE_RENDERERS, LAYER_VIEWS, LINK_LAYER, keep_layer_in_link, link_layer

page_setup("Inside", ":material/visibility:")
st.title("Inside")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
params = st.query_params
drop_unused_link_params(("arch", "view", "swaps", "input", "layer"))
VIEWS = [v.label for v in inside_views()]  # explorer.views.registry: the one list of views, and their labels


def library_arch_from_link() -> str:
    """A library model the link names (timm:NAME, torchvision:NAME), validated as the Model page does; else ''."""
    wanted = params.get("arch")
    if not wanted or wanted in ids:
        return ""
    try:
        resolve(wanted)
    except ExplorerError:
        return ""  # arch_from_link says why and shows the default
    return wanted


def widgets_from_link() -> dict:
    """The model, view, swaps and input the URL names, as the widgets' values (each checked). The layer it
    names waits for its view, which checks it against its own list of layers for the model (ui.inside
    start_layer_from_link) when it draws its layer picker."""
    library = library_arch_from_link()
    arch = "resnet50" if library else arch_from_link(ids)
    if params.get("view") and params.get("view") not in VIEWS:
        named = escape_markdown(params.get("view"), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link asks for a view named '{named}', which this page does not have; showing {VIEWS[0]}.")
    view = params.get("view") if params.get("view") in VIEWS else VIEWS[0]
    layer = params.get("layer", "").strip()
    if layer and view_by_label(view).id not in LAYER_VIEWS:
        named = escape_markdown(layer, limit=QUOTED_LINK_TEXT)
        st.warning(f"The link names a layer, '{named}', but {view} picks none: ignored.")
        layer = ""
    return {"inside_arch_text": library, "inside_arch": arch, "inside_view": view,
            "inside_swaps": params.get("swaps", ""), "inside_input": params.get("input", ""),
            LINK_LAYER: {"view": view_by_label(view).id, "layer": layer} if layer else None}


start_from_link("inside_arch", widgets_from_link)

c1, c2, c3, c4 = st.columns([2, 2, 2, 1])
# Picking from the catalog replaces a library name typed before (the typed name wins while it is there).
c1.selectbox("Model", ids, key="inside_arch", on_change=lambda: st.session_state.update(inside_arch_text=""))
c2.text_input("…or any library model", key="inside_arch_text", placeholder="timm:convnext_tiny")
c3.text_input("Swaps (optional, ';'-separated)", key="inside_swaps", placeholder="conv:dcnv2@layer4.*.conv2")
c4.text_input("Input (C,H,W)", key="inside_input", placeholder="native")

spec = None
with guard("Reading the model settings"):
    swaps = tuple(s.strip() for s in st.session_state.inside_swaps.split(";") if s.strip())
    size = parse_size(st.session_state.inside_input) if st.session_state.inside_input.strip() else None
    arch = st.session_state.inside_arch_text.strip() or st.session_state.inside_arch
    candidate = ModelSpec(arch, input_size=size, swaps=swaps)
    st.query_params.from_dict(candidate.to_query())
    variant = resolve(candidate.arch)  # a library name is checked here, as on the Model page
    check_input(candidate)
    spec = candidate
if spec is None:
    st.stop()

tokens = variant.input_kind == "tokens"  # token models: the attention view only
if not tokens and (variant.input_kind != "image" or len(input_size_of(spec)) != 3):
    st.info(f"These views work on image models; {escape_markdown(spec.arch)} takes {variant.input_kind} input "
            f"({'×'.join(map(str, input_size_of(spec)))}). Its cost, latency and comparisons are on the other pages.")
    st.stop()

view = st.radio("View", VIEWS, horizontal=True, key="inside_view")
st.query_params["view"] = view
chosen = view_by_label(view)
keep_layer_in_link(link_layer(chosen.id))  # until the view has checked it: a reload still asks for it
if tokens and not chosen.tokens:
    token_views = " or ".join(v.label for v in inside_views() if v.tokens)
    st.info(f"This view works on image models; {escape_markdown(spec.arch)} takes tokens input "
            f"({'×'.join(map(str, input_size_of(spec)))}). Pick {token_views} to see its token × token attention; "
            "its cost, latency and comparisons are on the other pages.")
    st.stop()
# One view at a time (radio, not tabs): tabs would compute every view on every rerun.
with guard(f"The {view.lower()} view"):
    INSIDE_RENDERERS[chosen.id](spec)
