"""Swaps on real models, checked against independent implementations and the papers."""
import pytest
import timm
import torch

from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import build_model
from explorer.reparam import fold_report
from explorer.spec import ModelSpec
from explorer.swaps import PRESETS, apply_swaps, parse_swap, swap_points


def count_type(model, name):
    return sum(type(m).__name__ == name for m in model.modules())


def test_dcnv2_preset_makes_13_deformable_layers_in_resnet50():
    model = build_model(ModelSpec("resnet50", swaps=("preset:dcnv2",)), "meta")
    assert count_type(model, "ModulatedDeformConv") == 13  # 4 + 6 + 3 blocks in stages 3-5


def test_dcnv1_preset_makes_3_deformable_layers_in_res5():
    model = build_model(ModelSpec("resnet50", swaps=("preset:dcnv1",)), "meta")
    assert count_type(model, "DeformConv") == 3


def test_dcn_swaps_are_costed_with_the_deformable_kernel():
    base = analyse(ModelSpec("resnet50"), with_layers=False)
    dcn = analyse(ModelSpec("resnet50", swaps=("preset:dcnv2",)), with_layers=False)
    assert "torchvision.deform_conv2d.default" in {op["op"] for op in dcn["ops"]}
    assert dcn["macs"] > base["macs"] and dcn["uncounted_ops"] == []


def test_our_se_resnet50_has_timm_seresnet50_parameter_count():
    ours = analyse(ModelSpec("resnet50", swaps=("preset:se",)), with_layers=False)
    with torch.device("meta"):
        reference = timm.create_model("seresnet50")
    assert ours["params"] == sum(p.numel() for p in reference.parameters())


def test_eca_resnet50_adds_only_a_few_dozen_parameters():
    # ECA-Net: "ECA-Net50 ... 24.37M vs 24.37M" — each module adds k weights (k = 3 or 5 here).
    base = analyse(ModelSpec("resnet50"), with_layers=False)
    eca = analyse(ModelSpec("resnet50", swaps=("preset:eca",)), with_layers=False)
    model = build_model(ModelSpec("resnet50", swaps=("preset:eca",)), "meta")
    kernels = [m.conv.kernel_size[0] for m in model.modules() if type(m).__name__ == "ECA"]
    assert len(kernels) == 16
    assert eca["params"] - base["params"] == sum(kernels)
    assert eca["params"] - base["params"] < 100


def test_swapped_model_spec_round_trips_through_the_url():
    spec = ModelSpec("resnet50", swaps=("conv:dcnv2@layer4.*.conv2", "attn:eca@layer3.*"))
    again = ModelSpec.from_query(spec.to_query())
    assert again == spec
    assert analyse(again, with_layers=False)["macs"] == analyse(spec, with_layers=False)["macs"]


@pytest.mark.parametrize(
    "swap,message",
    [
        ("conv:dcn@conv1x", "fits nowhere"),
        ("conv:dcn@layer1.0.conv1", "1×1 conv"),
        ("conv:nope@all", "unknown conv block"),
        ("attn:se@", "does not read as"),
        ("attn:se(reduction=__import__)@all", None),
        ("preset:nope", "unknown preset"),
    ],
)
def test_swaps_that_cannot_fit_are_refused_with_the_reason(swap, message):
    with pytest.raises(ExplorerError, match=message):
        analyse(ModelSpec("resnet50", swaps=(swap,)))


def test_swap_points_group_places_by_stage():
    points = swap_points(build_model(ModelSpec("resnet50"), "meta"))
    three_by_three = [c for c in points["conv"] if c["kernel"] == [3, 3]]
    assert len(three_by_three) == 16
    assert {c["stage"] for c in three_by_three} == {"layer1", "layer2", "layer3", "layer4"}
    assert len(points["residual_block"]) == 16
    mbv3 = swap_points(build_model(ModelSpec("mobilenet_v3_large"), "meta"))
    assert len(mbv3["attention"]) == 8  # its SE modules


def test_replacing_mobilenet_v3_se_with_eca():
    base = build_model(ModelSpec("mobilenet_v3_large"), "meta")
    swapped = build_model(ModelSpec("mobilenet_v3_large", swaps=("attn:eca@all",)), "meta")
    assert count_type(base, "SqueezeExcitation") == 8 and count_type(swapped, "SqueezeExcitation") == 0
    assert count_type(swapped, "ECA") == 8


