"""Estimates before a job starts (explorer.estimates): the counts by hand, the CAM figure unchanged, and every
job kind covered."""
import functools
import json
import math

import pytest

from explorer.estimates import (BACKWARD_AS_FORWARDS, BUILD_S, BUILD_S_PER_PARAM, ESTIMATORS, LONG_JOB_S,
                                META_TRACE_S, PROFILE_RUNS, QUICK_KINDS, TRAIN_WARMUP_STEPS, TYPICAL_GMACS_PER_S,
                                WARMUP_RUNS, combine, estimate, measured_rate)
from explorer.job_kinds import JOB_KINDS
from explorer.spec import ModelSpec

RESNET18_MACS, RESNET18_PARAMS = 1_814_073_344, 11_689_512  # torchvision: 1.814 GMACs, num_params 11,689,512
RESNET50_MACS = 4_089_184_256  # torchvision: 4.089 GMACs


@functools.lru_cache(maxsize=None)
def _cost(spec_key: str) -> dict:
    from explorer.cost import analyse

    return analyse(ModelSpec.from_dict(json.loads(spec_key)), with_layers=True)


def cost(spec: dict) -> dict:
    return _cost(ModelSpec.from_dict(spec).key())


def bench_payload(batches, min_runs=10, min_seconds=0.0, max_seconds=600.0, per_layer=False, arch="resnet18"):
    return {"spec": ModelSpec(arch).to_dict(), "settings": {
        "device": "cpu", "batches": list(batches), "min_runs": min_runs, "min_seconds": min_seconds,
        "max_seconds": max_seconds, "per_layer": per_layer}}


def test_a_latency_sweep_is_runs_times_the_batches_times_the_macs_over_the_rate():
    rate = 25.0  # GMAC/s
    shown = estimate("bench", bench_payload([1, 4, 8], min_runs=10), rate, cost=cost)
    runs = WARMUP_RUNS + 10  # 3 warm-up + 10 timed, at each batch size
    assert shown.forwards == runs * (1 + 4 + 8) == 169
    assert shown.gmacs == pytest.approx(RESNET18_MACS / 1e9)
    assert shown.compute_s == pytest.approx(169 * RESNET18_MACS / (rate * 1e9))  # 12.26 s
    # plus one build and the cost engine's traces: per sample and at each of the 3 batch sizes
    assert shown.overhead_s == pytest.approx(BUILD_S + BUILD_S_PER_PARAM * RESNET18_PARAMS + 4 * META_TRACE_S)
    assert shown.seconds == pytest.approx(shown.compute_s + shown.overhead_s)
    assert not shown.measured and shown.rate == rate
    text = shown.text()
    assert text == ("about 169 image forwards (13 runs × 13 images: batches 1+4+8) × 1.81 GMACs = 306.58 GMACs: about "
                    "14 s at about 25 GMAC/s, a typical CPU figure (2 s of it to build the model and trace its cost)"), text


def test_the_timing_budget_and_the_minimum_time_change_the_runs():
    rate = 25.0
    one_at_64 = 64 * RESNET18_MACS / (rate * 1e9)  # 4.64 s a run: over the 2 s budget, so 3 warm-up + 3 timed
    capped = estimate("bench", bench_payload([64], min_runs=10, max_seconds=2.0), rate, cost=cost)
    assert one_at_64 > 2.0 and capped.forwards == (WARMUP_RUNS + 3) * 64
    one_at_1 = RESNET18_MACS / (rate * 1e9)  # 0.0726 s: 5 s of timing asks for 69 runs, more than min_runs
    longer = estimate("bench", bench_payload([1], min_runs=10, min_seconds=5.0), rate, cost=cost)
    assert longer.forwards == WARMUP_RUNS + math.ceil(5.0 / one_at_1) == 3 + 69
    profiled = estimate("bench", bench_payload([2, 4], min_runs=10, per_layer=True), rate, cost=cost)
    assert profiled.forwards == 13 * 6 + PROFILE_RUNS * 2  # the per-layer profile runs at the first batch


def test_a_page_of_jobs_adds_up():
    parts = [estimate("bench", bench_payload([b]), 25.0, cost=cost) for b in (1, 2)]
    total = combine(parts, "bench", "models")
    assert total.forwards == 13 * 3 and total.seconds == pytest.approx(sum(p.seconds for p in parts))
    assert total.detail.startswith("2 models: ")


