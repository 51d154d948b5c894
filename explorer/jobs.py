"""Heavy jobs (anything that runs real tensors) run in worker processes, fairly across sessions.

Why processes: a job may change process-wide state that other requests depend on (torch.fx patches
``nn.Module.__call__`` for every thread while it traces), may need far more memory than expected, or may
run for minutes; a worker process can be stopped at a time limit, on Cancel or above a memory limit,
and restarted, while the web server and every other session go on.

The rules, the same for every caller:
- fair: sessions take turns (round-robin), not first come first served; a session's new job replaces its
  own queued one in place (a second click keeps the first job's place);
- identical requests share one computation (coalescing) and finished results are cached by
  (kind, payload, versions), so a class opening the same model computes it once;
- every job has a time limit and can be cancelled; a session that stops polling (the person left)
  has its queued jobs cancelled;
- a worker runs one job at a time: with one worker per device, timed runs never overlap another job.
"""
from __future__ import annotations

import collections
import functools
import hashlib
import itertools
import json
import multiprocessing
import os
import subprocess
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Any, Callable

from explorer.errors import ExplorerError
# The worker protocol lives below this module (explorer.ray_workers implements it too); its names stay
# importable from here.
from explorer.workers import (  # noqa: F401
    POLL_S,
    CANCELLED,
    DONE,
    FAILED,
    FINISHED,
    QUEUED,
    RUNNING,
    Worker,
    rss_bytes,
    run_job_kind,
)

DEFAULT_TIME_LIMIT_S = float(os.environ.get("EXPLORER_JOB_TIME_LIMIT_S", "600"))
DEFAULT_MEMORY_LIMIT_BYTES = int(float(os.environ.get("EXPLORER_WORKER_MAX_GB", "8")) * 2**30)
SESSION_TIMEOUT_S = 60.0  # a session not seen for this long has left: its queued jobs are cancelled
CACHE_ENTRIES = 256
CACHE_BYTES = int(float(os.environ.get("EXPLORER_RESULT_CACHE_MB", "1024")) * 2**20)  # attention maps run to 20+ MB


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[str, ...]:
    """The libraries a result depends on: a cached result is reused only under the same versions."""
    from importlib import metadata

    found = []
    for name in ("torch", "torchvision", "timm"):
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            found.append(f"{name} missing")
    return tuple(found)


def job_key(kind: str, payload: dict[str, Any]) -> str:
    """Canonical text of a request: equal requests give equal keys (bytes enter as their SHA-256). The
    key holds the payload (spec, settings, device) and the library versions."""

    def plain(value):
        if isinstance(value, (bytes, bytearray, memoryview)):
            return {"sha256": hashlib.sha256(bytes(value)).hexdigest()}
        if hasattr(value, "tobytes") and hasattr(value, "shape"):  # numpy arrays (images)
            return {"sha256": hashlib.sha256(value.tobytes()).hexdigest(), "shape": list(value.shape),
                    "dtype": str(value.dtype)}
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        return value

    return json.dumps([kind, plain(payload), _versions()], sort_keys=True, separators=(",", ":"), default=str)


@dataclass
class Job:
    id: int
    kind: str
    payload: dict[str, Any]
    key: str
    owner: str
    waiters: set[str] = field(default_factory=set)
    state: str = QUEUED
    result: Any = None
    error: str | None = None
    progress: str = ""
    submitted: float = field(default_factory=time.monotonic)
    started: float | None = None
    finished_at: float | None = None
    worker: str | None = None
    overlapped: set[str] = field(default_factory=set)  # other jobs that ran on another worker meanwhile
    cached: bool = False
    size: int = 0  # approximate bytes of the result, for the cache's bound
    done_event: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    @property
    def waited_s(self) -> float:
        return ((self.started or self.finished_at or time.monotonic()) - self.submitted)

    @property
    def ran_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.finished_at or time.monotonic()) - self.started

    def outcome(self):
        """The result, or the job's failure as an ExplorerError."""
        if self.state == DONE:
            return self.result
        if self.state == CANCELLED:
            raise ExplorerError(self.error or "the job was cancelled")
        raise ExplorerError(self.error or "the job failed")


class InlineWorker(Worker):
    """Runs jobs in this process (no isolation, no limits): the scheduler's tests and single-user tools."""

    def __init__(self, fn: Callable[..., Any] | None = None):
        self.name, self.fn = "inline", fn

    def run(self, job, limits):
        try:
            return DONE, (self.fn or run_job_kind)(job.kind, job.payload, lambda text: setattr(job, "progress", text))
        except ExplorerError as exc:
            return FAILED, str(exc)


