"""HRNetV1 / V2 / V2p (TPAMI 2020) on timm's hrnet_w18 body.

Costed through the engine on the meta device at the catalog sizes (the exact counts are pinned in
explorer/data/measured_costs.json and checked, with a real CPU forward, by tests/native/test_native_contract.py).
The paper lists no
W18 figure for our three configurations, so the same constructions are checked at the widths and sizes
it does list (Table I: V1-W32/W48 pose; Table III: V2-W40/W48 Cityscapes; Appendix D: V2-W18 face
landmarks). The paper's GFLOPs are convolution multiply-adds / 2^30 (the official get_model_summary
divides by 1024**3).
"""
import pytest
import torch

from explorer.catalog import load_catalog
from explorer.cost import analyse
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.native.hrnet_necks import hrnet_body
from explorer.spec import ModelSpec
from tests.native_support import CostReports, shapes

cost = CostReports()
GIB = 2 ** 30

VARIANTS = ("hrnet_w18_v1", "hrnet_w18_v2", "hrnet_w18_v2p")  # catalog ids
BODY_PARAMS = 9_562_260  # timm hrnet_w18, four branch outputs, no head


def paper_config(arch: str, size: tuple[int, ...], **options) -> dict:
    r = analyse(ModelSpec(arch, input_size=size, options=tuple(options.items())), with_layers=False)
    assert r["uncounted_ops"] == []
    return r


def test_catalog_variants_are_registered():
    variants = {v.id: v for v in load_catalog().variants.values() if v.id in VARIANTS}
    assert set(variants) == set(VARIANTS)
    assert all(v.implemented and v.name in NATIVE_BUILDERS for v in variants.values())
    assert tuple(variants["hrnet_w18_v1"].input_size) == (3, 256, 192)
    assert tuple(variants["hrnet_w18_v2"].input_size) == (3, 512, 1024)
    assert tuple(variants["hrnet_w18_v2p"].input_size) == (3, 800, 800)


def test_body_gives_the_four_branches():
    body = hrnet_body()
    assert body.feature_info.channels() == [18, 36, 72, 144]
    assert body.feature_info.reduction() == [4, 8, 16, 32]
    assert sum(p.numel() for p in body.parameters()) == BODY_PARAMS


# --- V1 --------------------------------------------------------------------------------------

@pytest.mark.parametrize("width, size, params_m, gflops", [
    (32, (3, 256, 192), 28.5, 7.10),  # Table I
    (48, (3, 256, 192), 63.6, 14.6),
    (32, (3, 384, 288), 28.5, 16.0),
    (48, (3, 384, 288), 63.6, 32.9),
])
@pytest.mark.slow
def test_v1_construction_matches_table_1_at_w32_and_w48(width, size, params_m, gflops):
    r = paper_config("hrnet_w18_v1", size, width=width)
    assert r["params"] == pytest.approx(params_m * 1e6, rel=0.03)
    assert r["macs"] / GIB == pytest.approx(gflops, rel=0.03)


@pytest.mark.slow
def test_v1_structure_shapes_and_forward():
    s = shapes(cost("hrnet_w18_v1"))
    assert s["neck"] == [1, 18, 64, 48]  # the 1/4 branch only
    assert s["head"] == [1, 17, 64, 48]  # 17 COCO keypoint heatmaps at 1/4
    model = build_model(ModelSpec("hrnet_w18_v1"), "meta")
    assert len(model.backbone.stage4[-1].fuse_layers) == 1  # the last fusion feeds the 1/4 output only
    # The dropped fuse layers: 1×1 convs + BN from lower branches, 3×3/2 chains from higher ones.
    assert BODY_PARAMS - sum(p.numel() for p in model.backbone.parameters()) == 244_368


