"""`--estimate` on the commands that start long work: the estimate a page shows before the job, as JSON,
without running the job."""
import json

import pytest

from explorer.cli import main
from explorer.estimates import TYPICAL_GMACS_PER_S, WARMUP_RUNS, estimate
from explorer.spec import ModelSpec

RESNET18_MACS = 1_814_073_344  # torchvision: 1.814 GMACs


def _printed(capsys) -> dict:
    out, err = capsys.readouterr()
    assert err == "", err
    return json.loads(out)


def test_bench_estimate_is_the_engines_estimate_for_the_same_request(capsys):
    # the command line's entry point in this process (tests/cli/test_cli.py runs it as a subprocess)
    assert main(["bench", "resnet18", "--device", "cpu", "--batch", "1,8", "--min-runs", "5", "--min-seconds", "0",
                 "--estimate"]) == 0
    printed = _printed(capsys)
    assert "results" not in printed  # nothing was timed
    payload = {"spec": ModelSpec("resnet18").to_dict(), "settings": {
        "device": "cpu", "batches": [1, 8], "dtype": "fp32", "channels_last": False, "compile": False,
        "min_runs": 5, "min_seconds": 0.0, "max_seconds": 10.0, "per_layer": False}}
    assert printed == estimate("bench", payload, device="cpu").to_dict()
    # by hand: 3 warm-up + 5 timed runs at batch 1 and at batch 8 (1.0 s a run at 15 GMAC/s: within the 10 s budget)
    assert printed["forwards"] == (WARMUP_RUNS + 5) * (1 + 8) == 72
    assert printed["macs"] == pytest.approx(72 * RESNET18_MACS)
    assert printed["rate_gmacs_per_s"] == TYPICAL_GMACS_PER_S["cpu"] and not printed["rate_measured"]
    assert printed["compute_s"] == pytest.approx(72 * RESNET18_MACS / 15e9)  # 8.7 s
    assert printed["text"].startswith("about 72 image forwards (8 runs × 9 images: batches 1+8) × 1.81 GMACs")


def test_view_and_cam_estimates_count_score_cams_forwards(capsys):
    assert main(["view", "resnet18", "cam", "--method", "scorecam", "--estimate"]) == 0
    printed = _printed(capsys)
    same = estimate("cam", {"spec": ModelSpec("resnet18").to_dict(), "method": "scorecam", "layer": None})
    assert printed == same.to_dict()
    assert printed["forwards"] == 3 + 1 + 512  # one forward per channel of layer4 (512), plus the method's own
    assert printed["device"] == "cpu" and printed["long"]  # 516 × 1.81 GMACs at 15 GMAC/s: about 62 s
    assert main(["cam", "resnet18", "--method", "scorecam", "--estimate"]) == 0
    assert _printed(capsys) == printed
    assert main(["view", "resnet18", "erf", "--layer", "layer4", "--estimate"]) == 0
    erf = _printed(capsys)
    assert erf["kind"] == "erf" and erf["forwards"] == 1 + 4 * 3  # a trace, then 4 inputs forward and back


def test_compare_latency_estimate_adds_up_the_pages_jobs(capsys):
    assert main(["compare", "resnet18", "mobilenet_v2", "--latency", "--sweep", "160,224", "--estimate"]) == 0
    printed = _printed(capsys)
    from explorer.devices import best_device

    specs = [ModelSpec(arch).to_dict() for arch in ("resnet18", "mobilenet_v2")]
    parts = ([estimate("quick_bench", {"spec": spec}, device=best_device()) for spec in specs]
             + [estimate("latency_sweep", {"spec": spec, "sides": [160, 224]}, device=best_device()) for spec in specs])
    assert printed["kind"] == "compare" and printed["forwards"] == sum(p.forwards for p in parts)
    assert printed["seconds"] == pytest.approx(sum(p.seconds for p in parts))
    assert printed["text"].startswith(f"about {printed['forwards']} image forwards (4 jobs: ")


def test_graph_time_estimate_counts_the_onnx_runs(tmp_path, capsys):
    import warnings

    import torch

    from explorer.model_files import read_onnx

    path = tmp_path / "conv.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(torch.nn.Conv2d(3, 8, 3), (torch.randn(1, 3, 16, 16),), str(path), dynamo=False,
                          input_names=["pixels"], dynamic_axes={"pixels": {0: "batch"}})
    assert main(["graph", str(path), "--time", "--batch", "2", "--runs", "5", "--estimate"]) == 0
    printed = _printed(capsys)
    assert printed["kind"] == "onnx_bench" and printed["forwards"] == (WARMUP_RUNS + 5) * 2 == 16
    macs = read_onnx(path.read_bytes(), "conv.onnx")["totals"]["macs"]
    assert macs == 8 * 3 * 9 * 14 * 14  # out channels × in channels × 3×3 × the 14×14 output
    assert printed["macs"] == pytest.approx(16 * macs)


@pytest.mark.parametrize("args,reason", [
    (["bench", "resnet18", "--batch", "0", "--estimate"], "batch sizes must be between 1 and"),
    (["bench", "resnet18", "--estimate=yes"], "argument --estimate: ignored explicit argument 'yes'"),
    (["bench", "no_such_model", "--estimate"], "unknown architecture"),
    (["view", "resnet18", "erf", "--method", "scorecam", "--estimate"], "the erf view does not read --method"),
    (["compare", "resnet18", "--estimate"], "--estimate goes with --latency"),
    (["graph", "resnet18", "--estimate"], "--estimate go with --time"),
])
def test_a_bad_flag_with_estimate_is_one_line_and_exit_2(args, reason, capsys):
    try:
        code = main(args)
    except SystemExit as exit_:  # argparse's own refusals end the process
        code = exit_.code
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1 and reason in lines[0], err
