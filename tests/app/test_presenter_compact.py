"""What keeps a tour step inside a projector's figure column: the compact channel-connectivity view, tables
whose names and last column wrap instead of scrolling sideways, and comparison charts whose point labels stay
apart. The browser check of the same steps is tests/browser/test_presenter_fit.py."""
import math

import pytest
import torch.nn as nn
from streamlit.testing.v1 import AppTest

from explorer.blocks import CONVS
from explorer.views.connectivity import channel_paths
from tests.conftest import ROOT
from ui.connectivity import _factor_chart, _shrink, _verdict
from ui.presenter import TABLE_HEADER_PX, TABLE_LINE_PX, TABLE_ROW_PX, _breakable, presenter_table_height
from ui.tour_figures import (MARKER_PX, PRESENTER_COMPARE_COLUMNS, PUBLISHED_WITH_METRIC, _compare_columns_shown,
                             _compare_frame, _trade_off, label_box, place_labels, point_labels)


@pytest.fixture(scope="module")
def igcv2_report() -> dict:
    """IGCV2's block for 64 → 64 channels (the IGCV tour's step 3): channel-wise 3×3, then 1×1 convs of 8 groups
    of 8 with a permutation between them, as the view's job reports it (matrices shrunk as drawn)."""
    model = nn.Sequential()
    model.add_module("block", CONVS["igcv2"](64, 64, 3, padding=1, bias=False))
    report = channel_paths(model, "block")
    report["paths"] = _shrink(report["paths"])
    for factor in report["factors"]:
        factor["matrix"] = _shrink(factor["matrix"])
        factor["so_far"] = _shrink(factor["so_far"])
    return report


def test_the_compact_factor_chart_names_each_factor_and_how_far_an_output_reaches(igcv2_report):
    factors = igcv2_report["factors"]
    assert [f["kind"] for f in factors] == ["3×3 conv, channel-wise", "1×1 conv, 8 groups of 8", "shuffle of 8 groups",
                                            "1×1 conv, 8 groups of 8"]
    fig = _factor_chart(factors, 64, compact=True)
    titles = [note.text for note in fig.layout.annotations]
    # reached: 1 channel after the channel-wise conv, its group of 8 after the first group conv, all 64 at the end
    assert titles == [f["kind"] for f in factors] + ["1 of 64 inputs", "8 of 64 inputs", "8 of 64 inputs",
                                                     "64 of 64 inputs"]
    assert len(fig.data) == 8 and not fig.layout.title.text  # the tab's label names the chart
    axes = [fig.layout[name] for name in fig.layout if name.startswith(("xaxis", "yaxis"))]
    assert len(axes) == 16 and not any(axis.showticklabels for axis in axes)  # cells a tenth of the column wide
    assert [fig.layout.yaxis.title.text, fig.layout.yaxis5.title.text] == ["factor", "paths so far"]
    normal = _factor_chart(factors, 64)  # the Inside page's: full names, channel numbers, a title
    assert normal.layout.annotations[0].text == "chain.channelwise<br>3×3 conv, channel-wise"
    assert normal.layout.yaxis.showticklabels and normal.layout.title.text.startswith("Top: each factor")


def test_the_verdict_is_one_short_line(igcv2_report):
    assert _verdict(igcv2_report) == "Complementary: every output reaches every input by exactly one path."
    shufflenet_unit = {"exactly_one_path": False, "dense": True, "min_paths": 6, "max_paths": 8, "in_channels": 240}
    assert _verdict(shufflenet_unit) == "Dense: every output reaches all 240 inputs, by 6 to 8 paths."
    grouped = {"exactly_one_path": False, "dense": False, "reached_fraction": 0.125}
    assert _verdict(grouped) == "Not dense: an output reaches 12% of the inputs; groups stay apart."


@pytest.mark.slow  # the whole app and two jobs: about 13 s
def test_a_tour_connectivity_step_is_compact_in_presenter_mode_only():
    """IGCV step 3 in presenter mode: the verdict and two charts in two tabs, no block menu, no metrics; the
    normal view keeps its menu, metrics and captions."""
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params.update({"tour": "igcv", "step": "3", "present": "1"})
    at.switch_page("pages/7_Tours.py")
    at.run()
    assert not at.exception
    assert [tab.label for tab in at.tabs] == ["Factor by factor", "All paths"]
    assert [s.value for s in at.success] == ["Complementary: every output reaches every input by exactly one path."]
    assert len(at.get("plotly_chart")) == 2 and not at.metric
    assert "tour_connectivity_block" not in [box.key for box in at.selectbox]
    assert not [c.value for c in at.caption if c.value.startswith("Estimate")]  # gone once the result is in
    at.toggle(key="tour_present").set_value(False).run()
    assert not at.exception and not at.tabs
    assert at.selectbox(key="tour_connectivity_block").value == "layer1.0.conv1"
    assert [m.value for m in at.metric] == ["1", "100%", "4"]


