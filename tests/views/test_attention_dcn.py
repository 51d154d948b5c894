"""Attention maps (ViT/DeiT/Swin), deformable-conv sampling points and STN grids, checked against the
libraries' own computations and hand-made cases."""
import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d, deform_conv2d

from explorer.blocks import STN, ModulatedDeformConv
from explorer.errors import ExplorerError
from explorer.models import build_model
from explorer.spec import ModelSpec
from explorer.views.attention import (
    attention_layers,
    attention_maps,
    attention_rollout,
    cls_attention_grid,
    mha_attention_weights,
    patch_query_grid,
    window_query_map,
)
from explorer.views.deformable import capture_offsets, deformable_layers, sampling_points, stack_sampling_points
from explorer.views.stn import stn_grid
from tests.attention_support import timm_unfused_softmax


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def rand(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def assert_rows_sum_to_one(maps):
    for name, a in maps["maps"].items():
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5, err_msg=name)
        assert (a >= 0).all()


# --------------------------------------------------------------------------------------------
# ViT (torchvision) and DeiT (timm)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tv_vit():
    return build_model(ModelSpec("vit_b_16", input_size=(3, 64, 64)), device="cpu")


@pytest.fixture(scope="module")
def deit():
    return build_model(ModelSpec("timm:deit_tiny_patch16_224"), device="cpu")


@pytest.mark.slow
def test_torchvision_vit_maps_leave_logits_unchanged(tv_vit):
    x = rand((2, 3, 64, 64))
    with torch.no_grad():
        before = tv_vit(x)
    res = attention_maps(tv_vit, x)
    with torch.no_grad():
        after = tv_vit(x)
    assert torch.equal(torch.from_numpy(res["output"]), before)
    assert torch.equal(after, before)
    assert hook_count(tv_vit) == 0
    assert res["family"] == "vit" and res["library"] == "torchvision"
    assert len(res["layers"]) == 12 and res["patch_grid"] == [4, 4] and res["num_prefix_tokens"] == 1
    assert res["maps"][res["layers"][0]].shape == (2, 12, 17, 17)
    assert_rows_sum_to_one(res)
    assert cls_attention_grid(res, 0, 3).shape == (4, 4)
    assert patch_query_grid(res, -1, "mean", (1, 2), batch=1).shape == (4, 4)
    assert attention_rollout(res).shape == (2, 16)
    assert attention_rollout(res, as_grid=True).shape == (2, 4, 4)


