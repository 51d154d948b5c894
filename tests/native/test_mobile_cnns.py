"""Native lightweight CNNs written from their papers: PeleeNet, ESPNet / ESPNetv2, IGCV1 / IGCV3 and
CondenseNet. Each is costed through the engine (ModelSpec + analyse, on the meta device) and checked
against the published figures of its catalog entry (within 3 %); the exact counts and a real CPU forward
are tests/native/test_native_contract.py's. IGCV2 stays unregistered (see explorer/native/igcv2.py).
"""
import pytest
import torch

from explorer.catalog import load_catalog, published_figures, resolve
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.spec import ModelSpec
from tests.native_support import CostReports, shapes

BUILT = ("peleenet", "espnet", "espnetv2", "igcv1", "igcv3", "condensenet")  # catalog ids
FAMILIES = ("peleenet", "espnet", "igcv", "condensenet")


@pytest.fixture(scope="module")
def reports():
    return CostReports()


def test_every_variant_of_these_families_is_built_except_igcv2():
    family = {v.id: v for v in load_catalog().variants.values() if v.family_id in FAMILIES}
    assert set(family) == set(BUILT) | {"igcv2"}
    assert all(family[arch].implemented and family[arch].name in NATIVE_BUILDERS for arch in BUILT)
    assert not family["igcv2"].implemented  # no configuration from the paper to build it from


