"""Published accuracy for every model: timm's results table, torchvision's COCO metrics, figures a person types
in Compare (kept in the URL), bare library names, and GoogLeNet built as its published figure describes."""
import csv
import json
import math

import pytest
import timm.models
import torchvision.models as tvm
from streamlit.testing.v1 import AppTest

from explorer.accuracy import (TIMM_RESULTS_PATH, check_typed_figure, timm_published, timm_tag,
                               typed_figures_from_link, typed_figures_to_link)
from explorer.catalog import published_figures, resolve
from explorer.compare import compare_row, pareto_front, with_typed_figures
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.measured import load_measured
from explorer.spec import ModelSpec
from tests.conftest import ROOT


def csv_row(tag: str, side: int) -> dict:
    """The shipped table's row, read here with the csv module on its own."""
    with TIMM_RESULTS_PATH.open(encoding="utf-8") as file:
        rows = csv.DictReader(line for line in file if not line.startswith("#"))
        return next(r for r in rows if r["model"] == tag and int(r["img_size"]) == side)


def test_the_timm_table_names_its_source():
    first = TIMM_RESULTS_PATH.read_text(encoding="utf-8").splitlines()[0]
    assert "huggingface/pytorch-image-models" in first and "results/results-imagenet.csv" in first
    assert "4e5207c7bb6592474ca56e28b2cf85be8f1a550f" in first and "2025-10-30" in first


def test_a_timm_model_gets_its_default_tags_row():
    # timm's own default pretrained tag for the bare architecture name
    default_tag = timm.models.get_pretrained_cfg("convnext_tiny").tag
    assert timm_tag("convnext_tiny") == f"convnext_tiny.{default_tag}"
    figures = published_figures(resolve("timm:convnext_tiny"))
    row = csv_row(f"convnext_tiny.{default_tag}", 224)
    assert figures["top1"] == float(row["top1"]) and figures["metric"] == "ImageNet top-1 (%)"
    assert figures["metrics"]["ImageNet top-5 (%)"] == float(row["top5"])
    assert figures["params_m"] == float(row["param_count"])
    assert "timm's results table" in figures["source"] and "4e5207c" in figures["source"]


@pytest.mark.slow
def test_an_exact_timm_tag_and_another_input_size():
    assert published_figures(resolve("timm:convnext_tiny.fb_in1k"))["top1"] == float(csv_row("convnext_tiny.fb_in1k", 224)["top1"])
    # The table is per image size: Compare shows the row of the size asked, and nothing where there is none.
    at_288 = compare_row(ModelSpec("timm:convnext_tiny.fb_in1k", input_size=(3, 288, 288)))
    assert at_288["published_top1"] == float(csv_row("convnext_tiny.fb_in1k", 288)["top1"]) == 82.694
    assert compare_row(ModelSpec("timm:convnext_tiny.fb_in1k", input_size=(3, 256, 256)))["published_top1"] is None
    assert timm_published("vovnet39a") is None  # no pretrained weights, no row


def test_a_roster_timm_model_without_paper_figures_plots_against_the_others():
    row = compare_row(ModelSpec("ese_vovnet39b"))  # the catalog cites no paper figure for it
    assert row["published_top1"] == float(csv_row("ese_vovnet39b.ra_in1k", 224)["top1"]) == 79.312
    assert row["published_metric"] == "ImageNet top-1 (%)"


def test_torchvision_detection_weights_show_coco_box_ap():
    assert tvm.get_model_weights("fasterrcnn_resnet50_fpn").DEFAULT.meta["_metrics"]["COCO-val2017"]["box_map"] == 37.0
    figures = published_figures(resolve("fasterrcnn_resnet50_fpn"))
    assert figures["top1"] == 37.0 and figures["metric"] == "COCO val2017 box AP (%)"
    mask = published_figures(resolve("torchvision:maskrcnn_resnet50_fpn"))["metrics"]
    assert mask == {"COCO val2017 box AP (%)": 37.9, "COCO val2017 mask AP (%)": 34.6}


@pytest.mark.slow
def test_compare_page_shows_the_coco_box_ap_and_the_timm_figure():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params["set"] = '["fasterrcnn_resnet50_fpn", "timm:convnext_tiny"]'
    at.switch_page("pages/6_Compare.py")
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value.set_index("label")
    assert table.loc["fasterrcnn_resnet50_fpn", "published_top1"] == 37.0
    assert table.loc["fasterrcnn_resnet50_fpn", "published_metric"] == "COCO val2017 box AP (%)"
    assert table.loc["timm:convnext_tiny", "published_top1"] == 84.192
    assert "published COCO val2017 box AP (%)" in at.selectbox(key="compare_y").options
    # Each plotted figure's source is named under the plot (escaped markdown: read without the backslashes and
    # the word joiners that keep ':convnext_tiny:' from reading as an icon).
    captions = lambda: [c.value.replace("\\", "").replace("\u2060", "") for c in at.caption]  # noqa: E731
    assert any("fasterrcnn_resnet50_fpn: torchvision FasterRCNN_ResNet50_FPN_Weights.COCO_V1" in c for c in captions())
    at.selectbox(key="compare_y").set_value("published ImageNet top-1 (%)").run()
    assert any("timm:convnext_tiny: timm's results table: convnext_tiny.in12k_ft_in1k at 224×224 px" in c
               for c in captions())


def open_compare(**query) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/6_Compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


