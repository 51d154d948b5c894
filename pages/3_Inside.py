"""Inside a model: attributions, attention, offsets, receptive fields, Swin's windows, fusion weights and channel
connectivity, on the model a person picked (swaps included)."""
import streamlit as st

from explorer.catalog import load_catalog
from explorer.models import check_input
from explorer.spec import ModelSpec, parse_size
from explorer.text import escape_markdown
from explorer.views.registry import inside_views, view_by_label
from ui.common import QUOTED_LINK_TEXT, arch_from_link, drop_unused_link_params, guard, page_setup
from ui.inside import INSIDE_RENDERERS

page_setup("Inside", ":material/visibility:")
st.title("Inside")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
params = st.query_params
drop_unused_link_params(("arch", "view", "swaps", "input"))
VIEWS = [v.label for v in inside_views()]  # explorer.views.registry: the one list of views, and their labels
if "inside_arch" not in st.session_state:
    st.session_state.inside_arch = arch_from_link(ids)
    st.session_state.inside_view = params.get("view") if params.get("view") in VIEWS else VIEWS[0]
    if params.get("view") and params.get("view") not in VIEWS:
        named = escape_markdown(params.get("view"), limit=QUOTED_LINK_TEXT)
        st.warning(f"The link asks for a view named '{named}', which this page does not have; showing {VIEWS[0]}.")
    st.session_state.inside_swaps = params.get("swaps", "")
    st.session_state.inside_input = params.get("input", "")

c1, c2, c3 = st.columns([2, 2, 1])
c1.selectbox("Model", ids, key="inside_arch")
c2.text_input("Swaps (optional, ';'-separated)", key="inside_swaps", placeholder="conv:dcnv2@layer4.*.conv2")
c3.text_input("Input (C,H,W)", key="inside_input", placeholder="native")

spec = None
with guard("Reading the model settings"):
    swaps = tuple(s.strip() for s in st.session_state.inside_swaps.split(";") if s.strip())
    size = parse_size(st.session_state.inside_input) if st.session_state.inside_input.strip() else None
    candidate = ModelSpec(st.session_state.inside_arch, input_size=size, swaps=swaps)
    st.query_params.from_dict(candidate.to_query())
    check_input(candidate)
    spec = candidate
if spec is None:
    st.stop()

from explorer.catalog import resolve
from explorer.models import input_size_of

variant = resolve(spec.arch)
tokens = variant.input_kind == "tokens"  # token models: the attention view only
if not tokens and (variant.input_kind != "image" or len(input_size_of(spec)) != 3):
    st.info(f"These views work on image models; {escape_markdown(spec.arch)} takes {variant.input_kind} input "
            f"({'×'.join(map(str, input_size_of(spec)))}). Its cost, latency and comparisons are on the other pages.")
    st.stop()

view = st.radio("View", VIEWS, horizontal=True, key="inside_view")
st.query_params["view"] = view
chosen = view_by_label(view)
if tokens and not chosen.tokens:
    token_views = " or ".join(v.label for v in inside_views() if v.tokens)
    st.info(f"This view works on image models; {escape_markdown(spec.arch)} takes tokens input "
            f"({'×'.join(map(str, input_size_of(spec)))}). Pick {token_views} to see its token × token attention; "
            "its cost, latency and comparisons are on the other pages.")
    st.stop()
# One view at a time (radio, not tabs): tabs would compute every view on every rerun.
with guard(f"The {view.lower()} view"):
    INSIDE_RENDERERS[chosen.id](spec)
