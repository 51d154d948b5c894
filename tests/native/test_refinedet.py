"""Native RefineDet320 (VGG-16, 21 VOC classes), written from the paper and its official Caffe code.

Costed through the engine at the catalog's 320×320 (on the meta device); the exact counts are pinned in
explorer/data/measured_costs.json and checked, with a real CPU forward, by tests/native/test_native_contract.py.
The paper and the official README publish no parameter or FLOP count, only accuracy (80.0 % VOC07 mAP).
"""
import torch
import torch.nn as nn
import torchvision

from explorer.catalog import load_catalog, published_figures, resolve
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.native.refinedet import L2Norm, TransferConnections, VGG16Features
from explorer.spec import ModelSpec
from tests.native_support import CostReports, shapes

cost = CostReports()

ANCHORS = 3 * (40 * 40 + 20 * 20 + 10 * 10 + 5 * 5)  # 6375
# Official README table, "Number of Boxes": RefineDet320 6375, RefineDet512 16320.
README_BOXES = {320: 6375, 512: 16320}


def test_catalog_variant_is_registered_at_320():
    variants = [v for v in load_catalog().variants.values() if v.id == "refinedet320"]
    assert len(variants) == 1 and variants[0].implemented and variants[0].name in NATIVE_BUILDERS
    assert tuple(variants[0].input_size) == (3, 320, 320)


def test_published_figures_are_accuracy_only():
    published = published_figures(resolve("refinedet320"))
    assert published["top1"] == 80.0 and "VOC2007" in published["metric"]
    assert "params_m" not in published and "gmacs" not in published  # none published: nothing to compare


def test_parameter_breakdown():
    rows = {row["name"]: row["params"] for row in cost("refinedet320")["layers"]}
    fc6, fc7 = 9 * 512 * 1024 + 1024, 1024 * 1024 + 1024
    assert rows["backbone.vgg.features"] == 14_714_688  # torchvision vgg16's conv layers
    assert rows["backbone.vgg"] == 14_714_688 + fc6 + fc7 == 20_483_904
    assert rows["backbone.conv4_3_norm"] == rows["backbone.conv5_3_norm"] == 512
    assert rows["backbone.conv6_1"] + rows["backbone.conv6_2"] == (1024 * 256 + 256) + (9 * 256 * 512 + 512)
    conv3 = 9 * 256 * 256 + 256
    deconv = 4 * 256 * 256 + 256
    assert rows["neck.tcbs.0"] == rows["neck.tcbs.1"] == (9 * 512 * 256 + 256) + conv3 + deconv + conv3
    assert rows["neck.tcbs.2"] == (9 * 1024 * 256 + 256) + conv3 + deconv + conv3
    assert rows["neck.tcbs.3"] == (9 * 512 * 256 + 256) + conv3 + conv3  # the top block: no deconvolution
    arm = sum(9 * c * 3 * (2 + 4) + 3 * (2 + 4) for c in (512, 512, 1024, 512))
    odm = 4 * (9 * 256 * 3 * (21 + 4) + 3 * (21 + 4))
    assert rows["head"] == arm + odm == 414_792 + 691_500
    assert rows["backbone"] + rows["neck"] + rows["head"] == cost("refinedet320")["params"]


def test_vgg_trunk_has_torchvision_layout_and_refinedet_pool5_fc6():
    with torch.device("meta"):
        reference = torchvision.models.vgg16(weights=None).features[:30]  # up to relu5_3
        ours = VGG16Features()
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in reference.state_dict().items()}
    model = build_model(ModelSpec("refinedet320"), "meta")
    vgg = model.backbone.vgg
    assert (vgg.pool5.kernel_size, vgg.pool5.stride) == (2, 2)  # stride 2: fc7 at stride 32
    assert (vgg.fc6.kernel_size, vgg.fc6.dilation, vgg.fc6.out_channels) == ((3, 3), (3, 3), 1024)
    assert (vgg.fc7.kernel_size, vgg.fc7.out_channels) == ((1, 1), 1024)
    assert not any(isinstance(m, (nn.BatchNorm2d, nn.Dropout)) for m in model.modules())


def test_shapes_at_320():
    s = shapes(cost("refinedet320"))
    assert s["backbone"] == [[1, 512, 40, 40], [1, 512, 20, 20], [1, 1024, 10, 10], [1, 512, 5, 5]]  # strides 8-64
    assert s["neck"] == [[1, 256, 40, 40], [1, 256, 20, 20], [1, 256, 10, 10], [1, 256, 5, 5]]
    assert s["neck.tcbs.0.deconv"] == [1, 256, 40, 40]  # P4 upsampled 2×
    assert s["head"] == [[1, ANCHORS, 4], [1, ANCHORS, 2], [1, ANCHORS, 4], [1, ANCHORS, 21]]


def test_anchor_counts_match_the_readme():
    assert ANCHORS == README_BOXES[320]
    spec = ModelSpec("refinedet320", input_size=(3, 512, 512))  # RefineDet512 is the same network
    out = build_model(spec, "meta")(example_input(spec, "meta"))
    assert {k: v.shape[1] for k, v in out.items()} == dict.fromkeys(out, README_BOXES[512])


def test_l2norm_scales_unit_vectors():
    norm = L2Norm(512, 10.0)
    y = norm(torch.randn(2, 512, 3, 3))
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 3), 10.0))


def test_tcbs_pass_information_top_down_only():
    torch.manual_seed(0)
    neck = TransferConnections((512, 512, 1024, 512))
    sources = [torch.randn(1, c, s, s) for c, s in ((512, 8), (512, 4), (1024, 2), (512, 1))]
    with torch.no_grad():
        before = neck(sources)
        changed = neck(sources[:3] + [sources[3] + 1.0])  # only the top (conv6_2) source changes
        lower = neck([sources[0] + 1.0] + sources[1:])  # only the bottom (conv4_3) source changes
    assert [tuple(p.shape) for p in before] == [(1, 256, 8, 8), (1, 256, 4, 4), (1, 256, 2, 2), (1, 256, 1, 1)]
    assert all(not torch.equal(a, b) for a, b in zip(before, changed))  # reaches every level through deconvs
    assert not torch.equal(before[0], lower[0])
    assert all(torch.equal(a, b) for a, b in zip(before[1:], lower[1:]))  # nothing flows upward


def test_l2norm_scales_start_at_10_and_8_and_the_outputs_at_320():
    spec = ModelSpec("refinedet320")
    model = build_model(spec)  # real weights: the L2Norm scales' initial values
    assert (model.backbone.conv4_3_norm.weight == 10).all() and (model.backbone.conv5_3_norm.weight == 8).all()
    with torch.no_grad():  # shapes only (on meta); the contract test runs the model for real
        out = build_model(spec, "meta")(example_input(spec, "meta"))
    assert {k: tuple(v.shape) for k, v in out.items()} == {"arm_loc": (1, ANCHORS, 4), "arm_conf": (1, ANCHORS, 2),
                                                          "odm_loc": (1, ANCHORS, 4), "odm_conf": (1, ANCHORS, 21)}
