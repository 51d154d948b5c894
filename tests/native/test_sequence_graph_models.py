"""Native sequence and graph models: Transformer (base), BERT (base, large), Seq2Seq LSTM and GCN.

Every catalog variant is built through the registry (ModelSpec -> build_model) on the meta device and
costed with explorer.cost.trace_costs on an input we make here (token ids, or node features), then
checked against its published parameter count and a hand-written MAC formula; the smaller models
also run once for real on the CPU (short sequences), the big ones (BERT-large 335M, Seq2Seq 384M)
run for real only in reduced configurations of the same code.
"""
import math

import pytest
import torch

from explorer.catalog import load_catalog
from explorer.cost import trace_costs
from explorer.models import build_model
from explorer.native import NATIVE_BUILDERS
from explorer.native.gcn import CORA_EDGES, GCN
from explorer.native.sequence import BOS_ID, Bert, Seq2SeqLSTM, Transformer, sinusoidal_positions
from explorer.spec import ModelSpec
from tests.native_support import cost_report

catalog = load_catalog()

# catalog id: (exact params, published params in M, why they differ)
PARAMS = {
    # 37000·512 shared (source, target, pre-softmax) + 6·3,152,384 encoder + 6·4,204,032 decoder layers.
    # Table 3's "65M" is not broken down and the vocabulary is only "about 37000": 3.0 % apart.
    "transformer_base": (63_082_496, 65.0),
    # Embeddings 23,837,184 + 12·7,087,872 + pooler 590,592; the README rounds to 110M.
    "bert_base": (109_482_240, 110.0),
    # Embeddings 31,782,912 + 24·12,596,224 + pooler 1,049,600; the README rounds to 340M.
    "bert_large": (335_141_888, 340.0),
    # 160M + 80M embeddings, 2·32M LSTMs, 80M softmax = the paper's 384M; + 144,000 biases
    # (two per LSTM gate row in PyTorch: 2·4·8000, softmax bias 80,000).
    "seq2seq_lstm": (384_144_000, 384.0),
    # 1433·16 + 16 + 16·7 + 7 (pygcn, with biases). No published count: checked against the formula.
    "gcn": (1433 * 16 + 16 + 16 * 7 + 7, None),
}


def transformer_macs(L, d=512, d_ff=2048, layers=6, vocab=37000):
    # Encoder layer: Q, K, V, O projections 4·L·d² + QKᵀ and AV 2·L²·d + FFN 2·L·d·d_ff.
    # Decoder layer: self-attention (4·L·d² + 2·L²·d) + cross-attention (Q, O on the L targets, K, V on
    # the L encoder outputs: 4·L·d², + 2·L²·d) + FFN. Output: L·d·vocab (tied weights, same product).
    encoder = 4 * L * d**2 + 2 * L**2 * d + 2 * L * d * d_ff
    decoder = 8 * L * d**2 + 4 * L**2 * d + 2 * L * d * d_ff
    return layers * (encoder + decoder) + L * d * vocab


def bert_macs(L, layers, d):
    # Per layer: 4·L·d² (Q, K, V, O) + 2·L²·d (QKᵀ, AV) + 2·L·d·4d (FFN); pooler: d² on the [CLS] token.
    # BERT-base at L=128: 12·(4·128·768² + 2·128²·768 + 2·128·768·3072) + 768²
    #                   = 12·(301,989,888 + 25,165,824 + 603,979,776) + 589,824 = 11,174,215,680.
    return layers * (4 * L * d**2 + 2 * L**2 * d + 2 * L * d * 4 * d) + d**2


def seq2seq_macs(L, layers=4, hidden=1000, embed=1000, tgt_vocab=80_000):
    # Each LSTM, each step, each layer: 4 gates · hidden · (input + hidden); two LSTMs; softmax L·h·V.
    per_step = 4 * hidden * (embed + hidden) + (layers - 1) * 4 * hidden * (2 * hidden)
    return 2 * L * per_step + L * hidden * tgt_vocab


def gcn_macs(N=2708, F=1433, H=16, C=7):
    # Dense products: X·W⁰ (N·F·H), Â·(XW⁰) (N²·H), H·W¹ (N·H·C), Â·(HW¹) (N²·C).
    # = 62,089,024 + 117,332,224 + 303,296 + 51,332,848 = 231,057,392.
    return N * F * H + N * N * H + N * H * C + N * N * C


MACS = {
    "transformer_base": transformer_macs(128),  # 8,363,966,464
    "bert_base": bert_macs(128, 12, 768),  # 11,174,215,680
    "bert_large": bert_macs(128, 24, 1024),  # 39,461,060,608
    "seq2seq_lstm": seq2seq_macs(32),  # 4,608,000,000
    "gcn": gcn_macs(),  # 231,057,392
}
VOCAB = {"transformer_base": 37000, "bert_base": 30522, "bert_large": 30522, "seq2seq_lstm": 160_000}


