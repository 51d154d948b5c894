"""Native SpineNet-49S/49/96/143/190 RetinaNet detectors, written from the paper (arXiv 1912.05027) and the
official TPU detection code's block specification and scaling table.

Each is costed through the engine at its catalog input (on the meta device) and checked against the TPU
model zoo's whole-detector figures (FLOPs there are multiply-adds); the exact counts are pinned in
explorer/data/measured_costs.json and checked by tests/native/test_native_contract.py. SpineNet-49S is the one
variant outside 3 %: its published 11.9 M / 33.8 B are what the model gives with 256-wide endpoints, while the
official 49S config (and this model) uses 128 (see test_49s_gap_is_the_endpoint_width). Real CPU forwards run
at small inputs (the catalog sizes, 640-1280, are slow on a CPU).
"""
import pytest
import torch
import torch.nn as nn

from explorer.catalog import load_catalog, published_figures, resolve
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.native import spinenet as sn
from explorer.native.registry import models_in
from explorer.spec import ModelSpec
from tests.native_support import CostReports, shapes

cost = CostReports()

# catalog id: input side, as in the model zoo's table.
SIDES = {"spinenet49s": 640, "spinenet49": 640, "spinenet96": 1024, "spinenet143": 1280, "spinenet190": 1280}
LEVELS = ("P3", "P4", "P5", "P6", "P7")


def test_every_catalog_variant_is_registered_at_its_input_size():
    family = {v.id: v for v in load_catalog().variants.values() if v.family_id == "spinenet"}
    assert set(family) == set(SIDES) == set(models_in(sn.__name__))
    for arch, side in SIDES.items():
        assert family[arch].implemented and family[arch].name in NATIVE_BUILDERS
        assert family[arch].builder == f"native:{arch}"
        assert tuple(family[arch].input_size) == (3, side, side)


@pytest.mark.parametrize("arch", sorted(SIDES))
def test_backbone_and_head_make_the_whole_detector(arch):
    r = cost(arch)  # asserts uncounted_ops == []
    assert r["input_shape"] == [1, 3, SIDES[arch], SIDES[arch]]
    rows = {row["name"]: row for row in r["layers"]}
    assert rows["backbone"]["params"] + rows["head"]["params"] == r["params"]
    assert rows["backbone"]["macs"] + rows["head"]["macs"] == r["macs"]