def test_a_comparison_of_several_metrics_writes_each_figure_with_its_metric_last():
    rows = [{"label": "refinedet320", "input": "3×320×320", "published_top1": 80.0,
             "published_metric": "PASCAL VOC2007 test mAP (%)"},
            {"label": "torchvision:ssd300_vgg16", "input": "3×800×800", "published_top1": 25.1,
             "published_metric": "COCO val2017 box AP (%)"},
            {"label": "resnet50 + conv:shuffle(groups=2)@layer1.0.conv1", "input": "3×800×800",
             "published_top1": None, "published_metric": None}]
    shown = _compare_columns_shown(rows)
    assert list(shown) == ["label", "params_m", "gmacs", "memory_access_mb", "input", PUBLISHED_WITH_METRIC]
    assert "activations_m" not in PRESENTER_COMPARE_COLUMNS  # the normal view's: memory access counts them
    assert list(_compare_frame(rows)[PUBLISHED_WITH_METRIC]) == ["80.00 PASCAL VOC2007 test mAP (%)",
                                                                 "25.10 COCO val2017 box AP (%)", ""]
    # a long swapped label or layer path may wrap after "@", "," and "." (not inside a number), where it has no space
    assert _breakable("resnet50 + conv:shuffle(groups=2)@layer1.0.conv1,layer2.0.conv1") == (
        "resnet50 + conv:shuffle(groups=2)@\u200blayer1.0.\u200bconv1,\u200blayer2.0.\u200bconv1")
    assert _breakable("encoder.layers.encoder_layer_0.mlp") == "encoder.\u200blayers.\u200bencoder_layer_0.\u200bmlp"
    assert _breakable("1×256×80×80, 1×256×40×40") == "1×256×80×80, 1×256×40×40"
    # the chart under it is sized for rows of three lines
    assert presenter_table_height(2, row_lines=3) == TABLE_HEADER_PX + 2 * (TABLE_ROW_PX + 2 * TABLE_LINE_PX) == 256


def test_point_labels_drop_the_name_a_series_shares():
    assert point_labels([f"efficientnet_b{i}" for i in range(8)]) == [f"b{i}" for i in range(8)]
    assert point_labels(["resnet50", "shufflenet_v1_g1", "shufflenet_v1_g2", "shufflenet_v1_g8"]) == [
        "resnet50", "g1", "g2", "g8"]
    # two of five share "mobilenet_": not a series, and "v2" beside shufflenet_v2_x1_0 would mislead
    five = ["shufflenet_v2_x1_0", "mobilenet_v2", "mobilenet_v3_large", "mnasnet1_0", "ghostnet_100"]
    assert point_labels(five) == five
    assert point_labels(["efficientnet_b4", "efficientnet_v2_s"]) == ["b4", "v2_s"]  # all of them


def test_labels_are_placed_where_they_cover_nothing_or_left_to_the_hover():
    # nine points 10 px apart in a 3×3 grid: the middle one's label would cover a neighbour's marker wherever
    # it went (each sits 5 px off its own marker, whose neighbours reach 15 px out)
    points = [(100 + 10 * (i % 3), 100 + 10 * (i // 3)) for i in range(9)]
    labels = [f"p{i}" for i in range(9)]
    places = place_labels(points, labels, 400, 200, 20)
    assert places[0] == "top center" and places[4] == ""
    boxes = [label_box(p, label, place, 20) for p, label, place in zip(points, labels, places) if place]
    markers = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for x, y in points]
    for i, a in enumerate(boxes):
        assert 0 <= a[0] and a[2] <= 400 and 0 <= a[1] and a[3] <= 200
        for b in boxes[i + 1:] + markers:
            assert not (a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]), (a, b)
    # at the plot's right edge a label goes to the left of its point
    assert place_labels([(395, 100)], ["resnet50"], 400, 200, 20) == ["top left"]


# EfficientNet B0–B7 as the compare rows give them (GMACs, published ImageNet top-1 %): a 98× span of costs
EFFICIENTNETS = [(0.386, 77.69), (0.687, 79.84), (1.088, 80.61), (1.827, 82.01), (4.394, 83.38), (10.266, 83.44),
                 (19.068, 84.01), (37.746, 84.12)]


def test_a_trade_off_over_two_orders_of_magnitude_goes_on_a_log_axis_with_every_point_named():
    rows = [{"label": f"efficientnet_b{i}", "gmacs": g, "published_top1": top1}
            for i, (g, top1) in reversed(list(enumerate(EFFICIENTNETS)))]  # any order: drawn by cost
    fig = _trade_off(rows, "gmacs", "GMACs", "ImageNet top-1 (%)", height=250)
    points = fig.data[0]
    assert list(points.text) == [f"b{i}" for i in range(8)] and points.hovertext[0] == "efficientnet_b0"
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.title.text == "GMACs (log scale)"
    # 0.386 to 37.7 GMACs, 6 % of the span (in log10 units) beyond each end: 0.29 to 49, whose decades are 1 and 10
    low, high = fig.layout.xaxis.range
    assert low < math.log10(0.386) < math.log10(37.746) < high and 10 ** low > 0.1 and 10 ** high < 100
    assert list(fig.layout.xaxis.tickvals) == [1, 10] and list(fig.layout.xaxis.ticktext) == ["1", "10"]
    assert 2 in fig.layout.xaxis.minor.tickvals and 20 in fig.layout.xaxis.minor.tickvals  # grid lines, no text
    # a span just over ten times, 1.5 to 16 GMACs, holds one decade: the range widens to whole ones, 1 to 100
    narrow = _trade_off([{"label": "a", "gmacs": 1.5, "published_top1": 70.0},
                         {"label": "b", "gmacs": 16.0, "published_top1": 75.0}], "gmacs", "GMACs", "top-1 (%)")
    assert list(narrow.layout.xaxis.range) == [0, 2] and list(narrow.layout.xaxis.ticktext) == ["1", "10", "100"]
    close = [{"label": "a", "gmacs": 4.1, "published_top1": 80.9}, {"label": "b", "gmacs": 4.3, "published_top1": 81.2}]
    linear = _trade_off(close, "gmacs", "GMACs", "ImageNet top-1 (%)")
    assert linear.layout.xaxis.type is None and linear.layout.xaxis.title.text == "GMACs"
    assert list(linear.data[0].text) == ["a", "b"]