@pytest.mark.slow
def test_a_typed_figure_round_trips_through_the_url():
    at = open_compare(set='["resnet18", "timm:vovnet39a"]')
    at.selectbox(key="compare_typed_item").set_value("timm:vovnet39a")
    at.text_input(key="compare_typed_metric").set_value("ImageNet top-1 (%)")
    at.number_input(key="compare_typed_value").set_value(76.77)
    at.button(key="compare_typed_keep").click().run()
    assert not at.error, [e.value for e in at.error]
    link = at.query_params["typed"]
    assert json.loads(link) == [["timm:vovnet39a", "ImageNet top-1 (%)", 76.77]]

    again = open_compare(set='["resnet18", "timm:vovnet39a"]', typed=link)
    assert not again.warning and not again.error
    table = again.dataframe[0].value.set_index("label")
    assert table.loc["timm:vovnet39a", "published_top1"] == 76.77
    assert table.loc["timm:vovnet39a", "published_source"].startswith("typed in")
    assert again.query_params["typed"] == link  # re-shared as it came


def test_typed_figures_from_a_hostile_link_are_dropped_with_an_escaped_reason():
    at = open_compare(set='["resnet18"]', typed=json.dumps([
        ["resnet18", "<img src=x onerror=alert(1)>", 50], ["resnet18", "ImageNet top-1 (%)", 1e9],
        ["not_in_the_set", "ImageNet top-1 (%)", 50], ["resnet18", "Top-1 on my data (%)", 12.5]]))
    warning = at.warning[0].value
    assert "entry 1" in warning and "entry 2" in warning and "entry 3" in warning and "<img" not in warning
    assert json.loads(at.query_params["typed"]) == [["resnet18", "Top-1 on my data (%)", 12.5]]
    assert "published Top-1 on my data (%)" in at.selectbox(key="compare_y").options


@pytest.mark.parametrize("metric,value", [("ImageNet top-1 (%)", 100.5), ("ImageNet top-1 (%)", -1),
                                          ("COCO AP (%)", math.nan), ("latency", math.inf), ("a" * 61, 1),
                                          ("x<b>", 1), ("", 1), ("ImageNet top-1 (%)", True), ("ok", "80")])
def test_typed_figures_are_bounded(metric, value):
    with pytest.raises(ExplorerError):
        check_typed_figure(metric, value)


def test_typed_figures_join_the_pareto_front_of_their_metric():
    rows = [{"label": "a", "gmacs": 1.0, "published": {"ImageNet top-1 (%)": 70.0}, "published_sources": {},
             "published_metric": "ImageNet top-1 (%)", "published_top1": 70.0, "published_source": "paper"},
            {"label": "b", "gmacs": 2.0, "published": {}, "published_sources": {},
             "published_metric": None, "published_top1": None, "published_source": None}]
    typed = with_typed_figures(rows[1], {"ImageNet top-1 (%)": 75.0})
    assert rows[1]["published"] == {}  # the cached row is left alone
    assert pareto_front([rows[0], typed], "gmacs", "ImageNet top-1 (%)") == ["a", "b"]
    assert pareto_front([rows[0], with_typed_figures(rows[1], {"ImageNet top-1 (%)": 65.0})], "gmacs",
                        "ImageNet top-1 (%)") == ["a"]
    figures, problems = typed_figures_from_link(typed_figures_to_link({"b": {"ImageNet top-1 (%)": 75.0}}), ["b"])
    assert figures == {"b": {"ImageNet top-1 (%)": 75.0}} and problems == []


def test_bare_library_names_resolve_torchvision_first_then_timm():
    assert resolve("convnext_tiny").builder == "torchvision:convnext_tiny"  # both libraries have it
    assert resolve("convnext_atto").builder == "timm:convnext_atto"  # timm only
    assert resolve("resnet50").family_id == "resnet"  # a catalog id stays the catalog's
    assert analyse(ModelSpec("convnext_atto"), with_layers=False)["params"] == analyse(
        ModelSpec("timm:convnext_atto"), with_layers=False)["params"]


def test_unknown_names_suggest_library_names():
    with pytest.raises(ExplorerError, match="did you mean .*convnext_atto"):
        resolve("convnext_atoo")  # close to a timm-only name
    with pytest.raises(ExplorerError, match="did you mean .*regnet_y_400mf"):
        resolve("regnet_y_400mff")
    with pytest.raises(ExplorerError) as refused:
        resolve("x" * 150)  # no fuzzy search over a long name
    assert "did you mean" not in str(refused.value)


def test_googlenet_is_built_as_its_published_figure_describes():
    published = tvm.get_model_weights("googlenet").DEFAULT.meta["num_params"]
    inference = analyse(ModelSpec("googlenet"), with_layers=False)
    assert inference["params"] == published == 6_624_904  # 6.62 M, the auxiliary heads off
    assert published_figures(resolve("googlenet"))["params_m"] == pytest.approx(6.624904)
    training = analyse(ModelSpec("googlenet", options=(("aux_logits", True),)), with_layers=False)
    # The two training-time heads, by hand: a 1×1 conv (no bias) from 512 / 528 channels to 128 with its BN
    # (2 × 128), fc 2048→1024 and fc 1024→1000 with biases.
    head = lambda channels: channels * 128 + 2 * 128 + 2048 * 1024 + 1024 + 1024 * 1000 + 1000  # noqa: E731
    assert training["params"] - inference["params"] == head(512) + head(528) == 6_379_984
    assert training["params"] == 13_004_888  # torchvision's GoogLeNet as built without weights: 13.0 M
    assert training["macs"] == inference["macs"]  # in eval mode the heads do not run
    assert load_measured()["googlenet"]["params"] == inference["params"]
