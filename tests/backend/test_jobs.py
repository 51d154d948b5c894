"""The job service: fair turns, shared and cached results, cancellation, limits, and isolation of jobs
that change process-wide state (torch.fx tracing) from every other request."""
from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import pytest
import torch
import torchvision

from explorer.errors import ExplorerError
from explorer.jobs import CANCELLED, DONE, JobService
from tests.conftest import wait_until




class Gate:
    """An inline job function that records the order jobs ran in; the first job waits for `release`."""

    def __init__(self):
        self.order: list[str] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def __call__(self, kind, payload, progress):
        self.started.set()
        if not self.order:
            self.release.wait(30)
        self.order.append(payload["name"])
        return {"name": payload["name"]}


@pytest.fixture
def gate_service():
    gate = Gate()
    service = JobService(workers=0, run_inline=gate)
    yield service, gate
    gate.release.set()
    service.shutdown()


def test_sessions_take_turns(gate_service):
    service, gate = gate_service
    first = service.submit("A", "t", {"name": "A1"}, replace=False)
    gate.started.wait(10)
    a_jobs = [service.submit("A", "t", {"name": f"A{i}"}, replace=False) for i in range(2, 6)]
    b_job = service.submit("B", "t", {"name": "B1"}, replace=False)
    assert service.position(b_job) == 0  # B runs next although A queued four jobs before it
    assert [service.position(j) for j in a_jobs] == [1, 2, 3, 4]
    gate.release.set()
    for job in [first, *a_jobs, b_job]:
        job.done_event.wait(10)
    assert gate.order == ["A1", "B1", "A2", "A3", "A4", "A5"]


def test_a_new_request_takes_the_place_of_the_sessions_queued_one(gate_service):
    service, gate = gate_service
    service.submit("X", "t", {"name": "X1"})
    gate.started.wait(10)
    a_old = service.submit("A", "t", {"name": "A-old"})
    service.submit("B", "t", {"name": "B1"})
    a_new = service.submit("A", "t", {"name": "A-new"})  # A clicks again with other settings
    assert a_old.state == CANCELLED and "replaced" in a_old.error
    assert service.position(a_new) == 0
    gate.release.set()
    a_new.done_event.wait(10)
    wait_until(lambda: len(gate.order) == 3)
    assert gate.order == ["X1", "A-new", "B1"]


def test_identical_requests_are_computed_once_and_then_cached(gate_service):
    service, gate = gate_service
    jobs = [service.submit(f"student{i}", "t", {"name": "same"}) for i in range(10)]
    gate.release.set()
    assert all(job is jobs[0] for job in jobs)
    assert jobs[0].done_event.wait(10) and jobs[0].outcome() == {"name": "same"}
    again = service.submit("student11", "t", {"name": "same"})
    assert again.cached and again.outcome() == {"name": "same"}
    assert service.computations == 1 and gate.order == ["same"]


def test_a_cancelled_queued_job_never_runs_unless_someone_else_waits_for_it(gate_service):
    service, gate = gate_service
    service.submit("X", "t", {"name": "X1"})
    gate.started.wait(10)
    alone = service.submit("A", "t", {"name": "A1"})
    shared = service.submit("B", "t", {"name": "shared"})
    service.submit("C", "t", {"name": "shared"})
    service.cancel(alone, "A")
    service.cancel(shared, "B")
    assert alone.state == CANCELLED
    with pytest.raises(ExplorerError, match="cancelled"):
        alone.outcome()
    gate.release.set()
    assert shared.done_event.wait(10) and shared.state == DONE  # C still wanted it
    assert gate.order == ["X1", "shared"]


def test_a_session_that_left_has_its_queued_jobs_cancelled():
    gate = Gate()
    service = JobService(workers=0, run_inline=gate, session_timeout_s=0.5)
    try:
        service.submit("X", "t", {"name": "X1"})
        gate.started.wait(10)
        left = service.submit("gone", "t", {"name": "G1"})
        staying = service.submit("here", "t", {"name": "H1"})
        end = time.monotonic() + 3
        while time.monotonic() < end and left.state != CANCELLED:
            service.touch("here")  # this session keeps polling, the other does not
            service.touch("X")
            time.sleep(0.05)
        assert left.state == CANCELLED and "session left" in left.error
        assert staying.state != CANCELLED
    finally:
        gate.release.set()
        service.shutdown()


# The limits on a real worker (time limit, cancel, a killed worker, memory) are tested against both backends,
# local processes and Ray actors, in tests/backend/test_ray_backend.py.


