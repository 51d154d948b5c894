"""Real progress inside the timing jobs: `bench` reports its timed runs done out of those planned, and
`train_bench` its training steps, counts that only go up and end at what the job ran."""
import re

import pytest

from explorer.latency import BenchSettings, time_forward
from explorer.spec import ModelSpec
from explorer.workers import run_job_kind

COUNTS = re.compile(r"([\d,]+) of about ([\d,]+) (timed runs|training steps)")


def counts(texts: list[str], what: str) -> list[tuple[int, int]]:
    found = [COUNTS.match(text) for text in texts]
    return [(int(m.group(1).replace(",", "")), int(m.group(2).replace(",", ""))) for m in found
            if m and m.group(3) == what]


def test_time_forward_counts_every_timed_run_and_ends_at_the_runs_it_made():
    calls, heard = [], []
    settings = BenchSettings(device="cpu", min_runs=7, min_seconds=0.0, max_seconds=60.0)
    stats = time_forward(lambda: calls.append(1), "cpu", settings, lambda done, planned: heard.append((done, planned)))
    assert stats["runs"] == 7 and len(calls) == stats["warmup_runs"] + 7
    assert [done for done, _ in heard] == [1, 2, 3, 4, 5, 6, 7]  # one report per timed run
    assert all(planned == 7 for _, planned in heard)  # the minimum count, from the first run on
    # the callback changes nothing: without it, the same number of runs
    assert time_forward(lambda: None, "cpu", settings)["runs"] == 7


def test_a_minimum_time_plans_runs_at_the_pace_so_far():
    import time

    heard = []
    settings = BenchSettings(device="cpu", min_runs=2, min_seconds=0.12, max_seconds=60.0)
    stats = time_forward(lambda: time.sleep(0.01), "cpu", settings, lambda d, p: heard.append((d, p)))
    done = [d for d, _ in heard]
    assert done == list(range(1, stats["runs"] + 1))
    assert heard[-1] == (stats["runs"], stats["runs"])
    assert all(p > d for d, p in heard[:-1])  # while it goes on, more runs are planned than done
    # a run takes at least 10 ms, so 0.12 s never asks for more than 12 (a busy machine may ask for fewer)
    assert all(p <= 12 for _, p in heard), heard
    assert 2 <= stats["runs"] <= 12


def test_a_bench_job_reports_timed_runs_done_out_of_planned_ending_at_its_runs():
    heard = []
    payload = {"spec": ModelSpec("lenet5").to_dict(), "settings": {
        "device": "cpu", "batches": [1, 2], "min_runs": 5, "min_seconds": 0.0, "max_seconds": 5.0}}
    result = run_job_kind("bench", payload, heard.append)
    runs = sum(row["runs"] for row in result["results"])
    assert [row["runs"] for row in result["results"]] == [5, 5]
    seen = counts(heard, "timed runs")
    assert seen, heard
    done = [d for d, _ in seen]
    assert done == sorted(set(done))  # strictly increasing
    assert seen[-1] == (runs, runs) == (10, 10)
    assert seen[0][1] == 10  # the second batch size is counted at the first one's plan: 5 + 5
    # each batch size's last count is always reported, throttling or not
    assert (5, 10) in seen
    assert any(t == "warming up at batch 2" for t in heard) and "building the model" in heard
    assert any(t.endswith("(batch 2, 2 of 2 batch sizes)") for t in heard)


def test_the_page_bar_reads_the_overall_count_not_the_batch_sizes():
    from ui.jobs import progress_fraction

    assert progress_fraction("7 of about 30 timed runs (batch 4, 2 of 3 batch sizes)") == pytest.approx(7 / 30)
    assert progress_fraction("3 of about 7 training steps (2 untimed)") == pytest.approx(3 / 7)


def test_a_training_step_job_reports_its_steps_ending_at_every_step_it_ran():
    heard = []
    payload = {"spec": ModelSpec("lenet5", batch=2).to_dict(),
               "settings": {"device": "cpu", "optimizer": "sgd", "min_runs": 3, "max_seconds": 10.0}}
    result = run_job_kind("train_bench", payload, heard.append)
    assert result["error"] is None and result["runs"] == 3
    seen = counts(heard, "training steps")
    assert [d for d, _ in seen] == [0, 1, 2, 3, 4, 5]  # reported before each step, then once at the end
    assert all(planned == 2 + 3 for _, planned in seen)  # two untimed steps and three timed
    assert seen[-1] == (2 + result["runs"], 2 + result["runs"])