def test_score_cam_keeps_the_cam_formula():
    """Before: forward_passes(method, input, target channels) × the cost report's MACs per image ÷ 15 GMAC/s on a
    CPU; Score-CAM on resnet50's layer4 (2,048 channels) = 3 + 1 + 2,048 forwards = 8.39 TMACs, about 9 min."""
    from explorer.views.cam import forward_passes

    payload = {"spec": ModelSpec("resnet50").to_dict(), "method": "scorecam", "layer": None}
    shown = estimate("cam", payload, cost=cost)
    assert shown.forwards == forward_passes("scorecam", (224, 224), 2048) == 2052
    assert shown.rate == TYPICAL_GMACS_PER_S["cpu"] == 15.0 and shown.overhead_s == 0
    assert shown.seconds == pytest.approx(2052 * RESNET50_MACS / 15e9)  # 559.4 s
    assert "about 2,052 image forwards (a backward counted as two) × 4.09 GMACs = 8.39 TMACs: about 9 min at about " \
           "15 GMAC/s, a typical CPU figure" == shown.text()
    # a rate this session measured for the method replaces the typical one, and the text says so
    measured = estimate("cam", payload, {"cam:scorecam": 40.0, "cpu": 99.0}, cost=cost)
    assert measured.measured and measured.rate == 40.0
    assert measured.seconds == pytest.approx(2052 * RESNET50_MACS / 40e9)
    assert "at the 40 GMAC/s this method ran at in this session" in measured.text()
    # the default layer's channels from an earlier result win over the cost report's guess
    assert estimate("cam", payload, cost=cost, target_channels=512).forwards == 3 + 1 + 512
    assert estimate("cam", {**payload, "method": "gradcam++"}, cost=cost).forwards == 3 + 1 + BACKWARD_AS_FORWARDS


def test_a_training_step_counts_a_backward_as_two_forwards():
    spec = ModelSpec("resnet18", batch=8).to_dict()
    shown = estimate("train_bench", {"spec": spec, "settings": {"device": "cpu", "min_runs": 5, "max_seconds": 10.0}},
                     25.0, cost=cost)
    step_s = 3 * 8 * RESNET18_MACS / 25e9  # 1.74 s: 10 s of budget holds all 5 timed steps
    assert step_s * 5 < 10.0
    assert shown.forwards == (TRAIN_WARMUP_STEPS + 5) * (1 + BACKWARD_AS_FORWARDS) * 8 == 168
    assert shown.gmacs == pytest.approx(RESNET18_MACS / 1e9)  # per image: the spec's batch of 8 divided out


def test_measured_rates_come_from_the_jobs_own_timings():
    result = {"macs_per_sample": RESNET18_MACS, "settings": {"device": "cpu"},
              "results": [{"batch": 1, "median_ms": 50.0, "runs": 10}, {"batch": 4, "median_ms": 180.0, "runs": 10}]}
    key, rate = measured_rate("bench", bench_payload([1, 4]), result, None)
    assert key == "cpu"
    assert rate == pytest.approx((1 + 4) * 10 * RESNET18_MACS / ((0.050 + 0.180) * 10) / 1e9)  # 39.4 GMAC/s
    assert estimate("bench", bench_payload([1]), {key: rate}, cost=cost).measured
    step = {"device": "cpu", "runs": 5, "step": {"median_ms": 400.0}, "training_step_macs": 3 * 8 * RESNET18_MACS}
    assert measured_rate("train_bench", {}, step, None)[1] == pytest.approx(3 * 8 * RESNET18_MACS / 0.4 / 1e9)
    too_short = {**result, "results": [{"batch": 1, "median_ms": 1.0, "runs": 10}]}  # 10 ms in all says little
    assert measured_rate("bench", bench_payload([1]), too_short, None) is None


def test_every_job_kind_has_an_estimate_or_a_reason_to_be_quick():
    assert not set(ESTIMATORS) & set(QUICK_KINDS)
    missing = set(JOB_KINDS) - set(ESTIMATORS) - set(QUICK_KINDS)
    assert not missing, f"job kinds without an estimate (add one to explorer.estimates.ESTIMATORS): {missing}"
    assert all(len(reason) > 20 for reason in QUICK_KINDS.values())
    assert not set(ESTIMATORS) - set(JOB_KINDS)  # nothing estimated that no longer exists
    for kind in QUICK_KINDS:
        assert estimate(kind, {}) is None


def test_the_model_view_jobs_run_on_the_cpu_and_build_their_model():
    r18 = ModelSpec("resnet18").to_dict()
    for kind, payload in [("erf", {"spec": r18, "layer": "layer4"}), ("fvcore", {"spec": r18}),
                          ("attention", {"spec": r18}), ("fold", {"spec": r18})]:
        shown = estimate(kind, payload, {"cuda": 1e6}, device="cuda", cost=cost)
        assert shown.device == "cpu" and not shown.measured  # built on the CPU whatever the worker has
        assert shown.overhead_s >= BUILD_S + BUILD_S_PER_PARAM * RESNET18_PARAMS
    erf = estimate("erf", {"spec": r18, "layer": "layer4"}, 15.0, cost=cost)
    assert erf.forwards == 1 + 4 * (1 + BACKWARD_AS_FORWARDS)  # a trace, then 4 random inputs forward and back
    hold = estimate("hold", {"seconds": 25.0})
    assert hold.seconds == 25.0 and hold.long and hold.seconds > LONG_JOB_S