@pytest.mark.slow
def test_vit_map_equals_multihead_attention_need_weights(tv_vit):
    """Our map of a real layer equals nn.MultiheadAttention's own unfused weights on that layer's input."""
    x = rand((1, 3, 64, 64), 1)
    layer = tv_vit.encoder.layers[5]
    seen = {}
    h = layer.ln_1.register_forward_hook(lambda m, a, o: seen.setdefault("x", o))
    try:
        res = attention_maps(tv_vit, x, layers=["encoder.layers.encoder_layer_5.self_attention"])
    finally:
        h.remove()
    assert res["layers"] == ["encoder.layers.encoder_layer_5.self_attention"]
    with torch.no_grad():
        _, ref = layer.self_attention(seen["x"], seen["x"], seen["x"], need_weights=True, average_attn_weights=False)
    np.testing.assert_allclose(res["maps"][res["layers"][0]], ref.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kwargs, batch_first, masks", [
    (dict(), True, False),
    (dict(), False, True),
    (dict(add_bias_kv=True, add_zero_attn=True), True, True),
    (dict(kdim=12, vdim=12), True, False),
])
def test_mha_recomputation_matches_module(kwargs, batch_first, masks):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(16, 4, batch_first=batch_first, **kwargs).eval()
    with torch.no_grad():
        if mha.in_proj_bias is not None:
            mha.in_proj_bias.normal_()
    B, L, S = 2, 5, 7
    kd = kwargs.get("kdim", 16)
    q = rand((B, L, 16), 2) if batch_first else rand((L, B, 16), 2)
    k = rand((B, S, kd), 3) if batch_first else rand((S, B, kd), 3)
    kpm = am = None
    if masks:
        kpm = torch.zeros(B, S, dtype=torch.bool)
        kpm[1, -2:] = True
        am = torch.zeros(L, S, dtype=torch.bool)
        am[0, 0] = True
    with torch.no_grad():
        _, ref = mha(q, k, k, key_padding_mask=kpm, attn_mask=am, need_weights=True, average_attn_weights=False)
    ours = mha_attention_weights(mha, q, k, key_padding_mask=kpm, attn_mask=am)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_deit_maps_match_unfused_path_and_leave_logits_unchanged(deit):
    x = rand((1, 3, 224, 224), 4)
    with torch.no_grad():
        before = deit(x)
    flags = [blk.attn.fused_attn for blk in deit.blocks]
    res = attention_maps(deit, x)
    assert [blk.attn.fused_attn for blk in deit.blocks] == flags  # the view never touches the fused flags
    assert torch.equal(torch.from_numpy(res["output"]), before)
    assert hook_count(deit) == 0
    assert res["library"] == "timm" and res["patch_grid"] == [14, 14] and res["num_prefix_tokens"] == 1
    assert len(res["layers"]) == 12 and res["maps"]["blocks.0.attn"].shape == (1, 3, 197, 197)
    assert_rows_sum_to_one(res)
    ref = timm_unfused_softmax(deit, x, [blk.attn for blk in deit.blocks])
    for name, r in zip(res["layers"], ref):
        np.testing.assert_allclose(res["maps"][name], r.numpy(), rtol=1e-4, atol=1e-6)


def test_hooks_removed_when_forward_raises(tv_vit):
    with pytest.raises(Exception):
        attention_maps(tv_vit, rand((1, 3, 80, 80)))  # built for 64 x 64: torchvision asserts
    assert hook_count(tv_vit) == 0
    with pytest.raises(ExplorerError):
        attention_maps(tv_vit, rand((1, 3, 64, 64)), layers=["nope"])
    assert hook_count(tv_vit) == 0


# --------------------------------------------------------------------------------------------
# Swin (torchvision and timm)
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_torchvision_swin_maps_match_library_softmax():
    import torchvision.models.swin_transformer as tvswin

    model = build_model(ModelSpec("swin_t", input_size=(3, 64, 64)), device="cpu")
    x = rand((1, 3, 64, 64), 5)
    with torch.no_grad():
        before = model(x)
    res = attention_maps(model, x)
    assert torch.equal(torch.from_numpy(res["output"]), before)
    assert hook_count(model) == 0
    assert res["family"] == "swin" and len(res["layers"]) == 12
    assert_rows_sum_to_one(res)
    first, second = res["info"]["features.1.0.attn"], res["info"]["features.1.1.attn"]
    assert first["resolution"] == [16, 16] and first["padded_hw"] == [21, 21] and first["shift"] == [0, 0]
    assert second["shift"] == [3, 3] and second["window_grid"] == [3, 3]
    assert res["maps"]["features.1.1.attn"].shape == (1, 9, 3, 49, 49)
    assert res["window_masks"]["features.1.0.attn"] is None
    assert (res["window_masks"]["features.1.1.attn"] == -100).any()
    # window slot → feature-map position: every real token appears exactly once
    tok = res["window_tokens"]["features.1.1.attn"]
    real = tok[tok[..., 0] >= 0]
    assert len(real) == 256 and len({tuple(t) for t in real}) == 256
    # stage 4 (2 x 2 map, window 7): no shift
    assert res["info"]["features.7.1.attn"]["shift"] == [0, 0]

    # the library's own softmax output, captured by wrapping the module's F
    captured = []

    class FWrap:
        def __getattr__(self, name):
            return getattr(F, name)

        @staticmethod
        def softmax(t, *a, **k):
            out = F.softmax(t, *a, **k)
            captured.append(out)
            return out

    orig = tvswin.F
    tvswin.F = FWrap()
    try:
        with torch.no_grad():
            model(x)
    finally:
        tvswin.F = orig
    assert len(captured) == 12
    for name, ref in zip(res["layers"], captured):
        np.testing.assert_allclose(res["maps"][name].reshape(ref.shape), ref.numpy(), rtol=1e-5, atol=1e-6)
    q = window_query_map(res, "features.1.1.attn", 0, (15, 15))
    assert q["map"].shape == (16, 16)
    # (15, 15) shares its window with unmasked zero padding (16..20): the weights split between them
    assert q["padding_weight"] > 0
    assert q["map"].sum() + q["padding_weight"] == pytest.approx(1.0, abs=1e-5)
    q = window_query_map(res, "features.1.0.attn", "mean", (3, 4))
    assert q["padding_weight"] == 0 and q["map"].sum() == pytest.approx(1.0, abs=1e-5)
    assert q["map"][7:].sum() == 0 and q["map"][:, 7:].sum() == 0  # window (0, 0) only