class ProcessWorker(Worker):
    """One local process that runs one job at a time; stopped and restarted when a job must end early."""

    def __init__(self, name: str):
        self.name = name
        self.kind = _local_device_kind()
        self.process = None
        self.conn = None
        self.jobs_run = 0
        self.restarts = 0

    def ensure_started(self):
        if self.process is not None and self.process.poll() is None:
            return
        # A fresh interpreter that imports only the worker loop. Not multiprocessing's spawn: it re-runs the
        # parent's __main__ in the child, and inside Streamlit __main__ is the page script being run (the
        # worker would start by running a page, importing torch, streamlit and the app before its first job);
        # never fork either: the server holds torch's threads.
        parent, child = multiprocessing.Pipe()
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        self.process = subprocess.Popen(
            [sys.executable, "-c", f"import explorer.jobs as j; j._worker_entry({child.fileno()})"],
            pass_fds=(child.fileno(),), cwd=root, env=env, stdin=subprocess.DEVNULL)
        child.close()
        self.conn = parent

    def stop(self):
        """Ends the process (a job over its limits, cancelled, or crashed); the next job starts a new one."""
        if self.process is not None:
            self.restarts += 1
            if self.process.poll() is None:
                self.process.kill()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                pass
        self.process = None
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def run(self, job, limits):
        self.ensure_started()
        self.conn.send((job.kind, job.payload))
        while True:
            reason = limits(job, rss_bytes(self.process.pid))
            if reason is not None:
                self.stop()
                return (CANCELLED if job.state == CANCELLED else FAILED), reason
            try:
                ready = self.conn.poll(POLL_S)
            except (OSError, EOFError):
                ready = True
            if not ready:
                continue
            try:
                tag, value = self.conn.recv()
            except (OSError, EOFError):
                code = self.process.poll() if self.process is not None else None
                self.stop()
                return FAILED, (f"{job.kind} job failed: its worker process ended unexpectedly (exit code {code}); "
                                "the worker was restarted, other jobs go on")
            if tag == "progress":
                job.progress = value
            elif tag == "done":
                return DONE, value
            else:
                return FAILED, value


def _local_device_kind() -> str:
    from explorer.devices import best_device

    return best_device()


