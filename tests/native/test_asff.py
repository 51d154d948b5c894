"""Native YOLOv3 (Darknet-53) + ASFF at 608×608, 80 classes.

Costed on the meta device at the catalog size (the exact counts are pinned in
explorer/data/measured_costs.json and checked by tests/native/test_native_contract.py); the real CPU forward
runs at 320×320, enough for ASFF's per-pixel weights at every level.
"""
import pytest
import torch

from explorer.catalog import resolve
from explorer.cost import trace_costs
from explorer.models import build_model, example_input
from explorer.native.asff import ASFF
from explorer.spec import ModelSpec
from tests.native_support import CostReports, shapes

cost = CostReports()

YOLOV3_PARAMS = 61_949_149  # the YOLOv3 part alone
YOLOV3_MACS = 70_345_950_208
# Published / reference figures for plain YOLOv3 (the ASFF paper gives none for its modules):
YOLOV3_PUBLISHED_PARAMS = 62e6  # "62 M" at 80 classes (Ultralytics / Keras ports of yolov3.cfg: 61,949,149)
YOLOV3_608_PUBLISHED_FLOPS = 140.69e9  # darknet's YOLOv3 page: YOLOv3-608, 140.69 Bn FLOPs (2 per multiply-add)
DARKNET53_PUBLISHED_OPS = 18.7e9  # YOLOv3 paper, Table 2: Darknet-53 at 256×256, 18.7 Bn operations


def _conv_bn(cin, cout, k):
    return cin * cout * k * k + 2 * cout


# ASFF parameters by hand, per output level (resize convs, three 1×1 convs to 16, 48 → 3 logits with bias).
ASFF_PARAMS = [
    _conv_bn(256, 512, 3) + _conv_bn(128, 512, 3) + 3 * _conv_bn(512, 16, 1) + 48 * 3 + 3,
    _conv_bn(512, 256, 1) + _conv_bn(128, 256, 3) + 3 * _conv_bn(256, 16, 1) + 48 * 3 + 3,
    _conv_bn(512, 128, 1) + _conv_bn(256, 128, 1) + 3 * _conv_bn(128, 16, 1) + 48 * 3 + 3,
]


def _asff_rows():
    rows = {row["name"]: row for row in cost("asff")["layers"]}
    return [rows[f"neck.asff.{level}"] for level in range(3)]


def test_catalog_variant():
    variant = resolve("asff")
    assert variant.implemented and variant.builder == "native:asff"
    assert tuple(variant.input_size) == (3, 608, 608)


def test_asff_params_by_hand_and_yolov3_against_the_published_figures():
    r = cost("asff")  # at 608×608; asserts uncounted_ops == []
    asff = _asff_rows()
    assert [row["params"] for row in asff] == ASFF_PARAMS == [1_796_339, 439_539, 105_203]
    assert r["params"] - sum(ASFF_PARAMS) == YOLOV3_PARAMS
    assert YOLOV3_PARAMS == pytest.approx(YOLOV3_PUBLISHED_PARAMS, rel=0.03)
    # The whole model is 3.7 % above "62 M": the published figure is YOLOv3's, without ASFF's 2.34 M.
    assert r["params"] / YOLOV3_PUBLISHED_PARAMS - 1 == pytest.approx(0.037, abs=0.001)
    assert r["macs"] - sum(row["macs"] for row in asff) == YOLOV3_MACS
    assert 2 * YOLOV3_MACS == pytest.approx(YOLOV3_608_PUBLISHED_FLOPS, rel=0.001)
    assert sum(row["macs"] for row in asff) / YOLOV3_MACS == pytest.approx(0.0177, abs=0.0005)