@pytest.mark.slow
def test_timm_swin_maps_match_unfused_softmax():
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(img_size=64, patch_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
                            window_size=7, num_classes=10).eval()
    x = rand((2, 3, 64, 64), 6)
    with torch.no_grad():
        before = model(x)
    res = attention_maps(model, x)
    assert torch.equal(torch.from_numpy(res["output"]), before)
    assert hook_count(model) == 0
    assert res["family"] == "swin" and res["library"] == "timm" and len(res["layers"]) == 4
    assert_rows_sum_to_one(res)
    info = res["info"]["layers.0.blocks.1.attn"]
    assert info["shift"] == [3, 3] and info["resolution"] == [16, 16] and info["num_windows"] == 9
    assert res["maps"]["layers.0.blocks.1.attn"].shape == (2, 9, 2, 49, 49)
    tok = res["window_tokens"]["layers.0.blocks.1.attn"]
    real = tok[tok[..., 0] >= 0]
    assert len({tuple(t) for t in real}) == 256 == len(real)
    # the unfused path's softmax output
    ref = timm_unfused_softmax(model, x, [b.attn for st in model.layers for b in st.blocks])
    for name, r in zip(res["layers"], ref):
        np.testing.assert_allclose(res["maps"][name].reshape(r.shape), r.numpy(), rtol=1e-5, atol=1e-6)


def test_attention_layers_lists_kinds(tv_vit):
    kinds = {k for _, _, k in attention_layers(tv_vit)}
    assert kinds == {"mha"}
    with pytest.raises(ExplorerError):
        attention_maps(nn.Conv2d(3, 3, 1), rand((1, 3, 8, 8)))


# --------------------------------------------------------------------------------------------
# Rollout and grids on hand-made maps
# --------------------------------------------------------------------------------------------

def test_rollout_identity_attention():
    """Every token attends only to itself: the rollout is the identity, so CLS's row is one-hot on CLS
    (the diagonal) and zero over all patches."""
    N = 1 + 4
    maps = [np.broadcast_to(np.eye(N), (1, 2, N, N)).copy() for _ in range(3)]
    np.testing.assert_allclose(attention_rollout(maps, return_matrix=True)[0], np.eye(N))
    np.testing.assert_allclose(attention_rollout(maps), np.zeros((1, 4)))
    assert attention_rollout([m[0] for m in maps]).shape == (4,)