class JobService:
    """Queues, schedules and runs jobs on `workers` worker processes (0: in this process, for tests and the CLI)."""

    def __init__(self, workers: int | list[Worker] = 1, time_limit_s: float = DEFAULT_TIME_LIMIT_S,
                 memory_limit_bytes: int = DEFAULT_MEMORY_LIMIT_BYTES, session_timeout_s: float = SESSION_TIMEOUT_S,
                 cache_entries: int = CACHE_ENTRIES, run_inline: Callable[..., Any] | None = None):
        """`workers`: a number of local worker processes (0: run inline, in this process), or Worker objects."""
        self.time_limit_s = time_limit_s
        self.memory_limit_bytes = memory_limit_bytes
        self.session_timeout_s = session_timeout_s
        if isinstance(workers, list):
            self._workers = workers
        elif workers == 0:
            self._workers = [InlineWorker(run_inline)]
        else:
            self._workers = [ProcessWorker(f"worker-{i}") for i in range(workers)]
        self._lock = threading.Condition()
        self._ids = itertools.count(1)
        self._queues: dict[str, collections.deque[Job]] = {}
        # Turns: the session served least recently goes next (never served first); among those, the one
        # waiting longest. A session that queues five jobs gets one turn per round, like everyone else.
        self._served: dict[str, int] = {}
        self._waiting_since: dict[str, int] = {}
        self._ticks = itertools.count()
        self._by_key: dict[str, Job] = {}  # queued or running jobs, for coalescing
        self._jobs: dict[int, Job] = {}
        self._cache: collections.OrderedDict[str, Job] = collections.OrderedDict()
        self._cache_entries = cache_entries
        self._cache_bytes = 0
        self._last_seen: dict[str, float] = {}
        self._closed = False
        self.computations = 0  # jobs actually started on a worker (not served from cache or shared)
        for worker in self._workers:
            threading.Thread(target=self._worker_loop, args=(worker,), name=f"explorer-jobs-{worker.name}",
                             daemon=True).start()
        threading.Thread(target=self._sweeper, name="explorer-jobs-sweeper", daemon=True).start()

    # --- submitting and waiting ---------------------------------------------------------------------
    def submit(self, session: str, kind: str, payload: dict[str, Any], replace: bool = True,
               key: str | None = None) -> Job:
        """Queue a job for `session`. An identical request in flight or in the cache is shared. With
        `replace`, the session's own queued jobs (not the running one) give their place to this one. `key`:
        job_key(kind, payload) when the caller has it already (hashing a large payload once, not twice)."""
        key = key or job_key(kind, payload)
        probe = Job(0, kind, payload, key, owner=session)
        if not any(_fits(probe, w) for w in self._workers):
            # a request no worker can place would wait forever (Ray waits forever for a GPU it does not have)
            kinds = sorted({w.kind for w in self._workers})
            raise ExplorerError(f"no worker here runs on {required_kind(probe)}; the workers run on {', '.join(kinds)}")
        with self._lock:
            if self._closed:
                raise ExplorerError("the job service has shut down")
            self._last_seen[session] = time.monotonic()
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                return cached
            live = self._by_key.get(key)
            if live is not None:
                live.waiters.add(session)
                return live
            job = Job(next(self._ids), kind, payload, key, owner=session, waiters={session})
            queue = self._queues.setdefault(session, collections.deque())
            if not queue:
                self._waiting_since[session] = next(self._ticks)
            if replace:
                # the new job takes the place of the session's queued ones (a second click keeps its turn)
                for old in list(queue):
                    self._drop_waiter(old, session, "was replaced by a newer request from the same session")
                queue.appendleft(job)
            else:
                queue.append(job)
            self._jobs[job.id] = job
            self._by_key[key] = job
            self._lock.notify_all()
            return job

    def run(self, session: str, kind: str, payload: dict[str, Any], on_update: Callable[[Job], None] | None = None,
            poll_s: float = 0.25):
        """Submit and wait; `on_update(job)` is called while it waits (it may raise to stop waiting: the job
        keeps its place). Returns the result or raises ExplorerError."""
        job = self.submit(session, kind, payload)
        while not job.done_event.wait(poll_s):
            self.touch(session)
            if on_update is not None:
                on_update(job)
        return job.outcome()

    def position(self, job: Job) -> int:
        """How many jobs run before this one (0: it is running or runs next), under the round-robin."""
        with self._lock:
            if job.state != QUEUED:
                return 0
            queues = {s: list(q) for s, q in self._queues.items() if q}
            served = dict(self._served)
            ahead = 0
            while queues:
                session = self._next_session(queues, served)
                if queues[session].pop(0) is job:
                    return ahead
                ahead += 1
                served[session] = next(self._ticks)
                if not queues[session]:
                    del queues[session]
            return ahead

    def touch(self, session: str):
        with self._lock:
            self._last_seen[session] = time.monotonic()

    def cancel(self, job: Job, session: str, reason: str = "cancelled") -> None:
        """`session` no longer wants `job`; the job stops when nobody else waits for it."""
        with self._lock:
            self._drop_waiter(job, session, reason)

    def cancel_session(self, session: str, reason: str = "the session ended", running_too: bool = True) -> int:
        """Cancels what `session` waits for: its queued jobs, and with `running_too` its running ones."""
        with self._lock:
            jobs = [j for j in self._jobs.values() if session in j.waiters and not j.finished
                    and (running_too or j.state == QUEUED)]
            for job in jobs:
                self._drop_waiter(job, session, reason)
            self._last_seen.pop(session, None)
            return len(jobs)

    def workers(self) -> list[dict[str, Any]]:
        """Each worker's name, device kind and host (and device name where it knows it)."""
        return [w.describe() for w in self._workers]

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return {"queued": sum(len(q) for q in self._queues.values()),
                    "running": [w.job.kind for w in self._workers if w.job is not None],
                    "workers": len(self._workers), "computations": self.computations,
                    "restarts": sum(w.restarts for w in self._workers), "cached": len(self._cache)}

    def shutdown(self):
        with self._lock:
            self._closed = True
            for job in list(self._jobs.values()):
                if not job.finished:
                    self._finish(job, CANCELLED, error="the job service shut down")
            self._lock.notify_all()
        for worker in self._workers:
            worker.stop()

    # --- internals (hold self._lock) ----------------------------------------------------------------------
    def _drop_waiter(self, job: Job, session: str, reason: str):
        job.waiters.discard(session)
        if job.waiters or job.finished:
            return
        if job.state == QUEUED:
            self._remove_queued(job)
            self._finish(job, CANCELLED, error=f"{job.kind} job {reason}")
        elif job.state == RUNNING:
            job.error = f"{job.kind} job {reason}"
            job.state = CANCELLED
            if self._by_key.get(job.key) is job:  # a new identical request must not join a cancelled job
                del self._by_key[job.key]  # the worker loop sees it, stops the process and finishes the job

    def _remove_queued(self, job: Job):
        queue = self._queues.get(job.owner)
        if queue is not None and job in queue:
            queue.remove(job)

    def _finish(self, job: Job, state: str, result: Any = None, error: str | None = None):
        job.state, job.result, job.error = state, result, error
        job.finished_at = time.monotonic()
        if self._by_key.get(job.key) is job:
            del self._by_key[job.key]
        self._jobs.pop(job.id, None)
        if state == DONE and not weights_failed(result):
            cached = Job(job.id, job.kind, job.payload, job.key, job.owner, state=DONE, result=result,
                         started=job.started, finished_at=job.finished_at, worker=job.worker, cached=True)
            cached.submitted = job.submitted
            cached.done_event.set()
            cached.size = approx_bytes(result)
            if cached.size <= CACHE_BYTES // 4:
                self._cache[job.key] = cached
                self._cache_bytes += cached.size
            while len(self._cache) > self._cache_entries or self._cache_bytes > CACHE_BYTES:
                self._cache_bytes -= self._cache.popitem(last=False)[1].size
        job.done_event.set()
        self._lock.notify_all()

    def _next_session(self, queues: dict[str, Any], served: dict[str, int]) -> str:
        return min(queues, key=lambda s: (served.get(s, -1), self._waiting_since.get(s, 0)))

    def _next_job(self, worker: Worker) -> Job | None:
        """The next job `worker` can run: from the session whose turn it is among those with such a job."""
        runnable = {s: next((j for j in q if _fits(j, worker)), None) for s, q in self._queues.items()}
        runnable = {s: j for s, j in runnable.items() if j is not None}
        if not runnable:
            return None
        session = self._next_session(runnable, self._served)
        self._served[session] = next(self._ticks)
        job = runnable[session]
        self._queues[session].remove(job)
        if not self._queues[session]:
            del self._queues[session]
        return job

    # --- the loops ---------------------------------------------------------------------------------------
    def _worker_loop(self, worker: Worker):
        while True:
            with self._lock:
                job = None
                while not self._closed and job is None:
                    job = self._next_job(worker)
                    if job is None:
                        self._lock.wait(1.0)
                if self._closed:
                    return
                job.state, job.started, job.worker = RUNNING, time.monotonic(), worker.name
                worker.job = job
                self.computations += 1
                host = worker.describe().get("host")
                for other in self._workers:  # jobs on the same machine at the same time disturb each other's timings
                    if other is not worker and other.job is not None and other.describe().get("host") == host:
                        other.job.overlapped.add(job.kind)
                        job.overlapped.add(other.job.kind)
            try:
                state, value = worker.run(job, self._limits)
            except Exception as exc:  # the service itself must not die with a job
                state, value = FAILED, f"{job.kind} job failed: {type(exc).__name__}: {exc}"
            with self._lock:
                worker.job = None
                worker.jobs_run += 1
                if job.state == CANCELLED:  # cancelled while it ran
                    self._finish(job, CANCELLED, error=job.error)
                elif state == DONE:
                    if isinstance(value, dict) and isinstance(value.get("settings"), dict):
                        # a timed result names where it ran
                        value = {**value, "settings": {**value["settings"], **_where(worker)}}
                    if job.overlapped and isinstance(value, dict):
                        value = {**value, "overlapping_jobs": sorted(job.overlapped)}
                    self._finish(job, DONE, result=value)
                else:
                    self._finish(job, state, error=value)

    def _limits(self, job: Job, rss_bytes: int) -> str | None:
        """Why `job` must stop now, or None."""
        if job.state == CANCELLED:
            return job.error
        if time.monotonic() - job.started > self.time_limit_s:
            return (f"{job.kind} job stopped after {self.time_limit_s:.0f} s, the time limit per job; "
                    "try a smaller input, batch or model")
        if rss_bytes > self.memory_limit_bytes:
            return (f"{job.kind} job stopped: it needed more than {self.memory_limit_bytes / 2**30:.1f} GB "
                    "of memory, the limit per job; try a smaller input, batch or model")
        return None

    def _sweeper(self):
        """Cancels the queued jobs of sessions that stopped polling (the person closed the tab)."""
        while True:
            time.sleep(min(5.0, self.session_timeout_s / 4))
            with self._lock:
                if self._closed:
                    return
                now = time.monotonic()
                gone = [s for s, seen in self._last_seen.items() if now - seen > self.session_timeout_s]
            for session in gone:  # a running job finishes: its result is cached for whoever asks next
                self.cancel_session(session, "was cancelled: its session left", running_too=False)


