"""Attention maps of PVT v1 / v2, BoTNet, CoAtNet, DETR and the sequence Transformer / BERT: the outputs are
bit-identical with and without the view, the maps have the architecture's shapes and are checked against an
independent computation per kind, and the hooks go away; the Inside page renders them."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from streamlit.testing.v1 import AppTest

from explorer.models import build_model, example_input
from explorer.spec import ModelSpec
from explorer.views.attention import attention_maps, grid_query_map, head_matrix, query_centres
from tests.attention_support import timm_unfused_softmax
from tests.conftest import ROOT


def hook_count(model) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def rand(shape, seed=0):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def tensors(output) -> list[torch.Tensor]:
    if isinstance(output, dict):
        return list(output.values())
    return list(output) if isinstance(output, tuple) else [output]


def viewed(model, x, **kwargs) -> dict:
    """attention_maps, checking that the forward it runs gives exactly the plain forward's outputs,
    that every row is a probability distribution and that no hook is left behind."""
    with torch.no_grad():
        plain = tensors(model(x))
    before = hook_count(model)
    seen = []
    handle = model.register_forward_hook(lambda m, a, o: seen.append(tensors(o)))  # the root: no fused path cares
    try:
        res = attention_maps(model, x, **kwargs)
    finally:
        handle.remove()
    assert hook_count(model) == before == 0
    assert len(seen) == 1 and len(seen[0]) == len(plain)
    assert all(torch.equal(a, b) for a, b in zip(seen[0], plain))
    for name, a in res["maps"].items():
        np.testing.assert_allclose(a.sum(-1), 1.0, atol=1e-5, err_msg=name)
        assert (a >= 0).all(), name
    return res


def capture_inputs(model, x, modules) -> list[tuple[tuple, dict]]:
    """(args, kwargs) of each module's call, from a separate plain forward."""
    seen, handles = [], []
    for m in modules:
        handles.append(m.register_forward_pre_hook(lambda mod, a, k: seen.append((a, k)), with_kwargs=True))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


# --------------------------------------------------------------------------------------------
# PVT: spatial-reduction attention
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_pvt_v1_maps_are_over_the_reduced_grid_and_rebuild_the_output():
    model = build_model(ModelSpec("pvt_v1_tiny"))
    x = rand((1, 3, 224, 224), 1)
    res = viewed(model, x)
    assert res["family"] == "grid" and res["library"] == "native" and len(res["layers"]) == 8
    # stage: heads, queries = (224/stride)², query grid, kv grid = (224/stride/R)² with R = 8, 4, 2, 1
    expected = {"stage1": (1, 56, 7), "stage2": (2, 28, 7), "stage3": (5, 14, 7), "stage4": (8, 7, 7)}
    for name in res["layers"]:
        heads, q, k = expected[name.split(".")[0]]
        prefix = int(name.startswith("stage4"))  # PVT v1's class token joins in stage 4
        assert res["maps"][name].shape == (1, heads, q * q + prefix, k * k + prefix), name
        info = res["info"][name]
        assert info["query_grid"] == [q, q] and info["key_grid"] == [k, k]
        assert info["query_prefix"] == info["key_prefix"] == prefix
    a = res["maps"]["stage1.blocks.0.attn"]
    np.testing.assert_array_equal(grid_query_map(res, "stage1.blocks.0.attn", 0, (10, 20))["map"],
                                  a[0, 0, 10 * 56 + 20].reshape(7, 7))
    cls = grid_query_map(res, "stage4.blocks.1.attn", "mean", 0)
    b = res["maps"]["stage4.blocks.1.attn"][0].mean(0)
    assert cls["prefix_weight"] == pytest.approx(float(b[0, 0]))
    np.testing.assert_allclose(cls["map"], b[0, 1:].reshape(7, 7))
    # The map is the one the module used: proj(map @ V) is the module's own output.
    attn = model.stage1.blocks[0].attn
    seen = {}
    handle = attn.register_forward_hook(lambda m, args, out: seen.update(x=args[0], out=out))
    with torch.no_grad():
        model(x)
    handle.remove()
    with torch.no_grad():
        grid = seen["x"].transpose(1, 2).reshape(1, 64, 56, 56)
        reduced = F.layer_norm(F.conv2d(grid, attn.sr.weight, attn.sr.bias, stride=8).flatten(2).transpose(1, 2),
                               (64,), attn.norm.weight, attn.norm.bias)
        v = F.linear(reduced, attn.kv.weight, attn.kv.bias)[..., 64:]  # (1, 49, 64), one head
        rebuilt = F.linear(torch.from_numpy(a[0, 0]) @ v[0], attn.proj.weight, attn.proj.bias)
    torch.testing.assert_close(rebuilt, seen["out"][0], rtol=1e-4, atol=1e-5)


