"""The Ray backend keeps the job service's contract: the same jobs give the same results as on a local
worker process (receptive fields, a CAM from an uploaded checkpoint, a bench's form and where it ran), and
the same limits hold (time limit, Cancel, a worker killed mid-job). One local Ray instance (2 CPUs) serves
the whole module; the contract tests run against both backends."""
from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (requirements-dev.txt pins ray==2.60.0)")

from explorer.errors import ExplorerError
from explorer.jobs import CANCELLED, DONE, FAILED, JobService
from tests.conftest import wait_until

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ["process", "ray"]
SPEC = {"arch": "resnet18", "input_size": [3, 64, 64]}
TINY_BENCH = {"device": "cpu", "batches": [1], "min_runs": 2, "min_seconds": 0.0}
_nonce = itertools.count()




def _fresh_hold(seconds: float) -> dict:
    """A hold payload no earlier test asked for, so it runs rather than coming from the result cache."""
    return {"seconds": seconds, "nonce": next(_nonce)}


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray instance of 2 CPUs for the module (RAY_ADDRESS is set aside so none is joined instead)."""
    from explorer import ray_workers

    saved = os.environ.pop("RAY_ADDRESS", None)
    try:
        ray_workers.connect(num_cpus=2)
        yield ray.get_runtime_context().gcs_address
    finally:
        ray_workers.shutdown()
        if saved is not None:
            os.environ["RAY_ADDRESS"] = saved


@pytest.fixture(scope="module")
def services(ray_address):
    from explorer.ray_workers import ray_workers

    built = {"process": JobService(workers=1, time_limit_s=120),
             "ray": JobService(workers=ray_workers(), time_limit_s=120)}
    yield built
    for service in built.values():
        service.shutdown()


@pytest.fixture(params=BACKENDS)
def service(request, services):
    return services[request.param]


def _run_on_both(services, kind, payload, timeout=180):
    """Submits to both backends at once, then waits for both; {backend: result}."""
    jobs = {name: services[name].submit("T", kind, payload) for name in BACKENDS}
    for job in jobs.values():
        assert job.done_event.wait(timeout)
    return {name: job.outcome() for name, job in jobs.items()}


# --- the same results ------------------------------------------------------------------------------------

def test_receptive_fields_are_identical_on_both_backends(services):
    reports = _run_on_both(services, "receptive_field", {"spec": SPEC})
    assert reports["process"]["rows"] == reports["ray"]["rows"]
    rows = {r["name"]: r for r in reports["ray"]["rows"]}
    # the stem by hand: a 7×7 conv of stride 2, then a 3×3 max-pool of stride 2 sees 7 + (3-1)·2 = 11 pixels
    assert rows["conv1"]["rf"] == [7, 7] and rows["conv1"]["jump"] == [2, 2]
    assert rows["maxpool"]["rf"] == [11, 11] and rows["maxpool"]["jump"] == [4, 4]


@pytest.fixture(scope="module")
def checkpoint() -> bytes:
    import torch
    from safetensors.torch import save

    from explorer.models import build_model
    from explorer.spec import ModelSpec

    torch.manual_seed(0)
    model = build_model(ModelSpec("resnet18", input_size=(3, 64, 64)), "cpu")
    return save({k: v.contiguous() for k, v in model.state_dict().items()})


def test_a_cam_from_an_uploaded_checkpoint_is_identical_on_both_backends(services, checkpoint):
    from safetensors.torch import load

    from explorer.jobs import run_job_kind

    image = (np.arange(64 * 64 * 3) % 251).astype(np.uint8).reshape(64, 64, 3)
    payload = {"spec": SPEC, "image": image, "method": "gradcam++",
               "weights": {"kind": "checkpoint", "name": "w.safetensors", "data": checkpoint}}
    results = _run_on_both(services, "cam", payload)
    here = run_job_kind("cam", payload, lambda text: None)  # a third computation, in this process
    for result in results.values():
        assert "weights_error" not in result
        # every tensor of the checkpoint went into the model: the map is the checkpoint's, not random weights'
        assert result["weights_report"] == {"source": "w.safetensors", "loaded": len(load(checkpoint)),
                                            "missing": [], "unexpected": [], "mismatched": []}
        assert result["heat"].shape == (64, 64)
        assert result["class_index"] == here["class_index"] and result["layer"] == here["layer"]
    assert np.allclose(results["process"]["heat"], results["ray"]["heat"], rtol=0, atol=1e-6)
    assert np.allclose(results["ray"]["heat"], here["heat"], rtol=0, atol=1e-6)
    assert float(np.ptp(here["heat"])) > 0.1  # a real map, not a constant both sides agree on
    assert results["ray"]["heat"].flags.writeable  # arrives as from a worker process, not a read-only view


def test_a_bench_has_the_same_form_on_both_backends_and_names_where_it_ran(services):
    results = _run_on_both(services, "bench", {"spec": SPEC, "settings": TINY_BENCH})
    process, on_ray = results["process"], results["ray"]
    assert set(process) == set(on_ray)
    assert set(process["settings"]) == set(on_ray["settings"])
    assert [set(r) for r in process["results"]] == [set(r) for r in on_ray["results"]]
    assert process["macs_per_sample"] == on_ray["macs_per_sample"]
    assert [r["batch"] for r in on_ray["results"]] == [1] and on_ray["results"][0]["median_ms"] > 0
    # the one CPU worker times with the instance's 2 cores (Ray alone would give it 1 thread)
    assert on_ray["settings"]["threads"] == 2
    assert process["settings"]["worker"] == "worker-0"
    assert on_ray["settings"]["worker"].startswith(("ray-cpu-0@", "ray-gpu-0@"))
    hostname = socket.gethostname()  # the local Ray instance runs on this machine
    assert process["settings"]["host"] == hostname and on_ray["settings"]["host"] == hostname
    assert on_ray["contention"]["pid"] != os.getpid() and on_ray["contention"]["pid"] != process["contention"]["pid"]


def test_a_refused_job_fails_with_the_same_one_line_message_on_both_backends(services):
    jobs = {name: services[name].submit("T", "hold", {"seconds": 99}) for name in BACKENDS}
    for job in jobs.values():
        assert job.done_event.wait(60) and job.state == FAILED
    assert jobs["process"].error == jobs["ray"].error == "hold takes 0 to 30 seconds, got 99.0"


# --- the same limits ---------------------------------------------------------------------------------------

def test_a_job_over_the_time_limit_is_stopped_and_the_next_job_runs(service):
    before = service.run("T", "hold", _fresh_hold(0.05))["pid"]
    restarts = service.stats()["restarts"]
    service.time_limit_s = 3.0  # read on every poll; set back before the next job, which must not race it
    try:
        slow = service.submit("A", "hold", _fresh_hold(20))
        assert slow.done_event.wait(60)
    finally:
        service.time_limit_s = 120
    assert slow.state == FAILED and "time limit" in slow.error and "after 3 s" in slow.error
    nxt = service.submit("B", "hold", _fresh_hold(0.1))
    assert nxt.done_event.wait(60) and nxt.outcome()["held_s"] == 0.1
    assert nxt.outcome()["pid"] != before and service.stats()["restarts"] == restarts + 1


def test_cancelling_a_running_job_stops_its_worker(service):
    job = service.submit("A", "hold", _fresh_hold(20))
    wait_until(lambda: job.progress.endswith("s left"))  # progress reaches the page from either backend
    restarts = service.stats()["restarts"]
    service.cancel(job, "A")
    assert job.done_event.wait(10) and job.state == CANCELLED
    nxt = service.submit("A", "hold", _fresh_hold(0.2))
    assert nxt.done_event.wait(60) and nxt.state == DONE
    assert service.stats()["restarts"] == restarts + 1


def test_a_worker_killed_mid_job_fails_that_job_clearly_and_the_next_one_runs(service):
    worker_pid = service.run("T", "hold", _fresh_hold(0.05))["pid"]
    job = service.submit("A", "hold", _fresh_hold(20))
    wait_until(lambda: job.progress.endswith("s left"))
    restarts = service.stats()["restarts"]
    os.kill(worker_pid, signal.SIGKILL)
    assert job.done_event.wait(30) and job.state == FAILED
    assert job.error.endswith("the worker was restarted, other jobs go on") and "\n" not in job.error
    from explorer.ray_workers import RayWorker

    if isinstance(service._workers[0], RayWorker):
        assert f"its Ray worker on {socket.gethostname()} died: its worker process has died" in job.error
    else:
        assert "worker process ended unexpectedly" in job.error
    nxt = service.submit("B", "hold", _fresh_hold(0.3))
    assert nxt.done_event.wait(60) and nxt.state == DONE
    assert nxt.outcome()["pid"] != worker_pid and service.stats()["restarts"] == restarts + 1


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_job_over_the_memory_limit_is_stopped(backend, ray_address):
    """A fresh worker (a Ray actor starts at ~115 MB resident) asked to hold 600 MB under a 400 MB limit."""
    from explorer.ray_workers import ray_workers

    service = JobService(workers=1 if backend == "process" else ray_workers(), memory_limit_bytes=400 * 2**20)
    try:
        job = service.submit("A", "hold", {"seconds": 20, "megabytes": 600})
        assert job.done_event.wait(60)
        assert job.state == FAILED and "more than 0.4 GB of memory" in job.error
        small = service.submit("A", "hold", {"seconds": 0.1, "megabytes": 10})
        assert small.done_event.wait(60) and small.state == DONE, small.error
    finally:
        service.shutdown()


# --- choosing the backend ---------------------------------------------------------------------------------

def test_the_cli_benches_on_the_ray_cluster_and_names_the_worker(ray_address):
    env = {**os.environ, "EXPLORER_BACKEND": "ray", "RAY_ADDRESS": ray_address}
    done = subprocess.run(
        [sys.executable, "-m", "explorer", "bench", "resnet18", "--input", "3,64,64", "--min-runs", "2",
         "--min-seconds", "0", "--json"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout)  # stdout is the JSON and nothing else
    assert result["settings"]["worker"].startswith(("ray-cpu-0@", "ray-gpu-0@"))
    assert result["settings"]["host"] == socket.gethostname()
    assert result["results"][0]["batch"] == 1 and result["macs_per_sample"] == 148_557_824


@pytest.mark.slow
def test_the_default_backend_never_imports_ray_and_an_unknown_one_is_refused():
    code = ("import sys; import explorer.cli, explorer.jobs as j; j.shared_service().shutdown(); "
            "print('ray' in sys.modules)")
    env = {k: v for k, v in os.environ.items() if k != "EXPLORER_BACKEND"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and done.stdout.strip() == "False", done.stderr[-2000:]
    env["EXPLORER_BACKEND"] = "gpu-farm"
    done = subprocess.run([sys.executable, "-m", "explorer", "bench", "resnet18"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2 and done.stderr == "error: EXPLORER_BACKEND must be local or ray, got 'gpu-farm'\n"


@pytest.mark.slow
def test_an_unreachable_cluster_is_refused_in_one_line_not_waited_for():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"
    env = {**os.environ, "EXPLORER_BACKEND": "ray", "RAY_ADDRESS": address}
    done = subprocess.run([sys.executable, "-m", "explorer", "bench", "resnet18"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr == (f"error: cannot reach the Ray cluster at '{address}': Connection refused; "
                           "start its head with `ray start --head` or fix RAY_ADDRESS\n")


def test_cpu_workers_beyond_the_cluster_are_refused_before_any_actor_starts(ray_address, monkeypatch):
    from explorer.ray_workers import ray_workers

    with pytest.raises(ExplorerError, match="the Ray cluster has 2 CPUs: it can hold 0 to 2 CPU workers, not 5"):
        ray_workers(cpu_workers=5)  # an actor that asks for a CPU the cluster lacks would wait forever
    monkeypatch.setenv("EXPLORER_RAY_CPU_WORKERS", "lots")
    with pytest.raises(ExplorerError, match="EXPLORER_RAY_CPU_WORKERS must be a whole number from 0 to 2, got 'lots'"):
        ray_workers()


@pytest.mark.slow
def test_a_local_ray_instance_outlives_the_request_thread_that_started_it():
    """The web server starts Ray from a session's script thread, which ends with the session. Ray's raylet
    dies with the thread that started it (PR_SET_PDEATHSIG), and the server with the raylet: a class of 10
    brought it down within seconds. Started from a thread that then ends, jobs must still run."""
    script = (
        "import threading, time\n"
        "from explorer.jobs import JobService\n"
        "from explorer import ray_workers\n"
        "t = threading.Thread(target=ray_workers.connect, kwargs={'num_cpus': 1}); t.start(); t.join()\n"
        "service = JobService(workers=ray_workers.ray_workers())\n"
        "time.sleep(2)  # the starting thread is gone; a raylet tied to it would be dead by now\n"
        "print(service.run('s', 'hold', {'seconds': 0.1})['held_s'])\n"
        "service.shutdown(); ray_workers.shutdown()\n")
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}  # its own local instance
    done = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2], env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "0.1"
