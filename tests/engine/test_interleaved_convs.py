"""IGCV1 / IGCV2 conv swaps and the channel-connectivity view: hand-counted weights, the complementary
condition (exactly one path between every input and output channel), and the refusals."""
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from explorer.blocks import CONVS
from explorer.blocks.convs import branch_widths
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import build_model
from explorer.native.igcv import igcv1, igcv3
from explorer.spec import ModelSpec
from explorer.views.connectivity import channel_paths, connectivity_candidates
from tests.cli_support import run_cli


def _params(module):
    return sum(p.numel() for p in module.parameters())


def _wrapped(block):
    model = nn.Sequential()
    model.add_module("block", block)
    return model


@pytest.mark.parametrize(("cin", "cout", "chain", "widths"), [
    (64, 64, 3, (8, 8)),  # the balance condition: K = √64
    (64, 64, 4, (4, 4, 4)),  # ∛64
    (96, 96, 3, (8, 12)),  # no whole root: the closest pair
    (64, 128, 3, (8, 8)),  # the last conv widens: 8 groups divide 128
    (24, 24, 4, (2, 3, 4)),
])
def test_branch_widths_multiply_to_the_channels(cin, cout, chain, widths):
    assert branch_widths(cin, cout, chain - 1) == widths
    assert int(np.prod(widths)) == cin


def test_branch_widths_fall_back_to_a_dense_last_conv():
    # 7 output channels split into no group count of 64 inputs but 1: the last conv reads all 64
    assert branch_widths(64, 7, 2) == (1, 64)


def test_igcv2_weights_by_hand():
    block = CONVS["igcv2"](64, 64, 3, padding=1, bias=False)
    # channel-wise 3×3: 64·9; two group 1×1 convs with 8 channels per branch: 2 · 64·8
    assert _params(block) == 64 * 9 + 2 * 64 * 8 == 1600
    wide = CONVS["igcv2"](64, 128, 3, stride=2, padding=1, bias=True)
    assert _params(wide) == 64 * 9 + 64 * 8 + 128 * 8 + 128


def test_igc_weights_by_hand():
    block = CONVS["igc"](64, 64, 3, padding=1, bias=False)  # M = 2 ⇒ L = 32 primary partitions
    assert block.partitions == (32, 2)
    assert _params(block) == 64 * 2 * 9 + 64 * 32 == 3200


@pytest.mark.slow
@pytest.mark.parametrize(("cin", "cout", "chain"), [(64, 64, 3), (64, 128, 3), (24, 24, 4), (96, 96, 3),
                                                    (64, 64, 4), (256, 512, 3), (30, 60, 4)])
def test_igcv2_meets_the_complementary_condition(cin, cout, chain):
    report = channel_paths(_wrapped(CONVS["igcv2"](cin, cout, 3, padding=1, chain=chain)), "block")
    assert report["exactly_one_path"] and report["paths"].shape == (cout, cin)
    assert report["product_of_factors"]
    # every factor but the whole is sparse: the group convs connect K_l inputs per output
    convs = [f for f in report["factors"] if "conv" in f["kind"]]
    assert [f["nonzero"] for f in convs[1:]] == [
        f["shape"][0] * w for f, w in zip(convs[1:], branch_widths(cin, cout, chain - 1))]


@pytest.mark.parametrize(("cin", "cout", "stride"), [(64, 64, 1), (64, 128, 2)])
def test_igc_meets_the_complementary_condition(cin, cout, stride):
    report = channel_paths(_wrapped(CONVS["igc"](cin, cout, 3, stride=stride, padding=1)), "block")
    assert report["exactly_one_path"] and report["product_of_factors"]


def test_a_plain_group_conv_is_not_dense():
    model = _wrapped(nn.Sequential(nn.Conv2d(16, 16, 1, groups=4), nn.Conv2d(16, 16, 1, groups=4)))
    report = channel_paths(model, "block")
    assert not report["dense"] and report["reached_fraction"] == 0.25
    assert report["max_paths"] == 4  # 4 channels per group, twice: 4 paths inside a group


def test_igcv1_residual_block_counts_the_shortcut():
    # two IGC blocks, each one path per pair ⇒ 200 paths (one per middle channel), plus the 1×1 group shortcut
    report = channel_paths(igcv1(), "stage1.block1")
    paths = report["paths"]
    assert paths.shape == (200, 100)
    assert report["min_paths"] == 200 and report["max_paths"] == 201
    assert (paths == 201).sum() == 200  # the shortcut (100 groups, 2 outputs each) adds one path per output
    assert not report["product_of_factors"]


def test_swap_on_resnet18_changes_params_and_macs_by_hand():
    plain = analyse(ModelSpec("resnet18"), with_layers=False)
    swapped = analyse(ModelSpec("resnet18", swaps=("conv:igcv2@layer1.0.conv1",)), with_layers=False)
    delta = 1600 - 64 * 64 * 9  # the 3×3 conv had no bias; neither has the block
    assert swapped["params"] - plain["params"] == delta
    assert swapped["macs"] - plain["macs"] == delta * 56 * 56


def test_swaps_refuse_grouped_convs_and_igc_refuses_pointwise_ones():
    with pytest.raises(ExplorerError, match="1×1 conv"):
        build_model(ModelSpec("resnet50", swaps=("conv:igc@layer1.0.conv1",)), device="meta")
    with pytest.raises(ExplorerError, match="grouped"):
        build_model(ModelSpec("mobilenet_v2", swaps=("conv:igc@features.2.conv.1.0",)), device="meta")


