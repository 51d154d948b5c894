"""Transformer swaps (tfm:window / shift / patch / score) on torchvision's and timm's ViT and Swin,
checked by hand-computed counts and by equalities with independently built models."""
import pytest
import torch

from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.models import build_model, example_input
from explorer.spec import ModelSpec
from explorer.swaps import swap_points
from explorer.views.swin import swin_masks_for

TIMM_SWIN_T = "timm:swin_tiny_patch4_window7_224"
SWIN_T_BLOCKS = (2, 2, 6, 2)
SWIN_T_HEADS = (3, 6, 12, 24)


def totals(arch, *swaps, size=None):
    return analyse(ModelSpec(arch, swaps=swaps, input_size=size), with_layers=False)


@pytest.mark.parametrize(("swapped", "reference"), [
    ("vit_b_16", "vit_b_32"),
    ("timm:vit_base_patch16_224", "timm:vit_base_patch32_224"),
])
def test_patch_32_on_vit_b_16_is_vit_b_32(swapped, reference):
    got, want = totals(swapped, "tfm:patch(size=32)@all"), totals(reference)
    assert (got["params"], got["macs"]) == (want["params"], want["macs"])
    assert got["macs"] < totals(swapped)["macs"] / 3.9  # 4× fewer tokens, a little less than 4× cheaper


def test_patch_size_must_divide_the_input():
    with pytest.raises(ExplorerError, match="does not divide into 48×48 patches"):
        build_model(ModelSpec("vit_b_16", swaps=("tfm:patch(size=48)@all",)), "meta")


@pytest.mark.parametrize("arch", ["swin_t", TIMM_SWIN_T])
def test_window_8_vs_4_at_256_follows_the_w_msa_formula(arch):
    """At 256×256 (stage sides 64, 32, 16, 8) both windows tile every stage without padding, so
    only the attention products change: 2·hw·M²·C MACs per block (QKᵀ and AV), and the bias table
    (2M−1)² entries per head."""
    w8 = totals(arch, "tfm:window(size=8)@all", size=(3, 256, 256))
    w4 = totals(arch, "tfm:window(size=4)@all", size=(3, 256, 256))
    sides, channels = (64, 32, 16, 8), (96, 192, 384, 768)
    tokens_times_c = sum(s * s * c * n for s, c, n in zip(sides, channels, SWIN_T_BLOCKS))
    assert w8["macs"] - w4["macs"] == 2 * (8 * 8 - 4 * 4) * tokens_times_c == 179_306_496
    table_entries = sum(h * n for h, n in zip(SWIN_T_HEADS, SWIN_T_BLOCKS))
    assert w8["params"] - w4["params"] == (15 * 15 - 7 * 7) * table_entries == 24_288


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["swin_t", TIMM_SWIN_T])
def test_window_and_shift_swaps_reach_the_mask_view(arch):
    plain = build_model(ModelSpec(arch), "cpu")
    assert swin_masks_for(plain, (224, 224), stage=1, block=1)["masked_windows"] == 15
    no_shift = build_model(ModelSpec(arch, swaps=("tfm:shift(size=0)@all",)), "cpu")
    assert swin_masks_for(no_shift, (224, 224), stage=1, block=1)["masked_windows"] == 0
    assert [p["shift"] for p in swap_points(no_shift)["window_attention"]] == [[0, 0]] * sum(SWIN_T_BLOCKS)
    w8 = build_model(ModelSpec(arch, swaps=("tfm:window(size=8)@all",), input_size=(3, 256, 256)), "cpu")
    masks = swin_masks_for(w8, (256, 256), stage=1, block=1)
    # 64×64 tokens in 8×8 windows: 8 + 8 − 1 of the 64 windows straddle the rolled edge.
    assert masks["window"] == [8, 8] and masks["shift"] == [4, 4]
    assert (masks["masked_windows"], masks["total_windows"]) == (15, 64)
    with torch.no_grad():
        assert w8(torch.randn(1, 3, 256, 256)).shape == (1, 1000)


def test_shift_must_be_smaller_than_the_window():
    with pytest.raises(ExplorerError, match="not smaller than its 7×7 window"):
        build_model(ModelSpec("swin_t", swaps=("tfm:shift(size=7)@all",)), "meta")


def _encoder_output(arch, *swaps):
    """Pre-logit features (torchvision zero-initialises ViT's head, so its logits are all 0)."""
    spec = ModelSpec(arch, swaps=swaps)
    model = build_model(spec)
    features = {}
    model.get_submodule("encoder" if arch == "vit_b_16" else "norm").register_forward_hook(
        lambda m, i, o: features.setdefault("out", o))
    with torch.no_grad():
        model(example_input(spec))
    return features["out"]


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vit_b_16", "timm:vit_tiny_patch16_224"])
def test_scaled_dot_and_initial_general_score_reproduce_the_model(arch):
    original = _encoder_output(arch)
    assert torch.allclose(_encoder_output(arch, "tfm:score(kind=scaled_dot)@all"), original, atol=1e-5)
    # Luong's general score starts at W = I/√d: the same products until W is trained.
    assert torch.allclose(_encoder_output(arch, "tfm:score(kind=general)@all"), original, atol=1e-5)
    assert not torch.allclose(_encoder_output(arch, "tfm:score(kind=dot)@all"), original, atol=1e-3)


