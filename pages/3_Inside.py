"""Inside a model: attributions, attention, offsets, receptive fields, Swin's windows, fusion weights and channel
connectivity, on the model a person picked (swaps included)."""
import streamlit as st

from explorer.catalog import load_catalog
from explorer.models import check_input
from explorer.spec import ModelSpec, parse_size
from explorer.text import escape_markdown
from ui.common import QUOTED_LINK_TEXT, arch_from_link, drop_unused_link_params, guard, page_setup
from ui.inside import attention_view, cam_view, deformable_view, receptive_field_view, stn_view, swin_mask_view

page_setup("Inside", ":material/visibility:")
st.title("Inside")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
params = st.query_params
drop_unused_link_params(("arch", "view", "swaps", "input"))
VIEWS = ["Grad-CAM++ and attributions", "Attention maps", "Deformable offsets", "Receptive fields",
         "Swin shifted windows", "Spatial transformer", "Fusion weights", "Channel connectivity"]
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
if tokens and view != "Attention maps":
    st.info(f"This view works on image models; {escape_markdown(spec.arch)} takes tokens input "
            f"({'×'.join(map(str, input_size_of(spec)))}). Pick Attention maps to see its token × token attention; "
            "its cost, latency and comparisons are on the other pages.")
    st.stop()
# One view at a time (radio, not tabs): tabs would compute every view on every rerun.
with guard(f"The {view.lower()} view"):
    if view.startswith("Grad-CAM"):
        cam_view(spec, key="inside_cam")
    elif view == "Attention maps":
        attention_view(spec, key="inside_attn")
    elif view == "Deformable offsets":
        deformable_view(spec, key="inside_dcn")
    elif view == "Receptive fields":
        receptive_field_view(spec, key="inside_rf", with_erf=True)
    elif view == "Swin shifted windows":
        if "swin" not in spec.arch:
            st.info("Pick a Swin model (swin_t, swin_s, swin_b) to see its windows.")
        else:
            swin_mask_view(spec, key="inside_swin", controls=True)
    elif view == "Fusion weights":
        from ui.fusion import fusion_view

        fusion_view(spec, key="inside_fusion")
    elif view == "Channel connectivity":
        from ui.connectivity import connectivity_view

        connectivity_view(spec, key="inside_connectivity")
    else:
        stn_view(key="inside_stn")
