"""The worker protocol of the job service: a job's states, the Worker interface that every kind of worker
implements (a local process and an inline worker in explorer.jobs, a Ray actor in explorer.ray_workers), the
resident-memory reader the memory limit uses, and the one function a worker runs a job with.

It sits below explorer.jobs and explorer.ray_workers so that neither imports the other at module level.
"""
from __future__ import annotations

import socket
from typing import Any, Callable

from explorer.errors import ExplorerError

POLL_S = 0.05

QUEUED, RUNNING, DONE, FAILED, CANCELLED = "queued", "running", "done", "failed", "cancelled"
FINISHED = (DONE, FAILED, CANCELLED)


class Worker:
    """Runs one job at a time. `run(job, limits)` blocks until the job ends and returns (state, result or
    message); it calls `limits(job, rss_bytes)`, which returns a reason to stop (cancelled, over time, over
    memory) or None, often while the job runs. Implementations: a local process (ProcessWorker), this
    process (InlineWorker, for tests), a Ray actor (explorer.ray_workers)."""

    name: str = "worker"
    kind: str = "cpu"  # the device kind it runs on: cpu, cuda, mps
    job: Any = None  # the explorer.jobs.Job it runs now
    jobs_run: int = 0
    restarts: int = 0

    def run(self, job: Any, limits: Callable[[Any, int], str | None]) -> tuple[str, Any]:
        raise NotImplementedError

    def stop(self):
        """Ends whatever runs now; the next job starts afresh."""

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "host": socket.gethostname()}


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def run_job_kind(kind: str, payload: dict[str, Any], progress: Callable[[str], None]) -> Any:
    """Runs one job of a registered kind (in a worker process, or inline)."""
    from explorer.job_kinds import JOB_KINDS

    if kind not in JOB_KINDS:
        raise ExplorerError(f"unknown job kind {kind!r}")
    return JOB_KINDS[kind](payload, progress)