def required_kind(job: Job) -> str | None:
    """The device kind a job must run on (a latency run or roofline on cuda needs a GPU worker), or None."""
    payload = job.payload if isinstance(job.payload, dict) else {}
    settings = payload.get("settings") if isinstance(payload.get("settings"), dict) else {}
    device = payload.get("worker_kind") or settings.get("device") or payload.get("device")
    return device if device in ("cuda", "mps", "cpu") else None


def _fits(job: Job, worker: Worker) -> bool:
    wanted_worker = job.payload.get("worker") if isinstance(job.payload, dict) else None
    if wanted_worker is not None and wanted_worker != worker.name:
        return False
    kind = required_kind(job)
    # inline workers run whatever they are given (tests); a CPU job may run on a GPU worker's host CPU
    return kind is None or worker.name == "inline" or kind == worker.kind or kind == "cpu"


def _where(worker: Worker) -> dict[str, Any]:
    info = worker.describe()
    return {"worker": info.get("name"), "host": info.get("host")}


def weights_failed(result) -> bool:
    """Whether a view job's weights could not be loaded ({"weights_error": why}, explorer.job_kinds): such a
    result is handed to whoever waits but never cached, since it depends on the machine, not on the request: the
    same request succeeds once the weights are fetched into the cache or the network is back."""
    return isinstance(result, dict) and bool(result.get("weights_error"))


