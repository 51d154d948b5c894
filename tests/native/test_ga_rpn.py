"""Native GA-RPN (guided-anchoring RPN head on torchvision's ResNet-50-FPN).

Costed on the meta device at the catalog's 800×800 (the exact counts are pinned in
explorer/data/measured_costs.json and checked by tests/native/test_native_contract.py). The real CPU forward runs at
3×128×128: torchvision's CPU deformable conv makes 800×800 take several seconds.
"""
import pytest
import torch
import torch.nn as nn
import torchvision

from explorer.catalog import resolve
from explorer.models import build_model, example_input
from explorer.native.ga_rpn import LEVELS, STRIDES, anchor_wh
from explorer.spec import ModelSpec
from explorer.views.deformable import capture_offsets
from tests.native_support import CostReports, shapes

cost = CostReports()

BACKBONE_PARAMS = 26_852_416
# The head by hand (weights + biases): 3×3 conv, loc, shape, offset conv (no bias; 4 groups × 2 × 3×3
# offsets from the 2 shape channels), deformable 3×3 conv (no bias), objectness, box.
HEAD_PARAMS = {
    "rpn_conv": 256 * 256 * 9 + 256,
    "conv_loc": 256 + 1,
    "conv_shape": 256 * 2 + 2,
    "feature_adaption.conv_offset": 2 * 4 * 2 * 9,
    "feature_adaption.conv_adaption": 256 * 256 * 9,
    "conv_cls": 256 + 1,
    "conv_reg": 256 * 4 + 4,
}


def test_catalog_variant():
    variant = resolve("ga_rpn")
    assert variant.implemented and variant.builder == "native:ga_rpn"
    assert tuple(variant.input_size) == (3, 800, 800)


def test_params_backbone_and_head_by_hand():
    model = build_model(ModelSpec("ga_rpn"), "meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    with torch.device("meta"):
        faster_rcnn = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    assert count(model.backbone) == count(faster_rcnn.backbone) == BACKBONE_PARAMS
    head = dict(model.head.named_modules())
    assert {name: count(head[name]) for name in HEAD_PARAMS} == HEAD_PARAMS
    assert count(model.head) == sum(HEAD_PARAMS.values()) == 1_182_104
    assert BACKBONE_PARAMS + 1_182_104 == cost("ga_rpn")["params"] == count(model)


def test_head_macs_by_hand():
    """The head runs on every position of P2..P6: N = 200² + 100² + 50² + 25² + 13² at 800×800."""
    rows = {row["name"]: row for row in cost("ga_rpn")["layers"]}
    n = 200 ** 2 + 100 ** 2 + 50 ** 2 + 25 ** 2 + 13 ** 2
    assert n == 53_294 and rows["head"]["calls"] == 5
    conv3x3 = 9 * 256 * 256 * n
    deform = conv3x3 + 9 * 256 * 4 * n  # plus 4-tap bilinear sampling per tap and input channel
    expected = conv3x3 + deform + (2 * 72 + 256 * (1 + 2 + 1 + 4)) * n
    assert rows["head.feature_adaption.conv_adaption"]["macs"] == deform
    assert rows["head"]["macs"] == expected == 63_476_138_464
    assert rows["backbone"]["macs"] + rows["head"]["macs"] == cost("ga_rpn")["macs"]


def test_structure_and_shapes():
    s = shapes(cost("ga_rpn"))
    assert s["backbone"] == [[1, 256, 200, 200], [1, 256, 100, 100], [1, 256, 50, 50], [1, 256, 25, 25]]
    assert s["head.feature_adaption.conv_offset"] == [1, 72, 13, 13]  # last call: P6
    model = build_model(ModelSpec("ga_rpn"), "meta")
    adaption = model.head.feature_adaption.conv_adaption
    assert isinstance(adaption, torchvision.ops.DeformConv2d) and adaption.bias is None
    assert (adaption.kernel_size, adaption.padding) == ((3, 3), (1, 1))
    assert isinstance(model.backbone.body.bn1, nn.BatchNorm2d)


@pytest.mark.slow
def test_forward_at_128_and_the_deformable_offsets():
    spec = ModelSpec("ga_rpn", input_size=(3, 128, 128))
    model, x = build_model(spec), example_input(spec)
    with torch.no_grad():
        out = model(x)
    assert list(out) == list(LEVELS)
    for level, maps in out.items():
        side = 128 // STRIDES[level]
        assert {k: tuple(v.shape) for k, v in maps.items()} == {
            "loc": (1, 1, side, side), "shape": (1, 2, side, side),
            "objectness": (1, 1, side, side), "box": (1, 4, side, side)}
        assert all(torch.isfinite(v).all() for v in maps.values())
        assert ((maps["loc"] >= 0) & (maps["loc"] <= 1)).all()
    # The explorer's offset view finds the adaption conv; its offsets are the 1×1 conv of the shape map.
    captured = capture_offsets(model, x)
    assert list(captured) == ["head.feature_adaption.conv_adaption"]
    entry = captured["head.feature_adaption.conv_adaption"]
    assert entry["offset_groups"] == 4 and entry["output_hw"] == [32, 32]  # first call: P2
    expected = model.head.feature_adaption.conv_offset(out["p2"]["shape"]).detach().numpy()
    assert abs(entry["offset"] - expected).max() < 1e-5


def test_anchor_shape_transform():
    shape = torch.tensor([0.0, 0.0, 1.0, -1.0]).reshape(2, 2, 1, 1)  # (dw, dh) at two positions
    wh = anchor_wh(shape, STRIDES["p3"])
    assert wh[0].flatten().tolist() == [64.0, 64.0]  # σ·s = 8·8 at dw = dh = 0
    torch.testing.assert_close(wh[1].flatten(), torch.tensor([64 * torch.e, 64 / torch.e]))
