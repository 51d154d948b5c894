"""Native transformers and MLPs written from their papers: PVT v1, CycleMLP, AS-MLP and RepMLP.

Every catalog variant is costed through the engine (ModelSpec + analyse, on the meta device) and
checked against its published parameters and multiply-adds (within 3 %). The exact counts (pinned in
explorer/data/measured_costs.json) and a real CPU forward of every variant are tests/native/test_native_contract.py's.
"""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.catalog import load_catalog, published_figures, resolve
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.native.registry import models_in
from explorer.spec import ModelSpec
from tests.native_support import cost_report, shapes

FAMILIES = ("pvt_v1", "cyclemlp", "as_mlp", "repmlp")
VARIANTS = sorted(name for family in FAMILIES for name in models_in(f"explorer.native.{family}"))

REPMLP_DEPLOY = (86_166_504, 3_076_915_200)  # folded: no local-perceptron convs, no BNs in RepMLP


def randomise_bn_statistics(model: nn.Module, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.rand(n, generator=generator) - 0.5)
            m.running_var.copy_(torch.rand(n, generator=generator) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=generator) + 0.5)
            m.bias.data.copy_(torch.rand(n, generator=generator) - 0.5)
    return model.eval()


# --- every variant: registered, costed, against the published figures ------------------------

def test_every_catalog_variant_of_these_families_is_built_and_tested_here():
    variants = [v for v in load_catalog().variants.values() if v.family_id in FAMILIES]
    assert {v.id for v in variants} == set(VARIANTS) and len(VARIANTS) == 4 + 5 + 3 + 1
    assert all(v.implemented and v.name in NATIVE_BUILDERS for v in variants)
    assert all(tuple(v.input_size) == (3, 224, 224) for v in variants)


