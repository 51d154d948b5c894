"""Native Libra R-CNN (torchvision Faster R-CNN R50-FPN + balanced feature pyramid).

Costed once at the catalog's 800×800. Faster R-CNN's proposal filtering depends on the data, so the
engine runs it on the CPU (a few seconds) with the builder's fixed seed; the RoI-head MACs depend on
how many proposals survive, so the exact MAC count (pinned in explorer/data/measured_costs.json, checked by
tests/native/test_native_contract.py) holds only for those weights and that input. The real forward runs at
3×128×128 with torchvision's resize set to 128 (min_size / max_size options, the registered small input),
else its transform would scale the image back up to 800.
"""
import pytest
import torch
import torch.nn.functional as F
import torchvision

from explorer.catalog import resolve
from explorer.models import build_model
from explorer.native import NATIVE_MODELS
from explorer.native.libra_rcnn import TORCHVISION_POSTPROCESSING, BalancedFeaturePyramid
from explorer.spec import ModelSpec
from tests.native_support import cost_report, shapes, small_forward

NON_LOCAL_PARAMS = 4 * (256 * 256 + 256)  # θ, φ, g and the output 1×1 convs, with biases


@pytest.fixture(scope="module")
def report():
    return cost_report("libra_rcnn")


def test_catalog_variant():
    variant = resolve("libra_rcnn")
    assert variant.implemented and variant.builder == "native:libra_rcnn"
    assert tuple(variant.input_size) == (3, 800, 800)


@pytest.mark.slow
def test_only_torchvisions_post_processing_is_uncosted(report):
    assert report["traced_on"] == "cpu"
    # Every op of the BFP is costed; only torchvision's post-processing inside rpn / roi_heads is not.
    assert {u["op"] for u in report["uncounted_ops"]} == TORCHVISION_POSTPROCESSING == {
        "aten.topk.default", "aten.nonzero.default", "torchvision.nms.default", "aten.sort.default"}
    modules = {m for u in report["uncounted_ops"] for m in u["modules"]}
    assert all(m.startswith(("model.rpn", "model.roi_heads")) for m in modules)


def test_params_are_faster_rcnn_plus_the_non_local_block():
    with torch.device("meta"):
        faster_rcnn = torchvision.models.detection.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)
    model = build_model(ModelSpec("libra_rcnn"), "meta")
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert NON_LOCAL_PARAMS == 263_168
    assert count(model) - count(faster_rcnn) == NON_LOCAL_PARAMS == count(model.bfp)
    assert model.bfp is model.model.backbone.bfp and isinstance(model.bfp, BalancedFeaturePyramid)
    assert count(faster_rcnn) == 41_808_406


@pytest.mark.slow
def test_bfp_cost_and_shapes(report):
    rows = {row["name"]: row for row in report["layers"]}
    s = shapes(report)
    assert s["model.backbone.fpn"] == s["model.backbone.bfp"]  # P2..P5 (the first four levels listed)
    assert s["model.backbone.bfp"][0] == [1, 256, 200, 200]
    assert s["model.backbone.bfp.refine"] == [1, 256, 50, 50]  # gathered at P4's size
    # Non-local block over N = 50·50 positions, C = 256: four 1×1 convs 4·N·C², θᵀφ and attention·g 2·N²·C.
    n, c = 50 * 50, 256
    assert rows["model.backbone.bfp"]["macs"] == 4 * n * c * c + 2 * n * n * c == 3_855_360_000
    assert rows["model.backbone.bfp"]["macs"] / report["macs"] < 0.035


def test_bfp_gathers_averages_and_scatters_back():
    """With the non-local block reduced to the identity, each level gets the average of all levels
    (max-pooled down from P2, P3; nearest-upsampled from P5, P6 to P4's 4×4) resized back to it."""
    torch.manual_seed(0)
    bfp = BalancedFeaturePyramid(channels=8).eval()
    torch.nn.init.zeros_(bfp.refine.conv_out.weight)
    torch.nn.init.zeros_(bfp.refine.conv_out.bias)
    sizes = {"0": 16, "1": 8, "2": 4, "3": 2, "pool": 1}
    feats = {name: torch.randn(1, 8, s, s) for name, s in sizes.items()}
    with torch.no_grad():
        out = bfp(feats)
    up = lambda x, f: x.repeat_interleave(f, 2).repeat_interleave(f, 3)  # noqa: E731
    mean = (F.max_pool2d(feats["0"], 4) + F.max_pool2d(feats["1"], 2) + feats["2"]
            + up(feats["3"], 2) + up(feats["pool"], 4)) / 5
    torch.testing.assert_close(out["0"], feats["0"] + up(mean, 4))
    torch.testing.assert_close(out["1"], feats["1"] + up(mean, 2))
    torch.testing.assert_close(out["2"], feats["2"] + mean)
    torch.testing.assert_close(out["3"], feats["3"] + F.max_pool2d(mean, 2))
    torch.testing.assert_close(out["pool"], feats["pool"] + F.max_pool2d(mean, 4))


@pytest.mark.slow
def test_real_forward_gives_boxes_inside_the_image():
    out = small_forward("libra_rcnn")  # 3×128×128, torchvision's resize set to 128 (the registered small input)
    assert NATIVE_MODELS["libra_rcnn"].small_input == (3, 128, 128)
    assert isinstance(out, list) and len(out) == 1 and set(out[0]) == {"boxes", "labels", "scores"}
    boxes = out[0]["boxes"]
    assert boxes.shape[1] == 4 and 0 < len(boxes) == len(out[0]["scores"]) == len(out[0]["labels"])
    assert torch.isfinite(boxes).all() and ((boxes >= 0) & (boxes <= 128)).all()
