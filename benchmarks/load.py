"""Load test: N concurrent sessions against a running server of this app, for a bounded time.

Each session is one websocket speaking Streamlit's own protocol (what a browser tab sends: `BackMsg` reruns with a
page, a query string and widget triggers; what it receives: `ForwardMsg` deltas and `script_finished`), so 30
sessions cost the 2-core machine far less than 30 Chromium tabs. A session loops over the Model page (a small list
of models, so some costs are cached and some are not), the Inside page's Grad-CAM view on the default sample image,
and the Latency page (its form's Run button, default settings, one model), until the time or the rounds run out.

    python -m benchmarks load --start-server --sessions 3 --minutes 2
    python -m benchmarks load --url http://127.0.0.1:8501 --server-pid 1234 --sessions 30 --minutes 5 --json

Only loopback servers are driven (127.0.0.1, localhost, ::1); sessions ≤ 60, minutes ≤ 30, every wait has a timeout.
Images the pages show are not downloaded (a browser would fetch them over HTTP): page times cover the script run
and its messages only.
"""
from __future__ import annotations

import asyncio
import json
import math
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote, urlsplit

from benchmarks.common import print_table
from explorer.cli import OneLineErrors
from explorer.errors import ExplorerError

ROOT = Path(__file__).resolve().parents[1]
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
MAX_SESSIONS = 60
MAX_MINUTES = 30.0
MAX_ROUNDS = 10_000
MAX_PAGE_TIMEOUT_S = 600.0
MAX_MESSAGE_BYTES = 256 * 2**20  # one ForwardMsg; the app's largest (plotly figures, tables) are a few MB
SERVER_START_TIMEOUT_S = 120.0

MODEL_ARCHS = ("resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0")  # rotated: some cached, some not
CAM_VIEW = "&view=" + quote("Grad-CAM++ and attributions")  # the Inside page's first view
# CAMs and latency runs rotate over the same models: the first request of each is computed, later ones are
# served from the job service's cache (as in a class, where many open the same model)
PAGE_KINDS = ("model", "inside", "latency")
# What is reported: each page open, plus the Latency page's Run (a job, like the Inside page's CAM).
REPORT_KINDS = {"model": "Model page", "inside": "Inside page, Grad-CAM (a job)", "latency": "Latency page",
                "latency_run": "Latency Run (a job)"}
JOB_KINDS = ("inside", "latency_run")

# "…, position 3 in the queue" while a job waits; "waited 4.2 s" once it ran. The Latency page's caption also says
# "Runs queue for the device", which is not a wait: only a position or a wait counts.
# The app says "N jobs ahead in the queue" while a job waits (older wording: "position N in the queue").
QUEUE_POSITION = re.compile(r"\b(?:position\s+(\d+)|(\d+)\s+jobs?\s+ahead)\b[^.]*\bqueue\b", re.IGNORECASE)
MARKDOWN_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|~<>])")  # st.error bodies escape markdown; reasons show plain text
WAITED = re.compile(r"waited\s+(\d+(?:\.\d+)?)\s*s\b", re.IGNORECASE)


# --- validation of the flags ----------------------------------------------------------------------

