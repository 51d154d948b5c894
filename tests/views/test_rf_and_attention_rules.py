"""The per-op receptive-field rules (explorer.views.rf_rules) and the attention strategies
(explorer.views.attention_kinds), each checked on its own against hand-computed values."""
import torch
import torch.nn.functional as F

from explorer.views import attention_kinds, rf_rules
from explorer.views.attention import attention_layers
from explorer.views.rf_trace import Propagator


def run(prop: Propagator, func, *args, **kwargs):
    """Apply ``func`` on meta tensors and let the propagator see the call, as the traces do."""
    out = func(*args, **kwargs)
    prop.handle(func, args, kwargs, out)
    return out


def test_a_conv_then_a_pool_follow_the_window_recursion():
    prop = Propagator((32, 32))
    x = torch.empty(1, 3, 32, 32, device="meta")
    prop.seed(x)
    w = torch.empty(8, 3, 3, 3, device="meta")
    y = run(prop, F.conv2d, x, w, None, 2, 1)  # k 3, s 2, p 1: rf 3, jump 2, start 0 + (1 - 1) * 1 = 0
    st = prop.get(y)
    assert (st.rf, st.jump, st.start, st.size) == ((3.0, 3.0), (2.0, 2.0), (0.0, 0.0), (16, 16))
    z = run(prop, F.max_pool2d, y, 3, 2, 1)  # rf 3 + 2 * 2 = 7, jump 4, start 0 + (1 - 1) * 2 = 0
    st = prop.get(z)
    assert (st.rf, st.jump, st.start, st.size) == ((7.0, 7.0), (4.0, 4.0), (0.0, 0.0), (8, 8))
    g = run(prop, F.adaptive_avg_pool2d, z, 1)  # global pooling: the whole input, centred
    st = prop.get(g)
    assert st.glob and st.pooled and st.rf == (32.0, 32.0) and st.start == (15.5, 15.5)


def test_an_op_without_a_rule_is_merged_and_flagged_unless_pointwise():
    prop = Propagator((16, 16))
    x = torch.empty(1, 4, 16, 16, device="meta")
    prop.seed(x)
    relu = run(prop, torch.relu, x)
    assert prop.get(relu) == prop.get(x) and id(relu) not in prop.notes  # pointwise: unchanged, quiet
    odd = run(prop, torch.sinh, x)  # no rule and not a known pointwise op
    assert prop.get(odd).rf == (1.0, 1.0) and prop.notes[id(odd)] == "sinh: assumed elementwise"


def test_the_rule_table_keeps_the_first_rule_of_a_name():
    assert rf_rules.RULES["conv2d"] is rf_rules._conv2d
    assert rf_rules.RULES["matmul"] is rf_rules._linear_or_matmul  # before the mixers' rule
    assert rf_rules.RULES["mm"] is rf_rules._mixes_positions
    assert all(rf_rules.RULES[name] is rf_rules._reduction for name in rf_rules.REDUCES)
    assert all(rf_rules.RULES[name] is rf_rules._along_dim for name in rf_rules.DIM_OPS)
    assert "relu" not in rf_rules.RULES  # elementwise ops fall through to the merge


def test_every_attention_kind_has_a_strategy():
    kinds = {"mha", "scored", "timm_vit", "torchvision_swin", "timm_swin", "native_pvt", "timm_pvt", "timm_botnet",
             "timm_attention2d"}
    assert set(attention_kinds.STRATEGIES) == kinds  # torch_encoder layers are watched through their stack
    encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                          enable_nested_tensor=False)
    mha = torch.nn.MultiheadAttention(16, 2)
    found = attention_layers(torch.nn.ModuleDict({"enc": encoder, "mha": mha}))
    assert [(name, kind) for name, _, kind in found] == [
        ("enc.layers.0.self_attn", "torch_encoder"), ("enc.layers.1.self_attn", "torch_encoder"), ("mha", "mha")]


def test_the_capture_removes_every_hook_it_registered():
    encoder = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2,
                                          enable_nested_tensor=False).eval()
    cap = attention_kinds.Capture(batch=1)
    attention_kinds.watch(cap, encoder, attention_layers(encoder))
    assert len(cap.handles) == 1 and len(encoder._forward_hooks) == 1  # one hook on the stack, none on its layers
    with torch.no_grad():
        encoder(torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(0)))
    cap.remove()
    assert not encoder._forward_hooks
    assert cap.order == ["layers.0.self_attn", "layers.1.self_attn"]
    assert all(cap.info[k]["replay_exact"] for k in cap.order)
    assert all(cap.maps[k].shape == (1, 2, 5, 5) for k in cap.order)