@pytest.mark.slow
@pytest.mark.parametrize("arch", BUILT)
def test_cost_against_the_published_figures(arch, reports):
    r = reports(arch)
    paper = published_figures(resolve(arch))
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.03)
    if arch in ("espnet", "igcv3"):
        assert "gmacs" not in paper  # only parameters are published for these two
    else:
        assert r["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.03)  # FLOPs there are multiply-adds


# --- PeleeNet --------------------------------------------------------------------------------

def test_peleenet_table1_layout(reports):
    s = shapes(reports("peleenet"))
    assert s["stem"] == [1, 32, 56, 56]
    assert s["stem.stem1"] == [1, 32, 112, 112] and s["stem.branch_pool"] == [1, 32, 56, 56]
    assert s["stage1"] == [1, 128, 28, 28]
    assert s["stage2"] == [1, 256, 14, 14]
    assert s["stage3"] == [1, 512, 7, 7]
    assert s["stage4"] == [1, 704, 7, 7]  # 512 + 6·32, no pool after the last transition
    assert s["stage1.dense1"] == [1, 64, 56, 56]  # input 32 + two branches of k/2 = 16
    model = build_model(ModelSpec("peleenet"), "meta")
    assert [sum(name.startswith("dense") for name, _ in getattr(model, f"stage{i}").named_children())
            for i in range(1, 5)] == [3, 4, 8, 6]
    # Bottleneck width factors 1, 2, 4, 4 → 16, 32, 64, 64 channels.
    assert [getattr(model, f"stage{i}").dense1.branch1.reduce.conv.out_channels for i in range(1, 5)] == [16, 32, 64, 64]
    assert model.stage4.transition.conv.in_channels == model.stage4.transition.conv.out_channels == 704


# --- ESPNet / ESPNetv2 -------------------------------------------------------------------------

def test_esp_module_split_dilations_and_hierarchical_fusion():
    from explorer.native.espnet import ESPModule

    esp = ESPModule(64, 64)
    assert esp.dilations == (1, 2, 4, 8, 16)
    assert [conv.out_channels for conv in esp.dilated] == [16, 12, 12, 12, 12]  # 64 − 4·12 on rate 1
    assert [conv.dilation for conv in esp.dilated] == [(d, d) for d in (1, 2, 4, 8, 16)]
    assert esp.reduce.kernel_size == (1, 1) and esp.residual
    down = ESPModule(19, 64, stride=2)
    assert down.reduce.kernel_size == (3, 3) and down.reduce.stride == (2, 2) and not down.residual
    # HFF: with the rate-1 branch and BN/PReLU out of the way, the 4 fused slices are the cumulative sums.
    esp = ESPModule(5, 5, residual=False).eval()
    with torch.no_grad():
        esp.reduce.weight.fill_(1.0)
        for k, conv in enumerate(esp.dilated):
            conv.weight.zero_()
            conv.weight[:, :, 1, 1] = float(k)  # branch k multiplies the (1-channel) reduced map by k
        esp.post = torch.nn.Identity()
        out = esp(torch.ones(1, 5, 8, 8))
    assert out[0, :, 4, 4].tolist() == [0 * 5, 1 * 5, (1 + 2) * 5, (1 + 2 + 3) * 5, (1 + 2 + 3 + 4) * 5]


def test_espnet_cityscapes_layout_and_full_resolution_output(reports):
    s = shapes(reports("espnet"))
    assert s["level1_fuse"] == [1, 19, 256, 512]  # 16 conv maps ‖ the image at 1/2
    assert s["level2_fuse"] == [1, 131, 128, 256]  # 64 + 64 + the image at 1/4
    assert s["level3_fuse"] == [1, 256, 64, 128]
    assert s["level3_classifier"] == [1, 20, 64, 128]
    assert s["merge1"] == [1, 20, 256, 512]
    model = build_model(ModelSpec("espnet"), "meta")
    assert (len(model.level2), len(model.level3)) == (2, 8)  # α2, α3
    assert not model.merge2.esp.residual  # 2C → C in the decoder
    with torch.no_grad():  # full-resolution class maps (shapes only, on meta)
        assert model(example_input(ModelSpec("espnet"), "meta")).shape == (1, 20, 512, 1024)


def test_eesp_dilation_rates_per_level():
    from explorer.native.espnet import RF_LIMITS, eesp_dilations

    assert [eesp_dilations(4, r) for r in RF_LIMITS] == [(1, 2, 3, 4)] * 3 + [(1, 1, 2, 3), (1, 1, 1, 2)]


def test_espnetv2_imagenet_layout(reports):
    s = shapes(reports("espnetv2"))
    assert s["level1"] == [1, 32, 112, 112]
    assert s["level2"] == [1, 128, 56, 56]
    assert s["level2.eesp"] == [1, 96, 56, 56]  # 128 − 32: the pooled input fills the rest
    assert s["level3"] == [1, 256, 28, 28]
    assert s["level4"] == [1, 512, 14, 14]
    assert s["level5"] == [1, 1024, 7, 7]
    assert s["head"] == [1, 1280, 7, 7]
    assert s["level4_down.reinforce"] == [1, 512, 14, 14]  # the image, pooled 4 times
    model = build_model(ModelSpec("espnetv2"), "meta")
    assert (len(model.level3), len(model.level4), len(model.level5)) == (3, 7, 3)
    assert model.level5_down.reinforce is None  # the last strided unit has no image shortcut
    unit = model.level4[0]
    assert unit.reduce.conv.groups == 4 and unit.expand.conv.groups == 4
    assert [conv.groups for conv in unit.depthwise] == [128] * 4  # depthwise, d = 512 / 4


# --- IGCV1 / IGCV3 -----------------------------------------------------------------------------

def test_igc_block_is_complementary_one_path_between_every_pair():
    from explorer.native.igcv import IGCBlock

    block = IGCBlock(6, 6, primary=3, relu=False).eval()  # L = 3 partitions of M = 2 channels
    with torch.no_grad():
        block.primary.weight.zero_()
        block.primary.weight[:, :, 1, 1] = 1.0
        block.secondary.weight.fill_(1.0)
        block.bn = torch.nn.Identity()
        jac = torch.autograd.functional.jacobian(block, torch.zeros(1, 6, 1, 1)).reshape(6, 6)
    assert torch.equal(jac, torch.ones(6, 6))  # dense, and exactly one path per (output, input)
    assert block.primary.groups == 3 and block.secondary.groups == 2


def test_igcv1_l100m2_layout(reports):
    s = shapes(reports("igcv1"))
    assert s["conv1"] == [1, 100, 112, 112] and s["maxpool"] == [1, 100, 56, 56]
    assert [s[f"stage{i}"] for i in range(1, 5)] == [
        [1, 200, 56, 56], [1, 400, 28, 28], [1, 800, 14, 14], [1, 1600, 7, 7]]
    model = build_model(ModelSpec("igcv1"), "meta")
    primaries = [getattr(model, f"stage{i}").block2.igc1.primary.groups for i in range(1, 5)]
    secondaries = [getattr(model, f"stage{i}").block2.igc1.secondary.groups for i in range(1, 5)]
    assert (primaries, secondaries) == ([100, 200, 400, 800], [2, 2, 2, 2])  # L doubles, M = 2
    assert isinstance(model.stage1.block2.shortcut, torch.nn.Identity)
    assert model.stage2.block1.shortcut[0].groups == 200  # grouped 1×1/2 projection


def test_igcv3_d_layout(reports):
    s = shapes(reports("igcv3"))
    assert s["stem"] == [1, 32, 112, 112]
    assert [s[f"features.stage{i}"][1:] for i in range(1, 8)] == [
        [16, 112, 112], [24, 56, 56], [32, 28, 28], [64, 14, 14], [96, 14, 14], [160, 7, 7], [320, 7, 7]]
    assert s["last_conv"] == [1, 1280, 7, 7]
    model = build_model(ModelSpec("igcv3"), "meta")
    assert [len(stage) for stage in model.features] == [1, 4, 6, 8, 6, 6, 1]  # MobileNetV2's middle stages doubled
    block = model.features.stage4.block2
    assert (block.expand[0].groups, block.project[0].groups, block.depthwise[0].groups) == (2, 2, 384)
    assert block.shortcut and not model.features.stage4.block1.shortcut


def test_igcv3_permutations_undo_each_other():
    from explorer.native.shufflenet_v1 import ChannelShuffle

    x = torch.arange(24.0).view(1, 24, 1, 1)
    assert torch.equal(ChannelShuffle(12)(ChannelShuffle(2)(x)), x)


# --- CondenseNet -------------------------------------------------------------------------------

def test_condensenet74_layout_and_test_time_layers(reports):
    r = reports("condensenet")
    s = shapes(r)
    assert s["features.init_conv"] == [1, 16, 112, 112]
    assert [s[f"features.block{i}"] for i in range(1, 6)] == [
        [1, 48, 112, 112], [1, 144, 56, 56], [1, 400, 28, 28], [1, 1040, 14, 14], [1, 2064, 7, 7]]
    assert s["classifier.select"] == [1, 1032]  # the pruned FC reads half of the 2064 features
    model = build_model(ModelSpec("condensenet"), "meta")
    layer = model.features.block4.layer3  # input 400 + 2·64 = 528 channels, k = 64
    assert layer.conv1.select.index.numel() == 528  # C = G = 4: 4 groups × 528/4 kept channels
    assert (layer.conv1.conv.groups, layer.conv1.conv.out_channels, layer.conv2.conv.groups) == (4, 256, 4)
    assert layer.conv1.shuffle.groups == 4
    # The index is a buffer, not a parameter (the published count has no room for it).
    assert not any(name.endswith("index") for name, _ in model.named_parameters())
    assert sum(name.endswith("select.index") for name, _ in model.named_buffers()) == 4 + 6 + 8 + 10 + 8 + 1


def test_condensenet_default_index_interleaves_each_group_over_all_layers():
    from explorer.native.condensenet import interleaved_index

    assert interleaved_index(16, 4, 4) == [0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15]
    model = build_model(ModelSpec("condensenet"))  # CPU: the index has values
    index = model.features.block1.layer1.conv1.select.index
    assert sorted(index.tolist()) == list(range(16))
