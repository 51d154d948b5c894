"""Swin shifted-window masks and receptive fields, checked against real models and known values."""
import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from explorer.models import build_model
from explorer.spec import ModelSpec
from explorer.views.receptive_field import (
    effective_rf,
    find_row,
    receptive_field_report,
    theoretical_rf,
    unit_box,
)
from explorer.views.swin import attention_cost, shifted_window_mask, swin_config, swin_masks_for

# The worked example (notes seeds-001 A5e and the table after A6): at 224 x 224, window 7, shift 3,
# the shifted blocks have 15/64, 7/16 and 3/4 windows carrying a mask in stages 1-3 (the last window
# row and column: 8 + 8 - 1 = 15, 4 + 4 - 1 = 7, 2 + 2 - 1 = 3); stage 4 (7 x 7 = one window) is not shifted.
EXPECTED = {1: (15, 64), 2: (7, 16), 3: (3, 4)}


# --------------------------------------------------------------------------------------------
# Swin
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv_swin():
    return build_model(ModelSpec("swin_t"), device="cpu")


@pytest.fixture(scope="module")
def timm_swin():
    return build_model(ModelSpec("timm:swin_tiny_patch4_window7_224"), device="cpu")


@pytest.mark.slow
@pytest.mark.parametrize("which", ["tv_swin", "timm_swin"])
def test_swin_config_read_from_model(which, request):
    cfg = swin_config(request.getfixturevalue(which), input_hw=(224, 224))
    assert cfg["library"] == ("torchvision" if which == "tv_swin" else "timm")
    assert cfg["patch_size"] == [4, 4]
    assert cfg["embed_dim"] == 96
    assert cfg["depths"] == [2, 2, 6, 2]
    assert cfg["num_heads"] == [3, 6, 12, 24]
    assert cfg["dims"] == [96, 192, 384, 768]
    assert cfg["resolutions"] == [[56, 56], [28, 28], [14, 14], [7, 7]]
    assert cfg["window_size"] == [7, 7]
    assert [st["windows"] for st in cfg["stages"]] == [64, 16, 4, 1]
    for st in cfg["stages"][:3]:
        assert [b["shift"] for b in st["blocks"]] == [[0, 0], [3, 3]] * (st["depth"] // 2)
    # Stage 4: configured with shift 3 on its odd block, but the 7 x 7 map is one window: no shift.
    assert [b["shift_nominal"] for b in cfg["stages"][3]["blocks"]] == [[0, 0], [3, 3]]
    assert [b["shift"] for b in cfg["stages"][3]["blocks"]] == [[0, 0], [0, 0]]


@pytest.mark.parametrize("which", ["tv_swin", "timm_swin"])
def test_swin_worked_example_counts(which, request):
    model = request.getfixturevalue(which)
    for stage, (masked, total) in EXPECTED.items():
        shifted = swin_masks_for(model, (224, 224), stage, 1)
        assert shifted["shifted"] is True
        assert shifted["shift"] == [3, 3]
        assert (shifted["masked_windows"], shifted["total_windows"]) == (masked, total)
        assert shifted["regions"] == 9
        plain = swin_masks_for(model, (224, 224), stage, 0)
        assert plain["shifted"] is False and plain["masked_windows"] == 0
    for block in (0, 1):
        last = swin_masks_for(model, (224, 224), 4, block)
        assert last["shifted"] is False
        assert (last["masked_windows"], last["total_windows"]) == (0, 1)
    # JSON-friendly
    json.dumps(swin_masks_for(model, (224, 224), 1, 1))


def _tv_stage_modules(model):
    return [m for m in model.features if isinstance(m, nn.Sequential) and hasattr(m[0], "attn")]


@pytest.mark.slow
@pytest.mark.parametrize("hw", [(224, 224), (256, 256), (200, 232)])
def test_mask_equals_torchvision_own_mask(tv_swin, monkeypatch, hw):
    """Capture the logits torchvision's shifted_window_attention feeds to softmax with q = k = 0 and a
    zero relative-position bias: what remains is exactly the attention mask the library built.
    256 and 200 x 232 exercise the padding (64 -> 70, 8 -> 14, ...) and a shift along one axis only."""
    import torchvision.models.swin_transformer as tvs

    captured = []
    real_f = tvs.F

    class _F:
        def __getattr__(self, name):
            return getattr(real_f, name)

        @staticmethod
        def softmax(x, *args, **kwargs):
            captured.append(x.detach().clone())
            return real_f.softmax(x, *args, **kwargs)

    monkeypatch.setattr(tvs, "F", _F())
    cfg = swin_config(tv_swin, hw)
    for stage_idx, stage in enumerate(_tv_stage_modules(tv_swin)):
        res = cfg["stages"][stage_idx]["resolution"]
        block = copy.deepcopy(stage[1])  # the SW-MSA block of the stage
        with torch.no_grad():
            block.attn.qkv.weight.zero_()
            block.attn.qkv.bias.zero_()
            block.attn.relative_position_bias_table.zero_()
            captured.clear()
            block.attn(torch.randn(1, res[0], res[1], block.norm1.normalized_shape[0]))
        logits = captured[0]  # (B * nW, heads, N, N)
        ours = swin_masks_for(tv_swin, hw, stage_idx + 1, 1)
        mask = np.asarray(ours["masks"], dtype=np.float32)
        nw = ours["total_windows"]
        got = logits.view(1, nw, logits.shape[1], logits.shape[2], logits.shape[3])[0]
        for h in range(got.shape[1]):
            np.testing.assert_array_equal(got[:, h].numpy(), mask)
        assert bool((mask == -100.0).any()) == ours["shifted"]
        if hw == (224, 224):
            assert ours["shifted"] == (stage_idx < 3)  # stage 4: one 7 x 7 window, no shift, no mask
    if hw == (200, 232):  # stage 4 is 7 x 8: padded to 7 x 14, shifted along W only
        assert swin_masks_for(tv_swin, hw, 4, 1)["shift"] == [0, 3]


def test_mask_equals_timm_attn_mask_buffer(timm_swin):
    checked = 0
    for s, stage in enumerate(timm_swin.layers):
        for b, block in enumerate(stage.blocks):
            ours = swin_masks_for(timm_swin, (224, 224), s + 1, b)
            if block.attn_mask is None:
                assert ours["shifted"] is False
                continue
            np.testing.assert_array_equal(block.attn_mask.numpy(), np.asarray(ours["masks"], dtype=np.float32))
            checked += 1
    assert checked == 1 + 1 + 3  # the shifted blocks of stages 1-3


def test_label_grid_14x14_window7_shift3():
    m = shifted_window_mask((14, 14), 7, 3)
    assert m["shifted"] and m["regions"] == 9
    assert len(np.unique(m["labels"])) == 9
    assert m["labels"].shape == (14, 14)
    # The slices (0, -7), (-7, -3), (-3, None): 7, 4 and 3 rows/columns.
    assert m["labels"][0].tolist() == [0] * 7 + [1] * 4 + [2] * 3
    assert m["labels"][:, 0].tolist() == [0] * 7 + [3] * 4 + [6] * 3
    assert m["window_grid"] == (2, 2) and m["masked_windows"] == 3
    assert set(np.unique(m["masks"]).tolist()) == {0.0, -100.0}
    assert m["masks"].shape == (4, 49, 49)


def test_whole_map_window_is_not_shifted():
    m = shifted_window_mask((7, 7), 7, 3)
    assert m["shifted"] is False and m["shift"] == [0, 0] and m["masked_windows"] == 0
    # A smaller map is padded to one window (torchvision): not shifted either.
    m = shifted_window_mask((5, 6), 7, 3)
    assert m["padded_hw"] == [7, 7] and m["shifted"] is False


def test_attention_cost_formulas():
    h = w = 56
    C, M = 96, 7
    cost = attention_cost((h, w), C, M)
    assert cost["msa"] == 4 * h * w * C**2 + 2 * (h * w) ** 2 * C == 2_003_828_736
    assert cost["w_msa"] == 4 * h * w * C**2 + 2 * M**2 * h * w * C == 145_108_992
    assert cost["projections"] == 115_605_504
    # Per window 4 M^2 C^2 + 2 M^4 C, times 64 windows (the code's flops(), notes A5g).
    assert cost["w_msa"] == 64 * (4 * M**2 * C**2 + 2 * M**4 * C)


# --------------------------------------------------------------------------------------------
# Receptive fields
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_vgg16_conv5_3():
    # Each 3x3/1 conv adds 2*jump, each 2x2/2 pool adds 1*jump then doubles the jump:
    #   conv1_1,1_2: 1+2+2 = 5          pool1: 5+1 = 6,   j=2
    #   conv2_1,2_2: 6+4+4 = 14         pool2: 14+2 = 16, j=4
    #   conv3_1..3:  16+3*8 = 40        pool3: 40+4 = 44, j=8
    #   conv4_1..3:  44+3*16 = 92       pool4: 92+8 = 100, j=16
    #   conv5_1..3:  100+3*32 = 196,    j=16
    model = build_model(ModelSpec("vgg16"), device="cpu")
    rows = theoretical_rf(model, (3, 224, 224))
    row = find_row(rows, "features.28")
    assert row["type"] == "Conv2d"
    assert row["rf"] == [196, 196] and row["jump"] == [16, 16] and row["output_hw"] == [14, 14]
    # start: every pool shifts the centre by +0.5*j (0.5 + 1 + 2 + 4): pixel index 7.5.
    assert row["start"] == [7.5, 7.5]
    box = unit_box(row, (7, 7), (224, 224))
    assert box["centre"] == [119.5, 119.5]  # 7.5 + 7*16
    assert (box["y0"], box["y1"]) == (22, 218)  # 119.5 -+ 97.5, end exclusive
    corner = unit_box(row, (0, 0), (224, 224))
    assert corner["clipped"] and corner["y0"] == 0 and corner["unclipped"][0] == -90


@pytest.mark.slow
def test_resnet50_layer4_and_fx_equals_hooks():
    # torchvision ResNet-50 (v1.5: the stride sits on the 3x3 conv):
    #   conv1 7x7/2:        r = 7,                 j = 2
    #   maxpool 3x3/2:      r = 7 + 2*2 = 11,      j = 4
    #   layer1 3 blocks, one 3x3/1 each at j=4:    r = 11 + 3*8 = 35
    #   layer2 block0 3x3/2 at j=4: 35 + 8 = 43,  j = 8 (shortcut 1x1/2 keeps 35: max 43)
    #          3 more blocks at j=8:               r = 43 + 3*16 = 91
    #   layer3 block0 3x3/2 at j=8: 91 + 16 = 107, j = 16; 5 more: 107 + 5*32 = 267
    #   layer4 block0 3x3/2 at j=16: 267 + 32 = 299, j = 32; 2 more: 299 + 2*64 = 427
    model = build_model(ModelSpec("resnet50"), device="cpu")
    fx = receptive_field_report(model, (3, 224, 224), method="fx")
    hooks = receptive_field_report(model, (3, 224, 224), method="hooks")
    assert fx["method"] == "fx" and hooks["method"] == "hooks"
    for report in (fx, hooks):
        rows = report["rows"]
        layer4 = find_row(rows, "layer4")
        assert layer4["op"] == "container"
        assert layer4["rf"] == [427, 427] and layer4["jump"] == [32, 32] and layer4["output_hw"] == [7, 7]
        assert find_row(rows, "layer1")["rf"] == [35, 35]
        assert find_row(rows, "layer2")["rf"] == [91, 91]
        assert find_row(rows, "layer3")["rf"] == [267, 267]
        # the downsample branch alone is smaller; the block takes the max
        assert find_row(rows, "layer2.0.downsample")["rf"] == [35, 35]
        assert find_row(rows, "layer2.0")["rf"] == [43, 43]
        pooled = find_row(rows, "avgpool")
        assert pooled["global"] and pooled["rf"] == [224, 224]
    key = lambda rows: {r["name"]: (r["rf"], r["jump"], r["start"], r["output_hw"]) for r in rows}  # noqa: E731
    assert key(fx["rows"]) == key(hooks["rows"])


@pytest.mark.slow
def test_googlenet_inception_takes_max_of_branches():
    model = build_model(ModelSpec("googlenet"), device="cpu")
    rows = theoretical_rf(model, (3, 224, 224))
    names = [r["name"] for r in rows]
    for block in ("inception3a", "inception4a", "inception5b"):
        branches = [find_row(rows, f"{block}.branch{i}") for i in range(1, 5)]
        out = find_row(rows, block)
        assert out["type"] == "Inception"
        assert out["rf"] == [max(b["rf"][0] for b in branches)] * 2
        assert len({b["rf"][0] for b in branches}) > 1  # the branches do differ
        assert all(b["jump"] == out["jump"] for b in branches)
        assert names.index(out["name"]) > max(names.index(b["name"]) for b in branches)
    # conv1 7/2 -> 7 (j2); maxpool1 3/2 -> 11 (j4); conv3 3x3 -> 19; maxpool2 3/2 -> 27 (j8);
    # inception3a: 1x1 keeps 27, the 3x3 branches and the 3x3 pool branch reach 27 + 2*8 = 43.
    assert find_row(rows, "inception3a.branch1")["rf"] == [27, 27]
    assert find_row(rows, "inception3a")["rf"] == [43, 43]


def test_two_3x3_equal_one_5x5():
    torch.manual_seed(0)
    two = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))
    one = nn.Sequential(nn.Conv2d(3, 8, 5, padding=2))
    a = theoretical_rf(two, (3, 32, 32))[-1]
    b = theoretical_rf(one, (3, 32, 32))[-1]
    assert a["rf"] == b["rf"] == [5, 5]
    assert a["jump"] == b["jump"] == [1, 1] and a["start"] == b["start"] == [0, 0]
    # ...with 2*9*C^2 weights instead of 25*C^2 (the VGG argument).