def catalog_input(arch, device="meta", batch=1):
    size = catalog.variants[arch].input_size
    if arch in VOCAB:
        if device == "meta":
            return torch.empty((batch, *size), dtype=torch.long, device="meta")
        return torch.randint(0, VOCAB[arch], (batch, *size), generator=torch.Generator().manual_seed(0))
    return torch.randn((batch, *size), generator=torch.Generator().manual_seed(0)).to(device)


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def uncounted(recorder):
    return [op for op, e in recorder.by_op.items() if e["category"] == "uncounted"]


def test_every_catalog_variant_of_these_families_is_registered():
    ids = {v.id for v in catalog.variants.values() if v.family_id in ("transformer", "bert", "gcn", "seq2seq")}
    assert ids == set(PARAMS)
    assert all(catalog.variants[i].implemented and catalog.variants[i].name in NATIVE_BUILDERS for i in ids)
    assert catalog.variants["transformer_base"].input_size == (128,)
    assert catalog.variants["seq2seq_lstm"].input_size == (32,)
    assert catalog.variants["gcn"].input_size == (2708, 1433)


@pytest.mark.slow
@pytest.mark.parametrize("arch", sorted(PARAMS))
def test_params_and_macs_at_the_catalog_input_size(arch):
    model = build_model(ModelSpec(arch), device="meta")
    exact, published_m = PARAMS[arch]
    assert n_params(model) == exact
    if published_m is not None:
        assert catalog.variants[arch].published["params_m"] == published_m
        assert abs(exact / 1e6 - published_m) / published_m < 0.03
    recorder = trace_costs(model, catalog_input(arch))
    assert recorder.total.macs == MACS[arch]
    assert uncounted(recorder) == []


def test_bert_base_macs_by_hand_at_128_tokens():
    assert MACS["bert_base"] == 12 * (301_989_888 + 25_165_824 + 603_979_776) + 589_824 == 11_174_215_680


def test_gcn_through_analyse():
    # Node features are floats, the engine's default input: analyse works from the catalog entry as is.
    report = cost_report("gcn")
    assert report["params"] == PARAMS["gcn"][0] and report["macs"] == MACS["gcn"]
    assert report["uncounted_ops"] == []
    rows = {r["name"]: r for r in report["layers"]}
    n = 2708
    assert rows["gc1"]["macs"] == n * 1433 * 16 + n * n * 16 and rows["gc1"]["output_shape"] == [1, n, 16]
    assert rows["gc2"]["macs"] == n * 16 * 7 + n * n * 7 and rows["gc2"]["output_shape"] == [1, n, 7]


# --- real CPU forwards and cost on CPU == cost on meta ----------------------------------------

