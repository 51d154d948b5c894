"""Architecture Explorer: home page. Run with `streamlit run app.py`."""
import streamlit as st

from explorer.catalog import load_catalog
from explorer.measured import load_measured
from ui.common import page_setup, warm_up

page_setup("Home")
warm_up()  # once per server, in the background: the heavy imports start while this page renders

st.title("Architecture Explorer")
st.markdown(
    "Pick a neural-network architecture, build it, and see where its cost sits: parameters, "
    "multiply-accumulates (MACs) and memory access cost, per layer and in total."
)

catalog = load_catalog()
built = len(load_measured())  # every buildable variant has a measured-cost entry (a test checks this)
c1, c2, c3 = st.columns(3)
c1.metric("Architecture families", len(catalog.families))
c2.metric("Variants you can build now", built)
c3.metric("Variants listed, awaiting a native implementation", len(catalog.variants) - built)

st.subheader("Start here")
st.page_link("pages/1_Catalog.py", label="Catalog: search every architecture in the roster", icon=":material/menu_book:")
st.page_link("pages/2_Model.py", label="Model: build resnet50 and see its cost, layer by layer", icon=":material/biotech:",
             query_params={"arch": "resnet50"})

st.subheader("Conventions")
st.markdown(
    """
- **MACs** are multiply-accumulates; **FLOPs = 2 × MACs**. torchvision's `_ops` metadata is in GMACs.
- **Memory access cost** counts the elements (and bytes) every op reads and writes, as in ShuffleNetV2 and
  VoVNet: for a 3×3 conv, hw(cᵢ+cₒ) + 9cᵢcₒ elements. It is a different quantity from MACs.
- **Activations** are the elements written by convolutions, linear layers and attention (RegNet's definition).
- Every model is built with **random weights** unless you load pretrained ones: costs do not depend on weight values.
"""
)