@pytest.mark.slow
def test_tracing_in_a_worker_leaves_every_forward_pass_here_intact():
    """torch.fx patches nn.Module.__call__ for all threads while it traces: in the web server's process,
    ~65,000 of ~65,200 forward passes of other sessions failed during one receptive-field report. Run as
    a job, the trace happens in the worker; a forward loop here, a CAM and a latency run beside it all
    succeed."""
    model = torchvision.models.resnet18().eval()
    x = torch.randn(1, 3, 64, 64)
    failures: list[str] = []
    count = 0
    stop = threading.Event()

    def forwards():
        nonlocal count
        with torch.inference_mode():
            while not stop.is_set():
                try:
                    model(x)
                    count += 1
                except Exception as exc:  # the bug this test guards against is a NameError from fx
                    failures.append(f"{type(exc).__name__}: {exc}")

    service = JobService(workers=2, time_limit_s=300)
    loop = threading.Thread(target=forwards)
    loop.start()
    try:
        spec = {"arch": "resnet50"}
        trace = service.submit("teacher", "receptive_field", {"spec": spec})
        image = (np.arange(96 * 96 * 3) % 251).astype(np.uint8).reshape(96, 96, 3)
        cam = service.submit("student1", "cam", {"spec": {"arch": "resnet18", "input_size": [3, 96, 96]},
                                                 "image": image, "method": "gradcam++"})
        bench = service.submit("student2", "bench", {"spec": {"arch": "resnet18", "input_size": [3, 64, 64]},
                                                     "settings": {"device": "cpu", "batches": [1], "min_runs": 3,
                                                                  "min_seconds": 0.05}})
        end = time.monotonic() + 300
        while not all(job.finished for job in (trace, cam, bench)) and time.monotonic() < end:
            for session in ("teacher", "student1", "student2"):
                service.touch(session)  # as a page does while it waits
            time.sleep(0.5)
    finally:
        stop.set()
        loop.join(30)
        service.shutdown()
    report = trace.outcome()
    assert report["method"] == "fx"
    conv1 = next(r for r in report["rows"] if r["name"] == "conv1")
    assert conv1["rf"] == [7, 7] or conv1["rf"] == 7  # resnet50's stem: one 7×7 conv
    assert cam.outcome()["heat"].shape[:2] == (96, 96)
    result = bench.outcome()
    assert result["results"][0]["batch"] == 1 and result["results"][0]["median_ms"] > 0
    assert "contention" in result and result["contention"]["cpu_count"] == os.cpu_count()
    assert failures == [] and count > 0


def test_the_result_cache_is_bounded_in_bytes(monkeypatch):
    import explorer.jobs as jobs

    monkeypatch.setattr(jobs, "CACHE_BYTES", 4 * 2**20)
    service = JobService(workers=0, run_inline=lambda kind, payload, progress: np.zeros(payload["n"], np.uint8))
    try:
        for i in range(6):  # six results of 0.75 MB: the first ones leave the 4 MB cache
            job = service.submit("A", "t", {"n": 3 * 2**18, "i": i})
            assert job.done_event.wait(10)
        assert service._cache_bytes <= 4 * 2**20
        assert service.submit("A", "t", {"n": 3 * 2**18, "i": 5}).cached
        first = service.submit("A", "t", {"n": 3 * 2**18, "i": 0})
        assert not first.cached
        first.done_event.wait(10)
        big = service.submit("A", "t", {"n": 2 * 2**20})  # over a quarter of the cache: returned, not kept
        assert big.done_event.wait(10) and big.outcome().nbytes == 2 * 2**20
        assert not service.submit("B", "t", {"n": 2 * 2**20}).cached
    finally:
        service.shutdown()


def test_jobs_go_to_a_worker_of_the_device_they_need_and_name_where_they_ran():
    from explorer.jobs import InlineWorker

    ran_on: dict[str, str] = {}

    def worker(name, kind):
        def run(job_kind, payload, progress):
            ran_on[payload["id"]] = name
            return {"settings": {"device": kind}}

        w = InlineWorker(run)
        w.name, w.kind = name, kind
        return w

    service = JobService(workers=[worker("gpu-0", "cuda"), worker("cpu-0", "cpu")])
    try:
        gpu = [service.submit("A", "bench", {"id": f"g{i}", "settings": {"device": "cuda"}}, replace=False) for i in range(3)]
        for job in gpu:
            assert job.done_event.wait(10)
        assert {ran_on[f"g{i}"] for i in range(3)} == {"gpu-0"}
        assert gpu[0].outcome()["settings"]["worker"] == "gpu-0" and gpu[0].outcome()["settings"]["host"]
        pinned = service.submit("B", "bench", {"id": "p", "settings": {"device": "cpu"}, "worker": "cpu-0"})
        assert pinned.done_event.wait(10) and ran_on["p"] == "cpu-0"
    finally:
        service.shutdown()
    cpu_only = JobService(workers=[worker("cpu-0", "cpu")])
    try:
        with pytest.raises(ExplorerError, match="no worker here runs on cuda; the workers run on cpu"):
            cpu_only.submit("A", "bench", {"id": "x", "settings": {"device": "cuda"}})
    finally:
        cpu_only.shutdown()


@pytest.mark.slow
def test_a_worker_starts_from_the_job_loop_not_from_the_page_being_run(monkeypatch):
    """Inside Streamlit, __main__ is the page script being run. A worker started with multiprocessing's spawn
    re-ran it first (importing streamlit, torch and the app: ~0.5 GB before its first job). A worker starts
    from the job loop alone."""
    import types

    from explorer.jobs import rss_bytes
    from tests.conftest import ROOT

    page = types.ModuleType("__main__")
    page.__file__ = str(ROOT / "pages" / "2_Model.py")
    monkeypatch.setitem(sys.modules, "__main__", page)
    service = JobService(workers=1)
    try:
        job = service.submit("A", "hold", {"seconds": 3})
        wait_until(lambda: job.progress.endswith("s left"))
        worker = service._workers[0].process.pid
        assert rss_bytes(worker) < 150 * 2**20  # the job loop and the spec module: tens of MB
        assert job.done_event.wait(30) and job.outcome()["pid"] == worker
    finally:
        service.shutdown()