def test_rollout_uniform_and_hand_computation():
    N = 1 + 9
    uniform = [np.full((1, 3, N, N), 1.0 / N) for _ in range(2)]
    row = attention_rollout(uniform, as_grid=True)
    assert row.shape == (1, 3, 3)
    np.testing.assert_allclose(row, row.flat[0])  # all patches equal
    rng = np.random.default_rng(0)
    maps = []
    for _ in range(3):
        a = rng.random((1, 2, N, N))
        maps.append(a / a.sum(-1, keepdims=True))
    R = np.eye(N)
    for a in maps:
        A = a[0].mean(0) + np.eye(N)
        A /= A.sum(-1, keepdims=True)
        R = A @ R
    np.testing.assert_allclose(attention_rollout(maps)[0], R[0, 1:])
    # max fusion and discarding run and keep the shape
    assert attention_rollout(maps, discard_ratio=0.5, head_fusion="max").shape == (1, 9)
    with pytest.raises(ExplorerError):
        attention_rollout(maps, head_fusion="median")


def test_cls_and_patch_grids_by_hand():
    N = 1 + 6  # 2 x 3 grid
    a = np.zeros((1, 2, N, N))
    a[0, 1, 0, 1 + 4] = 1.0  # head 1: CLS looks at patch (1, 1)
    a[0, 0, 1 + 2, 1 + 3] = 1.0  # head 0: patch (0, 2) looks at patch (1, 0)
    res = {"layers": ["l0"], "maps": {"l0": a}, "num_prefix_tokens": 1, "patch_grid": [2, 3]}
    g = cls_attention_grid(res, "l0", 1)
    assert g.shape == (2, 3) and g[1, 1] == 1.0 and g.sum() == 1.0
    p = patch_query_grid(res, 0, 0, (0, 2))
    assert p[1, 0] == 1.0 and p.sum() == 1.0
    with pytest.raises(ExplorerError):
        patch_query_grid(res, 0, 0, (2, 0))


# --------------------------------------------------------------------------------------------
# Deformable convolution
# --------------------------------------------------------------------------------------------

def test_unit_x_offset_equals_shifted_conv_and_sampling_points():
    x = rand((1, 4, 9, 11), 7)
    w = rand((5, 4, 3, 3), 8)
    offset = torch.zeros(1, 18, 9, 11)
    offset[:, 1::2] = 1.0  # Δx = +1 at every tap
    y = deform_conv2d(x, offset, w, padding=1)
    shifted = torch.zeros_like(x)
    shifted[..., :-1] = x[..., 1:]  # the image moved one pixel to the left
    ref = F.conv2d(shifted, w, padding=1)
    torch.testing.assert_close(y[..., 1:-1], ref[..., 1:-1], rtol=1e-5, atol=1e-5)
    sp = sampling_points(offset, None, 3, 1, 1, 1, (4, 5))
    np.testing.assert_array_equal(sp["deformed"][:, 0], sp["regular"][:, 0])
    np.testing.assert_array_equal(sp["deformed"][:, 1], sp["regular"][:, 1] + 1)
    # regular grid: rows 3..5, cols 4..6 around (4, 5), row-major taps
    assert sp["regular"][0].tolist() == [3.0, 4.0] and sp["regular"][-1].tolist() == [5.0, 6.0]
    assert sp["center"] == [4.0, 5.0] and sp["mask"] is None