def test_darknet53_against_the_yolov3_papers_table_2():
    backbone = build_model(ModelSpec("asff"), "meta").backbone
    macs = trace_costs(backbone, torch.empty(1, 3, 256, 256, device="meta")).total.macs
    classifier = 1024 * 1000  # Table 1's connected layer after global average pooling
    assert macs == 9_284_091_904
    assert 2 * (macs + classifier) == pytest.approx(DARKNET53_PUBLISHED_OPS, rel=0.03)  # 18.57 G
    convs = [m for m in backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(convs) == 52  # + the FC = Darknet-53


def test_structure_and_shapes():
    s = shapes(cost("asff"))
    assert s["backbone"] == [[1, 256, 76, 76], [1, 512, 38, 38], [1, 1024, 19, 19]]
    assert s["neck.fpn"] == [[1, 512, 19, 19], [1, 256, 38, 38], [1, 128, 76, 76]]
    assert [s[f"neck.asff.{level}"] for level in range(3)] == [[1, 512, 19, 19], [1, 256, 38, 38], [1, 128, 76, 76]]
    assert [s[f"head.{level}"] for level in range(3)] == [[1, 255, 19, 19], [1, 255, 38, 38], [1, 255, 76, 76]]
    assert s["neck.asff.0.resize.2"] == [1, 512, 19, 19]  # 76 → max pool 38 → stride-2 conv 19
    assert s["neck.asff.2.resize.0"] == [1, 128, 76, 76]  # 1×1 conv then ×4 nearest
    assert s["neck.asff.1.weight_levels"] == [1, 3, 38, 38]


@pytest.fixture(scope="module")
def at_320():
    """The model with seeded random weights, a 320×320 input and its fusion weights."""
    spec = ModelSpec("asff", input_size=(3, 320, 320))
    torch.manual_seed(0)
    model, x = build_model(spec), example_input(spec)
    return model, x, model.fusion_weights(x)


@pytest.mark.slow
def test_outputs_at_608_and_fusion_weights_sum_to_one(at_320):
    spec = ModelSpec("asff")
    with torch.no_grad():  # the three YOLO outputs at 608 (shapes only, on meta)
        out = build_model(spec, "meta")(example_input(spec, "meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {
        "stride32": (1, 255, 19, 19), "stride16": (1, 255, 38, 38), "stride8": (1, 255, 76, 76)}
    weights = at_320[2]
    assert {k: tuple(v.shape) for k, v in weights.items()} == {
        "stride32": (1, 3, 10, 10), "stride16": (1, 3, 20, 20), "stride8": (1, 3, 40, 40)}
    for w in weights.values():
        assert ((w >= 0) & (w <= 1)).all()
        torch.testing.assert_close(w.sum(dim=1), torch.ones_like(w[:, 0]))
        assert w.std() > 0  # per-pixel weights, not a constant


def test_asff_output_is_the_weighted_sum_of_the_resized_levels():
    """Force the softmax onto one input level: the fused map is then that level, resized."""
    torch.manual_seed(0)
    fusion = ASFF(level=1).eval()
    levels = [torch.randn(1, 512, 4, 4), torch.randn(1, 256, 8, 8), torch.randn(1, 128, 16, 16)]
    torch.nn.init.zeros_(fusion.weight_levels.weight)
    with torch.no_grad():
        for chosen in range(3):
            fusion.weight_levels.bias.copy_(torch.tensor([0.0, 0.0, 0.0]).index_fill(0, torch.tensor(chosen), 50.0))
            resized = fusion.resize[chosen](levels[chosen])
            assert resized.shape == (1, 256, 8, 8)
            torch.testing.assert_close(fusion(levels), resized)


@pytest.mark.slow
def test_fusion_view_report_matches_the_model_weights(at_320):
    from explorer.views.fusion import fusion_report

    model, x, direct = at_320
    report = fusion_report(model, x)
    assert set(report["maps"]) == set(direct)
    for name, maps in report["maps"].items():
        assert maps.shape == tuple(direct[name].shape[1:])
        assert abs(maps.sum(axis=0) - 1).max() < 1e-5  # a softmax over the three levels at each cell
    assert report["maps"]["stride8"].shape == (3, 40, 40)  # 320 / 8
