"""Native DETR (R50) and UNETR, written from their papers.

Both are costed through the engine at their catalog input sizes (on the meta device) and checked against
the published figures (the exact counts are pinned in explorer/data/measured_costs.json and checked, with a
real CPU forward at a small input, by tests/native/test_native_contract.py). DETR runs once for real on the CPU at
3×128×128 for its attention maps (its catalog size, 800×800, is slow); UNETR on a 32³ volume.
"""
import math

import pytest
import torch
import torch.nn as nn

from explorer.catalog import load_catalog, published_figures, resolve
from explorer.cost import analyse
from explorer.models import build_model, example_input
from explorer.native import NATIVE_BUILDERS
from explorer.spec import ModelSpec
from explorer.views.attention import attention_layers, attention_maps
from tests.native_support import CostReports, shapes

cost = CostReports()

# DETR's params are counted with plain BatchNorm (the official model's 41,302,368 counts only its trainable
# parameters: no frozen-BN affine values, no frozen conv1 / layer1; see test_detr_params_against_the_published_41m).
VARIANTS = ("detr_r50", "unetr")  # catalog ids
UNETR_PAPER_PARAMS = 92.58e6  # UNETR paper, model-complexity table (its 41.19 G FLOPs: see explorer/native/unetr.py)
DETR_PAPER_GFLOPS = 86.0  # DETR paper Table 1: fvcore multiply-adds, mean over 100 COCO val images (~800×1066..1199)


def test_both_catalog_variants_are_registered():
    variants = {v.id: v for v in load_catalog().variants.values() if v.id in VARIANTS}
    assert set(variants) == set(VARIANTS)
    assert all(v.implemented and v.name in NATIVE_BUILDERS for v in variants.values())
    assert tuple(variants["detr_r50"].input_size) == (3, 800, 800)
    assert tuple(variants["unetr"].input_size) == (1, 96, 96, 96)


# --- DETR ------------------------------------------------------------------------------------

def test_detr_params_against_the_published_41m():
    r = cost("detr_r50")
    assert r["params"] == pytest.approx(published_figures(resolve("detr_r50"))["params_m"] * 1e6, rel=0.03)
    model = build_model(ModelSpec("detr_r50"), "meta")
    bn = sum(p.numel() for m in model.modules() if isinstance(m, nn.BatchNorm2d) for p in m.parameters())
    frozen = sum(p.numel() for m in (model.backbone.conv1, model.backbone.layer1) for n, p in m.named_parameters()
                 if "bn" not in n and "downsample.1" not in n)
    assert bn == 53_120
    assert r["params"] - bn - frozen == 41_302_368  # the official script's trainable-parameter count


def test_detr_macs_bracket_the_papers_86_gflops_at_coco_test_sizes():
    # The paper's 86 G is an average over COCO images resized to a shorter side of 800 (4:3 → 800×1066,
    # 3:2 → 800×1199); the catalog's square 800×800 has fewer (60.2 G).
    low = analyse(ModelSpec("detr_r50", input_size=(3, 800, 1066)), with_layers=False)
    high = analyse(ModelSpec("detr_r50", input_size=(3, 800, 1199)), with_layers=False)
    assert low["uncounted_ops"] == [] and high["uncounted_ops"] == []
    assert (low["macs"], high["macs"]) == (81_167_232_000, 91_069_952_000)
    assert low["macs"] < DETR_PAPER_GFLOPS * 1e9 < high["macs"]


def test_detr_structure_and_shapes():
    r = cost("detr_r50")
    s = shapes(r)
    assert s["backbone"] == [1, 2048, 25, 25]
    assert s["input_proj"] == [1, 256, 25, 25]
    assert s["position_embedding"] == [1, 256, 25, 25]
    assert s["transformer.encoder"] == [625, 1, 256]  # one token per stride-32 pixel, sequence first
    assert s["transformer.decoder"] == [100, 1, 256]  # 100 object queries
    assert s["class_embed"] == [1, 100, 92]
    assert s["bbox_embed"] == [1, 100, 4]
    model = build_model(ModelSpec("detr_r50"), "meta")
    assert len(model.transformer.encoder.layers) == len(model.transformer.decoder.layers) == 6
    layer = model.transformer.decoder.layers[0]
    assert (layer.cross_attn.embed_dim, layer.cross_attn.num_heads, layer.linear1.out_features) == (256, 8, 2048)
    assert layer.dropout.p == 0.1
    assert model.query_embed.weight.shape == (100, 256)
    assert [m.out_features for m in model.bbox_embed.layers] == [256, 256, 4]
    names = [name for name, _, kind in attention_layers(model) if kind == "mha"]
    assert names[:2] == ["transformer.encoder.layers.0.self_attn", "transformer.encoder.layers.1.self_attn"]
    assert "transformer.decoder.layers.5.cross_attn" in names and len(names) == 18
    # Encoder: 6 × (4·256²·625 projections + 2·625²·256 attention products + 2·256·2048·625 FFN).
    enc = {row["name"]: row["macs"] for row in r["layers"]}["transformer.encoder"]
    assert enc == 6 * (4 * 256 * 256 * 625 + 2 * 625 * 625 * 256 + 2 * 256 * 2048 * 625)