def test_half_mask_halves_output():
    x = rand((1, 4, 8, 8), 9)
    w = rand((3, 4, 3, 3), 10)
    offset = rand((1, 18, 8, 8), 11)
    mask = torch.full((1, 9, 8, 8), 0.5)
    torch.testing.assert_close(deform_conv2d(x, offset, w, padding=1, mask=mask),
                               0.5 * deform_conv2d(x, offset, w, padding=1))
    sp = sampling_points(offset, mask, 3, 1, 1, 1, (2, 3))
    np.testing.assert_allclose(sp["mask"], 0.5)
    np.testing.assert_allclose(sp["deformed"] - sp["regular"], offset[0, :, 2, 3].reshape(9, 2).numpy(), atol=1e-6)
    # a fresh ModulatedDeformConv (zero offset conv → mask σ(0) = 0.5) is half the plain conv, plus bias
    conv = nn.Conv2d(4, 3, 3, padding=1)
    block = ModulatedDeformConv.from_conv(conv)
    with torch.no_grad():
        torch.testing.assert_close(block(x), 0.5 * F.conv2d(x, conv.weight, padding=1) + conv.bias[:, None, None],
                                   rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def dcnv2_resnet():
    return build_model(ModelSpec("resnet50", input_size=(3, 128, 128), swaps=("preset:dcnv2",)), device="cpu")


@pytest.mark.slow
def test_capture_on_dcnv2_resnet50(dcnv2_resnet):
    model = dcnv2_resnet
    assert len(deformable_layers(model)) == 13
    x = rand((1, 3, 128, 128), 12)
    with torch.no_grad():
        before = model(x)
    caps = capture_offsets(model, x)
    with torch.no_grad():
        assert torch.equal(model(x), before)
    assert hook_count(model) == 0
    assert len(caps) == 13
    expected_hw = {"layer2": 16, "layer3": 8, "layer4": 4}
    for name, c in caps.items():
        s = expected_hw[name.split(".")[0]]
        assert c["offset"].shape == (1, 18, s, s) and c["mask"].shape == (1, 9, s, s), name
        assert c["kernel_size"] == [3, 3] and c["padding"] == [1, 1] and c["dilation"] == [1, 1]
        assert c["output_hw"] == [s, s] and c["image_hw"] == [128, 128]
        first = name.endswith(".0.conv2")
        assert c["stride"] == ([2, 2] if first else [1, 1])
        assert c["input_hw"] == ([2 * s, 2 * s] if first else [s, s])
        # zero-initialised offset conv: no offsets, mask σ(0) = 0.5
        assert not c["offset"].any()
        np.testing.assert_allclose(c["mask"], 0.5)
        sp = sampling_points(c["offset"], c["mask"], c["kernel_size"], c["stride"], c["padding"], c["dilation"],
                             (s // 2, s // 2))
        np.testing.assert_array_equal(sp["deformed"], sp["regular"])
    assert list(caps) == [n for n, _ in deformable_layers(model)]
    st = stack_sampling_points(caps, ["layer4.2.conv2", "layer4.1.conv2", "layer3.5.conv2"], (2, 2))
    assert st["layers"] == ["layer4.2.conv2", "layer4.1.conv2", "layer3.5.conv2"]
    assert st["image_points"].shape == (729, 2)
    np.testing.assert_array_equal(st["image_points"], st["image_regular"])
    np.testing.assert_allclose(st["image_weights"], 0.125)
    with pytest.raises(ExplorerError):
        stack_sampling_points(caps, list(caps), (0, 0))  # 9^13 points


def test_capture_hooks_removed_when_forward_raises(dcnv2_resnet):
    with pytest.raises(Exception):
        capture_offsets(dcnv2_resnet, rand((1, 5, 32, 32)))
    assert hook_count(dcnv2_resnet) == 0


def _cap(offset, k=3, stride=1, pad=1, in_hw=None, order=0, image_hw=None):
    H, W = offset.shape[-2:]
    return {"offset": offset, "mask": None, "kernel_size": [k, k], "stride": [stride] * 2, "padding": [pad] * 2,
            "dilation": [1, 1], "input_hw": list(in_hw or (H * stride, W * stride)), "output_hw": [H, W],
            "image_hw": list(image_hw or in_hw or (H * stride, W * stride)), "order": order}


def test_stack_sampling_points_by_hand():
    off = np.zeros((1, 18, 8, 8))
    off[:, 1::2] = 1.0  # Δx = +1
    caps = {"a": _cap(off, order=0), "b": _cap(off, order=1)}
    st = stack_sampling_points(caps, ["a", "b"], (4, 4))
    assert st["layers"] == ["b", "a"] and st["image_points"].shape == (81, 2)
    np.testing.assert_allclose(st["image_points"] - st["image_regular"], np.tile([0.0, 2.0], (81, 1)))
    # regular footprint of two stacked 3x3: a 5 x 5 block around (4, 4)
    assert st["image_regular"].min(0).tolist() == [2.0, 2.0] and st["image_regular"].max(0).tolist() == [6.0, 6.0]
    # a stride-2 layer after a 16 x 16 one: points of 'b' (input 16 x 16) map 1:1 onto 'a''s output grid
    off_a = np.zeros((1, 18, 16, 16))
    off_b = np.zeros((1, 18, 8, 8))
    off_b[:, 0::2] = -1.0  # Δy = -1 in the stride-2 layer
    caps = {"a": _cap(off_a, order=0), "b": _cap(off_b, stride=2, order=1)}
    st = stack_sampling_points(caps, ["a", "b"], (3, 3))
    lvl_b = st["levels"][0]
    assert lvl_b["points"].min(0).tolist() == [4.0, 5.0] and lvl_b["points"].max(0).tolist() == [6.0, 7.0]
    np.testing.assert_allclose(st["image_points"] - st["image_regular"], np.tile([-1.0, 0.0], (81, 1)))


def test_capture_torchvision_deformconv2d():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.off = nn.Conv2d(3, 18, 3, padding=1)
            self.dcn = DeformConv2d(3, 4, 3, padding=1)

        def forward(self, x):
            return self.dcn(x, self.off(x))

    net = Net().eval()
    x = rand((1, 3, 10, 10), 13)
    caps = capture_offsets(net, x)
    assert list(caps) == ["dcn"] and caps["dcn"]["mask"] is None
    with torch.no_grad():
        np.testing.assert_allclose(caps["dcn"]["offset"], net.off(x).numpy())
    assert hook_count(net) == 0


# --------------------------------------------------------------------------------------------
# STN
# --------------------------------------------------------------------------------------------

def test_stn_identity_at_init():
    torch.manual_seed(0)
    stn = STN(3).eval()
    x = rand((2, 3, 20, 24), 14)
    g = stn_grid(stn, x, points=12)
    np.testing.assert_allclose(g["theta"], np.broadcast_to([[1, 0, 0], [0, 1, 0]], (2, 2, 3)), atol=0)
    assert g["grid_xy"].shape == (2, 12, 12, 2)
    np.testing.assert_allclose(g["grid_xy"], np.broadcast_to(g["regular_xy"], g["grid_xy"].shape), atol=1e-4)
    assert g["rows"][0] == 0 and g["rows"][-1] == 19 and g["cols"][-1] == 23
    np.testing.assert_allclose(g["output"], x.numpy(), atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(g["output"], stn(x).numpy(), atol=1e-6)


def test_stn_zoom_corners():
    stn = STN(3).eval()
    with torch.no_grad():
        stn.localization[-1].bias.copy_(torch.tensor([0.5, 0, 0, 0, 0.5, 0]))  # 2x zoom on the centre
    stn.last_theta = None
    x = rand((1, 3, 32, 32), 15)
    g = stn_grid(stn, x)
    assert stn.last_theta is None  # the view leaves the module's state alone
    # align_corners=False: output corner pixel 0 samples 15.5 + 0.5 * (0 - 15.5) = 7.75, pixel 31 → 23.25
    np.testing.assert_allclose(g["corners_xy"][0], [[7.75, 7.75], [23.25, 7.75], [7.75, 23.25], [23.25, 23.25]],
                               atol=1e-5)
    with torch.no_grad():
        np.testing.assert_allclose(g["output"], stn(x).numpy(), atol=1e-6)
    # a hand-set theta overrides the localisation net
    g2 = stn_grid(stn, x, theta=torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
    np.testing.assert_allclose(g2["corners_xy"][0], [[0, 0], [31, 0], [0, 31], [31, 31]], atol=1e-5)
