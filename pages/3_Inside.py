"""Inside a model: receptive fields and Swin's shifted windows, on the model a person picked (swaps included)."""
import streamlit as st

from explorer.catalog import load_catalog
from explorer.spec import ModelSpec, parse_size
from ui.common import guard, page_setup
from ui.inside import cam_view, receptive_field_view, swin_mask_view

page_setup("Inside", ":material/visibility:")
st.title("Inside")

ids = [v.id for v in load_catalog().variants.values() if v.implemented]
params = st.query_params
if "inside_arch" not in st.session_state:
    st.session_state.inside_arch = params.get("arch") if params.get("arch") in ids else "resnet50"
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
    spec = ModelSpec(st.session_state.inside_arch, input_size=size, swaps=swaps)
    st.query_params.from_dict(spec.to_query())
if spec is None:
    st.stop()

cam_tab, rf_tab, swin_tab = st.tabs(["Grad-CAM++ and attributions", "Receptive fields", "Swin shifted windows"])
with cam_tab:
    with guard("The CAM view"):
        cam_view(spec, key="inside_cam")
with rf_tab:
    with guard("The receptive-field view"):
        receptive_field_view(spec, key="inside_rf", with_erf=True)
with swin_tab:
    if "swin" not in spec.arch:
        st.info("Pick a Swin model (swin_t, swin_s, swin_b, or timm:swin_tiny_patch4_window7_224) to see its windows.")
    else:
        with guard("The Swin view"):
            swin_mask_view(spec, key="inside_swin", controls=True)
