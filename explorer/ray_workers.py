"""Workers on a Ray cluster: one long-lived actor per GPU (and, when asked, per CPU worker), each a warm
process that runs one job at a time through the same `explorer.jobs.run_job_kind` a ProcessWorker's
child runs, so a job gives the same result on either backend.

The JobService stays where it is (in the web server): it schedules, coalesces, caches and enforces
limits; a RayWorker only carries one job to its actor and back. A job that must stop (time limit,
Cancel, memory limit) kills the actor and a fresh one takes its place, as a ProcessWorker kills its
process. This is the only module that imports ray; with EXPLORER_BACKEND unset nothing imports it.
"""
from __future__ import annotations

import logging
import os
import pickle
import socket
import time
import traceback
from pathlib import Path
from typing import Any

import ray
import ray.exceptions

from explorer.errors import ExplorerError
from explorer.workers import POLL_S, CANCELLED, DONE, FAILED, Worker, rss_bytes

START_TIMEOUT_S = float(os.environ.get("EXPLORER_RAY_START_TIMEOUT_S", "300"))  # actors placed and answering
MAX_CPU_WORKERS = 256
_PROBE_EVERY_S = 0.2  # how often a running job's progress and memory are read from its actor


def connect(address: str | None = None, num_cpus: int | None = None) -> None:
    """Joins the Ray cluster at `address` (default: RAY_ADDRESS), or starts a local Ray instance with
    `num_cpus` CPUs (default: all of this machine's) when none is named. Does nothing when connected."""
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address:
        _check_reachable(address)
    try:
        if address:
            # the cluster's machines get this checkout's engine code with the job, so every worker runs
            # the code this server runs; only the packages (requirements, ray) must be installed there
            _init_in_a_lasting_thread(address=address, ignore_reinit_error=True,
                                      runtime_env={"py_modules": [str(Path(__file__).resolve().parent)]}, **quiet)
        else:
            _init_in_a_lasting_thread(num_cpus=num_cpus or os.cpu_count() or 1, ignore_reinit_error=True, **quiet)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        where = f"the Ray cluster at {address[:200]!r}" if address else "a local Ray instance"
        raise ExplorerError(f"cannot connect to {where}: {_first_line(exc)}") from None


