"""Heavy jobs from a page: queued in the shared job service, with the queue position, progress and a
Cancel button while they wait; the result (or a one-line reason) when they end."""
from __future__ import annotations

import copy
import hashlib

import streamlit as st

from explorer.errors import ExplorerError
from explorer.jobs import QUEUED, JobService, shared_service


@st.cache_resource
def job_service() -> JobService:
    return shared_service()


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


class JobCancelled(ExplorerError):
    """The person pressed Cancel."""


def run_job(kind: str, payload: dict, label: str, with_job: bool = False):
    """Runs `kind` for this session and returns its result; raises ExplorerError with the reason when it
    fails or is cancelled (JobCancelled). While it waits: its place in the queue, its progress, and Cancel.
    A rerun (another click) finds the same job again, so it keeps its place. With `with_job`, returns
    (result, job): the job says how long it waited and ran, and whether it came from the cache."""
    service = job_service()
    sid = session_id()
    job = service.submit(sid, kind, payload)
    if job.finished:
        return _outcome(job, with_job)
    box = st.empty()
    with box.container():
        status = st.empty()
        key = hashlib.sha256(job.key.encode()).hexdigest()[:16]  # the same request keeps the same button
        cancel = st.button("Cancel", key=f"job_cancel_{key}", help="Stop this job; it runs again when you ask again")
    if cancel:
        service.cancel(job, sid)
        box.empty()
        raise JobCancelled(f"{label} was cancelled; ask again to run it")
    while not job.finished:
        service.touch(sid)
        if job.state == QUEUED:
            ahead = service.position(job)
            status.info(f"{label}: waiting for the compute worker, {ahead} job{'s' if ahead != 1 else ''} ahead "
                        f"in the queue (waited {job.waited_s:.0f} s). Sessions take turns.", icon=":material/hourglass_top:")
        else:
            progress = f" · {job.progress}" if job.progress else ""
            status.info(f"{label}: running for {job.ran_s:.0f} s (waited {job.waited_s:.0f} s in the queue; "
                        f"stopped after {service.time_limit_s:.0f} s){progress}", icon=":material/hourglass_top:")
        job.done_event.wait(0.5)
    box.empty()
    return _outcome(job, with_job)


def _outcome(job, with_job: bool):
    result = copy.deepcopy(job.outcome())  # one cached result serves every session: each gets its own copy
    return (result, job) if with_job else result