@pytest.mark.slow
@pytest.mark.parametrize("block", ["doconv", "repvgg", "dbb"])
def test_fold_gives_identical_outputs(block):
    where = "all" if block == "doconv" else "layer1.*.conv1,layer2.*.conv2"
    report = fold_report(ModelSpec("resnet18", input_size=(3, 64, 64), swaps=(f"conv:{block}@{where}",)))
    assert report["folded"] > 0
    assert report["max_abs_diff"] <= 1e-5 * max(1.0, report["output_scale"])
    base = analyse(ModelSpec("resnet18", input_size=(3, 64, 64)), with_layers=False)
    assert report["folded_cost"]["macs"] == base["macs"]


def test_parse_swap_options_are_data_never_code():
    swap = parse_swap("attn:se(reduction=8)@layer4.*")
    assert dict(swap.options) == {"reduction": 8} and swap.where == ("layer4.*",)
    assert str(swap) == "attn:se(reduction=8)@layer4.*"


def test_every_preset_applies_to_resnet50():
    for name in PRESETS:
        model = build_model(ModelSpec("resnet50"), "meta")
        with torch.device("meta"):
            changed = apply_swaps(model, [f"preset:{name}"])
        assert changed, name


def test_norm_swap_to_group_norm():
    base = analyse(ModelSpec("resnet18"), with_layers=False)
    gn = analyse(ModelSpec("resnet18", swaps=("norm:gn@all",)), with_layers=False)
    model = build_model(ModelSpec("resnet18", swaps=("norm:gn@all",)), "meta")
    assert count_type(model, "BatchNorm2d") == 0 and count_type(model, "GroupNorm") == 20
    assert gn["params"] == base["params"]  # both carry one scale and one shift per channel
    assert gn["macs"] == base["macs"]


def test_stn_in_front_resamples_the_input_and_is_costed():
    spec = ModelSpec("resnet18", input_size=(3, 64, 64), swaps=("front:stn@input",))
    result = analyse(spec)
    stn_row = next(r for r in result["layers"] if r["name"] == "stn")
    assert stn_row["calls"] == 1 and stn_row["macs"] > 0
    assert "aten.grid_sampler_2d.default" in {op["op"] for op in result["ops"]}
    model = build_model(spec, "cpu")
    plain = build_model(ModelSpec("resnet18", input_size=(3, 64, 64)), "cpu")
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("stn.")})
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():  # an STN starts as the identity transform
        assert torch.allclose(model(x), plain(x), atol=1e-4)
    with pytest.raises(ExplorerError, match="@input"):
        analyse(ModelSpec("resnet18", swaps=("front:stn@layer1",)))


def test_attention_swaps_find_residual_blocks_of_native_models():
    """SpineNet's bottleneck and residual blocks, IGCV1's and Darknet-53's residual blocks take SE on the
    branch, sized by the branch's last layer: the added parameters are those of one SE per block."""
    from explorer.blocks import SE
    from explorer.swaps import _residual_blocks

    for arch, blocks in (("spinenet49s", 17), ("igcv1", 8), ("asff", 23)):
        base = build_model(ModelSpec(arch), "meta")
        found = _residual_blocks(base)
        assert len(found) == blocks, arch
        swapped = build_model(ModelSpec(arch, swaps=("attn:se@all",)), "meta")
        assert count_type(swapped, "SE") == blocks, arch
        added = sum(p.numel() for p in swapped.parameters()) - sum(p.numel() for p in base.parameters())
        assert added == sum(sum(p.numel() for p in SE(channels).parameters()) for *_, channels in found), arch
    # SpineNet-49S's first stem bottleneck ends with 4 × 41 = 164 channels (0.65 × 64 filters, rounded down)
    assert _residual_blocks(build_model(ModelSpec("spinenet49s"), "meta"))[0][2:] == ("conv3", 164)
    with pytest.raises(ExplorerError, match="this model has neither"):
        build_model(ModelSpec("refinedet320", swaps=("attn:se@all",)), "meta")