def _tiny_linear_pvt_v2():
    from timm.models.pvt_v2 import PyramidVisionTransformerV2

    torch.manual_seed(0)
    return PyramidVisionTransformerV2(depths=(1, 1, 1, 1), embed_dims=(32, 64, 128, 256), num_heads=(1, 2, 4, 8),
                                      linear=True, num_classes=10).eval()


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["pvt_v2_b0", "pvt_v2_b2", "linear"])
def test_pvt_v2_maps_match_timm_unfused_path(arch):
    model = _tiny_linear_pvt_v2() if arch == "linear" else build_model(ModelSpec(arch))
    x = rand((1, 3, 224, 224), 2)
    res = viewed(model, x)
    assert res["family"] == "grid" and res["library"] == "timm"
    depths = {"pvt_v2_b0": (2, 2, 2, 2), "pvt_v2_b2": (3, 4, 6, 3), "linear": (1, 1, 1, 1)}[arch]
    heads = (1, 2, 4, 8) if arch == "linear" else (1, 2, 5, 8)
    assert len(res["layers"]) == sum(depths)
    for name in res["layers"]:
        stage = int(name.split(".")[1])
        side = 56 >> stage
        # sr ratios 8, 4, 2, 1 (or the linear mode's 7 × 7 pooling): every stage's keys on a 7 × 7 grid at 224
        assert res["maps"][name].shape == (1, heads[stage], side * side, 49), name
        assert res["info"][name]["query_grid"] == [side, side] and res["info"][name]["key_grid"] == [7, 7]
    ref = timm_unfused_softmax(model, x, [blk.attn for st in model.stages for blk in st.blocks])
    for name, r in zip(res["layers"], ref):
        np.testing.assert_allclose(res["maps"][name], r.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------------
# BoTNet and CoAtNet: all-to-all attention over a feature map with relative positions
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_botnet_maps_equal_a_hand_computation_with_relative_logits():
    model = build_model(ModelSpec("botnet26t_256"))
    x = rand((1, 3, 256, 256), 3)
    res = viewed(model, x)
    assert res["family"] == "grid" and res["library"] == "timm"
    assert {n: res["maps"][n].shape for n in res["layers"]} == {
        "stages.2.1.self_attn": (1, 4, 256, 256), "stages.3.0.self_attn": (1, 4, 256, 256),  # 16 × 16 map
        "stages.3.1.self_attn": (1, 4, 64, 64)}  # 8 × 8 after stages.3.0's 2 × 2 pooling
    assert res["info"]["stages.3.1.self_attn"]["key_grid"] == [8, 8]
    # head 2 of the last block by hand: logit(i, j) = scale · q_i·k_j + q_i·(R_h[y_j − y_i] + R_w[x_j − x_i])
    m = model.stages[3][1].self_attn
    (inp,), _ = capture_inputs(model, x, [m])[0]
    with torch.no_grad():
        _, _, H, W = inp.shape
        qkv = F.conv2d(inp, m.qkv.weight, m.qkv.bias)[0].reshape(-1, H * W)  # channels, positions
        d, head = m.dim_head_qk, 2
        q = qkv[head * d:(head + 1) * d].T  # (HW, d)
        k = qkv[m.dim_out_qk + head * d: m.dim_out_qk + (head + 1) * d]  # (d, HW)
        y, xx = torch.div(torch.arange(H * W), W, rounding_mode="floor"), torch.arange(H * W) % W
        rel_h = m.pos_embed.height_rel[y[None, :] - y[:, None] + H - 1]  # (HW, HW, d)
        rel_w = m.pos_embed.width_rel[xx[None, :] - xx[:, None] + W - 1]
        logits = (q @ k) * m.scale + torch.einsum("id,ijd->ij", q, rel_h + rel_w)
        ref = logits.softmax(-1)
    np.testing.assert_allclose(res["maps"]["stages.3.1.self_attn"][0, head], ref.numpy(), rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_coatnet_maps_match_timm_unfused_path():
    model = build_model(ModelSpec("coatnet_0_rw_224"))
    x = rand((1, 3, 224, 224), 4)
    res = viewed(model, x)
    assert res["family"] == "grid" and len(res["layers"]) == 9  # the two transformer stages: 7 + 2 blocks
    shapes = [res["maps"][n].shape for n in res["layers"]]
    # heads = width / 32: the first block of a stage attends at its input width (192, 384) after the 2× downsample
    assert shapes == [(1, 6, 196, 196)] + [(1, 12, 196, 196)] * 6 + [(1, 12, 49, 49), (1, 24, 49, 49)]
    assert res["info"]["stages.2.blocks.0.attn"]["query_grid"] == [14, 14]
    ref = timm_unfused_softmax(model, x, [blk.attn for st in model.stages[2:] for blk in st.blocks])
    for name, r in zip(res["layers"], ref):
        np.testing.assert_allclose(res["maps"][name], r.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)


# --------------------------------------------------------------------------------------------
# DETR: encoder self-attention and the object queries' cross-attention over the image tokens
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_detr_maps_match_multihead_attention_weights():
    spec = ModelSpec("detr_r50", input_size=(3, 256, 256))
    model, x = build_model(spec), example_input(spec)
    res = viewed(model, x)
    assert res["family"] == "detr" and len(res["layers"]) == 18
    enc, dec_self, cross = ("transformer.encoder.layers.0.self_attn", "transformer.decoder.layers.5.self_attn",
                            "transformer.decoder.layers.5.cross_attn")
    assert res["maps"][enc].shape == (1, 8, 64, 64)  # 8 × 8 stride-32 tokens
    assert res["maps"][dec_self].shape == (1, 8, 100, 100)  # object queries among themselves
    assert res["maps"][cross].shape == (1, 8, 100, 64)  # object queries over the image tokens
    assert res["info"][enc]["query_grid"] == res["info"][enc]["key_grid"] == [8, 8]
    assert "query_grid" not in res["info"][cross] and res["info"][cross]["key_grid"] == [8, 8]
    assert "key_grid" not in res["info"][dec_self]
    # the module's own unfused weights on its actual inputs (positional encodings already in q and k)
    mods = [model.transformer.encoder.layers[0].self_attn, model.transformer.decoder.layers[5].cross_attn]
    for name, mod, (args, kwargs) in zip((enc, cross), mods, capture_inputs(model, x, mods)):
        query, key = args
        assert not torch.equal(key, kwargs["value"])  # k = tokens + positions, v = tokens
        with torch.no_grad():
            _, ref = mod(query, key, kwargs["value"], need_weights=True, average_attn_weights=False)
        np.testing.assert_allclose(res["maps"][name], ref.numpy(), rtol=1e-5, atol=1e-6, err_msg=name)
    np.testing.assert_array_equal(grid_query_map(res, cross, 3, 17)["map"], res["maps"][cross][0, 3, 17].reshape(8, 8))
    centres = query_centres(res, cross, "mean")
    assert centres["centre"].shape == (100, 2) and centres["peak"].shape == (100,)
    assert (centres["centre"] >= 0).all() and (centres["centre"] <= 7).all()


# --------------------------------------------------------------------------------------------
# Token-id models: nn.TransformerEncoder (fused in eval) and nn.TransformerDecoder
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("arch, length, layers, heads", [("bert_base", 16, 12, 12), ("transformer_base", 12, 6, 8)])
def test_sequence_maps_keep_the_fused_encoder_and_match_multihead_attention(monkeypatch, arch, length, layers, heads):
    spec = ModelSpec(arch, input_size=(length,))
    model, ids = build_model(spec), example_input(spec)
    fused = torch._transformer_encoder_layer_fwd
    calls = []
    monkeypatch.setattr(torch, "_transformer_encoder_layer_fwd", lambda *a: calls.append(1) or fused(*a))
    res = viewed(model, ids)
    # the plain forward, then the view's forward and its replay: all on the fused kernel
    assert len(calls) == 3 * layers
    monkeypatch.undo()
    assert res["family"] == "sequence" and res["sequence_length"] == length and res["input_hw"] is None
    encoder = [f"encoder.layers.{i}.self_attn" for i in range(layers)]
    decoder = [f"decoder.layers.{i}.{m}" for i in range(layers) for m in ("self_attn", "multihead_attn")]
    assert res["layers"] == encoder + (decoder if arch == "transformer_base" else [])
    for name in res["layers"]:
        assert res["maps"][name].shape == (1, heads, length, length)
    assert all(res["info"][n]["replay_exact"] and res["info"][n]["kind"] == "torch_encoder" for n in encoder)
    # each encoder layer's map = its self_attn's own unfused weights on the layer's input
    stack = model.encoder.layers
    for name, layer, (args, _) in zip(encoder, stack, capture_inputs(model, ids, list(stack))):
        with torch.no_grad():
            _, ref = layer.self_attn(args[0], args[0], args[0], need_weights=True, average_attn_weights=False)
        np.testing.assert_allclose(res["maps"][name], ref.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)
    if arch == "transformer_base":
        self_map = head_matrix(res, "decoder.layers.0.self_attn", 3)
        assert res["info"]["decoder.layers.0.self_attn"]["causal"]
        assert not np.triu(self_map, 1).any() and (np.diag(self_map) > 0).all()  # position t sees 0..t only
        mods = [layer.multihead_attn for layer in model.decoder.layers]
        for i, (mod, (args, _kwargs)) in enumerate(zip(mods, capture_inputs(model, ids, mods))):
            with torch.no_grad():
                _, ref = mod(*args[:3], need_weights=True, average_attn_weights=False)
            np.testing.assert_allclose(res["maps"][f"decoder.layers.{i}.multihead_attn"], ref.numpy(),
                                       rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------------------------
# Hooks go away when the forward raises
# --------------------------------------------------------------------------------------------

@pytest.mark.slow
def test_hooks_removed_when_the_forward_raises(monkeypatch):
    botnet = build_model(ModelSpec("botnet26t_256"))
    assert hook_count(botnet) == 0
    with pytest.raises(Exception):
        attention_maps(botnet, rand((1, 3, 224, 224)))  # its relative positions are built for 256 × 256
    assert hook_count(botnet) == 0
    bert = build_model(ModelSpec("bert_base", input_size=(8,)))
    ids = example_input(ModelSpec("bert_base", input_size=(8,)))

    def broken(*args, **kwargs):
        raise RuntimeError("after the encoder")

    monkeypatch.setattr(bert.pooler, "forward", broken)  # the encoder's hook has run by then
    assert hook_count(bert) == 0
    with pytest.raises(RuntimeError, match="after the encoder"):
        attention_maps(bert, ids)
    assert hook_count(bert) == 0


# --------------------------------------------------------------------------------------------
# The Inside page
# --------------------------------------------------------------------------------------------

@pytest.mark.usefixtures("clear_streamlit_caches")
@pytest.mark.parametrize("arch, size, charts, text", [
    ("bert_base", "16", 1, "16 random ids"),
    ("detr_r50", "3,256,256", 3, "object queries attends to the 8×8 encoder tokens"),
])
@pytest.mark.slow
def test_inside_attention_view_renders(arch, size, charts, text):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    for k, v in {"arch": arch, "view": "Attention maps", "input": size}.items():
        at.query_params[k] = v
    at.switch_page("pages/3_Inside.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    assert len(at.get("plotly_chart")) == charts
    assert any(text in c.value for c in at.caption)
    # the page says once, in a notice, that the weights are random (what a view shows depends on them)
    assert any("random" in i.value.lower() and "weights" in i.value.lower() for i in at.info)
    at.selectbox(key="inside_attn_layer").select(at.selectbox(key="inside_attn_layer").options[0]).run()
    assert not at.exception and not at.error  # an encoder layer: a token matrix, or a position's map