def test_detr_sine_encoding_matches_the_official_masked_cumsum_form():
    from explorer.native.detr import PositionEmbeddingSine

    h, w, f, eps, scale = 5, 7, 128, 1e-6, 2 * math.pi
    ours = PositionEmbeddingSine(f)(torch.zeros(2, 3, h, w))
    not_mask = torch.ones(2, h, w)  # official PositionEmbeddingSine(normalize=True), no padding
    y_embed, x_embed = not_mask.cumsum(1), not_mask.cumsum(2)
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(f, dtype=torch.float32)
    dim_t = 10000 ** (2 * (dim_t // 2) / f)
    pos_x, pos_y = x_embed[:, :, :, None] / dim_t, y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    ref = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
    torch.testing.assert_close(ours, ref)


@pytest.mark.slow
def test_detr_forward_and_attention_maps_at_128():
    spec = ModelSpec("detr_r50", input_size=(3, 128, 128))
    model, x = build_model(spec), example_input(spec)
    with torch.no_grad():
        out = model(x)
    assert set(out) == {"pred_logits", "pred_boxes"}
    assert out["pred_logits"].shape == (1, 100, 92) and out["pred_boxes"].shape == (1, 100, 4)
    assert torch.isfinite(out["pred_logits"]).all()
    assert ((out["pred_boxes"] >= 0) & (out["pred_boxes"] <= 1)).all()
    res = attention_maps(model, x, layers=["transformer.encoder.layers.5.self_attn",
                                           "transformer.decoder.layers.5.cross_attn"])
    enc, cross = (res["maps"][name] for name in res["layers"])
    assert enc.shape == (1, 8, 16, 16)  # 4 × 4 stride-32 tokens
    assert cross.shape == (1, 8, 100, 16)  # each object query over the encoder tokens
    assert res["info"][res["layers"][0]]["self_attention"] and not res["info"][res["layers"][1]]["self_attention"]


# --- UNETR -----------------------------------------------------------------------------------

def test_unetr_params_against_the_paper():
    assert cost("unetr")["params"] == pytest.approx(UNETR_PAPER_PARAMS, rel=0.03)


def test_unetr_structure_and_shapes():
    s = shapes(cost("unetr"))
    assert s["vit.patch_embed"] == [1, 768, 6, 6, 6]
    assert s["vit.blocks.11"] == [1, 216, 768]
    assert s["encoder1"] == [1, 16, 96, 96, 96]
    assert s["encoder2"] == [1, 32, 48, 48, 48]  # from z3
    assert s["encoder3"] == [1, 64, 24, 24, 24]  # from z6
    assert s["encoder4"] == [1, 128, 12, 12, 12]  # from z9
    assert s["decoder5"] == [1, 128, 12, 12, 12]  # z12 up, with z9's map
    assert s["decoder4"] == [1, 64, 24, 24, 24]
    assert s["decoder3"] == [1, 32, 48, 48, 48]
    assert s["decoder2"] == [1, 16, 96, 96, 96]
    assert s["out"] == [1, 14, 96, 96, 96]
    model = build_model(ModelSpec("unetr"), "meta")
    assert len(model.vit.blocks) == 12 and model.vit.blocks[0].attn.num_heads == 12
    assert model.vit.blocks[0].mlp[0].out_features == 3072
    assert [len(model.encoder2.blocks), len(model.encoder3.blocks), len(model.encoder4.blocks)] == [2, 1, 0]


@pytest.mark.slow
def test_unetr_uses_the_outputs_of_layers_3_6_9_12():
    from explorer.native.unetr import SKIP_LAYERS

    # A real CPU forward on a 32³ volume (2³ tokens) to compare the tensors themselves.
    spec = ModelSpec("unetr", input_size=(1, 32, 32, 32), options=(("image_size", 32),))
    model, x = build_model(spec), example_input(spec)
    seen, taken = {}, {}
    handles = [model.vit.blocks[i].register_forward_hook(lambda m, a, o, i=i: seen.__setitem__(i + 1, o))
               for i in range(12)]
    handles += [getattr(model, name).register_forward_pre_hook(lambda m, a, name=name: taken.__setitem__(name, a[0]))
                for name in ("encoder2", "encoder3", "encoder4", "decoder5")]
    with torch.no_grad():
        out = model(x)
    for h in handles:
        h.remove()
    assert out.shape == (1, 14, 32, 32, 32)
    assert SKIP_LAYERS == (3, 6, 9)
    for name, layer in zip(("encoder2", "encoder3", "encoder4"), SKIP_LAYERS):
        torch.testing.assert_close(taken[name], seen[layer].transpose(1, 2).reshape(1, 768, 2, 2, 2))
    z12 = model.vit.norm(seen[12]).transpose(1, 2).reshape(1, 768, 2, 2, 2)
    torch.testing.assert_close(taken["decoder5"], z12)  # layer 12, after the final LayerNorm
