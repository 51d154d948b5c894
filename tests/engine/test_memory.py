"""Memory and training cost (explorer.memory): hand-counted small modules, and ResNet-50 against PyTorch's own
measures on real CPU tensors (FlopCounterMode for MACs, saved_tensors_hooks for what autograd keeps)."""
import json
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils.flop_counter import FlopCounterMode

from explorer.errors import ExplorerError
from explorer.memory import (OPTIMIZER_STATE_BYTES_PER_PARAM, _backward_fast_path, largest_batch, memory_report,
                             module_memory, parse_memory_size)
from explorer.models import build_model, example_input
from explorer.spec import MAX_BATCH, ModelSpec
from tests.conftest import ROOT

F32 = 4  # bytes per fp32 element


def meta(module_factory, *shape):
    with torch.device("meta"):
        return module_factory(), torch.empty(*shape)


def test_single_conv_by_hand():
    conv, x = meta(lambda: nn.Conv2d(3, 8, 3, padding=1, bias=False), 1, 3, 8, 8)
    weights, inp, out = 8 * 3 * 9 * F32, 3 * 8 * 8 * F32, 8 * 8 * 8 * F32
    inference = module_memory(conv, x)
    assert inference["params_bytes"] == weights == 864
    assert inference["peak_bytes"] == weights + inp + out  # the input and the output live together
    assert inference["forward_macs"] == 8 * 8 * 8 * 3 * 9

    train = module_memory(conv, x, train=True, optimizer="sgd")
    assert train["saved_activations_bytes"] == inp  # the conv keeps its input (its weight is a parameter)
    assert train["gradients_bytes"] == weights and train["optimizer_bytes"] == 0
    # the input needs no gradient: the backward is the weight gradient alone, as many MACs as the forward
    assert train["backward_macs"] == train["forward_macs"] == 13824
    assert train["peak_bytes"] == weights + inp + out + F32  # plus the scalar loss, while the output still lives


def test_linear_layer_by_hand():
    linear, x = meta(lambda: nn.Linear(16, 4), 5, 16)
    r = module_memory(linear, x, train=True, optimizer="momentum")
    assert r["params_bytes"] == (16 * 4 + 4) * F32
    assert r["saved_activations_bytes"] == 5 * 16 * F32  # addmm keeps its input; weight.t() is the parameter's
    assert r["forward_macs"] == r["backward_macs"] == 5 * 16 * 4  # grad of the weight only; the bias's is a sum
    assert r["optimizer_bytes"] == (16 * 4 + 4) * OPTIMIZER_STATE_BYTES_PER_PARAM["momentum"]


def test_mlp_in_place_relu_shares_its_storage():
    def mlp(inplace):
        return nn.Sequential(nn.Linear(16, 32), nn.ReLU(inplace=inplace), nn.Linear(32, 4))

    shared, x = meta(lambda: mlp(True), 5, 16)
    separate, _ = meta(lambda: mlp(False), 5, 16)
    x_bytes, hidden, out = 5 * 16 * F32, 5 * 32 * F32, 5 * 4 * F32
    for model in (shared, separate):
        r = module_memory(model, x, train=True)
        # the input (first linear), and the ReLU's output, kept once although ReLU and the second linear both save it
        assert r["saved_activations_bytes"] == x_bytes + hidden
        # first linear: weight gradient only; second: weight and input gradients
        assert r["backward_macs"] == 5 * 16 * 32 + 2 * 5 * 32 * 4
    assert module_memory(shared, x)["activation_peak_bytes"] == x_bytes + hidden + out
    # out of place, the ReLU's input and output live together for a moment
    assert module_memory(separate, x)["activation_peak_bytes"] == x_bytes + 2 * hidden


class Attention(nn.Module):
    def __init__(self, dim=32, heads=4):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)

    def forward(self, x):
        b, length, dim = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, length, dim))


def test_attention_block_by_hand():
    block, x = meta(Attention, 2, 16, 32)
    b, length, dim, heads, d = 2, 16, 32, 4, 8
    r = module_memory(block, x, train=True)
    qkv, scores, proj = b * length * dim * 3 * dim, b * heads * length * length * d, b * length * dim * dim
    assert r["forward_macs"] == qkv + 2 * scores + proj
    # qkv: weight gradient only; attention: scores recomputed, then dV, dP, dQ, dK (2.5× its forward); proj: 2×
    assert r["backward_macs"] == qkv + 5 * scores + 2 * proj
    # x, the qkv output (q, k, v are views of it), the attention output (proj's input is a view of it), the
    # log-sum-exp (query length padded to 32) and the kernel's two int64 dropout seeds; never the L×L scores
    lse = b * heads * 32 * F32
    assert r["saved_activations_bytes"] == (b * length * dim + b * length * 3 * dim + b * length * dim) * F32 + lse + 16


