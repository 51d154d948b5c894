"""The graph on the Compare page: two specs of one architecture diffed node by node, two architectures refused."""
import json
import re

import pytest

from explorer.cost import analyse
from explorer.models import swapped_modules
from explorer.spec import ModelSpec
from tests.markdown_support import shown_text
from tests.page_support import open_page

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")

DCN = {"arch": "resnet18", "swaps": ["conv:dcn@layer4.*.conv2"]}


@pytest.mark.slow
def test_the_compare_page_diffs_two_specs_of_one_architecture_and_refuses_two_architectures():
    at = open_page("pages/6_Compare.py", set=json.dumps(["resnet18", DCN, "resnet34"]))
    at.toggle(key="compare_graph_diff").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    caption = next(shown_text(c.value) for c in at.caption if "changed modules" in c.value)
    swapped = ModelSpec.from_dict(DCN)
    changed = len(swapped_modules(swapped))  # layer4.0.conv2 and layer4.1.conv2
    macs = analyse(swapped)["macs"] - analyse(ModelSpec("resnet18"))["macs"]
    assert changed == 2
    assert re.search(rf"against resnet18: {changed} changed modules \(red\), {changed} new", caption)
    assert f"Δ MACs +{macs / 1e6:.2f} M" in caption
    drawn = _embedded_graph(at)
    assert sorted(drawn["changed"]) == sorted(swapped_modules(swapped))
    marked = {n["id"]: n for n in drawn["nodes"] if n.get("delta")}
    assert set(marked) == {"layer4", "layer4.0", "layer4.1", "layer4.0.conv2", "layer4.1.conv2"}
    assert sum(marked[name]["delta"]["macs"] for name in ("layer4.0", "layer4.1")) == marked["layer4"]["delta"]["macs"] == macs
    # resnet34 against resnet18: their layers do not correspond, so nothing is drawn
    at.selectbox(key="compare_diff_second").set_value(2).run()
    assert any("needs the same architecture" in w.value for w in at.warning)
    assert not any("changed modules" in c.value for c in at.caption) and not at.get("iframe")


def _embedded_graph(at) -> dict:
    """The graph JSON the drawing's HTML carries (escaped for a <script> element; JSON reads it back)."""
    (frame,) = at.get("iframe")
    data = re.search(r'<script type="application/json" id="graph-data">(.*?)</script>', frame.proto.srcdoc, re.S)
    return json.loads(data.group(1))