@pytest.fixture(scope="module")
def cpu_models():
    torch.manual_seed(0)
    return {arch: build_model(ModelSpec(arch), device="cpu") for arch in ("transformer_base", "bert_base", "gcn")}


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["transformer_base", "bert_base"])
def test_token_models_run_on_the_cpu_and_cost_the_same_as_on_meta(cpu_models, arch):
    model = cpu_models[arch]
    ids = torch.randint(0, VOCAB[arch], (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(ids)
    if arch == "transformer_base":
        assert out.shape == (2, 16, 37000)
        expected = transformer_macs(16)
    else:
        sequence, pooled = out
        assert sequence.shape == (2, 16, 768) and pooled.shape == (2, 768)
        assert torch.allclose(pooled, torch.tanh(model.pooler.dense(sequence[:, 0])))
        out = sequence
        expected = bert_macs(16, 12, 768)
    assert torch.isfinite(out).all()
    cpu = trace_costs(model, ids)  # eval + no grad on the CPU: nn.MultiheadAttention may take its fused path
    meta = trace_costs(build_model(ModelSpec(arch), device="meta"), ids.to("meta"))
    assert cpu.total.macs == meta.total.macs == 2 * expected
    assert uncounted(cpu) == [] and uncounted(meta) == []


@pytest.mark.slow
def test_gcn_runs_on_the_cpu(cpu_models):
    model = cpu_models["gcn"]
    x = catalog_input("gcn", "cpu")
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, 2708, 7) and torch.isfinite(out).all()
    recorder = trace_costs(model, x)
    assert recorder.total.macs == MACS["gcn"] and uncounted(recorder) == []


@pytest.mark.slow
def test_big_models_output_shapes_on_meta():
    bert = build_model(ModelSpec("bert_large"), device="meta")
    sequence, pooled = bert(torch.empty(2, 128, dtype=torch.long, device="meta"))
    assert sequence.shape == (2, 128, 1024) and pooled.shape == (2, 1024)
    seq2seq = build_model(ModelSpec("seq2seq_lstm"), device="meta")
    assert seq2seq(torch.empty(2, 32, dtype=torch.long, device="meta")).shape == (2, 32, 80_000)


def test_big_models_run_on_the_cpu_in_reduced_configurations():
    torch.manual_seed(0)
    bert = Bert(num_layers=2, hidden=64, num_heads=4, vocab_size=500).eval()  # BERT-large's code path
    with torch.no_grad():
        sequence, pooled = bert(torch.randint(0, 500, (2, 16)))
    assert sequence.shape == (2, 16, 64) and pooled.shape == (2, 64) and torch.isfinite(sequence).all()
    s2s = Seq2SeqLSTM(src_vocab=300, tgt_vocab=100, embed_dim=24, hidden=32, num_layers=4).eval()
    with torch.no_grad():
        logits = s2s(torch.randint(0, 300, (2, 16)))
    assert logits.shape == (2, 16, 100) and torch.isfinite(logits).all()
    assert n_params(s2s) == 300 * 24 + 100 * 24 + 2 * (4 * 32 * (24 + 32) + 3 * 4 * 32 * 64 + 4 * 8 * 32) + 32 * 100 + 100


def test_bert_refuses_more_tokens_than_positions():
    bert = build_model(ModelSpec("bert_base"), device="meta")
    with pytest.raises(ValueError, match="512 learned positions"):
        bert(torch.empty(1, 513, dtype=torch.long, device="meta"))


# --- what the models do ----------------------------------------------------------------------

def test_transformer_shares_one_matrix_and_keeps_it_shared_on_meta():
    model = Transformer(vocab_size=50, d_model=16, num_heads=2, d_ff=32, num_layers=1)
    assert model.generator.embedding is model.embed.tokens
    assert list(model.generator.parameters()) == []
    moved = model.to("meta")
    assert moved.generator.embedding.weight is moved.embed.tokens.weight
    assert moved.generator.embedding.weight.device.type == "meta"


def test_transformer_positions_are_the_papers_sinusoids():
    pe = sinusoidal_positions(10, 8)
    pos, i = 7, 2
    assert math.isclose(pe[pos, 2 * i].item(), math.sin(pos / 10000 ** (2 * i / 8)), rel_tol=1e-5)
    assert math.isclose(pe[pos, 2 * i + 1].item(), math.cos(pos / 10000 ** (2 * i / 8)), rel_tol=1e-5)


def test_transformer_decoder_is_causal_and_teacher_forced():
    torch.manual_seed(0)
    model = Transformer(vocab_size=50, d_model=16, num_heads=2, d_ff=32, num_layers=2).eval()
    src = torch.randint(1, 50, (1, 8))
    with torch.no_grad():
        memory = model.encode(src)
        tgt = torch.randint(1, 50, (1, 8))
        changed = tgt.clone()
        changed[0, 5] = (tgt[0, 5] + 1) % 50
        a, b = model.decode(memory, tgt), model.decode(memory, changed)
        assert torch.allclose(a[:, :5], b[:, :5], atol=1e-6)  # earlier positions never see token 5
        assert not torch.allclose(a[:, 5:], b[:, 5:])
        shifted = torch.cat([torch.full((1, 1), BOS_ID), src[:, :-1]], dim=1)
        assert torch.allclose(model(src), model.decode(memory, shifted))


def test_seq2seq_reads_the_source_reversed_and_decodes_clipped_shifted_ids():
    torch.manual_seed(0)
    model = Seq2SeqLSTM(src_vocab=300, tgt_vocab=100, embed_dim=8, hidden=8, num_layers=2).eval()
    seen = {}
    model.src_embedding.register_forward_pre_hook(lambda m, args: seen.__setitem__("src", args[0]))
    model.tgt_embedding.register_forward_pre_hook(lambda m, args: seen.__setitem__("tgt", args[0]))
    ids = torch.tensor([[5, 150, 7, 299, 42]])
    with torch.no_grad():
        model(ids)
    assert seen["src"].tolist() == [[42, 299, 7, 150, 5]]
    assert seen["tgt"].tolist() == [[BOS_ID, 5, 99, 7, 99]]


def test_gcn_adjacency_is_the_normalised_synthetic_cora_graph():
    model = GCN()
    adj = model.adjacency
    assert adj.shape == (2708, 2708) and torch.equal(adj, adj.T)
    a_hat = (adj > 0).float()  # A + I
    assert torch.all(torch.diagonal(a_hat) == 1)
    assert int(a_hat.sum().item()) == 2 * CORA_EDGES + 2708  # 13,566 non-zeros
    d = a_hat.sum(1).rsqrt()
    assert torch.allclose(adj, d[:, None] * a_hat * d[None, :])
    assert torch.equal(adj, GCN().adjacency)  # seeded: the same graph every time
