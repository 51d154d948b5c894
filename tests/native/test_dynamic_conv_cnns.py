"""Native lightweight CNNs with dynamic / channel-wise convolutions: WeightNet (ShuffleNetV2 1.0×
backbone), ChannelNet-v1 and MicroNet M0–M3. Each is costed through the engine (ModelSpec + analyse,
on the meta device) and checked against the published figures of its catalog entry; the exact counts
and a real CPU forward are tests/native/test_native_contract.py's.
"""
import pytest
import torch

from explorer.catalog import published_figures, resolve
from explorer.native import NATIVE_BUILDERS
from tests.native_support import CostReports, shapes


@pytest.fixture(scope="module")
def reports():
    return CostReports()


# --- WeightNet ------------------------------------------------------------------------------

def test_weightnet_against_the_paper(reports):
    r = reports("weightnet")
    paper = published_figures(resolve("weightnet"))
    s = {row["name"]: row for row in r["layers"]}
    # The paper's 139 M leaves out the 3×3/2 stem conv (it lists plain ShuffleNetV2 1.0× at 138 M,
    # 146 M in ShuffleNetV2's own paper); without it the count agrees.
    assert r["macs"] - s["stem.conv"]["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.03)
    # Parameters: +7.9 % over the published 2.4 M. The kernel-generating FC2s equal the static convs
    # (M/G = 1); the excess is the generating branches' reduce FCs (one per conv in the block
    # library's WeightNetConv, one per block in the official code) and their FC1s, which the
    # official layer definitions have as well — 2.4 M is not reproducible from them. The exact count is
    # pinned in explorer/data/measured_costs.json.
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.08)


def test_weightnet_shufflenetv2_layout(reports):
    s = shapes(reports("weightnet"))
    assert s["maxpool"] == [1, 24, 56, 56]
    assert s["stage2"] == [1, 116, 28, 28]
    assert s["stage3"] == [1, 232, 14, 14]
    assert s["stage4"] == [1, 464, 7, 7]
    assert s["conv_last"] == [1, 1024, 7, 7]


def test_weightnet_kernels_depend_on_the_input():
    model = NATIVE_BUILDERS["weightnet"]().eval()
    conv = model.stage2.block2.main.pw1.conv
    x = torch.randn(2, conv.in_channels, 8, 8)
    w = conv.generate_weight(x)
    assert w.shape == (2, conv.out_channels, conv.in_channels, 1, 1)
    assert not torch.allclose(w[0], w[1])


# --- ChannelNets ----------------------------------------------------------------------------

def test_channelnets_against_the_paper(reports):
    r = reports("channelnets")
    paper = published_figures(resolve("channelnets"))
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.03)
    # Multiply-adds: +15 % over the published 407 M. The paper's own MobileNet row (569 M) less the
    # five dense 512→512 layers the GCWMs replace plus the six g = 2 group layers of three GCWMs is
    # ≈467 M too; we found no layout consistent with both 3.7 M and 407 M. The exact count is pinned in
    # explorer/data/measured_costs.json.
    assert r["macs"] == pytest.approx(paper["gmacs"] * 1e9, rel=0.16)


def test_channelnets_layout(reports):
    s = shapes(reports("channelnets"))
    assert s["stem"] == [1, 32, 112, 112]
    assert s["stage1"] == [1, 64, 112, 112]
    assert s["stage2"] == [1, 128, 56, 56]
    assert s["stage3"] == [1, 256, 28, 28]
    assert s["stage4"] == [1, 512, 14, 14]
    assert s["stage4.gcwm3.body.gcw"] == [1, 512, 14, 14]
    assert s["stage5"] == [1, 1024, 7, 7]


def test_group_channel_wise_conv_is_sparse_and_mixes_groups():
    from explorer.native.channelnets import GroupChannelWiseConv
    gcw = GroupChannelWiseConv(16, groups=2)
    assert sum(p.numel() for p in gcw.parameters()) == 2 * 8  # g filters of d_c = 8 weights
    x = torch.zeros(1, 16, 1, 1, requires_grad=True)
    gcw(x)[0, 0].sum().backward()  # output channel 0 sees a window of d_c input channels only
    assert 0 < int((x.grad != 0).sum()) <= 8


# --- MicroNet -------------------------------------------------------------------------------

def _shift_max_products(arch, report):
    """a·x and b·shift(x) per branch: 2·K multiplies per output element of each Dynamic Shift-Max."""
    from explorer.native.micronet import DynamicShiftMax
    rows = {row["name"]: row for row in report["layers"]}
    model = NATIVE_BUILDERS[arch]()
    return sum(rows[name]["output_elements"] * 2 * m.k
               for name, m in model.named_modules() if isinstance(m, DynamicShiftMax))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["micronet_m0", "micronet_m1", "micronet_m2", "micronet_m3"])
def test_micronet_against_the_paper(arch, reports):
    r = reports(arch)
    paper = published_figures(resolve(arch))
    assert r["params"] == pytest.approx(paper["params_m"] * 1e6, rel=0.03)
    # The paper counts Dynamic Shift-Max's multiplies as MAdds; the engine books them as
    # element-wise ops. With them added the totals match (M2's "12 M" is not in the catalog:
    # we get 12.74 M, +6 % on the paper's rounded figure).
    total = r["macs"] + _shift_max_products(arch, r)
    if arch == "micronet_m2":
        assert "gmacs" not in paper
        assert total == pytest.approx(12e6, rel=0.07)
    else:
        assert total == pytest.approx(paper["gmacs"] * 1e9, rel=0.03)


def test_micronet_m0_layout(reports):
    s = shapes(reports("micronet_m0"))
    assert s["stem"] == [1, 4, 112, 112]
    assert s["features.block1"] == [1, 8, 56, 56]
    assert s["features.block2"] == [1, 12, 28, 28]
    assert s["features.block3"] == [1, 16, 14, 14]
    assert s["features.block5"] == [1, 64, 7, 7]
    assert s["features.block7"] == [1, 384, 7, 7]
    assert s["classifier.fc1"] == [1, 640]


def test_shift_matches_the_official_index_permutation():
    """shift(x) = x[:, index] with the official code's index (groups and channels rolled by one)."""
    from explorer.native.micronet import DynamicShiftMax
    c, g = 12, 3
    dsm = DynamicShiftMax(c, reduction=4, groups=g, relu_like=True)
    gc = c // g
    index = torch.arange(c).view(1, g, gc, 1, 1)
    a, b = torch.split(index, [1, g - 1], dim=1)
    index = torch.cat((b, a), dim=1)
    a, b = torch.split(index, [1, gc - 1], dim=2)
    index = torch.cat((b, a), dim=2).reshape(c)
    x = torch.randn(2, c, 3, 3)
    assert torch.equal(dsm.shift(x), x[:, index])


def test_dynamic_shift_max_coefficients_depend_on_the_input():
    from explorer.native.micronet import DynamicShiftMax
    dsm = DynamicShiftMax(16, reduction=4, groups=4, relu_like=True).eval()
    x = torch.randn(2, 16, 5, 5)
    y = dsm(x)
    assert y.shape == x.shape
    # two samples with different pooled statistics get different mixing coefficients
    coeffs = dsm.fc(x.mean((2, 3)))
    assert coeffs.shape == (2, 4 * 16)  # a1, b1, a2, b2 per channel (K = 2)
    assert not torch.allclose(coeffs[0], coeffs[1])