@pytest.mark.parametrize("arch", sorted(set(SIDES) - {"spinenet49s"}))
def test_within_three_percent_of_the_model_zoo(arch):
    r, paper = cost(arch), published_figures(resolve(arch))
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.005)
    assert r["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.005)
    side, p_m, g = sn.PUBLISHED[arch.removeprefix("spinenet").upper()]
    assert (side, p_m, g) == (SIDES[arch], paper["params_m"], paper["gmacs"])


def test_49s_gap_is_the_endpoint_width():
    # The official 49S config (endpoints_num_filters: 128, head 128) gives 11.27 M / 30.78 G: -5.3 % / -8.9 %
    # against the published 11.9 M / 33.8 B. The same network with 256-wide P3-P7 endpoints (the default of
    # the official SpineNet class) feeding the same 128-wide head gives 11.94 M / 33.75 G, within 0.4 %: the
    # published figures were counted with 256-wide endpoints. (An independent mmdetection port with 80
    # classes reports 11.15 M / 30.04 B for 49S, the same shortfall; see explorer/native/spinenet.py.)
    r, paper = cost("spinenet49s"), published_figures(resolve("spinenet49s"))
    assert r["params"] / (paper["params_m"] * 1e6) - 1 == pytest.approx(-0.0533, abs=0.001)
    assert r["macs"] / (paper["gmacs"] * 1e9) - 1 == pytest.approx(-0.0894, abs=0.001)
    wide = analyse(ModelSpec("spinenet49s", options=(("endpoint_filters", 256),)), with_layers=False)
    assert wide["uncounted_ops"] == []
    assert (wide["params"], wide["macs"]) == (11_944_598, 33_745_248_375)
    assert wide["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.005)
    assert wide["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.005)


def test_91_classes_match_the_published_figures_better_than_80():
    # The official configs predict 91 classes (COCO's 90 ids + background); 80 would be 0.8 % / 2.4 % low.
    r80 = analyse(ModelSpec("spinenet49", options=(("num_classes", 80),)), with_layers=False)
    assert (r80["params"], r80["macs"]) == (28_315_188, 83_337_036_800)
    r91, paper = cost("spinenet49"), published_figures(resolve("spinenet49"))
    assert abs(r91["macs"] - paper["gmacs"] * 1e9) < abs(r80["macs"] - paper["gmacs"] * 1e9)
    # Only the class prediction conv changes: 3·3·256·(91 - 80)·9 weights + 99 biases.
    assert r91["params"] - r80["params"] == 9 * 256 * 11 * 9 + 11 * 9


# --- The searched architecture ---------------------------------------------------------------

def test_block_specification_is_the_papers_searched_one():
    assert len(sn.BLOCK_SPECS) == 15
    assert [level for level, *_ in sn.BLOCK_SPECS] == [2, 4, 3, 4, 6, 4, 5, 7, 5, 5, 4, 3, 5, 7, 6]
    kinds = "".join("b" if block == "bottleneck" else "r" for _, block, _, _ in sn.BLOCK_SPECS)
    assert kinds == "brbbrbrrbbbbbbb"
    assert [parents for _, _, parents, _ in sn.BLOCK_SPECS] == [
        (0, 1), (0, 1), (2, 3), (2, 4), (3, 5), (3, 5), (6, 7), (6, 8), (8, 9), (8, 10),
        (5, 10), (4, 10), (7, 12), (5, 14), (12, 14)]
    outputs = [level for level, _, _, is_output in sn.BLOCK_SPECS if is_output]
    assert outputs == [4, 3, 5, 7, 6] and sorted(outputs) == [3, 4, 5, 6, 7]
    # Every parent exists before its block (stem 0, 1, then block k is feature k + 2).
    assert all(max(parents) < k + 2 for k, (_, _, parents, _) in enumerate(sn.BLOCK_SPECS))


def test_spinenet49_has_49_layers_and_the_unconsumed_l5_block_joins_the_l5_output():
    model = build_model(ModelSpec("spinenet49"), "meta")
    bb = model.backbone
    assert len(bb.stem_blocks) == 2 and len(bb.blocks) == 15
    convs = 1 + sum(3 if b.block_type == "bottleneck" else 2 for b in bb.blocks) + 2 * 3
    assert convs + 1 == 49  # + the classifier of the ImageNet model
    merged = {k: b.merged for k, b in enumerate(bb.blocks) if b.merged}
    assert merged == {12: (11,)}  # block 9 (feature 11, an L5 bottleneck) feeds the L5 output block
    assert bb.output_index == {4: 12, 3: 13, 5: 14, 7: 15, 6: 16}
    # Only the first stem bottleneck needs a projection shortcut (64 → 256 channels).
    projections = [n for n, m in bb.named_modules() if n.endswith("shortcut") and m is not None]
    assert projections == ["stem_blocks.0.0.shortcut"]


def test_resampling_connections():
    bb = build_model(ModelSpec("spinenet49"), "meta").backbone
    # L7 bottleneck output block (block 13) ← feature 5 (an L4 bottleneck, 1024 ch) and feature 14 (L5, 1024).
    r0, r1 = bb.blocks[13].resample0, bb.blocks[13].resample1
    assert (r0.in_level, r0.target_level) == (4, 7) and (r1.in_level, r1.target_level) == (5, 7)
    assert r0.reduce.conv.out_channels == 128  # alpha 0.5 · 1024 / 4
    assert r0.down.conv.stride == (2, 2) and r0.down.conv.kernel_size == (3, 3)
    assert len(r0.pools) == 2  # 3×3 stride-2 max-pools for the remaining two halvings
    assert r0.expand.conv.out_channels == 1024 and not hasattr(r0.expand, "act")
    # L3 bottleneck (block 2) ← stem (L2, no resampling beyond channels) and an L4 residual (upsampled).
    up = bb.blocks[2].resample1
    assert (up.in_level, up.target_level) == (4, 3) and up.down is None and len(up.pools) == 0
    assert up.reduce.conv.out_channels == 128  # alpha 0.5 · 256 (a residual block's width is its filters)
    # 143 and 190 resample with alpha 1.0.
    bb143 = build_model(ModelSpec("spinenet143"), "meta").backbone
    assert bb143.blocks[13].resample0.reduce.conv.out_channels == 256


def test_shapes_at_640():
    s = shapes(cost("spinenet49"))
    assert s["backbone.stem"] == [1, 64, 160, 160]
    assert s["backbone.stem_blocks.1"] == [1, 256, 160, 160]
    assert s["backbone.blocks.1"] == [1, 256, 40, 40]  # L4 residual
    assert s["backbone.blocks.4"] == [1, 256, 10, 10]  # L6 residual
    assert s["backbone.blocks.13"] == [1, 1024, 5, 5]  # L7 bottleneck
    for level, side in zip(LEVELS, (80, 40, 20, 10, 5)):
        assert s[f"backbone.endpoints.{level}"] == [1, 256, side, side]
    assert s["head.class_predict"] == [1, 819, 5, 5]  # last call: P7, 91 classes × 9 anchors
    assert s["head.box_predict"] == [1, 36, 5, 5]


@pytest.mark.slow
def test_scaling_of_the_family():
    m49s = build_model(ModelSpec("spinenet49s"), "meta")
    assert m49s.backbone.stem_blocks[0][0].conv1.conv.out_channels == 41  # int(64 · 0.65)
    assert m49s.backbone.endpoints["P3"].conv.out_channels == 128
    assert m49s.head.class_convs[0].out_channels == 128
    m96 = build_model(ModelSpec("spinenet96"), "meta")
    assert all(len(b.block) == 2 for b in m96.backbone.blocks) and len(m96.backbone.stem_blocks[0]) == 2
    m190 = build_model(ModelSpec("spinenet190"), "meta")
    assert all(len(b.block) == 4 for b in m190.backbone.blocks)
    assert m190.backbone.blocks[13].block[0].conv1.conv.out_channels == 332  # int(256 · 1.3)
    assert m190.backbone.endpoints["P7"].conv.out_channels == 512
    assert len(m190.head.class_convs) == 7 and m190.head.class_convs[0].out_channels == 512


def test_head_convs_are_shared_and_batchnorms_are_per_level():
    head = build_model(ModelSpec("spinenet49"), "meta").head
    assert len(head.class_convs) == len(head.box_convs) == 4
    assert all(c.bias is not None and c.kernel_size == (3, 3) for c in head.class_convs)
    assert all(tuple(norms) == LEVELS for norms in head.class_norms)
    bn = sum(p.numel() for m in head.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    assert bn == 2 * 4 * 5 * 2 * 256
    r = cost("spinenet49")
    rows = {row["name"]: row for row in r["layers"]}
    assert rows["head.class_convs.0"]["calls"] == 5 and rows["head.class_norms.0.P3"]["calls"] == 1
    pixels = sum(side * side for side in (80, 40, 20, 10, 5))
    assert rows["head"]["macs"] == pixels * 9 * 256 * (8 * 256 + 91 * 9 + 4 * 9)


# --- Real forwards ---------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("arch", ["spinenet49s"])  # 49 runs the same code (and the contract's 32×32 forward)
@pytest.mark.parametrize("size", [(3, 256, 256), (3, 200, 312)])
def test_forward_returns_per_level_class_and_box_outputs(arch, size):
    spec = ModelSpec(arch, input_size=size)
    model, x = build_model(spec), example_input(spec)
    with torch.no_grad():
        out = model(x)
    assert set(out) == {"class", "box"} and tuple(out["class"]) == tuple(out["box"]) == LEVELS
    h, w = size[1:]
    for i, level in enumerate(LEVELS):
        side = (-(-h // 2 ** (i + 3)), -(-w // 2 ** (i + 3)))  # ceil: sides that are not multiples of 128 work
        assert out["class"][level].shape == (1, 91 * 9, *side)
        assert out["box"][level].shape == (1, 4 * 9, *side)
        assert torch.isfinite(out["class"][level]).all() and torch.isfinite(out["box"][level]).all()


def test_swish_option_costs_the_same_multiply_adds():
    swish = analyse(ModelSpec("spinenet49s", options=(("activation", "swish"),)), with_layers=False)
    relu = cost("spinenet49s")
    assert (swish["params"], swish["macs"]) == (relu["params"], relu["macs"])
    assert any("silu" in op["op"] for op in swish["ops"])


def test_bad_options_are_refused():
    with pytest.raises(ExplorerError):
        build_model(ModelSpec("spinenet49", options=(("activation", "gelu"),)), "meta")
    with pytest.raises(ExplorerError):
        build_model(ModelSpec("spinenet49", options=(("width", 2),)), "meta")