def test_squeeze_excitation_is_context_not_rf():
    class SE(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Conv2d(8, 8, 1)

        def forward(self, x):
            x = self.conv(x)
            return x * torch.sigmoid(self.fc(x.mean((2, 3), keepdim=True)))

    rows = theoretical_rf(SE(), (3, 16, 16))
    assert rows[-1]["rf"] == [3, 3] and rows[-1]["global_context"] and not rows[-1]["global"]
    rows = theoretical_rf(SE(), (3, 16, 16), global_context="include")
    assert rows[-1]["global"] and rows[-1]["rf"] == [16, 16]


def test_effective_rf_inside_theoretical_box():
    torch.manual_seed(0)
    stack = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.Conv2d(6, 6, 3, padding=1),
                          nn.Conv2d(6, 6, 3, padding=1))
    erf = effective_rf(stack, (2, 24, 24), "2", n_inputs=3, seed=1)
    assert erf["theoretical"]["rf"] == [7, 7]
    assert erf["unit"] == [12, 12]
    box = erf["box"]
    assert (box["y0"], box["y1"], box["x0"], box["x1"]) == (9, 16, 9, 16)
    m = np.asarray(erf["map"])
    assert m.shape == (24, 24) and m.max() == 1.0
    inside = np.zeros_like(m, dtype=bool)
    inside[box["y0"]:box["y1"], box["x0"]:box["x1"]] = True
    assert np.all(m[~inside] == 0)
    assert m[12, 12] > 0
    assert erf["nonzero_box"] == {"y0": 9, "y1": 16, "x0": 9, "x1": 16}
    # hooks removed
    assert not stack[2]._forward_hooks
    json.dumps(erf)