@pytest.mark.slow
def test_v1_trimmed_body_keeps_the_high_resolution_output():
    full, x = hrnet_body().eval(), torch.randn(1, 3, 64, 64)
    v1 = build_model(ModelSpec("hrnet_w18_v1", input_size=(3, 64, 64))).backbone
    missing, unexpected = v1.load_state_dict(full.state_dict(), strict=False)
    assert missing == [] and all(k.startswith("stage4.2.fuse_layers.") for k in unexpected)
    with torch.no_grad():
        torch.testing.assert_close(v1(x)[0], full(x)[0])


# --- V2 --------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("width, params_m, gflops", [(48, 65.9, 696.2), (40, 45.2, 493.2)])  # Table III
def test_v2_construction_matches_table_3_at_w40_and_w48(width, params_m, gflops):
    r = paper_config("hrnet_w18_v2", (3, 1024, 2048), width=width)
    assert r["params"] == pytest.approx(params_m * 1e6, rel=0.03)
    assert r["macs"] / GIB == pytest.approx(gflops, rel=0.03)


@pytest.mark.slow
def test_v2_w18_face_landmark_model_against_appendix_d():
    # Appendix D: HRNetV2-W18, 256×256, 9.3 M / 4.3 G; WFLW has 98 landmarks.
    r = paper_config("hrnet_w18_v2", (3, 256, 256), num_classes=98)
    assert r["params"] == 9_662_528  # +3.9 % over 9.3 M ...
    assert r["macs"] / GIB == pytest.approx(4.3, rel=0.03)
    # ... whereas the 9.3 M matches the V1-W18 body + head: the paper's figure is not that of a V2 model.
    assert cost("hrnet_w18_v1")["params"] == pytest.approx(9.3e6, rel=0.003)


@pytest.mark.slow
def test_v2_neck_is_the_270_channel_concat_and_mix():
    s = shapes(cost("hrnet_w18_v2"))
    assert s["neck"] == [1, 270, 128, 256]  # 15C = 18 + 36 + 72 + 144 at 1/4
    assert s["head"] == [1, 19, 128, 256]  # Cityscapes logits at 1/4
    model = build_model(ModelSpec("hrnet_w18_v2"), "meta")
    # Mix: 1×1 conv 270 → 270 with bias + BN (γ, β); classifier: 1×1 conv 270 → 19 with bias.
    assert sum(p.numel() for p in model.neck.parameters()) == 270 * 270 + 270 + 2 * 270
    assert sum(p.numel() for p in model.head.parameters()) == 270 * 19 + 19
    assert cost("hrnet_w18_v2")["params"] == BODY_PARAMS + 73_710 + 5_149


# --- V2p -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_v2p_pyramid_neck_count_and_shapes():
    model = build_model(ModelSpec("hrnet_w18_v2p"), "meta")
    neck = 270 * 256 + 256 + 5 * (256 * 256 * 9 + 256)  # 1×1 reduction + five 3×3 convs, all with bias
    assert sum(p.numel() for p in model.neck.parameters()) == neck == 3_019_776
    assert cost("hrnet_w18_v2p")["params"] == BODY_PARAMS + neck
    assert not hasattr(model, "head")  # the detector's RPN / RoI heads are not modelled
    r = cost("hrnet_w18_v2p")
    s = shapes(r)
    assert s["neck.reduce"] == [1, 256, 200, 200]
    assert [s[f"neck.convs.{i}"] for i in range(5)] == [
        [1, 256, 200, 200], [1, 256, 100, 100], [1, 256, 50, 50], [1, 256, 25, 25], [1, 256, 12, 12]]


@pytest.mark.slow
def test_v2p_outputs_five_pyramid_levels_at_256():
    spec = ModelSpec("hrnet_w18_v2p", input_size=(3, 256, 256))
    with torch.no_grad():  # shapes only (on meta); the contract test runs it for real
        out = build_model(spec, "meta")(example_input(spec, "meta"))
    assert list(out) == ["p2", "p3", "p4", "p5", "p6"]
    assert [tuple(v.shape[-2:]) for v in out.values()] == [(64, 64), (32, 32), (16, 16), (8, 8), (4, 4)]
    assert all(v.shape[:2] == (1, 256) for v in out.values())
