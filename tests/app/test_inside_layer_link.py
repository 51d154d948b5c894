"""A link names the Inside view's layer (`?layer=NAME`): the view starts from it when its own list has it, says
so (escaped) and shows its default when not, the URL follows the layer shown, and the Graph page's node links
open the node's layer. Receptive fields by hand: resnet18's stem conv 7×7/2 (rf 7, jump 2), max-pool 3×3/2 (11,
jump 4), layer1's two blocks four 3×3 convs at jump 4 (11 + 4·2·4 = 43), then layer2.0.conv1 3×3/2: 43 + 2·4 = 51."""
import urllib.parse

import pytest

from explorer.graph import build_graph
from explorer.graph_overlays import inside_links
from explorer.spec import ModelSpec
from explorer.views.registry import view_by_id
from tests.page_support import metric, open_page

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")

RF_VIEW = view_by_id("rf").label


@pytest.mark.slow
def test_a_linked_layer_is_chosen_and_the_url_follows_the_person():
    at = open_page("pages/3_Inside.py", arch="resnet18", view=RF_VIEW, layer="layer2.0.conv1")
    assert not at.warning and not at.error, [m.value for m in [*at.warning, *at.error]]
    assert at.selectbox(key="inside_rf_layer").value == "layer2.0.conv1"
    assert metric(at, "Receptive field (pixels)") == "51 × 51"
    assert metric(at, "Jump / stride (pixels)") == "8 × 8"
    assert at.query_params["layer"] == "layer2.0.conv1"  # a shared link reopens it
    # later reruns keep what the person picks, and the URL names it
    at.selectbox(key="inside_rf_layer").select("layer1.0.conv1").run()  # 11 + 2·4 = 19
    assert at.selectbox(key="inside_rf_layer").value == "layer1.0.conv1"
    assert metric(at, "Receptive field (pixels)") == "19 × 19"
    assert at.query_params["layer"] == "layer1.0.conv1"


def test_an_unknown_layer_is_named_escaped_and_the_default_shown():
    at = open_page("pages/3_Inside.py", arch="resnet18", view=RF_VIEW, layer="<script>")
    warnings = [w.value for w in at.warning]
    assert len(warnings) == 1 and "layer named '\\<script\\>'" in warnings[0], warnings
    assert "<script>" not in warnings[0]
    # the default: the deepest module that still has a spatial map, layer4's last ReLU call (7×7 units)
    chosen = at.selectbox(key="inside_rf_layer").value
    assert chosen == "layer4.1.relu@1"
    assert at.query_params["layer"] == chosen  # the URL names the layer shown, not the link's text


def test_a_graph_node_link_opens_inside_with_the_node_chosen():
    spec = ModelSpec("resnet18")
    links = inside_links(build_graph(spec), spec)
    # the ReLU's second call in layer1.0 is the graph's 'relu@2' and the receptive-field table's 'relu@1':
    # after bn2 of layer1.0 (rf 11 + 2·4·2 = 27, jump 4)
    url = next(link["url"] for link in links["layer1.0.relu@2"] if link["view"] == "rf")
    path, _, query = url.partition("?")
    assert path == "/Inside"
    params = {key: values[0] for key, values in urllib.parse.parse_qs(query).items()}
    assert params["layer"] == "layer1.0.relu@1"
    at = open_page("pages/3_Inside.py", **params)
    assert not at.warning and not at.error, [m.value for m in [*at.warning, *at.error]]
    assert at.selectbox(key="inside_rf_layer").value == "layer1.0.relu@1"
    assert metric(at, "Receptive field (pixels)") == "27 × 27"