def test_multihead_attention_runs_the_memory_efficient_kernel():
    attention, x = meta(lambda: nn.MultiheadAttention(32, 4, batch_first=True), 2, 16, 32)

    class SelfAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attention = attention

        def forward(self, x):
            return self.attention(x, x, x, need_weights=False)[0]

    r = module_memory(SelfAttention(), x, train=True)
    b, length, dim = 2, 16, 32
    projections, core = 4 * b * length * dim * dim, 2 * b * length * length * dim
    assert r["forward_macs"] == projections + core
    # in-projection: weight gradient only; out-projection: both; the core: 2.5× (scores recomputed)
    assert r["backward_macs"] == 3 * b * length * dim * dim + 2 * b * length * dim * dim + 5 * core // 2


def test_depthwise_conv_backward_counts_its_groups():
    conv, x = meta(lambda: nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1, groups=8)), 2, 8, 10, 10)
    r = module_memory(conv, x, train=True, with_layers=True)
    rows = {row["name"]: row for row in r["layers"]}
    depthwise = 2 * 8 * 10 * 10 * 9
    assert rows["1"]["forward_macs"] == depthwise
    assert rows["1"]["backward_macs"] == 2 * depthwise  # input and weight gradients, each one forward's worth
    assert rows["0"]["backward_macs"] == rows["0"]["forward_macs"]  # the first conv: no input gradient


def test_mixed_precision_keeps_fp32_master_weights_and_state():
    model, x = meta(lambda: nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4)).to(torch.bfloat16), 5, 16)
    r = module_memory(model, x.to(torch.bfloat16), train=True, optimizer="adamw")
    params = 16 * 32 + 32 + 32 * 4 + 4
    assert r["dtype"] == "bf16"
    assert r["params_bytes"] == r["gradients_bytes"] == 2 * params
    assert r["master_weights_bytes"] == 4 * params and r["optimizer_bytes"] == 8 * params


def test_backward_fast_path_matches_the_cpu_kernels():
    x = torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)
    grad, weight = torch.randn_like(x), torch.randn(3)
    mean, invstd = torch.randn(3), torch.rand(3) + 0.5
    args = (grad, x, weight, None, None, mean, invstd, True, 1e-5, [True, True, True])
    real = torch.ops.aten.native_batch_norm_backward.default(*args)
    fast = _backward_fast_path(torch.ops.aten.native_batch_norm_backward.default,
                               tuple(a.to("meta") if isinstance(a, torch.Tensor) else a for a in args))
    for r, f in zip(real, fast):
        assert (r.shape, r.stride(), r.dtype) == (f.shape, f.stride(), f.dtype)
    real = torch.ops.aten.threshold_backward.default(grad, x, 0.0)
    fast = _backward_fast_path(torch.ops.aten.threshold_backward.default, (grad.to("meta"), x.to("meta"), 0.0))
    assert (real.shape, real.stride(), real.dtype) == (fast.shape, fast.stride(), fast.dtype)


@pytest.mark.slow
def test_resnet50_batch2_adam_against_a_real_cpu_step():
    spec = ModelSpec("resnet50", batch=2)
    ours = memory_report(spec, train=True, optimizer="adam", with_layers=False)
    params = ours["params"]
    assert params == 25_557_032
    assert ours["gradients_bytes"] == 4 * params
    assert ours["optimizer_bytes"] == 8 * params
    assert ours["peak_breakdown_bytes"]["optimizer"] == 8 * params

    model = build_model(spec, "cpu").train()
    x = example_input(spec, "cpu")
    param_storages = {StorageWeakRef(p.untyped_storage()) for p in model.parameters()}
    saved, kept = {}, []

    def pack(tensor):
        key = StorageWeakRef(tensor.untyped_storage())
        if key not in param_storages and key not in saved:
            saved[key] = tensor.untyped_storage().nbytes()
            kept.append(tensor)  # alive until counted: no address is reused
        return tensor

    with FlopCounterMode(display=False) as forward_count, torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = model(x)
    with FlopCounterMode(display=False) as backward_count:
        out.sum().backward()
    assert ours["forward_macs"] * 2 == forward_count.get_total_flops()
    assert abs(ours["backward_macs"] * 2 - backward_count.get_total_flops()) <= 0.01 * backward_count.get_total_flops()
    assert abs(ours["saved_activations_bytes"] - sum(saved.values())) <= 0.10 * sum(saved.values())