def _init_in_a_lasting_thread(**kwargs) -> None:
    """ray.init in a thread that lives as long as this process. A local instance's raylet and GCS are started
    with PR_SET_PDEATHSIG, which Linux fires when the *thread* that started them ends: started from a web
    request's thread (a Streamlit script run), they were killed as soon as that session left, and with them
    the server ("connection to the plasma store failed", exit 1)."""
    import threading

    started, failure = threading.Event(), []

    def keep():
        try:
            ray.init(**kwargs)
        except BaseException as exc:  # handed to the caller below
            failure.append(exc)
        started.set()
        if not failure:
            threading.Event().wait()  # never returns: the thread, and Ray's processes with it, last

    threading.Thread(target=keep, name="explorer-ray-init", daemon=True).start()
    started.wait()
    if failure:
        raise failure[0]


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A HOST:PORT address (or ray://HOST:PORT) must answer a TCP connection: ray.init retries an
    unreachable one for many minutes, and the server's first page would wait all that time."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isascii() or not port.isdigit():
        return  # "auto" and the like: Ray finds the cluster itself
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        raise ExplorerError(f"cannot reach the Ray cluster at {address[:200]!r}: "
                            f"{getattr(exc, 'strerror', None) or exc}; start its head with `ray start --head` "
                            "or fix RAY_ADDRESS") from None


def shutdown() -> None:
    """Disconnects from Ray (and stops the local instance this process started)."""
    if ray.is_initialized():
        ray.shutdown()


@ray.remote(concurrency_groups={"job": 1, "probe": 1})
class _JobActor:
    """A warm worker process: `run` takes one job at a time (its own concurrency group of one), while
    `probe` answers from another thread with the running job's progress and this process's memory."""

    def __init__(self, kind: str, threads: int = 1):
        self.kind = kind
        self.progress = ""
        if kind == "cpu":
            # Ray starts an actor with OMP_NUM_THREADS=1; a CPU worker times with the cores it reserved, as a
            # local worker process times with the machine's, so CPU figures agree between the backends.
            import torch

            torch.set_num_threads(threads)

    @ray.method(concurrency_group="probe")
    def where(self) -> dict[str, Any]:
        """Where this actor runs. On a GPU this also creates the CUDA context, so the first job finds it warm."""
        device = "cpu"
        if self.kind == "cuda":
            import torch

            device = torch.cuda.get_device_name(0)
        return {"host": socket.gethostname(), "pid": os.getpid(), "device": device}

    @ray.method(concurrency_group="probe")
    def probe(self) -> tuple[str, int]:
        return self.progress, rss_bytes(os.getpid())

    @ray.method(concurrency_group="job")
    def run(self, kind: str, payload: dict[str, Any]) -> tuple[str, Any]:
        """("done", the result pickled) or ("error", one line), as a ProcessWorker's child answers. The
        result travels pickled so its arrays arrive as the pipe delivers them: writable and owning their
        memory, where ray.get's zero-copy arrays would stay read-only and pin the object store while cached."""
        from explorer.workers import run_job_kind

        self.progress = ""
        try:
            result = run_job_kind(kind, payload, lambda text: setattr(self, "progress", text))
            return "done", pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        except ExplorerError as exc:
            return "error", str(exc)
        except MemoryError:
            return "error", f"{kind} job ran out of memory; try a smaller input, batch or model"
        except Exception as exc:  # an engine bug: one line for the page, the details in the actor's log
            traceback.print_exc()
            return "error", f"{kind} job failed unexpectedly: {type(exc).__name__}: {_first_line(exc)[:200]}"


class RayWorker(Worker):
    """One Ray actor that runs one job at a time; killed and replaced when a job must end early or dies.

    The memory limit reads the actor process's resident memory (VmRSS), as the actor reports it every
    0.2 s while the job runs (0 until its first report); Ray's own memory monitor may also kill an actor
    when its node runs low, which fails the job like any other death of the actor.
    """

    def __init__(self, kind: str, index: int, threads: int = 1):
        self.kind = kind  # cuda or cpu
        self.index = index
        self.threads = threads  # a CPU worker's torch threads; unused on a GPU
        self.name = f"ray-{'gpu' if kind == 'cuda' else 'cpu'}-{index}"
        self.job = None
        self.jobs_run = 0
        self.restarts = 0
        self.actor = None
        self._where_ref = None
        self._where: dict[str, Any] = {"host": None, "pid": None, "device": None}
        self._start()

    def _start(self):
        # a CPU worker reserves one logical CPU (so several services can share a small cluster) and times with
        # its share of the machine's cores (threads)
        resources = {"num_gpus": 1} if self.kind == "cuda" else {"num_cpus": 1}
        self.actor = _JobActor.options(**resources, max_restarts=0).remote(self.kind, self.threads)
        self._where_ref = self.actor.where.remote()  # asked once per actor; read when it is needed

    def ready(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Waits for the actor to be placed and answer where it runs (a cluster without room waits forever)."""
        if self._where_ref is None:
            return
        self._where = ray.get(self._where_ref, timeout=timeout_s)
        self._where_ref = None
        if "@" not in self.name:  # named after the machine it first ran on
            self.name = f"{self.name}@{self._where['host']}"

    def stop(self):
        """Kills the actor (a job over its limits, cancelled, or the service shutting down); the next job
        starts a fresh one."""
        if self.actor is not None:
            self.restarts += 1
            try:
                ray.kill(self.actor, no_restart=True)
            except Exception:  # noqa: BLE001 - already dead, or Ray is gone: nothing left to stop
                pass
        self.actor, self._where_ref = None, None

    def _replace(self, actor):
        """Kills `actor` and starts its successor now, while the next job is still being chosen; nothing
        starts when the worker was stopped meanwhile (the service shutting down)."""
        if self.actor is actor:
            self.stop()
            self._start()

    def describe(self) -> dict[str, Any]:
        # the service asks this under its lock for every job: answered from what the actor said at its start
        return {"name": self.name, "kind": self.kind, "host": self._where["host"], "device": self._where["device"]}

    def run(self, job, limits):
        if self.actor is None:
            self._start()
        actor = self.actor  # stop() may run on another thread (shutdown) while this job runs
        while self._where_ref is not None and not ray.wait([self._where_ref], timeout=POLL_S)[0]:
            reason = limits(job, 0)  # a fresh actor is still starting (or waits for room on the cluster)
            if reason is not None:
                return (CANCELLED if job.state == CANCELLED else FAILED), reason
        try:
            self.ready()
        except (ray.exceptions.RayError, TimeoutError) as exc:
            return FAILED, self._died(job, exc, actor)
        ref = actor.run.remote(job.kind, job.payload)
        rss, probe, next_probe = 0, None, time.monotonic() + _PROBE_EVERY_S
        while True:
            reason = limits(job, rss)
            if reason is not None:
                self._replace(actor)
                return (CANCELLED if job.state == CANCELLED else FAILED), reason
            finished, _ = ray.wait([ref], timeout=POLL_S)
            if probe is not None and ray.wait([probe], timeout=0)[0]:
                try:
                    progress, rss = ray.get(probe)
                    if progress:
                        job.progress = progress
                except ray.exceptions.RayError:
                    pass  # the actor died: `ref` says so, with the reason
                probe = None
            if probe is None and time.monotonic() >= next_probe:
                probe, next_probe = actor.probe.remote(), time.monotonic() + _PROBE_EVERY_S
            if not finished:
                continue
            try:
                tag, value = ray.get(ref)
            except ray.exceptions.RayTaskError as exc:  # raised past the actor's own handlers: the original's message
                cause = exc.cause if isinstance(exc.cause, BaseException) else exc
                if isinstance(cause, ExplorerError):
                    return FAILED, str(cause)
                return FAILED, f"{job.kind} job failed unexpectedly: {type(cause).__name__}: {_first_line(cause)[:200]}"
            except ray.exceptions.RayError as exc:  # the actor died (killed, out of memory, its node lost)
                return FAILED, self._died(job, exc, actor)
            return (DONE, pickle.loads(value)) if tag == "done" else (FAILED, value)

    def _died(self, job, exc: BaseException, actor) -> str:
        host = self._where["host"] or "its node"
        self._replace(actor)
        return (f"{job.kind} job failed: its Ray worker on {host} died: {_death_reason(exc)}; "
                "the worker was restarted, other jobs go on")


def _first_line(exc: BaseException) -> str:
    from explorer.models import one_line

    return one_line(exc)


def _death_reason(exc: BaseException) -> str:
    """Why Ray says an actor died, in a few words (its message runs to a dozen lines)."""
    if isinstance(exc, ray.exceptions.RayTaskError) and isinstance(exc.cause, BaseException):
        return f"{type(exc.cause).__name__}: {_first_line(exc.cause)[:200]}"  # e.g. a package missing on its machine
    text = str(exc)
    ray_says = text.split("Some common causes")[0]  # Ray appends possible causes (the OOM killer among them)
    if isinstance(exc, ray.exceptions.OutOfMemoryError) or "low on memory" in ray_says or "OOM" in ray_says:
        return "its machine ran out of memory"
    if isinstance(exc, (TimeoutError, ray.exceptions.GetTimeoutError)):
        return f"it did not start within {START_TIMEOUT_S:.0f} s"
    for line in text.splitlines():
        if line.startswith("The actor is dead because"):
            return line.removeprefix("The actor is dead because").split(". ")[0].strip().rstrip(".")[:200]
    return _first_line(exc)[:200]


def cpu_threads(cpu_workers: int) -> int:
    """Torch threads of each CPU worker: the CPU workers share the cluster's CPUs evenly, never more than its
    largest machine holds (an actor cannot span machines)."""
    if cpu_workers <= 0:
        return 1
    per_node = [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]
    largest = max(per_node, default=1)
    return max(1, min(largest, sum(per_node) // cpu_workers))


def ray_workers(cpu_workers: int | None = None) -> list[Worker]:
    """One RayWorker per GPU of the cluster, plus `cpu_workers` CPU workers (default: EXPLORER_RAY_CPU_WORKERS,
    else one when the cluster has no GPU, none when it has). Connects (see `connect`) if not yet connected,
    and returns once every actor runs."""
    connect()
    resources = ray.cluster_resources()  # read first: an actor that asks for a GPU the cluster lacks waits forever
    gpus = int(resources.get("GPU", 0))
    cpus = int(resources.get("CPU", 0))
    if cpu_workers is None:
        raw = os.environ.get("EXPLORER_RAY_CPU_WORKERS", "").strip()
        if not raw:
            cpu_workers = 0 if gpus else 1
        elif raw.isascii() and raw.isdigit() and len(raw) <= 4:
            cpu_workers = int(raw)
        else:
            raise ExplorerError(f"EXPLORER_RAY_CPU_WORKERS must be a whole number from 0 to "
                                f"{min(cpus, MAX_CPU_WORKERS)}, got {raw[:40]!r}")
    if not 0 <= cpu_workers <= min(cpus, MAX_CPU_WORKERS):
        raise ExplorerError(f"the Ray cluster has {cpus} CPUs: it can hold 0 to {min(cpus, MAX_CPU_WORKERS)} "
                            f"CPU workers, not {cpu_workers}")
    if gpus + cpu_workers == 0:
        raise ExplorerError("the Ray cluster has no GPU and no CPU worker was asked for "
                            "(EXPLORER_RAY_CPU_WORKERS=0): there is nothing to run jobs on")
    threads = cpu_threads(cpu_workers)
    workers = ([RayWorker("cuda", i) for i in range(gpus)]
               + [RayWorker("cpu", i, threads) for i in range(cpu_workers)])
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        for worker in workers:
            worker.ready(max(1.0, deadline - time.monotonic()))
    except (ray.exceptions.RayError, TimeoutError) as exc:
        for worker in workers:
            worker.stop()
        raise ExplorerError(f"the Ray workers did not start: {_death_reason(exc)} "
                            f"(cluster: {gpus} GPUs, {cpus} CPUs; {cpu_workers} CPU workers asked for)") from None
    return workers