def test_progress_counts_become_a_fraction():
    from ui.jobs import progress_fraction

    assert progress_fraction("120 of about 2,052 image forwards") == pytest.approx(120 / 2052)
    assert progress_fraction("timing") is None and progress_fraction("") is None


# resnet18's cost report, row by row: the model, conv1, bn1, relu, maxpool (5); layer1..4 (4); 8 BasicBlocks, each
# itself and conv1, bn1, relu, conv2, bn2 (48); 3 downsamples, each a Sequential, a conv and a bn (9); avgpool, fc (2)
RESNET18_ROWS = 5 + 4 + 8 * 6 + 3 * 3 + 2  # 68
SWIN_T_PARAMS = 28_288_354  # torchvision: num_params 28,288,354


def test_the_receptive_field_trace_builds_the_model_and_traces_its_layers_without_a_forward():
    from explorer.estimates import RF_TRACE_S_PER_LAYER

    r18 = {"spec": ModelSpec("resnet18").to_dict()}
    shown = estimate("receptive_field", r18, 15.0, cost=cost)
    assert len(cost(r18["spec"])["layers"]) == RESNET18_ROWS == 68
    assert shown.forwards == 0 and shown.compute_s == 0  # torch.fx traces the shapes on the meta device
    assert shown.seconds == pytest.approx(BUILD_S + BUILD_S_PER_PARAM * RESNET18_PARAMS + RF_TRACE_S_PER_LAYER * 68)
    assert shown.text() == ("about 1 s to build the model and trace its layers' shapes on the meta device, no real "
                            "forward unless torch.fx cannot trace it (68 layers)")
    # no forward: the rate (measured or typical) does not move it, so a slow CPU does not make it look long
    assert estimate("receptive_field", r18, 0.01, cost=cost).seconds == shown.seconds and not shown.long
    both = combine([shown, shown], "receptive_field", "models")  # the Swap page's base and swapped
    assert both.seconds == pytest.approx(2 * shown.seconds) and both.text().endswith("(2 models: 68 layers)")


def test_swin_masks_build_the_model_and_run_no_forward():
    shown = estimate("swin_masks", {"spec": ModelSpec("swin_t").to_dict(), "stage": 1, "block": 1}, 15.0, cost=cost)
    assert shown.forwards == 0 and shown.seconds == pytest.approx(BUILD_S + BUILD_S_PER_PARAM * SWIN_T_PARAMS)  # 1.07 s
    assert shown.text() == "about 1 s to build the model and read its windows (no forward)"


def test_the_spatial_transformer_demo_is_under_a_second_and_a_models_own_runs_one_forward():
    from explorer.estimates import STN_DEMO_S

    demo = estimate("stn", {"image": [[[0, 0, 0]]], "theta": [[1, 0, 0], [0, 1, 0]]})
    assert demo.forwards == 0 and demo.seconds == STN_DEMO_S < 0.5 and demo.device == "cpu"
    assert demo.text() == "under 1 s to build a small spatial transformer and resample one 160 × 160 image"
    spec = ModelSpec("resnet18", batch=2, swaps=("front:stn@input",)).to_dict()
    own = estimate("stn", {"spec": spec}, 15.0, cost=cost)
    assert own.forwards == 2 and own.gmacs == pytest.approx(cost(spec)["macs"] / 2 / 1e9)  # one forward of the batch


def test_the_channel_connectivity_builds_the_model_and_counts_its_convs_without_a_forward():
    from explorer.estimates import CONNECTIVITY_S_PER_CONV

    # resnet18's convs by hand: conv1, two per BasicBlock (8 blocks), three 1×1 downsamples
    r18 = {"spec": ModelSpec("resnet18").to_dict(), "module": None}
    shown = estimate("connectivity", r18, 15.0, cost=cost)
    assert shown.forwards == 0 and shown.compute_s == 0  # patterns on one-hot 1×1 maps, not an image forward
    assert shown.seconds == pytest.approx(BUILD_S + BUILD_S_PER_PARAM * RESNET18_PARAMS
                                          + CONNECTIVITY_S_PER_CONV * (1 + 2 * 8 + 3))
    assert shown.text().endswith("(no image forward) (20 convs)")
    assert estimate("connectivity", r18, 0.01, cost=cost).seconds == shown.seconds  # the rate does not move it