@pytest.mark.slow
def test_igcv2_on_mobilenet_pointwise_convs_makes_igcv2_blocks():
    # In place of a stride-1 1×1 conv the chain stands alone; MobileNet's depthwise conv before it is W1.
    spec = ModelSpec("mobilenetv1_100", swaps=("conv:igcv2@*.conv_pw",))
    model = build_model(spec, device="cpu")
    pointwise = model.get_submodule("blocks.4.0.conv_pw")  # 512 → 1024
    assert "channelwise" not in dict(pointwise.chain.named_children())
    assert pointwise.widths == (32, 16) and _params(pointwise) == 512 * 32 + 1024 * 16
    report = channel_paths(model, "blocks.4.0")  # depthwise 3×3 (stride 2) + the chain: one IGCV2 block
    assert report["exactly_one_path"] and report["factors"][0]["kind"] == "3×3 conv, channel-wise"
    plain = analyse(ModelSpec("mobilenetv1_100"))
    assert round(plain["macs"] / 1e6) == 569  # MobileNetV1 1.0: the paper's 569 M multiply-adds
    # By hand, per pointwise conv C_in → C_out on an H×W map: C_in·C_out weights become
    # C_in·(K_2 + … + K_{L-1}) + C_out·K_L, and the MACs change by that difference × H·W.
    d_params = d_macs = 0
    for row in plain["layers"]:
        if row["name"].endswith("conv_pw"):
            cin, cout = row["params"] // row["output_shape"][1], row["output_shape"][1]
            widths = branch_widths(cin, cout, 2)
            delta = cin * widths[0] + cout * widths[1] - cin * cout
            d_params += delta
            d_macs += delta * row["output_shape"][2] * row["output_shape"][3]
    swapped = analyse(spec, with_layers=False)
    assert swapped["params"] - plain["params"] == d_params
    assert swapped["macs"] - plain["macs"] == d_macs
    assert (round(swapped["params"] / 1e4), round(swapped["macs"] / 1e6)) == (134, 91)  # 1.34 M, 91 M


@pytest.mark.slow
def test_candidates_name_the_swapped_block_not_its_wrapper():
    model = build_model(ModelSpec("resnet18", swaps=("conv:igcv2@layer1.0.conv1",)), device="cpu")
    names = [c["name"] for c in connectivity_candidates(model)]
    assert "layer1.0.conv1" in names and "layer1.0.conv1.chain" not in names
    assert "layer1.0" in names  # the basic block around it: still only convs, BN, ReLU and the shortcut
    assert connectivity_candidates(build_model(ModelSpec("resnet18"), device="cpu")) == []  # no grouped conv


@pytest.mark.slow
def test_igcv3_block_is_dense():
    model = igcv3()
    report = channel_paths(model, "features.stage2.block2")  # 24 → 144 → 24 with the identity shortcut
    assert report["dense"]
    assert report["max_paths"] == report["min_paths"] + 1  # the shortcut adds one path on the diagonal


def test_blocks_that_are_not_conv_chains_are_refused():
    dcn = build_model(ModelSpec("resnet18", swaps=("conv:dcn@layer1.0.conv1",)), device="cpu")
    with pytest.raises(ExplorerError, match="DeformConv"):
        channel_paths(dcn, "layer1.0")
    se = build_model(ModelSpec("resnet18", swaps=("attn:se@all",)), device="cpu")
    with pytest.raises(ExplorerError, match="not a sum of conv paths"):  # SE multiplies by a gate
        channel_paths(se, "layer1.0")
    with pytest.raises(ExplorerError, match="no module named"):
        channel_paths(se, "layer9")


def test_view_leaves_the_model_untouched():
    model = igcv1()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    channel_paths(model, "stage1.block1")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_cli_connectivity_view(tmp_path):
    out = tmp_path / "paths.npz"
    proc = run_cli("view", "resnet18", "connectivity", "--swap", "conv:igcv2@layer1.0.conv1", "--layer",
                   "layer1.0.conv1", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["exactly_one_path"] and result["in_channels"] == 64
    assert [f["name"] for f in result["factors"]] == ["chain.channelwise", "chain.group2", "chain.permute2",
                                                      "chain.group3"]
    arrays = np.load(out)
    assert (arrays["paths"] == 1).all() and arrays["paths"].shape == (64, 64)
    missing = run_cli("view", "igcv1", "connectivity", "--json")
    assert missing.returncode != 0 and "stage1.block1" in missing.stderr and "Traceback" not in missing.stderr


@pytest.mark.slow
def test_shufflenet_unit_reaches_every_input_only_with_its_shuffle():
    model = build_model(ModelSpec("shufflenet_v1_g3"), device="cpu")
    report = channel_paths(model, "stage2.unit2")  # 240 channels, 3 groups, a 60-channel bottleneck
    assert report["dense"]
    # each group of the second group conv gets 7, 7 and 6 channels from the three first-conv groups; +1 shortcut
    assert (report["min_paths"], report["max_paths"]) == (6, 8)
    model.stage2.unit2.shuffle = nn.Identity()
    report = channel_paths(model, "stage2.unit2")
    assert report["reached_fraction"] * 240 == 80  # an output sees its own group's 80 inputs only


@pytest.mark.slow
def test_wide_blocks_are_counted_without_the_factor_by_factor_trace():
    report = channel_paths(igcv1(), "stage4.block2")  # 1600 channels: two IGC blocks and the identity
    assert (report["min_paths"], report["max_paths"]) == (1600, 1601)
    assert report["product_of_factors"] is None and all("so_far" not in f for f in report["factors"])
    assert all(f["matrix"].dtype == np.uint8 for f in report["factors"])


def test_igcv2_chain_is_bounded():
    with pytest.raises(ExplorerError, match="chain from 2 to 8"):
        build_model(ModelSpec("resnet18", swaps=("conv:igcv2(chain=30)@layer1.0.conv1",)), device="meta")