# PVT v1, paper Table 2: 13.2 / 24.5 / 44.2 / 61.4 M params, 1.9 / 3.8 / 6.7 / 9.8 GFLOPs (multiply-adds).
# CycleMLP, official README: 15 / 27 / 38 / 52 / 76 M, 2.1 / 3.9 / 6.9 / 10.1 / 12.3 G (fvcore); our MACs
# include the 4 bilinear taps per sampled value of every Cycle FC (deform_conv2d).
# AS-MLP, official README: 28 / 50 / 88 M, 4.4 / 8.5 / 15.2 G.
# RepMLP-Res50-light-224, training-time structure; PaddleViT's port lists 87.1 M and 3.3 G.
@pytest.mark.parametrize("arch", VARIANTS)
def test_cost_against_the_published_figures(arch):
    r = cost_report(arch)  # every op has a cost formula
    paper = published_figures(resolve(arch))
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.03)
    assert r["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.03)  # published FLOPs are multiply-adds


# --- PVT v1 ----------------------------------------------------------------------------------

def test_pvt_v1_tiny_pyramid_and_spatial_reduction():
    r = cost_report("pvt_v1_tiny")
    s = shapes(r)
    # Tokens per stage: 56², 28², 14², 7² (+ the class token in stage 4), widths 64-128-320-512.
    assert s["stage1"] == [1, 56 * 56, 64]
    assert s["stage2"] == [1, 28 * 28, 128]
    assert s["stage3"] == [1, 14 * 14, 320]
    assert s["stage4"] == [1, 7 * 7 + 1, 512]
    # Spatial reduction: keys/values from a 7×7 grid in stages 1-3, the full 7×7 in stage 4.
    assert s["stage1.blocks.0.attn.sr"] == [1, 64, 7, 7]
    assert s["stage2.blocks.0.attn.sr"] == [1, 128, 7, 7]
    assert s["stage3.blocks.0.attn.sr"] == [1, 320, 7, 7]
    assert s["stage1.blocks.0.attn.kv"] == [1, 49, 128]
    assert s["stage4.blocks.0.attn.kv"] == [1, 50, 1024]
    model = build_model(ModelSpec("pvt_v1_large"), "meta")
    stages = [getattr(model, f"stage{i}") for i in range(1, 5)]
    assert [len(st.blocks) for st in stages] == [3, 8, 27, 3]
    assert [st.blocks[0].attn.num_heads for st in stages] == [1, 2, 5, 8]
    assert [st.blocks[0].attn.sr_ratio for st in stages] == [8, 4, 2, 1]
    assert [st.blocks[0].mlp.fc1.out_features // st.blocks[0].mlp.fc1.in_features for st in stages] == [8, 8, 4, 4]
    assert [st.patch_embed.proj.kernel_size for st in stages] == [(4, 4), (2, 2), (2, 2), (2, 2)]
    assert not hasattr(stages[3].blocks[0].attn, "sr")
    # Attention products: stage 1 of Tiny is 2 layers × (3136 × 49 × 64) for QK^T and again for AV.
    attn_macs = {row["name"]: row["self_macs"] for row in r["layers"]}["stage1.blocks.0.attn"]
    assert attn_macs == 2 * 3136 * 49 * 64


def test_pvt_v1_takes_other_input_sizes_by_resizing_the_position_embeddings():
    r = analyse(ModelSpec("pvt_v1_tiny", input_size=(3, 256, 256)), with_layers=False)
    assert r["uncounted_ops"] == []
    assert r["params"] == cost_report("pvt_v1_tiny")["params"]
    assert r["macs"] > cost_report("pvt_v1_tiny")["macs"]


# --- CycleMLP --------------------------------------------------------------------------------

def test_cycle_fc_offsets_follow_the_official_cycle():
    from explorer.native.cyclemlp import CycleFC, cycle_offsets

    assert cycle_offsets(7, (1, 3)) == [(0, 0), (0, 1), (0, -1), (0, 0), (0, 1), (0, -1), (0, 0)]
    assert cycle_offsets(4, (3, 1)) == [(0, 0), (1, 0), (-1, 0), (0, 0)]
    fc = CycleFC(5, 2, (3, 1))
    # torchvision layout: (Δy, Δx) per input channel (one offset group per channel, 1×1 kernel).
    assert fc.offset.flatten().tolist() == [0, 0, 1, 0, -1, 0, 0, 0, 1, 0]
    assert fc.dcn.weight.shape == (2, 5, 1, 1)  # the parameters of a channel FC
    with pytest.raises(ValueError):
        CycleFC(4, 4, (3, 3))


@pytest.mark.parametrize("pseudo_kernel", [(1, 3), (3, 1)])
def test_cycle_fc_is_a_zero_filled_shift_then_a_channel_fc(pseudo_kernel):
    from explorer.native.cyclemlp import CycleFC, cycle_offsets

    torch.manual_seed(0)
    fc = CycleFC(7, 5, pseudo_kernel)
    x = torch.randn(2, 7, 6, 9)
    padded = F.pad(x, (1, 1, 1, 1))
    shifted = torch.stack([padded[:, c, 1 + dy:7 + dy, 1 + dx:10 + dx]
                           for c, (dy, dx) in enumerate(cycle_offsets(7, pseudo_kernel))], dim=1)
    with torch.no_grad():
        expected = F.conv2d(shifted, fc.dcn.weight, fc.dcn.bias)
        assert torch.allclose(fc(x), expected, atol=1e-5)


def test_cyclemlp_b1_layout_and_offset_view():
    from explorer.views.deformable import capture_offsets, deformable_layers

    r = cost_report("cyclemlp_b1")
    s = shapes(r)
    assert s["patch_embed"] == [1, 64, 56, 56]  # 7×7 stride 4, padding 2
    assert s["stage1"] == [1, 56, 56, 64]
    assert s["stage2"] == [1, 28, 28, 128]
    assert s["stage3"] == [1, 14, 14, 320]
    assert s["stage4"] == [1, 7, 7, 512]
    ops = {row["op"]: row for row in r["ops"]}
    assert ops["torchvision.deform_conv2d.default"]["count"] == 2 * (2 + 2 + 4 + 2)
    model = build_model(ModelSpec("cyclemlp_b1"))
    assert [len(getattr(model, f"stage{i}")) for i in range(1, 5)] == [2, 2, 4, 2]
    names = [name for name, _ in deformable_layers(model)]
    assert len(names) == 20 and names[:2] == ["stage1.0.token_mixer.cycle_1x3.dcn", "stage1.0.token_mixer.cycle_3x1.dcn"]
    captured = capture_offsets(model, torch.randn(1, 3, 64, 64), layers=names[:2])
    horizontal = captured[names[0]]
    assert horizontal["offset"].shape == (1, 128, 16, 16) and horizontal["offset_groups"] == 64
    assert horizontal["offset"][0, :8, 3, 5].tolist() == [0, 0, 0, 1, 0, -1, 0, 0]
    assert captured[names[1]]["offset"][0, :8, 0, 0].tolist() == [0, 0, 1, 0, -1, 0, 0, 0]


# --- AS-MLP ----------------------------------------------------------------------------------

def test_axial_shift_moves_channel_groups_with_zero_fill():
    from explorer.native.as_mlp import axial_shift

    x = torch.arange(1.0, 6.0).view(1, 1, 1, 5).repeat(1, 5, 1, 1)  # 5 channels, each [1 2 3 4 5] along W
    out = axial_shift(x, 5, dim=3)[0, :, 0].tolist()
    assert out == [[3, 4, 5, 0, 0], [2, 3, 4, 5, 0], [1, 2, 3, 4, 5], [0, 1, 2, 3, 4], [0, 0, 1, 2, 3]]
    assert torch.equal(axial_shift(x.transpose(2, 3), 5, dim=2), axial_shift(x, 5, dim=3).transpose(2, 3))
    # 96 channels in 5 groups of ⌈96/5⌉ = 20 (the last has 16), as torch.chunk and the official kernel.
    y = torch.ones(1, 96, 1, 5)
    zeros_at_right_end = (axial_shift(y, 5, dim=3)[0, :, 0, -1] == 0).sum().item()
    assert zeros_at_right_end == 20 + 20  # groups 0 and 1 move left by 2 and 1


def test_as_mlp_t_layout():
    r = cost_report("as_mlp_t")
    s = shapes(r)
    assert s["patch_embed"] == [1, 96, 56, 56]
    assert s["stage1"] == [1, 192, 28, 28]  # patch merging ends stages 1-3
    assert s["stage2"] == [1, 384, 14, 14]
    assert s["stage3"] == [1, 768, 7, 7]
    assert s["stage4"] == [1, 768, 7, 7]
    model = build_model(ModelSpec("as_mlp_b"), "meta")
    assert model.patch_embed.proj.out_channels == 128
    assert [sum(1 for name, _ in getattr(model, f"stage{i}").named_children() if name != "downsample")
            for i in range(1, 5)] == [2, 2, 18, 2]
    assert model.stage1[0].axial_shift.shift_size == 5
    assert all(m.num_groups == 1 for m in model.modules() if isinstance(m, nn.GroupNorm))


# --- RepMLP ----------------------------------------------------------------------------------

def test_conv_to_fc_matrix_equals_the_grouped_conv():
    from explorer.native.repmlp import conv_to_fc

    torch.manual_seed(0)
    kernel = torch.randn(6, 2, 5, 3)  # O = 6, C = 4 in 2 groups, a 5×3 kernel
    x = torch.randn(3, 4, 7, 6)
    conv = F.conv2d(x, kernel, padding=(2, 1), groups=2)
    fc = F.conv2d(x.reshape(3, 4 * 42, 1, 1), conv_to_fc(kernel, 7, 6)[..., None, None], groups=2)
    assert torch.allclose(fc.reshape(3, 6, 7, 6), conv, atol=1e-5)


# (8, 14) and (16, 28): small blocks with all three perceptrons; (64, 28) and (128, 14): the blocks of
# RepMLP-Res50-light's stages 2 and 3 (FC3 sums 784 and 1568 products per output, outputs up to about 8),
# where fp32 rounding alone reaches about 1e-5, so the bound there is 1e-5 of the largest output.
@pytest.mark.slow
@pytest.mark.parametrize("channels, side", [(8, 7), (8, 14), (16, 28), (64, 28), (128, 14)])
def test_repmlp_block_fold_is_exact(channels, side):
    from explorer.native.repmlp import RepMLP

    torch.manual_seed(0)
    block = randomise_bn_statistics(RepMLP(channels, channels, side, side, 7, 7, (1, 3, 5), 1, 4))
    folded = block.fold()
    assert folded.deploy and getattr(folded, "avg_bn", None) is None
    assert folded.need_global_perceptron == (side > 7)  # one partition needs no global perceptron
    assert not len(folded.local) and folded.fc3_bn is None and folded.fc3.bias is not None
    x = torch.randn(2, channels, side, side)
    with torch.no_grad():
        train_out, deploy_out = block(x), folded(x)
    scale = train_out.abs().max().item()
    assert scale > 1  # a real signal, not zeros
    bound = 1e-5 if channels <= 16 else 1e-5 * scale
    assert (train_out - deploy_out).abs().max().item() <= bound


def test_repmlp_res50_light_layout_and_deploy_structure():
    r = cost_report("repmlp")
    s = shapes(r)
    assert s["stem"] == [1, 64, 56, 56]
    assert s["stage2"] == [1, 512, 28, 28] and s["stage3"] == [1, 1024, 14, 14] and s["stage4"] == [1, 2048, 7, 7]
    assert s["stage2.1.repmlp"] == [1, 64, 28, 28]  # light block: C/8 channels
    assert s["stage3.1.repmlp.fc3"] == [4, 128 * 49, 1, 1]  # (N·parts, O·h·w, 1, 1)
    rows = {row["name"]: row for row in r["layers"]}
    # FC3: grouped 6272 → 6272 FC with 4 groups on each of the 4 partitions of a 14×14 map.
    assert rows["stage3.1.repmlp.fc3"]["params"] == 6272 * 6272 // 4
    assert rows["stage3.1.repmlp.fc3"]["macs"] == 4 * 6272 * 6272 // 4
    model = build_model(ModelSpec("repmlp"), "meta")
    kinds = [[type(b).__name__ for b in getattr(model, f"stage{i}")] for i in range(1, 5)]
    assert kinds == [["Bottleneck"] * 3, ["Bottleneck"] + ["RepMLPLightBlock"] * 3,
                     ["Bottleneck"] + ["RepMLPLightBlock"] * 5, ["Bottleneck"] * 3]
    with pytest.raises(ExplorerError, match="built for 64×28×28 maps"):  # FC1/FC2 are sized for 224
        analyse(ModelSpec("repmlp", input_size=(3, 192, 192)), with_layers=False)
    deploy = analyse(ModelSpec("repmlp", options=(("deploy", True),)), with_layers=False)
    assert deploy["uncounted_ops"] == []
    assert (deploy["params"], deploy["macs"]) == REPMLP_DEPLOY


def test_the_explorers_fold_finds_every_repmlp_block():
    from explorer.reparam import fold_model as explorer_fold

    folded, count = explorer_fold(build_model(ModelSpec("repmlp"), "meta"))
    assert count == 3 + 5  # the stride-1 blocks of stages 2 and 3
    assert sum(p.numel() for p in folded.parameters()) == REPMLP_DEPLOY[0]


@pytest.mark.slow
def test_repmlp_res50_folded_network_matches_the_training_network():
    from explorer.native.repmlp import fold_model

    spec = ModelSpec("repmlp")
    model = randomise_bn_statistics(build_model(spec))
    x = example_input(spec)
    folded = fold_model(model)
    assert sum(p.numel() for p in folded.parameters()) == REPMLP_DEPLOY[0]
    with torch.no_grad():
        train_out, deploy_out = model(x), folded(x)
    assert train_out.shape == (1, 1000) and torch.isfinite(train_out).all()
    scale = train_out.abs().max().item()
    assert (train_out - deploy_out).abs().max().item() <= 1e-5 * max(scale, 1.0)
