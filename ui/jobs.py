"""Heavy jobs from a page: queued in the shared job service, with the queue position, progress and a
Cancel button while they wait; the result (or a one-line reason) when they end. Before a long one starts,
its estimate (explorer.estimates) and a Run button: `estimated_job` does both, `confirm_estimate` the first."""
from __future__ import annotations

import copy
import hashlib
import re

import streamlit as st

from explorer.errors import ExplorerError
from explorer.estimates import Estimate, estimate, format_duration, measured_rate
from explorer.jobs import QUEUED, JobService, job_key, shared_service
from explorer.text import escape_markdown

RATES_KEY = "job_gmacs_per_s"  # session state: the GMAC/s this session's jobs measured (explorer.estimates.rate_key)
_COUNTS = re.compile(r"([\d,]+) of (?:about )?([\d,]+)")  # a job's progress counts: "120 of about 2,052 image forwards"


@st.cache_resource
def job_service() -> JobService:
    return shared_service()


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


class JobCancelled(ExplorerError):
    """The person pressed Cancel."""


def run_job(kind: str, payload: dict, label: str, with_job: bool = False, expected: Estimate | None = None,
            asked: bool = False):
    """Runs `kind` for this session and returns its result; raises ExplorerError with the reason when it
    fails or is cancelled (JobCancelled). While it waits: its place in the queue, its progress (a bar when the
    job reports counts, "N of M"), the time `expected` and Cancel. A rerun (another click) finds the same job
    again, so it keeps its place. With `with_job`, returns (result, job): the job says how long it waited and
    ran, and whether it came from the cache. A job that ran (not from the cache) leaves its measured GMAC/s for
    this session's next estimates."""
    service = job_service()
    sid = session_id()
    # A cancel sticks: the same request is not queued again by the next rerun (any widget touched), only by
    # the person asking again: the "Run again" button here, or the caller's own button (`asked`).
    cancelled = st.session_state.setdefault("cancelled_jobs", set())
    signature = job_key(kind, payload)
    if asked:
        cancelled.discard(signature)
    if signature in cancelled:
        tag = hashlib.sha256(signature.encode()).hexdigest()[:16]
        if not st.button(f"Run again: {label}", key=f"job_again_{tag}"):
            raise JobCancelled(f"{label} was cancelled; “Run again” runs it")
        cancelled.discard(signature)
    job = service.submit(sid, kind, payload, key=signature)
    if job.finished:
        return _outcome(job, with_job, expected)
    box = st.empty()
    with box.container():
        status = st.empty()
        bar = st.empty()
        key = hashlib.sha256(signature.encode()).hexdigest()[:16]  # the same request keeps the same button
        cancel = st.button("Cancel", key=f"job_cancel_{key}", help="Stop this job; it runs again when you ask again")
    if cancel:
        service.cancel(job, sid)
        cancelled.add(signature)
        box.empty()
        raise JobCancelled(f"{label} was cancelled")
    while not job.finished:
        service.touch(sid)
        if job.state == QUEUED:
            ahead = service.position(job)
            status.info(f"{label}: waiting for the compute worker, {ahead} job{'s' if ahead != 1 else ''} ahead "
                        f"in the queue (waited {job.waited_s:.0f} s). Sessions take turns.", icon=":material/hourglass_top:")
        else:
            progress = f" · {job.progress}" if job.progress else ""
            about = f" of about {format_duration(expected.seconds)}" if expected is not None else ""
            status.info(f"{label}: running for {job.ran_s:.0f} s{about} (waited {job.waited_s:.0f} s in the queue; "
                        f"stopped after {service.time_limit_s:.0f} s){progress}", icon=":material/hourglass_top:")
            fraction = progress_fraction(job.progress)
            if fraction is not None:
                bar.progress(fraction, text=job.progress)
        job.done_event.wait(0.5)
    box.empty()
    return _outcome(job, with_job, expected)


def progress_fraction(progress: str) -> float | None:
    """The share done a job's progress text reports ("120 of about 2,052 image forwards" → 0.058), or None
    when it reports no counts (then no bar is drawn: a bar from the clock would not be progress)."""
    found = _COUNTS.search(progress or "")
    if not found:
        return None
    done, total = (int(v.replace(",", "")) for v in found.groups())
    return min(1.0, done / total) if total > 0 else None


def _outcome(job, with_job: bool, expected: Estimate | None = None):
    result = copy.deepcopy(job.outcome())  # one cached result serves every session: each gets its own copy
    if not job.cached:
        remember_rate(job.kind, job.payload, result, expected)
    return (result, job) if with_job else result


# --- estimates before a job starts ----------------------------------------------------------------------

def session_rates() -> dict[str, float]:
    return st.session_state.setdefault(RATES_KEY, {})


def remember_rate(kind: str, payload: dict, result, expected: Estimate | None = None) -> None:
    """Keeps the GMAC/s a finished job measured (latency runs, a training step, a CAM) for the next estimates."""
    from ui.common import cached_device_info

    try:
        measured = measured_rate(kind, payload, result, expected, cached_device_info()["device"])
    except (KeyError, TypeError, ValueError, ZeroDivisionError):  # a result without timings measures nothing
        measured = None
    if measured is not None:
        session_rates()[measured[0]] = measured[1]


def job_estimate(kind: str, payload: dict, target_channels: int | None = None) -> Estimate | None:
    """The estimate of a job before it starts: the cached cost report's MACs at the rate this session measured
    on the job's device (else the device's typical figure). None for a quick kind (explorer.estimates.QUICK_KINDS)."""
    from explorer.spec import ModelSpec
    from ui.common import cached_cost, cached_device_info

    def cost(spec: dict) -> dict:
        return cached_cost(ModelSpec.from_dict(spec).key())

    return estimate(kind, payload, session_rates(), device=cached_device_info()["device"], cost=cost,
                    target_channels=target_channels)


def confirm_estimate(expected: Estimate | None, what: str, key: str, signature: str, note: str = "") -> bool:
    """Shows a job's estimate before it starts; over explorer.estimates.LONG_JOB_S a warning and a Run button.
    Returns whether to start it now: a short job at once, a long one once its Run button was clicked (for this
    very request: `signature`; later reruns then find its result). `note`: a sentence more in the warning."""
    if expected is None:
        return True
    if not expected.long:
        st.caption(f"Estimate: {expected.text()}.")
        return True
    where = f" on a {expected.device.upper()}" if expected.device != "cuda" else ""
    shown = what[:1].upper() + what[1:] if what.startswith("the ") else what  # "scorecam" stays the method's name
    st.warning(f"**{escape_markdown(shown)}{where} is slow:** {expected.text()}. It runs in the worker with its progress shown and a "
               f"Cancel button; other sessions' jobs wait behind it.{(' ' + note) if note else ''}",
               icon=":material/timer:")
    confirmed_key = f"{key}_confirmed"
    if st.session_state.get(confirmed_key) == signature:
        return True
    if st.button(f"Run {what} (about {format_duration(expected.seconds)})", key=f"{key}_run", type="primary"):
        st.session_state[confirmed_key] = signature  # later reruns show the result (from the job cache)
        return True
    return False


def estimated_job(kind: str, payload: dict, label: str, what: str, key: str, with_job: bool = False, note: str = ""):
    """`run_job` behind its estimate: the estimate first (and, for a long job, a Run click); then the job with
    its progress and Cancel. Returns None while a long job waits for its click."""
    expected = job_estimate(kind, payload)
    if not confirm_estimate(expected, what, key, job_key(kind, payload), note):
        return None
    return run_job(kind, payload, label, with_job=with_job, expected=expected)