@pytest.mark.slow
def test_largest_batch_is_the_last_that_fits():
    spec = ModelSpec("resnet18", input_size=(3, 64, 64))
    budget = parse_memory_size("0.3GB")
    answer = largest_batch(spec, budget, train=True, optimizer="adam")
    best = answer["largest_batch"]
    assert 1 < best < MAX_BATCH
    peak = lambda batch: memory_report(spec.with_(batch=batch), train=True, with_layers=False)["peak_bytes"]  # noqa: E731
    assert peak(best) <= budget < peak(best + 1)
    assert answer["breaks_at"]["batch"] == best + 1 and answer["breaks_at"]["module"]
    assert largest_batch(spec, budget)["largest_batch"] > best  # inference needs less than training
    assert largest_batch(spec, parse_memory_size("1MB"))["largest_batch"] == 0  # not even the weights


@pytest.mark.parametrize("text, expected", [("24GB", 24 * 10**9), ("80 GiB", 80 * 2**30), ("512mb", 512 * 10**6),
                                            ("141", 141 * 10**9)])
def test_memory_sizes(text, expected):
    assert parse_memory_size(text) == expected


@pytest.mark.parametrize("text", ["", "lots", "1e9", "0.5kB", "1000TB", "24 GB; rm"])
def test_bad_memory_sizes(text):
    with pytest.raises(ExplorerError):
        parse_memory_size(text)


def test_per_layer_rows_add_up_and_checkpointing_saves():
    r = memory_report(ModelSpec("resnet18", input_size=(3, 64, 64), batch=4), train=True, optimizer="sgd")
    rows = {row["name"]: row for row in r["layers"]}
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert rows["(model)"]["backward_macs"] == r["backward_macs"]
    assert sum(row["backward_macs"] for row in r["layers"] if row["depth"] == 1) == r["backward_macs"]
    assert rows["conv1"]["backward_macs"] == rows["conv1"]["forward_macs"]  # the first conv: no input gradient
    assert rows["layer1"]["backward_macs"] == 2 * rows["layer1"]["forward_macs"]
    ckpt = r["checkpointing"]
    assert [s["stage"] for s in ckpt["stages"]] == stages
    assert ckpt["all_stages"]["saved_if_checkpointed_bytes"] < r["saved_activations_bytes"]
    assert ckpt["all_stages"]["recompute_macs"] == sum(rows[s]["forward_macs"] for s in stages)


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "explorer", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow
def test_cli_memory_json():
    done = run_cli("memory", "resnet18", "--input", "3,64,64", "--batch", "4", "--train", "--optimizer", "momentum",
                   "--fits", "1GB", "--json")
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout)
    for key in ("params_bytes", "gradients_bytes", "optimizer_bytes", "saved_activations_bytes", "peak_bytes",
                "forward_macs", "backward_macs", "layers"):
        assert key in r
    assert r["optimizer_bytes"] == 4 * r["params"] and r["gradients_bytes"] == 4 * r["params"]
    assert r["fits"]["largest_batch"] >= 4 and r["fits"]["budget_bytes"] == 10**9


@pytest.mark.parametrize("args", [("--batch", "0"), ("--batch", "5000"), ("--dtype", "fp64"), ("--optimizer", "lion"),
                                  ("--fits", "lots"), ("--input", "3,x,9")])