def _shown(text: str, limit: int = 120) -> str:
    """Text from a flag or the server, made safe for one terminal line."""
    text = "".join(c if c.isprintable() else "?" for c in str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_loopback_url(url: str) -> str:
    """The server's base URL (no trailing slash) if it is http(s) on a loopback host; ExplorerError otherwise."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ExplorerError(f"--url {_shown(url)!r} is not a valid URL ({_shown(exc)})") from None
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or host not in LOOPBACK_HOSTS or parts.username or parts.password \
            or parts.query or parts.fragment:
        raise ExplorerError(f"refusing --url {_shown(url)!r}: the load test only drives a server on this machine, "
                            "an http(s) URL whose host is 127.0.0.1, localhost or ::1 (no user, query or fragment)")
    netloc = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{netloc}{f':{port}' if port else ''}{parts.path.rstrip('/')}"


def _bounded(name: str, value: float, low: float, high: float, unit: str = "") -> float:
    if not (math.isfinite(value) and low <= value <= high):
        raise ExplorerError(f"{name} {_shown(value)} is out of range: allowed {low:g}…{high:g}{unit}")
    return value


def build_parser():
    parser = OneLineErrors(prog="python -m benchmarks load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8501", help="a running server of this app (loopback only)")
    parser.add_argument("--start-server", action="store_true",
                        help="start the app on a free loopback port for this run and stop it at the end (--url is ignored)")
    parser.add_argument("--server-pid", type=int, help="the running server's PID, to report its peak memory")
    parser.add_argument("--sessions", type=int, default=3, help=f"concurrent sessions, 1…{MAX_SESSIONS}")
    parser.add_argument("--minutes", type=float, default=2.0, help=f"how long sessions keep starting pages, ≤ {MAX_MINUTES:g}")
    parser.add_argument("--rounds", type=int, help=f"stop each session after this many rounds (1…{MAX_ROUNDS}) if sooner")
    parser.add_argument("--pages", default=",".join(PAGE_KINDS), help=f"pages of a round, from {', '.join(PAGE_KINDS)}")
    parser.add_argument("--page-timeout", type=float, default=300.0,
                        help=f"seconds one page (or one Run) may take before it counts as failed, ≤ {MAX_PAGE_TIMEOUT_S:g}")
    parser.add_argument("--backend", default="local", choices=["local", "ray"],
                        help="with --start-server: the server's job backend (EXPLORER_BACKEND): local worker processes "
                             "or a local Ray instance")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    return parser


@dataclass(frozen=True)
class LoadSettings:
    url: str | None  # None: start a server
    sessions: int = 3
    minutes: float = 2.0
    rounds: int | None = None
    pages: tuple[str, ...] = PAGE_KINDS
    page_timeout_s: float = 300.0
    server_pid: int | None = None
    backend: str = "local"  # the started server's EXPLORER_BACKEND

    def __post_init__(self):
        if self.backend not in ("local", "ray"):
            raise ExplorerError(f"--backend {_shown(self.backend)!r}: allowed local or ray")
        if self.url is not None:
            object.__setattr__(self, "url", check_loopback_url(self.url))
        _bounded("--sessions", self.sessions, 1, MAX_SESSIONS)
        _bounded("--minutes", self.minutes, 0.01, MAX_MINUTES, " min")
        if self.rounds is not None:
            _bounded("--rounds", self.rounds, 1, MAX_ROUNDS)
        _bounded("--page-timeout", self.page_timeout_s, 1, MAX_PAGE_TIMEOUT_S, " s")
        unknown = [p for p in self.pages if p not in PAGE_KINDS]
        if unknown or not self.pages:
            raise ExplorerError(f"--pages {_shown(','.join(self.pages))!r}: allowed a comma-separated list of "
                                f"{', '.join(PAGE_KINDS)}")
        if self.server_pid is not None and (self.server_pid < 1 or not Path(f"/proc/{self.server_pid}").exists()):
            raise ExplorerError(f"--server-pid {_shown(self.server_pid)}: no such process on this machine")


# --- the server: start, stop, memory --------------------------------------------------------------

def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> bytes:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: never through a proxy
    with opener.open(url, timeout=timeout) as response:
        return response.read()


class AppServer:
    """`streamlit run app.py` on a free loopback port, in its own process group so that stopping it stops its
    children too."""

    def __init__(self, backend: str = "local"):
        self.port = _free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.NamedTemporaryFile("w+", prefix="load-server-", suffix=".log")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
            cwd=ROOT, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            env={**os.environ, "EXPLORER_BACKEND": backend})
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while True:
            try:
                _get(self.url + "/_stcore/health", timeout=2)
                return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.log.seek(0)
                last = (self.log.read().strip().splitlines() or ["(no output)"])[-1]
                self.stop()
                raise ExplorerError(f"the app server did not start within {SERVER_START_TIMEOUT_S:.0f} s "
                                    f"(last line of its log: {_shown(last)})")
            time.sleep(0.3)

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group this object created (start_new_session)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.log.close()


def process_tree_rss_bytes(root_pid: int) -> int:
    """Sum of VmRSS over a process and all its descendants (shared pages count once per process)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # fields after the command name, which may hold spaces
        children.setdefault(ppid, []).append(int(entry))
    from explorer.jobs import rss_bytes

    total, todo = 0, [root_pid]
    while todo:  # walk the tree from the root down
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        total += rss_bytes(pid)  # 0 for a process that ended between the listing and the read
    return total


# --- one session: Streamlit's protocol -----------------------------------------------------------

@dataclass
class RunResult:
    """What one script run sent back."""
    ok: bool = False
    seconds: float = 0.0
    reason: str = ""
    page_hash: str = ""
    query_string: str = ""
    buttons: dict = field(default_factory=dict)  # label -> widget id (buttons and form submit buttons)
    images: int = 0
    plots: int = 0
    metric_labels: list = field(default_factory=list)
    headings: list = field(default_factory=list)
    queue_position: int | None = None  # the highest position in the queue this run showed
    waited_s: float | None = None


def _texts_of(element) -> list[str]:
    kind = element.WhichOneof("type")
    if kind in ("alert", "markdown", "text", "heading", "exception", "toast"):
        inner = getattr(element, kind)
        return [inner.message if kind == "exception" else inner.body]
    if kind == "spinner":
        return [element.spinner.text]
    return []


class Session:
    """One browser tab's worth of conversation with the server, over one websocket."""

    def __init__(self, ws_url: str, page_timeout_s: float):
        self.ws_url = ws_url
        self.page_timeout_s = page_timeout_s
        self.ws = None
        self.pages: dict[str, str] = {}  # url path ("Model") -> page script hash, from new_session

    async def connect(self):
        from websockets.asyncio.client import connect

        # proxy=None: never route loopback traffic through a proxy named in the environment.
        self.ws = await connect(self.ws_url, subprotocols=["streamlit"], proxy=None, max_size=MAX_MESSAGE_BYTES,
                                open_timeout=min(30.0, self.page_timeout_s), close_timeout=5)

    async def close(self):
        if self.ws is not None:
            ws, self.ws = self.ws, None
            try:
                await asyncio.wait_for(ws.close(), 10)
            except Exception:  # closing a broken connection: nothing left to do
                pass

    async def rerun(self, page_path: str, query_string: str, page_hash: str = "", triggers: tuple[str, ...] = ()):
        """Send a rerun as the browser does and read until the script finishes: a RunResult."""
        from streamlit.proto.BackMsg_pb2 import BackMsg
        from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

        if self.ws is None:
            await self.connect()
        msg = BackMsg()
        msg.rerun_script.query_string = query_string
        if page_hash:
            msg.rerun_script.page_script_hash = page_hash
        else:
            msg.rerun_script.page_name = page_path
        for widget_id in triggers:
            state = msg.rerun_script.widget_states.widgets.add()
            state.id = widget_id
            state.trigger_value = True
        result = RunResult(query_string=query_string)
        start = time.perf_counter()
        deadline = start + self.page_timeout_s
        await self.ws.send(msg.SerializeToString())
        errors: list[str] = []
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise TimeoutError
            data = await asyncio.wait_for(self.ws.recv(), remaining)
            fwd = ForwardMsg()
            fwd.ParseFromString(data)
            kind = fwd.WhichOneof("type")
            if kind == "new_session":
                self.pages = {p.url_pathname: p.page_script_hash for p in fwd.new_session.app_pages}
                result.page_hash = fwd.new_session.page_script_hash
            elif kind == "page_info_changed":
                result.query_string = fwd.page_info_changed.query_string
            elif kind == "page_not_found":
                errors.append(f"page not found: {fwd.page_not_found.page_name}")
            elif kind == "delta":
                delta = fwd.delta
                which = delta.WhichOneof("type")
                elements = [delta.new_element] if which == "new_element" else \
                    list(delta.new_transient.elements) if which == "new_transient" else []
                for element in elements:
                    self._read_element(element, result, errors)
            elif kind == "script_finished":
                if fwd.script_finished == ForwardMsg.FINISHED_EARLY_FOR_RERUN:
                    continue  # the script asked for a rerun (st.rerun): the page is not there yet
                result.seconds = time.perf_counter() - start
                if fwd.script_finished not in (ForwardMsg.FINISHED_SUCCESSFULLY,
                                               ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY):
                    errors.append(f"script finished with status {ForwardMsg.ScriptFinishedStatus.Name(fwd.script_finished)}")
                result.ok = not errors
                result.reason = errors[0] if errors else ""
                return result

    @staticmethod
    def _read_element(element, result: RunResult, errors: list[str]):
        kind = element.WhichOneof("type")
        if kind == "exception":
            errors.append(f"exception: {element.exception.type}: {element.exception.message}")
        elif kind == "alert" and element.alert.format == element.alert.ERROR:
            errors.append("error: " + MARKDOWN_ESCAPE.sub(r"\1", element.alert.body))
        elif kind == "button":
            result.buttons[element.button.label] = element.button.id
        elif kind == "imgs":
            result.images += len(element.imgs.imgs)
        elif kind == "plotly_chart":
            result.plots += 1
        elif kind == "metric":
            result.metric_labels.append(element.metric.label)
        elif kind == "heading":
            result.headings.append(element.heading.body)
        for text in _texts_of(element):
            position = QUEUE_POSITION.search(text)
            if position:
                result.queue_position = max(result.queue_position or 0, int(position.group(1) or position.group(2)))
            waited = WAITED.search(text)
            if waited:
                result.waited_s = float(waited.group(1))  # the last report of the run wins


# --- the load test -------------------------------------------------------------------------------

@dataclass
class Tally:
    times: dict = field(default_factory=lambda: {k: [] for k in REPORT_KINDS})
    opened: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    failed_by_kind: Counter = field(default_factory=Counter)
    queued_runs: int = 0  # runs that showed a position in the queue
    max_queue_position: int = 0
    queue_waits: list = field(default_factory=list)
    unfinished: int = 0

    def record(self, kind: str, result: RunResult | None, reason: str = ""):
        self.opened[kind] += 1
        if result is not None:
            if result.queue_position is not None:
                self.queued_runs += 1
                self.max_queue_position = max(self.max_queue_position, result.queue_position)
            if result.waited_s is not None:
                self.queue_waits.append(result.waited_s)
        if result is not None and result.ok and not reason:
            self.times[kind].append(result.seconds)
        else:
            reason = reason or (result.reason if result is not None else "no result")
            self.failed_by_kind[kind] += 1
            self.failures[f"{kind}: {_shown(reason)}"] += 1


def _missing_content(kind: str, result: RunResult) -> str:
    """Why a run that finished cleanly still did not show its page ('' when it did)."""
    if kind == "model" and "MACs" not in result.metric_labels:
        return "the Model page showed no MACs total"
    if kind == "inside" and (result.images < 1 or result.plots < 1):
        # the input is an image; the heat map is a figure drawn over it (with its colour bar)
        return (f"the Grad-CAM view showed {result.images} image(s) and {result.plots} figure(s), not the input "
                "and its heat map")
    if kind == "latency" and "Latency" not in result.headings:
        return "the Latency page showed no title"
    if kind == "latency_run" and not result.plots:
        return "the Run showed no latency chart"
    return ""


async def _step(session: Session, tally: Tally, kind: str, page_path: str, query: str,
                page_hash: str = "", triggers: tuple[str, ...] = ()) -> RunResult | None:
    """One page open or one click, recorded; the session reconnects after a failure it cannot read past."""
    from websockets.exceptions import WebSocketException

    try:
        result = await session.rerun(page_path, query, page_hash, triggers)
    except (TimeoutError, asyncio.TimeoutError):
        tally.record(kind, None, f"timeout after {session.page_timeout_s:g} s")
    except (WebSocketException, OSError) as exc:
        tally.record(kind, None, f"disconnected ({type(exc).__name__})")
    else:
        tally.record(kind, result, _missing_content(kind, result) if result.ok else "")
        return result
    await session.close()  # a run may still be going on the server: start the next page on a fresh session
    await asyncio.sleep(1.0)  # a server that is down must not turn the loop into a spin of failures
    return None


async def _session_loop(index: int, settings: LoadSettings, ws_url: str, tally: Tally, stop_at: float):
    session = Session(ws_url, settings.page_timeout_s)
    await asyncio.sleep(0.2 * index)  # arrivals spread over a few seconds, not one burst
    try:
        round_ = 0
        while time.monotonic() < stop_at and (settings.rounds is None or round_ < settings.rounds):
            for kind in settings.pages:
                if time.monotonic() >= stop_at:
                    break
                if kind == "model":
                    arch = MODEL_ARCHS[(index + round_) % len(MODEL_ARCHS)]
                    await _step(session, tally, "model", "Model", f"arch={arch}", session.pages.get("Model", ""))
                elif kind == "inside":
                    arch = MODEL_ARCHS[(index + round_ + 1) % len(MODEL_ARCHS)]
                    await _step(session, tally, "inside", "Inside", f"arch={arch}{CAM_VIEW}",
                                session.pages.get("Inside", ""))
                else:
                    arch = MODEL_ARCHS[(index + round_ + 2) % len(MODEL_ARCHS)]
                    opened = await _step(session, tally, "latency", "Latency", f"arch={arch}",
                                         session.pages.get("Latency", ""))
                    run_id = opened.buttons.get("Run") if opened is not None else None
                    if opened is not None and opened.ok and run_id is None:
                        tally.record("latency_run", None, "the Latency page showed no Run button")
                    elif run_id is not None:
                        await _step(session, tally, "latency_run", "Latency", opened.query_string,
                                    opened.page_hash or session.pages.get("Latency", ""), (run_id,))
            round_ += 1
    finally:
        await session.close()


async def _sample_rss(pid: int, peak: list[int], every_s: float = 0.5):
    while True:
        peak[0] = max(peak[0], process_tree_rss_bytes(pid))
        await asyncio.sleep(every_s)


async def _drive(settings: LoadSettings, base_url: str, server_pid: int | None) -> tuple[Tally, float, int | None]:
    tally = Tally()
    ws_url = "ws" + base_url[len("http"):] + "/_stcore/stream"
    start = time.monotonic()
    stop_at = start + settings.minutes * 60
    peak = [0]
    sampler = asyncio.create_task(_sample_rss(server_pid, peak)) if server_pid else None
    tasks = [asyncio.create_task(_session_loop(i, settings, ws_url, tally, stop_at)) for i in range(settings.sessions)]
    # Sessions start no page after stop_at; a Latency visit may hold two page timeouts after that, then all stops.
    hard_stop = settings.minutes * 60 + 2 * settings.page_timeout_s + 30
    done, pending = await asyncio.wait(tasks, timeout=hard_stop)
    for task in pending:
        task.cancel()
    tally.unfinished = len(pending)
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task.exception() is not None:  # a bug in this client, not the app: say so rather than hide it
            tally.failures[f"load client error: {_shown(repr(task.exception()))}"] += 1
    duration = time.monotonic() - start
    if sampler:
        peak[0] = max(peak[0], process_tree_rss_bytes(server_pid))
        sampler.cancel()
        await asyncio.gather(sampler, return_exceptions=True)
    return tally, duration, (peak[0] or None) if server_pid else None


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(0.95 * len(ordered)) - 1)]  # nearest rank