def test_score_functions_cost_what_the_hand_count_says():
    """DeiT-Ti / ViT-Ti: 12 layers, 3 heads of d = 64, N = 197 tokens."""
    arch, layers, heads, d, n = "timm:vit_tiny_patch16_224", 12, 3, 64, 197
    dot = totals(arch, "tfm:score(kind=dot)@all")
    assert (dot["params"], dot["macs"]) == ((base := totals(arch))["params"], base["macs"])
    general = totals(arch, "tfm:score(kind=general)@all")
    assert general["params"] - dot["params"] == layers * heads * d * d
    assert general["macs"] - dot["macs"] == layers * heads * n * d * d  # q·W per query
    additive = totals(arch, "tfm:score(kind=additive)@all")
    assert additive["params"] - dot["params"] == layers * heads * (2 * d * d + d)
    # W_q q and W_k k for every token; vᵀ tanh(·) over N² pairs replaces the N² dot products.
    assert additive["macs"] - dot["macs"] == layers * heads * 2 * n * d * d
    assert additive["uncounted_ops"] == []


@pytest.mark.slow
def test_score_swap_on_cross_attention_keeps_shapes():
    """DETR's decoder uses nn.MultiheadAttention (sequence-first) for self- and cross-attention."""
    model = build_model(ModelSpec("detr_r50", swaps=("tfm:score(kind=additive)@transformer.decoder.*",),
                                  input_size=(3, 128, 128)))
    assert sum(type(m).__name__ == "ScoredMultiheadAttention" for m in model.modules()) == 12
    with torch.no_grad():
        out = model(torch.randn(1, 3, 128, 128))
    assert out["pred_logits"].shape == (1, 100, 92) and torch.isfinite(out["pred_logits"]).all()


def test_score_swap_refuses_window_attention_with_the_reason():
    with pytest.raises(ExplorerError, match="score swaps apply to global attention"):
        build_model(ModelSpec("swin_t", swaps=("tfm:score(kind=dot)@all",)), "meta")


def test_bad_transformer_swap_options_are_refused():
    with pytest.raises(ExplorerError, match="needs a whole-number size"):
        build_model(ModelSpec("swin_t", swaps=("tfm:window(size=big)@all",)), "meta")
    with pytest.raises(ExplorerError, match="kind= one of"):
        build_model(ModelSpec("vit_b_16", swaps=("tfm:score(kind=cosine)@all",)), "meta")
    with pytest.raises(ExplorerError, match="no Swin window attention"):
        build_model(ModelSpec("resnet50", swaps=("tfm:window(size=8)@all",)), "meta")


def test_swap_points_list_transformer_places():
    vit = swap_points(build_model(ModelSpec("vit_b_16"), "meta"))
    assert len(vit["global_attention"]) == 12 and vit["patch_embedding"][0]["patch"] == 16
    swin = swap_points(build_model(ModelSpec("swin_t"), "meta"))
    assert [p["shift"][0] for p in swin["window_attention"][:4]] == [0, 3, 0, 3]


@pytest.mark.slow
def test_score_swap_on_sequence_models_runs_the_chosen_score():
    """nn.TransformerEncoderLayer's fused fast path would compute scaled dot products from the weights
    and skip the swapped module; the swap keeps the layers on the path that calls it."""
    def encode(*swaps):
        spec = ModelSpec("bert_base", swaps=swaps, input_size=(16,))
        model = build_model(spec)
        with torch.no_grad():
            return model(example_input(spec))[0], model  # (sequence output, pooled output)

    plain, _ = encode()
    same, swapped = encode("tfm:score(kind=scaled_dot)@all")
    assert sum(type(m).__name__ == "ScoredMultiheadAttention" for m in swapped.modules()) == 12
    assert torch.allclose(same, plain, atol=1e-5)
    additive, _ = encode("tfm:score(kind=additive)@all")
    assert not torch.allclose(additive, plain, atol=1e-3)
    transformer = build_model(ModelSpec("transformer_base", swaps=("tfm:score(kind=general)@all",)), "meta")
    # 6 encoder self-attentions, 6 decoder self-attentions and 6 decoder cross-attentions
    assert sum(type(m).__name__ == "ScoredMultiheadAttention" for m in transformer.modules()) == 18


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "size"), [("vit_b_16", None), ("bert_base", (16,))])
def test_attention_view_shows_the_swapped_score(arch, size):
    from explorer.views.attention import attention_maps

    def maps(*swaps):
        spec = ModelSpec(arch, swaps=swaps, input_size=size)
        return attention_maps(build_model(spec), example_input(spec))

    plain, same, additive = maps(), maps("tfm:score(kind=scaled_dot)@all"), maps("tfm:score(kind=additive)@all")
    assert len(same["layers"]) == len(plain["layers"]) == len(additive["layers"]) == 12
    for a, b in zip(plain["layers"], same["layers"]):
        assert abs(plain["maps"][a] - same["maps"][b]).max() < 1e-6
    first = additive["layers"][0]
    assert additive["info"][first]["score"] == "additive"
    assert abs(additive["maps"][first].sum(-1) - 1).max() < 1e-5
    assert abs(additive["maps"][first] - plain["maps"][plain["layers"][0]]).max() > 1e-3