def test_cli_memory_refuses_bad_input_with_one_line(args, capsys):
    from explorer.cli import main

    try:
        status = main(["memory", "resnet18", *args, "--json"])
    except SystemExit as exc:  # argparse's own refusals
        status = exc.code
    err = capsys.readouterr().err
    assert status == 2
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_model_page_memory_section_shows_the_engine_figures(clear_streamlit_caches):
    from streamlit.testing.v1 import AppTest

    from explorer.units import format_bytes

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params.update(arch="resnet18", input="3,64,64")
    at.switch_page("pages/2_Model.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    spec = ModelSpec("resnet18", input_size=(3, 64, 64))
    training = memory_report(spec, train=True, optimizer="adam", with_layers=False)
    shown = {m.label: m.value for m in at.metric}
    assert shown["Training peak"] == format_bytes(training["peak_bytes"])
    assert shown["Saved for backward"] == format_bytes(training["saved_activations_bytes"])
    at.selectbox(key="model_memory_optimizer").set_value("sgd").run()
    sgd = memory_report(spec, train=True, optimizer="sgd", with_layers=False)
    assert {m.label: m.value for m in at.metric}["Training peak"] == format_bytes(sgd["peak_bytes"])
    at.toggle(key="model_memory_fits_on").set_value(True).run()
    assert not at.exception, [e.value for e in at.exception]
    fits = largest_batch(spec, 24 * 10**9, train=True, optimizer="sgd")["largest_batch"]
    assert any(f"batch **{fits}**" in md.value for md in at.markdown)


@pytest.mark.slow
def test_train_bench_job_times_each_phase_of_a_real_step():
    from explorer.jobs import run_job_kind

    spec = ModelSpec("resnet18", input_size=(3, 32, 32), batch=2)
    result = run_job_kind("train_bench", {"spec": spec.to_dict(), "settings": {"device": "cpu", "optimizer": "sgd",
                                                                              "min_runs": 2, "max_seconds": 1.0}},
                          lambda text: None)
    assert result["error"] is None and result["device"] == "cpu" and result["runs"] >= 2
    assert set(result["phases"]) == {"forward", "backward", "optimizer"}
    assert all(result["phases"][p]["p10_ms"] <= result["phases"][p]["median_ms"] <= result["phases"][p]["p90_ms"]
               for p in result["phases"])
    predicted = memory_report(spec, train=True, optimizer="sgd", with_layers=False)
    assert result["predicted_peak_bytes"] == predicted["peak_bytes"]
    assert result["training_step_macs"] == predicted["training_step_macs"]
    with pytest.raises(ExplorerError):
        run_job_kind("train_bench", {"spec": spec.to_dict(), "settings": {"min_runs": 10**6}}, lambda text: None)


@pytest.mark.slow
def test_swap_page_shows_what_an_se_block_adds_to_saved_activations(clear_streamlit_caches):
    from streamlit.testing.v1 import AppTest

    from explorer.units import format_bytes, format_count

    swap = "attn:se@layer1.*"
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params.update(arch="resnet18", input="3,64,64", swaps=swap)
    at.switch_page("pages/4_Swap.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert not at.error, [e.value for e in at.error]
    base = memory_report(ModelSpec("resnet18", input_size=(3, 64, 64)), train=True, with_layers=False)
    swapped = memory_report(ModelSpec("resnet18", input_size=(3, 64, 64), swaps=(swap,)), train=True, with_layers=False)
    # an SE block saves its squeeze, excitation and the scaled map for backward: more saved bytes, never fewer
    assert swapped["saved_activations_bytes"] > base["saved_activations_bytes"]
    shown = {m.label: m for m in at.metric}
    assert shown["Saved for backward, base"].value == format_bytes(base["saved_activations_bytes"])
    assert shown["Saved for backward, swapped"].value == format_bytes(swapped["saved_activations_bytes"])
    assert shown["Training-step MACs, swapped"].value == format_count(swapped["training_step_macs"], "MAC")


@pytest.mark.slow
def test_compare_puts_training_memory_and_step_macs_on_the_cost_axes():
    from explorer.compare import TRAINING_AXES, compare_set

    specs = [ModelSpec("resnet18", input_size=(3, 64, 64)), ModelSpec("mobilenet_v2", input_size=(3, 64, 64))]
    result = compare_set(specs, training=True)
    for spec, row in zip(specs, result["rows"]):
        report = memory_report(spec, train=True, optimizer="adam", with_layers=False)
        assert row["training_memory_gb"] == report["peak_bytes"] / 1e9
        assert row["training_step_gmacs"] == report["training_step_macs"] / 1e9
        assert row["training_step_gmacs"] > row["gmacs"]  # forward + backward
    for fronts in result["pareto"].values():
        assert set(TRAINING_AXES) <= set(fronts)
    assert "training_memory_gb" not in compare_set(specs[:1])["rows"][0]  # only when asked


@pytest.mark.slow
def test_compare_page_training_toggle_adds_the_axes(clear_streamlit_caches):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params.update(set='["resnet18", "mobilenet_v2"]')
    at.switch_page("pages/6_Compare.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert "training peak (GB)" not in at.selectbox(key="compare_x").options
    at.toggle(key="compare_training").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert {"training peak (GB)", "training-step GMACs"} <= set(at.selectbox(key="compare_x").options)
    at.selectbox(key="compare_x").set_value("training peak (GB)").run()
    assert not at.exception and not at.error
