import json

import pytest

from tests.cli_support import run_cli


@pytest.mark.slow
def test_cost_json_has_the_documented_fields():
    proc = run_cli("cost", "resnet50", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for key in ("params", "trainable_params", "macs", "flops", "memory_access_bytes", "activations", "input_shape",
                "uncounted_ops", "layers"):
        assert key in result
    assert result["params"] == 25_557_032  # torchvision's num_params
    assert round(result["macs"] / 1e9, 3) == 4.089  # torchvision's _ops, in GMACs
    assert result["flops"] == 2 * result["macs"]
    assert result["input_shape"] == [1, 3, 224, 224]
    assert result["uncounted_ops"] == []
    assert {"name", "type", "params", "macs", "memory_access_bytes", "output_shape"} <= set(result["layers"][1])


@pytest.mark.slow
def test_cost_with_input_batch_and_library_name():
    proc = run_cli("cost", "timm:resnet18", "--input", "3,112,112", "--batch", "2", "--json", "--no-layers")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["input_shape"] == [2, 3, 112, 112]
    assert "layers" not in result


@pytest.mark.slow
def test_list_json_is_the_catalog():
    proc = run_cli("list", "--json")
    assert proc.returncode == 0
    rows = json.loads(proc.stdout)
    ids = {r["id"] for r in rows}
    assert {"resnet50", "swin_t", "seresnet50", "lenet5"} <= ids
    lenet = next(r for r in rows if r["id"] == "lenet5")
    assert lenet["paper"]["url"] and lenet["year"] == 1998


@pytest.mark.parametrize(
    "args,reason",
    [
        (("cost", "no_such_model", "--json"), "unknown architecture"),
        (("cost", "vit_b_16", "--input", "3,100,100", "--json"), "cannot take input 3×100×100"),
        (("cost", "resnet50", "--input", "3,abc", "--json"), "not a list of integers"),
        (("cost", "resnet50", "--batch", "0", "--json"), "batch must be"),
        (("cost", "resnet50", "--input", "3,224", "--json"), "give its input as C,H,W (3 numbers"),
        (("view", "resnet18", "nosuchview"), "invalid choice: 'nosuchview'"),  # argparse's refusal, one line too
        (("cost", "resnet18", "--swap", "conv:igcv2(foo=3)@layer1.0.conv1"), "igcv2 has no option 'foo'"),
        (("losses", "sampling", "--samples", "-5", "--json"), "must be at least 1, got -5"),
        (("losses", "weights", "--cb-beta", "1", "--json"), "strictly between 0 and 1"),
        (("losses", "regression", "--beta", "0", "--json"), "smooth-L1 β must be positive"),
    ],
)
@pytest.mark.slow
def test_bad_requests_exit_non_zero_with_one_line(args, reason):
    proc = run_cli(*args)
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and reason in lines[0], proc.stderr


@pytest.mark.slow
def test_compare_json_keeps_metrics_apart_and_sweeps():
    proc = run_cli("compare", "resnet18", "mobilenet_v2", "spinenet49", "--sweep", "160,224", "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert [r["label"] for r in result["rows"]] == ["resnet18", "mobilenet_v2", "spinenet49"]
    assert round(result["rows"][0]["gmacs"], 3) == 1.814  # torchvision's _ops for resnet18
    # ImageNet top-1 and COCO AP are separate fronts: mobilenet_v2 (fewer MACs, higher top-1) beats resnet18
    assert result["pareto"]["ImageNet top-1 (%)"]["gmacs"] == ["mobilenet_v2"]
    assert result["pareto"]["COCO val2017 box AP (%)"]["gmacs"] == ["spinenet49"]
    sweep = {(r["label"], r["side"]): r["gmacs"] for r in result["sweep"]}
    assert len(sweep) == 6 and sweep[("resnet18", 224)] == result["rows"][0]["gmacs"]
    bad = run_cli("compare", "no_such_model")
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown architecture")


@pytest.mark.slow
def test_view_json_summarises_the_inside_views(tmp_path):
    import numpy as np

    out = tmp_path / "offsets.npz"
    proc = run_cli("view", "resnet50", "offsets", "--swap", "preset:dcnv2", "--out", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert len(result["layers"]) == 13 and result["weights"] == "random"
    assert {layer["mean_modulation"] for layer in result["layers"]} == {0.5}  # DCNv2: zero-initialised, sigmoid(0)
    with np.load(out) as arrays:
        assert arrays["layer4.2.conv2.offset"].shape == (1, 18, 7, 7)  # 2 × 3 × 3 offsets per output pixel
    tokens = run_cli("view", "bert_base", "attention", "--input", "16", "--json")
    assert tokens.returncode == 0, tokens.stderr
    layers = json.loads(tokens.stdout)["layers"]
    assert len(layers) == 12 and layers[0]["shape"] == [1, 12, 16, 16]
    refused = run_cli("view", "bert_base", "offsets")
    assert refused.returncode == 2 and "needs an image model" in refused.stderr


@pytest.mark.slow
def test_cost_second_opinion_bench_roofline_and_tour():
    cost = run_cli("cost", "resnet18", "--second-opinion", "--no-layers", "--json")
    assert cost.returncode == 0, cost.stderr
    result = json.loads(cost.stdout)
    fv = result["second_opinion"]["fvcore"]
    # fvcore = our MACs + its BN and pooling counts, which we report as elementwise ops
    assert fv["total"] == result["macs"] + fv["non_mac_total"]
    assert any("batch_norm" in reason for reason in result["second_opinion"]["reasons"])
    bench = run_cli("bench", "resnet18", "--device", "cpu", "--input", "3,64,64", "--roofline",
                    "--min-runs", "3", "--min-seconds", "0.05", "--json")
    assert bench.returncode == 0, bench.stderr
    roof = json.loads(bench.stdout)["roofline"]
    assert roof["ridge_flops_per_byte"] == pytest.approx(roof["peaks"]["tflops"] * 1e3 / roof["peaks"]["bandwidth_gb_s"])
    assert roof["batches"][0]["flops_per_byte"] > 0
    tour = run_cli("tour", "swin", "--json")
    assert tour.returncode == 0 and json.loads(tour.stdout)["family"] == "swin"
    assert run_cli("tour", "no_such_family").returncode == 2


@pytest.mark.slow
def test_measure_catalog_through_the_backend_agrees_with_the_shipped_table():
    from explorer.measured import load_measured

    proc = run_cli("measure-catalog", "lenet5", "alexnet")
    assert proc.returncode == 0, proc.stderr
    fresh = json.loads(proc.stdout)
    assert set(fresh) == {"lenet5", "alexnet"}
    shipped = load_measured()
    assert fresh["lenet5"] == shipped["lenet5"]
    assert fresh["alexnet"]["params"] == 61_100_840  # torchvision's num_params
    assert fresh["alexnet"] == shipped["alexnet"]
