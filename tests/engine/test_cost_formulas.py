"""Hand-computed counts for single layers: the engine's formulas, checked one by one."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.ops import DeformConv2d

from explorer.cost import trace_costs


def totals(module, x, grad_enabled=False):
    return trace_costs(module.eval(), x, grad_enabled).total


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_conv_macs_and_memory_access_cost(device):
    # ci=8 -> co=16, 3x3, stride 1, 'same' padding, no bias, on 10x10.
    conv = nn.Conv2d(8, 16, 3, padding=1, bias=False).to(device)
    t = totals(conv, torch.randn(1, 8, 10, 10).to(device))
    h = w = 10
    assert t.macs == h * w * 16 * 8 * 9 == 115_200
    # ShuffleNetV2's memory access cost for a conv: hw(ci + co) + k² ci co elements.
    assert t.memory_access_elements == h * w * (8 + 16) + 9 * 8 * 16 == 3_552
    assert t.memory_access_bytes == 4 * 3_552  # fp32
    assert t.activations == 16 * h * w


def test_strided_grouped_conv_macs():
    conv = nn.Conv2d(8, 12, 3, stride=2, padding=1, groups=4, bias=True)
    t = totals(conv, torch.randn(2, 8, 16, 16))
    # output 2x12x8x8; each output sums (8/4)*3*3 = 18 products; bias adds are not MACs.
    assert t.macs == 2 * 12 * 8 * 8 * 18


def test_linear_macs_and_memory_access():
    fc = nn.Linear(20, 30)
    t = totals(fc, torch.randn(4, 20))
    assert t.macs == 4 * 20 * 30
    # addmm reads input 4x20, weight 30x20, bias 30 and writes 4x30.
    assert t.memory_access_elements == 80 + 600 + 30 + 120


def _mha_expected(b, l, e, heads):
    d = e // heads
    projections = 4 * b * l * e * e  # q, k, v and output projections
    attention = 2 * b * heads * l * l * d  # QK^T and AV
    return projections + attention


@pytest.mark.parametrize("grad_enabled", [False, True])
def test_multihead_attention_fused_and_unfused_paths(grad_enabled):
    # In no-grad eval mode nn.MultiheadAttention takes its fused fast path
    # (aten._native_multi_head_attention); with grad it decomposes. Both must count the same.
    mha = nn.MultiheadAttention(32, 4, batch_first=True)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.mha = mha

        def forward(self, x):
            return self.mha(x, x, x, need_weights=False)[0]

    recorder = trace_costs(SelfAttention().eval(), torch.randn(2, 10, 32), grad_enabled)
    assert recorder.total.macs == _mha_expected(2, 10, 32, 4) == 94_720
    ops = set(recorder.by_op)
    fused = "aten._native_multi_head_attention.default" in ops
    assert fused == (not grad_enabled)


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_scaled_dot_product_attention(device):
    class Attn(nn.Module):
        def forward(self, q):
            return F.scaled_dot_product_attention(q, q, q)

    q = torch.randn(1, 2, 16, 8).to(device)  # batch, heads, tokens, head dim
    t = totals(Attn(), q)
    assert t.macs == 2 * (1 * 2 * 16 * 16 * 8)


def test_deformable_conv_counts_conv_and_sampling():
    layer = DeformConv2d(4, 6, 3, padding=1, bias=False)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            offset = torch.zeros(x.shape[0], 2 * 9, x.shape[2], x.shape[3])
            return self.layer(x, offset)

    t = totals(Wrapped(), torch.randn(1, 4, 5, 5))
    taps = 5 * 5 * 9
    assert t.macs == taps * 6 * 4 + taps * 4 * 4  # conv + bilinear interpolation (4 per sample)


def test_grid_sample_bilinear():
    class Sampler(nn.Module):
        def forward(self, x):
            theta = torch.eye(2, 3).unsqueeze(0)
            grid = F.affine_grid(theta, [1, 3, 6, 7], align_corners=False)
            return F.grid_sample(x, grid, align_corners=False)

    t = totals(Sampler(), torch.randn(1, 3, 12, 12))
    affine_grid = 6 * 7 * 2 * 3
    assert t.macs == 3 * 6 * 7 * 4 + affine_grid


def test_elementwise_ops_are_counted_apart_from_macs():
    block = nn.Sequential(nn.BatchNorm2d(4), nn.ReLU())
    t = totals(block, torch.randn(2, 4, 3, 3))
    assert t.macs == 0
    assert t.elementwise_ops == 2 * 72  # one per element for BN, one for ReLU


def test_ops_without_a_formula_are_listed_not_zeroed_silently():
    class TopK(nn.Module):
        def forward(self, x):
            return torch.topk(x, 3).values * 2

    recorder = trace_costs(TopK().eval(), torch.randn(4, 10))
    categories = {name: entry["category"] for name, entry in recorder.by_op.items()}
    assert categories["aten.topk.default"] == "uncounted"
    assert recorder.by_op["aten.topk.default"]["count"] == 1
    assert categories["aten.mul.Tensor"] == "elementwise"


def test_views_cost_no_memory_traffic():
    class Reshape(nn.Module):
        def forward(self, x):
            return x.view(2, -1).t().unsqueeze(0)

    t = totals(Reshape(), torch.randn(2, 3, 4))
    assert t.memory_access_elements == 0 and t.macs == 0


def test_modulated_deformable_conv_adds_the_mask_multiply():
    layer = DeformConv2d(4, 6, 3, padding=1, bias=False)

    class Wrapped(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = layer

        def forward(self, x):
            n, _, h, w = x.shape
            return self.layer(x, torch.zeros(n, 18, h, w), mask=torch.ones(n, 9, h, w))

    t = totals(Wrapped(), torch.randn(1, 4, 5, 5))
    taps = 5 * 5 * 9
    assert t.macs == taps * 6 * 4 + taps * 4 * 4 + taps * 4


@pytest.mark.slow
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("arch", ["mobilenet_v3_large", "resnet50", "efficientnet_b0", "swin_t", "timm:resnest50d"])
def test_meta_fast_path_matches_the_real_meta_kernels(arch, dtype):
    """The shortcut outputs for batch norm and activations equal what the meta kernels return, in fp32 and in
    bf16 (where batch norm's saved statistics stay fp32)."""
    from explorer.models import build_model
    from explorer.spec import ModelSpec
    from tests.meta_support import FastPathCheck

    check = FastPathCheck()
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    model = build_model(ModelSpec(arch), "meta").to(torch_dtype)
    with torch.no_grad(), check:
        model(torch.empty(1, 3, 224, 224, device="meta", dtype=torch_dtype))
    assert sum(check.checked.values()) > 20


def test_lstm_and_gru_cost_the_same_on_the_cpu_kernel_and_on_meta():
    """On meta an RNN decomposes into per-step matmuls; on the CPU oneDNN runs one fused op per layer
    and direction. Both give T·B·(|W_ih| + |W_hh|) per layer and direction."""

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = nn.LSTM(8, 16, num_layers=2, batch_first=True, bidirectional=True)
            self.gru = nn.GRU(8, 16, batch_first=True)

        def forward(self, x):
            return self.lstm(x)[0].sum() + self.gru(x)[0].sum()

    torch.manual_seed(0)
    model = Recurrent().eval()
    steps = 2 * 5  # batch 2, 5 time steps
    lstm = steps * ((64 * 8 + 64 * 16) * 2 + (64 * 32 + 64 * 16) * 2)  # layer 1 sees 8 inputs, layer 2 sees 32
    gru = steps * (48 * 8 + 48 * 16)
    cpu = trace_costs(model, torch.randn(2, 5, 8))
    meta = trace_costs(model.to("meta"), torch.empty(2, 5, 8, device="meta"))
    assert cpu.total.macs == meta.total.macs == lstm + gru
    assert all(e["category"] != "uncounted" for e in cpu.by_op.values())