def approx_bytes(value, depth: int = 0) -> int:
    """Rough size of a result: array and tensor buffers, strings, and a few bytes per other item."""
    if depth > 8:
        return 64
    if hasattr(value, "nbytes"):
        return int(value.nbytes)
    if hasattr(value, "element_size") and hasattr(value, "numel"):  # torch tensors
        return int(value.element_size() * value.numel())
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if isinstance(value, dict):
        return 64 + sum(approx_bytes(k, depth + 1) + approx_bytes(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple, set)):
        return 64 + sum(approx_bytes(v, depth + 1) for v in value)
    return 32


# --- the worker process -------------------------------------------------------------------------------

def _worker_entry(fd: int):
    """The worker process's start: the pipe to the server is the inherited file descriptor `fd`."""
    from multiprocessing.connection import Connection

    _worker_main(Connection(fd))


def _worker_main(conn):
    """Runs jobs sent over `conn` until the pipe closes; each answer is ("done", result) or ("error", text)."""
    while True:
        try:
            kind, payload = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        try:
            result = run_job_kind(kind, payload, lambda text: conn.send(("progress", text)))
            conn.send(("done", result))
        except ExplorerError as exc:
            conn.send(("error", str(exc)))
        except MemoryError:
            conn.send(("error", f"{kind} job ran out of memory; try a smaller input, batch or model"))
        except Exception as exc:  # an engine bug: one line for the page, the details on the worker's stderr
            traceback.print_exc()
            detail = str(exc).splitlines()[0][:200] if str(exc) else ""
            conn.send(("error", f"{kind} job failed unexpectedly: {type(exc).__name__}: {detail}"))


_SERVICE: JobService | None = None
_SERVICE_LOCK = threading.Lock()


def shared_service() -> JobService:
    """The process's job service. EXPLORER_BACKEND=local (the default): EXPLORER_WORKERS local worker
    processes, default 1 (one device, one job at a time); EXPLORER_BACKEND=ray: one worker per GPU of the
    Ray cluster at RAY_ADDRESS, or of a local Ray instance (see explorer.ray_workers)."""
    global _SERVICE
    with _SERVICE_LOCK:
        if _SERVICE is None:
            backend = os.environ.get("EXPLORER_BACKEND", "").strip().lower() or "local"
            if backend == "local":
                _SERVICE = JobService(workers=int(os.environ.get("EXPLORER_WORKERS", "1")))
            elif backend == "ray":
                try:
                    from explorer.ray_workers import ray_workers  # the only module that imports ray
                except ImportError as exc:
                    raise ExplorerError(f"EXPLORER_BACKEND=ray needs the ray package ({exc.name or exc}); "
                                        "install it with: pip install ray==2.60.0") from None
                _SERVICE = JobService(workers=ray_workers())
            else:
                raise ExplorerError(f"EXPLORER_BACKEND must be local or ray, got {backend[:40]!r}")
        return _SERVICE
