"""Tests of explorer.blocks: shapes, hand-computed parameter counts, exact equivalences, meta device."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from explorer.blocks import (
    ACTIVATIONS,
    ATTENTION,
    CONVS,
    DBB,
    ECA,
    GC,
    NORMS,
    SE,
    STN,
    ULSAM,
    ChannelShuffle,
    CondConv,
    DeformConv,
    DOConv,
    LayerNorm2d,
    ModulatedDeformConv,
    PSConv,
    RepVGGBlock,
    WeightNetConv,
    describe,
    eca_kernel_size,
    scSE,
)

torch.manual_seed(0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters() if p.requires_grad)


def max_diff(a, b) -> float:
    return (a - b).abs().max().item()


# =========================================================================== attention
C = 64

# Hand-computed parameter counts for C = 64 (weights + biases).
ATTENTION_PARAMS = {
    "none": 0,
    # SE r=16: fc1 64→4 (64·4 + 4), fc2 4→64 (4·64 + 64)
    "se": 64 * 4 + 4 + 4 * 64 + 64,                                   # 580
    # ECA: C=64 → k = |(log2 64 + 1)/2|_odd = |3.5| → 3, one Conv1d without bias
    "eca": 3,
    # CBAM: the SE-like shared MLP (580) + 7×7 conv 2→1 without bias (2·7·7)
    "cbam": (64 * 4 + 4 + 4 * 64 + 64) + 2 * 7 * 7,                   # 678
    # SK: 2 branches × (grouped 3×3, G=32: 64·(64/32)·9, + BN 2·64);
    #     fc 64→d with d = max(64/16, 32) = 32: 64·32 + BN 2·32; select 32→2·64 no bias
    "sk": 2 * (64 * 2 * 9 + 2 * 64) + (64 * 32 + 2 * 32) + 32 * 128,  # 8768
    # GC: context 1×1 64→1 (64 + 1); transform 64→16 (64·16 + 16), LN[16,1,1] (2·16), 16→64 (16·64 + 64)
    "gc": (64 + 1) + (64 * 16 + 16) + 2 * 16 + (16 * 64 + 64),         # 2225
    # sSE: 1×1 conv 64→1 with bias
    "sse": 64 + 1,                                                     # 65
    # scSE: cSE with r=2 (64·32 + 32 + 32·64 + 64) + sSE (65)
    "scse": (64 * 32 + 32 + 32 * 64 + 64) + (64 + 1),                  # 4257
    # ULSAM g=4: depthwise 1×1 (64 weights + 64 biases) + per-subspace PW 16→1 (4·(16 + 1))
    "ulsam": (64 + 64) + 4 * (16 + 1),                                 # 196
}


def test_attention_registry_is_complete():
    assert set(ATTENTION) == {"none", "se", "eca", "cbam", "sk", "gc", "sse", "scse", "ulsam"}
    assert set(ATTENTION_PARAMS) == set(ATTENTION)


@pytest.mark.parametrize("key", sorted(ATTENTION))
def test_attention_shape_and_params(key):
    block = ATTENTION[key](C)
    x = torch.randn(2, C, 9, 7)
    y = block(x)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()
    assert n_params(block) == ATTENTION_PARAMS[key]


def test_attention_params_are_the_numbers_written_out():
    assert ATTENTION_PARAMS["se"] == 580
    assert ATTENTION_PARAMS["cbam"] == 678
    assert ATTENTION_PARAMS["sk"] == 8768
    assert ATTENTION_PARAMS["gc"] == 2225
    assert ATTENTION_PARAMS["scse"] == 4257
    assert ATTENTION_PARAMS["ulsam"] == 196


@pytest.mark.parametrize("channels,k", [(16, 3), (64, 3), (128, 5), (256, 5), (512, 5), (1024, 5), (2048, 7)])
def test_eca_adaptive_kernel(channels, k):
    assert eca_kernel_size(channels) == k
    eca = ECA(channels)
    assert eca.conv.kernel_size == (k,)
    assert n_params(eca) == k


def test_se_value():
    se = SE(C)
    x = torch.randn(2, C, 5, 5)
    s = torch.sigmoid(se.fc2.weight.reshape(C, -1) @ torch.relu(
        se.fc1.weight.reshape(-1, C) @ x.mean((2, 3)).T + se.fc1.bias[:, None]) + se.fc2.bias[:, None])
    assert max_diff(se(x), x * s.T[:, :, None, None]) < 1e-6


def test_gc_starts_as_identity_and_scse_modes():
    x = torch.randn(2, C, 6, 6)
    assert torch.equal(GC(C)(x), x)  # last transform conv is zero-initialised (official code)
    add, mx = scSE(C, mode="add"), scSE(C, mode="max")
    mx.load_state_dict(add.state_dict())
    a, b = add.cse(x), add.sse(x)
    assert max_diff(add(x), a + b) == 0
    assert max_diff(mx(x), torch.maximum(a, b)) == 0


def test_ulsam_matches_per_subspace_equations():
    g, G = 4, C // 4
    m = ULSAM(C, subspaces=g)
    x = torch.randn(2, C, 6, 5)
    outs = []
    for n in range(g):
        f = x[:, n * G:(n + 1) * G]
        dw = F.conv2d(f, m.dw.weight[n * G:(n + 1) * G], m.dw.bias[n * G:(n + 1) * G], groups=G)
        mp = F.max_pool2d(dw, 3, 1, 1)
        pw = F.conv2d(mp, m.pw.weight[n:n + 1], m.pw.bias[n:n + 1])
        a = pw.flatten(2).softmax(-1).reshape_as(pw)
        outs.append(a * f + f)
    assert max_diff(m(x), torch.cat(outs, 1)) < 1e-6
    maps = m.attention_maps(x)
    assert torch.allclose(maps.sum((2, 3)), torch.ones(2, g))


# =========================================================================== convs: from_conv
def test_conv_registry_is_complete():
    assert set(CONVS) == {"conv", "dwsep", "shuffle", "ghost", "dcn", "dcnv2", "doconv", "psconv", "condconv",
                          "weightnet", "sk", "repvgg", "dbb", "igc", "igcv2"}


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("key", sorted(CONVS))
def test_from_conv_same_output_shape(key, stride):
    conv = nn.Conv2d(32, 64, 3, stride=stride, padding=1)
    block = CONVS[key].from_conv(conv)
    x = torch.randn(2, 32, 12, 12)
    y = block(x)
    assert y.shape == conv(x).shape == (2, 64, 12 // stride, 12 // stride)
    assert torch.isfinite(y).all()


def test_from_conv_keeps_dtype_and_plain_copy():
    conv = nn.Conv2d(4, 6, 3, padding=1).double()
    x = torch.randn(1, 4, 7, 7, dtype=torch.float64)
    for key in ("conv", "dcn", "doconv", "psconv"):
        block = CONVS[key].from_conv(conv)
        assert all(p.dtype == torch.float64 for p in block.parameters())
    assert torch.equal(CONVS["conv"].from_conv(conv)(x), conv(x))


# =========================================================================== DCN
@pytest.mark.parametrize("stride,dilation", [(1, 1), (2, 1), (1, 2)])
def test_dcn_zero_offset_equals_conv(stride, dilation):
    conv = nn.Conv2d(8, 16, 3, stride=stride, padding=dilation, dilation=dilation)
    dcn = DeformConv.from_conv(conv)
    x = torch.randn(2, 8, 11, 11)
    assert torch.equal(dcn.offsets(x), torch.zeros_like(dcn.offsets(x)))
    assert max_diff(dcn(x), conv(x)) < 1e-5
    # offset conv: same geometry as the main conv, 2·k·k outputs
    assert dcn.offset_conv.out_channels == 2 * 9
    assert n_params(dcn) == (16 * 8 * 9 + 16) + (18 * 8 * 9 + 18)


def test_dcnv2_init_is_half_the_conv_response_as_in_official_code():
    conv = nn.Conv2d(8, 16, 3, padding=1)
    x = torch.randn(2, 8, 10, 10)
    v2 = ModulatedDeformConv.from_conv(conv)
    offset, mask = v2.offsets_and_mask(x)
    assert v2.offset_conv.out_channels == 3 * 9
    assert torch.equal(offset, torch.zeros_like(offset)) and torch.equal(mask, torch.full_like(mask, 0.5))
    b = conv.bias.reshape(1, -1, 1, 1)
    assert max_diff(v2(x), 0.5 * (conv(x) - b) + b) < 1e-5     # σ(0) = 0.5 scales W∗x, not the bias
    assert max_diff(ModulatedDeformConv.from_conv(conv, mask_scale=2.0)(x), conv(x)) < 1e-5


@pytest.mark.parametrize("axis", ["x", "y"])
def test_dcn_offset_layout_shift_by_one_pixel(axis):
    conv = nn.Conv2d(4, 6, 3, padding=1)
    dcn = DeformConv.from_conv(conv)
    x = torch.randn(2, 4, 9, 10)
    offset = torch.zeros(2, 2 * 9, 9, 10)
    # torchvision layout: per tap a (Δy, Δx) pair → channels 2t (Δy) and 2t+1 (Δx)
    if axis == "x":
        offset[:, 1::2] = 1.0
        shifted = F.pad(x[..., :, 1:], [0, 1, 0, 0])     # shifted[..., j] = x[..., j+1]
    else:
        offset[:, 0::2] = 1.0
        shifted = F.pad(x[..., 1:, :], [0, 0, 0, 1])     # shifted[..., i, :] = x[..., i+1, :]
    out = dcn.deform(x, offset)
    ref = conv(shifted)
    assert max_diff(out[..., 1:-1, 1:-1], ref[..., 1:-1, 1:-1]) < 1e-5
    assert max_diff(out, conv(x)) > 1e-2  # the shift really changed the result


# =========================================================================== re-parameterisation
def randomize_bn(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n) * 0.5)
            m.running_var.copy_(torch.rand(n) * 1.5 + 0.5)
            m.weight.data.copy_(torch.randn(n) * 0.5 + 1.0)
            m.bias.data.copy_(torch.randn(n) * 0.5)


def conv_params(cin, cout, k, groups=1, bias=True):
    return cout * (cin // groups) * k * k + (cout if bias else 0)


@pytest.mark.parametrize("cin,cout,k,stride,padding,groups,d_mul", [
    (8, 16, 3, 1, 1, 1, None),
    (8, 16, 3, 2, 1, 2, 12),      # grouped, D_mul not a multiple of k·k (zero-padded d_diag)
    (6, 6, 5, 1, 2, 1, 50),
])
def test_doconv_fold(cin, cout, k, stride, padding, groups, d_mul):
    m = DOConv(cin, cout, k, stride=stride, padding=padding, groups=groups, D_mul=d_mul)
    dm = m.D_mul
    # trainable: W (C_out × C_in/g × D_mul) + D (C_in × k² × D_mul) + bias; d_diag is a buffer
    assert n_params(m) == cout * (cin // groups) * dm + cin * k * k * dm + cout
    with torch.no_grad():
        m.D.normal_(0, 0.3)
    x = torch.randn(2, cin, 11, 11)
    folded = m.fold()
    assert isinstance(folded, nn.Conv2d)
    assert n_params(folded) == conv_params(cin, cout, k, groups)
    assert max_diff(folded(x), m(x)) < 1e-5
    assert max_diff(m.forward_feature_composition(x), m(x)) < 1e-5


def test_doconv_fold_formula_and_identity_init():
    conv = nn.Conv2d(4, 5, 3, padding=1)
    m = DOConv.from_conv(conv)
    x = torch.randn(1, 4, 8, 8)
    assert max_diff(m(x), conv(x)) < 1e-5         # D_eff = identity at init
    with torch.no_grad():
        m.D.normal_()
    d = m.D + m.d_diag
    expected = torch.einsum("ims,ois->oim", d, m.W).reshape(5, 4, 3, 3)   # W'[o,i,m] = Σ_s D[i,m,s] W[o,i,s]
    assert max_diff(m.fold().weight, expected) < 1e-6
    with pytest.raises(ValueError):
        DOConv(4, 5, 3, D_mul=4)                  # D_mul must be ≥ k·k


@pytest.mark.parametrize("cin,cout,k,stride,padding,groups", [
    (8, 8, 3, 1, 1, 1),     # all three branches
    (8, 16, 3, 2, 1, 1),    # no identity
    (8, 8, 3, 1, 1, 2),     # grouped, identity
    (8, 8, 3, 1, 0, 1),     # valid conv: 1×1 branch cropped, no identity
    (6, 6, 5, 1, 2, 3),
])
def test_repvgg_fold(cin, cout, k, stride, padding, groups):
    m = RepVGGBlock(cin, cout, k, stride=stride, padding=padding, groups=groups)
    randomize_bn(m)
    m.eval()
    assert (m.identity is not None) == (cin == cout and stride == 1 and padding == (k - 1) // 2)
    x = torch.randn(2, cin, 10, 10)
    folded = m.fold()
    assert n_params(folded) == conv_params(cin, cout, k, groups)
    assert folded.bias is not None
    assert max_diff(folded(x), m(x)) < 1e-5


@pytest.mark.parametrize("cin,cout,k,stride,padding,groups", [
    (8, 16, 3, 1, 1, 1),
    (8, 16, 3, 2, 1, 2),
    (16, 16, 3, 1, 1, 16),  # depthwise: no 1×1 branch, avg-pool branch without its 1×1
    (8, 8, 3, 1, 0, 1),     # valid conv
    (4, 6, 5, 2, 2, 1),
])
def test_dbb_fold(cin, cout, k, stride, padding, groups):
    m = DBB(cin, cout, k, stride=stride, padding=padding, groups=groups)
    with torch.no_grad():
        m.seq_conv1.weight.normal_(0, 0.3)   # move the identity-based 1×1 off its init
    randomize_bn(m)
    m.eval()
    x = torch.randn(2, cin, 11, 11)
    folded = m.fold()
    assert isinstance(folded, nn.Conv2d)
    assert n_params(folded) == conv_params(cin, cout, k, groups)
    y = m(x)
    assert y.shape == folded(x).shape
    assert max_diff(folded(x), y) < 1e-5
    assert (m.pointwise is None) == (groups == cin == cout)


def test_dbb_border_padding_matters():
    """Zero-padding after the 1×1+BN (instead of BN's zero-input value) would break the fold."""
    m = DBB(4, 4, 3, padding=1)
    randomize_bn(m)
    m.eval()
    x = torch.randn(1, 4, 8, 8)
    ref = m.fold()(x)
    m.seq_pad_bn.pad_value = lambda: torch.zeros(4)
    m.avg.pad_bn.pad_value = lambda: torch.zeros(4)
    assert max_diff(m(x), ref) > 1e-3


# =========================================================================== PSConv
def psconv_bruteforce(m: PSConv, x):
    """y[c] = Σ_i W[c,i] ⋆_{dilation D(c,i)} x[i] with D(c,i) = pattern[(c + i) mod t], group-local indices."""
    cin_g, cout_g = m.in_channels // m.groups, m.out_channels // m.groups
    d = m.dilation_matrix()
    k = m.kernel_size[0]
    out = []
    for c in range(m.out_channels):
        g = c // cout_g
        acc = 0
        for i in range(cin_g):
            dil = int(d[c, i])
            acc = acc + F.conv2d(x[:, g * cin_g + i:g * cin_g + i + 1], m.weight[c:c + 1, i:i + 1],
                                 stride=m.stride, padding=m.padding[0] + (dil - 1) * (k - 1) // 2, dilation=dil)
        out.append(acc)
    return torch.cat(out, 1) + m.bias.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("cin,cout,stride,groups,grouped", [
    (8, 8, 1, 1, True), (8, 12, 2, 2, False), (16, 8, 1, 2, True), (6, 10, 1, 1, False)])
def test_psconv_matches_definition(cin, cout, stride, groups, grouped):
    m = PSConv(cin, cout, 3, stride=stride, padding=1, groups=groups)
    assert m.grouped == grouped
    assert n_params(m) == conv_params(cin, cout, 3, groups)       # same parameters as the conv
    x = torch.randn(2, cin, 12, 12)
    ref = psconv_bruteforce(m, x)
    assert max_diff(m(x), ref) < 1e-5
    assert max_diff(m.forward_masked(x), ref) < 1e-5


def test_psconv_dilation_matrix_is_cyclic_with_row_phase_shift():
    d = PSConv(8, 8, 3, padding=1).dilation_matrix()
    assert d[0].tolist() == [1, 2, 1, 4, 1, 2, 1, 4]
    for r in range(1, 8):
        assert torch.equal(d[r], torch.roll(d[r - 1], -1))         # each row shifted by one phase
    conv = nn.Conv2d(8, 8, 3, padding=1)
    x = torch.randn(1, 8, 9, 9)
    assert max_diff(PSConv.from_conv(conv, pattern=(1,))(x), conv(x)) < 1e-5   # t = 1 → the conv


# =========================================================================== dynamic convs
def test_condconv_params_and_batched_equals_per_sample():
    E = 4
    conv = nn.Conv2d(32, 64, 3, padding=1)
    m = CondConv.from_conv(conv, num_experts=E)
    # E × (conv weight + bias) + routing FC (32 → E)
    assert n_params(m) == E * (64 * 32 * 9 + 64) + (32 * E + E)
    assert n_params(m) == E * n_params(conv) + 32 * E + E

    g = CondConv(8, 12, 3, stride=2, padding=1, groups=2, num_experts=3)
    x = torch.randn(3, 8, 9, 9)
    r = g.routing_weights(x)
    assert r.shape == (3, 3) and ((r > 0) & (r < 1)).all()
    loop = [F.conv2d(x[i:i + 1], (r[i].reshape(-1, 1, 1, 1, 1) * g.weight).sum(0), r[i] @ g.bias,
                     stride=2, padding=1, groups=2) for i in range(3)]
    assert max_diff(g(x), torch.cat(loop)) < 1e-5


@pytest.mark.parametrize("stride", [1, 2])
def test_weightnet_shape_params_and_dynamic(stride):
    m = WeightNetConv.from_conv(nn.Conv2d(32, 64, 3, stride=stride, padding=1))
    x = torch.randn(2, 32, 10, 10)
    y = m(x)
    assert y.shape == (2, 64, 10 // stride, 10 // stride)
    # reduce 32→max(16, 2)=16 (+bias), FC1 16→M·64=128 (+bias), grouped FC2 (groups G·64=128, 1 input each)
    # → 64·32·9 outputs, no bias, plus the static conv bias
    assert n_params(m) == (32 * 16 + 16) + (16 * 128 + 128) + (64 * 32 * 9) * (128 // 128) + 64
    w = m.generate_weight(x)
    assert w.shape == (2, 64, 32, 3, 3)
    assert max_diff(w[0], w[1]) > 0
    ref = torch.cat([F.conv2d(x[i:i + 1], w[i], m.bias, stride=stride, padding=1) for i in range(2)])
    assert max_diff(y, ref) < 1e-5


# =========================================================================== misc
def test_stn_identity_at_init():
    stn = STN(8)
    x = torch.randn(2, 8, 13, 11)
    y = stn(x)
    assert y.shape == x.shape
    assert max_diff(y, x) < 1e-5
    eye = torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]).expand(2, 2, 3)
    assert torch.equal(stn.last_theta, eye)


def test_channel_shuffle_and_registries():
    x = torch.arange(6.0).reshape(1, 6, 1, 1)
    assert ChannelShuffle(2)(x).flatten().tolist() == [0, 3, 1, 4, 2, 5]
    assert ChannelShuffle(3)(x).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    assert set(ACTIVATIONS) == {"relu", "relu6", "hswish", "gelu", "silu"}
    assert isinstance(ACTIVATIONS["hswish"](), nn.Hardswish)
    assert set(NORMS) == {"bn", "gn", "ln"}
    assert NORMS["gn"](64).num_groups == 32 and NORMS["gn"](48).num_groups == 24 and NORMS["gn"](20).num_groups == 20
    ln = NORMS["ln"](5)
    assert isinstance(ln, LayerNorm2d)
    x = torch.randn(2, 5, 3, 4)
    with torch.no_grad():
        ln.weight.normal_()
        ln.bias.normal_()
    ref = F.layer_norm(x.permute(0, 2, 3, 1), (5,), ln.weight, ln.bias, ln.eps).permute(0, 3, 1, 2)
    assert max_diff(ln(x), ref) < 1e-6


def test_describe_covers_every_key():
    d = describe()
    assert set(d) == {"attention", "convs", "activations", "norms"}
    for registry, table in (("attention", ATTENTION), ("convs", CONVS), ("activations", ACTIVATIONS),
                            ("norms", NORMS)):
        assert set(d[registry]) == set(table)
        for key, info in d[registry].items():
            assert set(info) == {"name", "title", "url", "year", "description", "options"}
            assert info["name"] and info["description"].endswith(".")
            if key != "none":
                assert info["title"] and info["url"].startswith("http") and 1990 < info["year"] < 2030
    assert d["attention"]["se"]["options"] == {"reduction": 16}
    assert d["convs"]["doconv"]["options"] == {"D_mul": None}
    assert d["convs"]["psconv"]["options"] == {"pattern": (1, 2, 1, 4)}
    assert d["convs"]["condconv"]["options"]["num_experts"] == 8


# =========================================================================== meta device
@pytest.mark.parametrize("key", sorted(ATTENTION))
def test_attention_runs_on_meta(key):
    with torch.device("meta"):
        block = ATTENTION[key](C)
    y = block(torch.empty(2, C, 9, 7, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, C, 9, 7)


@pytest.mark.parametrize("groups", [1, 2])
@pytest.mark.parametrize("key", sorted(CONVS))
def test_conv_runs_on_meta(key, groups):
    conv = nn.Conv2d(32, 64, 3, stride=2, padding=1, groups=groups, device="meta")
    block = CONVS[key].from_conv(conv)
    assert all(p.device.type == "meta" for p in block.parameters())
    y = block(torch.empty(2, 32, 16, 16, device="meta"))
    assert y.device.type == "meta" and y.shape == (2, 64, 8, 8)
    if hasattr(block, "fold"):
        folded = block.fold()
        assert folded.weight.device.type == "meta" and folded.weight.shape == conv.weight.shape


def test_misc_runs_on_meta():
    x = torch.empty(2, 8, 10, 10, device="meta")
    with torch.device("meta"):
        mods = [STN(8), ChannelShuffle(4), PSConv(6, 10, 3, padding=1)] + [f() for f in ACTIVATIONS.values()] + \
               [f(8) for f in NORMS.values()]
    for m in mods:
        inp = torch.empty(2, 6, 10, 10, device="meta") if isinstance(m, PSConv) else x
        y = m(inp)
        assert y.device.type == "meta" and y.shape[0] == 2 and y.shape[2:] == (10, 10)