def _run_in_own_loop(coroutine):
    """asyncio.run in a thread of its own: the caller's thread may already run an event loop (Playwright's
    sync API does, in a test session that drove a browser before)."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def run_load(settings: LoadSettings) -> dict:
    """Run the load test and return its summary (what --json prints)."""
    server = AppServer(settings.backend) if settings.url is None else None
    try:
        base_url = server.url if server else settings.url
        server_pid = server.proc.pid if server else settings.server_pid
        _get(base_url + "/_stcore/health", timeout=10)  # fail in one line if nothing listens there
        tally, duration, peak_rss = _run_in_own_loop(_drive(settings, base_url, server_pid))
    except OSError as exc:
        raise ExplorerError(f"no app server answers at {_shown(settings.url)} ({_shown(exc)}); start one, or pass "
                            "--start-server") from None
    finally:
        if server:
            server.stop()
    kinds = {}
    for kind in REPORT_KINDS:
        times = tally.times[kind]
        kinds[kind] = {"opened": tally.opened[kind], "ok": len(times), "failed": tally.failed_by_kind[kind],
                       "p50_s": statistics.median(times) if times else None, "p95_s": _p95(times) if times else None,
                       "times_s": [round(t, 4) for t in times]}
    jobs = sum(len(tally.times[k]) for k in JOB_KINDS)
    waits = tally.queue_waits
    return {
        "url": base_url, "started_server": server is not None, "sessions": settings.sessions,
        "backend": settings.backend if server is not None else "as the running server was started",
        "minutes_asked": settings.minutes, "rounds": settings.rounds, "pages": list(settings.pages),
        "duration_s": round(duration, 2), "kinds": kinds, "jobs_done": jobs,
        "jobs_per_minute": jobs / (duration / 60) if duration > 0 else None,
        "queue": {"runs_shown_a_position": tally.queued_runs, "max_position": tally.max_queue_position if tally.queued_runs else None,
                  "waits_reported": len(waits),
                  "wait_p50_s": statistics.median(waits) if waits else None, "wait_p95_s": _p95(waits) if waits else None},
        "peak_rss_bytes": peak_rss, "server_pid": server_pid,
        "failures": dict(tally.failures.most_common()), "sessions_cut_off": tally.unfinished,
    }


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_summary(summary: dict):
    print_table(
        f"Load: {summary['sessions']} sessions for {summary['duration_s'] / 60:.1f} min against {summary['url']} (backend: {summary['backend']})",
        ["page", "opened", "ok", "failed", "p50 (s)", "p95 (s)"],
        [[label, k["opened"], k["ok"], k["failed"], _seconds(k["p50_s"]), _seconds(k["p95_s"])]
         for kind, label in REPORT_KINDS.items() if (k := summary["kinds"][kind])["opened"]])
    per_minute = summary["jobs_per_minute"]
    print(f"jobs done: {summary['jobs_done']} (Grad-CAM views + latency runs that finished), "
          f"{per_minute:.2f} per minute" if per_minute is not None else f"jobs done: {summary['jobs_done']}")
    queue = summary["queue"]
    if queue["waits_reported"]:
        print(f"queue wait: p50 {queue['wait_p50_s']:.2f} s, p95 {queue['wait_p95_s']:.2f} s "
              f"({queue['waits_reported']} jobs reported a wait)")
    else:
        print("queue wait: not reported by the app")
    if queue["runs_shown_a_position"]:
        print(f"runs shown a queue position: {queue['runs_shown_a_position']} (highest position {queue['max_position']})")
    if summary["peak_rss_bytes"]:
        print(f"peak RSS of the server process tree (sum of VmRSS, pid {summary['server_pid']}): "
              f"{summary['peak_rss_bytes'] / 2**20:.0f} MiB")
    else:
        print("peak RSS: not measured (pass --server-pid PID, or --start-server)")
    if summary["sessions_cut_off"]:
        print(f"sessions cut off at the hard stop: {summary['sessions_cut_off']}")
    if summary["failures"]:
        print("failures:")
        for reason, count in summary["failures"].items():
            print(f"  {count} × {reason}")
    else:
        print("failures: none")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = LoadSettings(
            url=None if args.start_server else args.url, sessions=args.sessions, minutes=args.minutes,
            rounds=args.rounds, pages=tuple(p.strip() for p in args.pages.split(",") if p.strip()),
            page_timeout_s=args.page_timeout, server_pid=None if args.start_server else args.server_pid,
            backend=args.backend)
        if args.start_server:
            check_loopback_url(args.url)  # a hostile --url is refused even when it would not be used
        summary = run_load(settings)
    except ExplorerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:  # the server it started is stopped by run_load's `finally`
        print("load test interrupted", file=sys.stderr)
        return 130
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        print_summary(summary)
    return 0


if __name__ == "__main__":
    main()