def test_data_dependent_model_falls_back_to_hooks():
    class Gate(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 4, 3)
            self.b = nn.Conv2d(4, 4, 3, stride=2)
            self.c = nn.Conv2d(4, 4, 5)

        def forward(self, x):
            x = self.a(x)
            if x.mean() > -1e9:  # data-dependent: fx cannot trace this
                x = self.b(x)
            else:
                x = self.c(x)
            return x + x.flip(0)

    model = Gate().train()
    report = receptive_field_report(model, (3, 20, 20))
    assert report["method"] == "hooks" and "TraceError" in report["fallback_reason"]
    assert model.training and model.a.training  # modes restored
    b = find_row(report["rows"], "b")
    assert b["rf"] == [5, 5] and b["jump"] == [2, 2] and b["start"] == [2, 2]
    assert report["rows"][-1]["rf"] == [5, 5]  # x + x.flip(0) flips the batch, not space
    with pytest.raises(Exception):
        receptive_field_report(model, (3, 20, 20), method="fx")
    with pytest.raises(Exception, match="not a module"):
        effective_rf(model, (3, 20, 20), "nope")


@pytest.mark.slow
def test_top_down_merges_keep_the_lateral_jump():
    # M2Det at 320: TUM decoders upsample 1→3→5→10→20→40 beside lateral maps; odd sizes must not shrink the
    # jump path after path (it fell below a pixel when the merge kept the finest of the two).
    from explorer.views.receptive_field import receptive_field_report

    model = build_model(ModelSpec("m2det320"), "cpu")
    rows = [r for r in receptive_field_report(model, (3, 320, 320))["rows"]
            if r["op"] != "container" and not r["global"]]
    assert min(r["jump"][0] for r in rows) >= 1
    # the strides of the six detection levels: 320 / 40 … and the stride-2 convs' 64 → 128 at the odd sizes
    head = {r["output_hw"][0]: r["jump"][0] for r in rows
            if r["name"].startswith("head.permute") and r["output_hw"][0] > 1}
    assert head == {40: 8, 20: 16, 10: 32, 5: 64, 3: 128}
