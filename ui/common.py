"""Page setup, error display and cached calls into the engine's backend."""
from __future__ import annotations

import contextlib
import json
import logging
import re
import threading
import traceback
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from explorer.backend import BACKEND
from explorer.errors import ExplorerError
from explorer.estimates import combine
from explorer.jobs import job_key
from explorer.spec import ModelSpec
from explorer.text import escape_markdown
from ui.jobs import confirm_estimate, job_estimate, job_service, run_job

log = logging.getLogger("explorer.ui")


# Headline numbers never cut: metric values shrink with the window (2.25rem at 1,500 px and up, 1.2rem at the
# narrowest) and values, labels and deltas wrap instead of ending in "…" when a column is still too narrow.
WHOLE_METRICS_CSS = """<style>
[data-testid="stMetricValue"] {font-size: clamp(1.2rem, 2.4vw, 2.25rem);}
[data-testid="stMetricValue"], [data-testid="stMetricValue"] *, [data-testid="stMetricLabel"] *,
[data-testid="stMetricDelta"] * {white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; overflow-wrap: anywhere;}
</style>"""

HOME_LABEL = "Home"  # Streamlit names the entry page after its file ("app"); the sidebar's own menu says Home


def app_pages() -> list[tuple[str, str]]:
    """(path, label) of every page in the sidebar's order: the home page, then pages/ as Streamlit sorts them."""
    from streamlit.source_util import page_icon_and_name, page_sort_key

    root = Path(__file__).resolve().parents[1]
    pages = sorted((root / "pages").glob("[!._]*.py"), key=page_sort_key)
    return [("app.py", HOME_LABEL)] + [(f"pages/{page.name}", page_icon_and_name(page)[1].replace("_", " "))
                                       for page in pages]


FAVICON = str(Path(__file__).resolve().parents[1] / "assets" / "favicon.png")


def page_setup(title: str, icon: str = ":material/explore:"):
    """Title, the sidebar's menu and device facts, and the page's CSS. The browser tab shows the app's own
    favicon, served by this server: a Material icon (`icon`, which the pages still name) as a favicon is
    fetched from Google's font server, and nothing here may reach the internet."""
    st.set_page_config(page_title=f"{title} · Architecture Explorer", page_icon=FAVICON, layout="wide")
    st.html(WHOLE_METRICS_CSS)
    with st.sidebar:
        # Streamlit's own menu is off (client.showSidebarNavigation): it can only call the entry page "app"
        for path, label in app_pages():
            st.page_link(path, label=label)
        st.divider()
        info = cached_device_info()
        workers = job_service().stats()["workers"]
        st.caption(f"Compute: {workers} worker process{'es' if workers != 1 else ''} for models with real tensors "
                   "(sessions take turns); cost analyses on the meta device in the server")
        st.markdown(f"**Device:** {info['name']}")
        if info.get("memory_bytes"):
            st.caption(f"{info['memory_bytes'] / 2**30:.0f} GiB · compute capability {info['capability']}")
        if info["device"] == "cuda":
            cuda = f"CUDA {info['cuda']}"
        else:
            cuda = f"CUDA {info['cuda']} build, no GPU found" if info.get("cuda") else "CPU build"
        st.caption(f"torch {info['torch']} · {cuda}")
        st.selectbox("Figure download format", ["png", "svg"], key="figure_format",
                     help="The camera button above each chart saves it in this format, for slides")


QUOTED_LINK_TEXT = 200  # characters of a link's value a message quotes (a link can be long; a message should not)


def arch_from_link(ids: list[str], default: str = "resnet50") -> str:
    """The catalog model the page's link names, or `default` with a warning that says why (a mistyped
    shared link must not look as if it had worked)."""
    wanted = st.query_params.get("arch")
    if not wanted or wanted in ids:
        return wanted or default
    from explorer.catalog import resolve

    try:
        resolve(wanted)
        reason = (f"'{wanted}' is a library model; this page lists the catalog's models, so open it on the Model "
                  "page by name")
    except ExplorerError as exc:
        reason = str(exc)
    st.warning(f"The link's model could not be opened here: {escape_markdown(reason)}. Showing {default} instead.")
    return default


def int_from_link(name: str, default: int, low: int, high: int, what: str) -> int:
    """The whole number the link carries as ?name=, if it lies in [low, high]; otherwise `default`, with a
    warning that names the value and the range (a link must not quietly show something else)."""
    text = st.query_params.get(name)
    if text is None or not text.strip():
        return default
    value = int(text.strip()) if re.fullmatch(r"[0-9]{1,9}", text.strip()) else None
    if value is None or not low <= value <= high:
        named = escape_markdown(text, limit=QUOTED_LINK_TEXT)
        st.warning(f"The link's {what} '{named}' is not a whole number from {low} to {high}: ignored, showing {default}.")
        return default
    return value


def drop_unused_link_params(used: tuple[str, ...]) -> None:
    """Warn about the link's settings this page does not read, and take them out of the URL: a re-shared
    link then carries only what the page shows, and the warning is not repeated on every rerun."""
    unused = [key for key in st.query_params if key not in used]
    if not unused:
        return
    names = ", ".join(f"'{escape_markdown(key, limit=QUOTED_LINK_TEXT)}'" for key in unused[:8]) + (
        f" and {len(unused) - 8} more" if len(unused) > 8 else "")
    reads = ", ".join(used) if used else "no settings"
    st.warning(f"This page does not use {names} from its link: ignored. It reads {reads} from a link.")
    for key in unused:
        del st.query_params[key]


def start_from_link(first_key: str, read: Callable[[], dict[str, Any]]) -> bool:
    """A page's start-up from its URL, the same on every page: on the page's first visit in this session its
    widgets start from the link, so a shared link opens the same view. ``read()`` reads the link (warning once
    about each value it cannot use) and returns the widgets' session-state values; they are set only when
    ``first_key`` is not in the session yet, so later reruns keep what the person changed. Returns whether
    they were set."""
    if first_key in st.session_state:
        return False
    st.session_state.update(read())
    return True


@contextlib.contextmanager
def guard(what: str = "This"):
    """Show a clear message instead of a traceback; the session and its state survive."""
    try:
        yield
    except ExplorerError as exc:
        st.error(escape_markdown(str(exc)))
    except Exception as exc:  # an engine bug: say so plainly, keep details in the server log
        log.error("unexpected error\n%s", traceback.format_exc())
        detail = str(exc).splitlines()[0][:200] if str(exc) else ""
        st.error(escape_markdown(f"{what} failed unexpectedly: {type(exc).__name__}: {detail}"))


def plot_config() -> dict:
    """Plotly's own export (the camera button): PNG or SVG at slide resolution."""
    return {"displaylogo": False, "toImageButtonOptions": {
        "format": st.session_state.get("figure_format", "png"), "scale": 2, "filename": "architecture-explorer"}}


@st.cache_resource
def warm_up():
    """Once per server: import the heavy libraries in the background so the first model page is quick.

    Called at the top of the home page: the imports overlap the page's own rendering, which is light
    (3.2 s to interactive, and the first model page in under 2 s, on 2 cores)."""

    def work():
        import plotly.graph_objects  # noqa: F401

        from explorer.cost import analyse

        analyse(ModelSpec("resnet18"), with_layers=False)

    # Not a daemon: a daemon thread killed inside torch at interpreter exit aborts the process.
    threading.Thread(target=work, name="explorer-warm-up", daemon=False).start()
    return True


@st.cache_resource
def cached_device_info():
    return BACKEND.device_info()


@st.cache_data(max_entries=64, show_spinner=False)
def cached_cost(spec_key: str) -> dict:
    return BACKEND.cost(json.loads(spec_key))


# Jobs that run real tensors go through the job service (ui.jobs): queued fairly, run in a worker process,
# cached there for every session. The rest (meta-device analyses) run here, cached per server.

def cached_fvcore(spec_key: str) -> dict:
    spec = json.loads(spec_key)
    return run_job("fvcore", {"spec": spec}, f"fvcore's count of {spec['arch']}")


def cached_bench(spec_key: str) -> dict:
    """Batch-1 latency on the default device, quick settings (the swap page's live figure)."""
    spec = json.loads(spec_key)
    return run_job("quick_bench", {"spec": spec}, f"Timing {spec['arch']}")


def cached_fold(spec_key: str) -> dict:
    spec = json.loads(spec_key)
    return run_job("fold", {"spec": spec}, f"Folding {spec['arch']}")


def cached_rfs(spec_keys: list[str], key: str) -> list[dict] | None:
    """The receptive-field reports of these specs, one `receptive_field` job each (torch.fx tracing patches
    nn.Module.__call__ for every thread: it must never run in this process), behind one estimate: their summed
    estimate first, a caption; over explorer.estimates.LONG_JOB_S a warning and a Run button (widget `key`),
    and None until it is clicked."""
    payloads = [{"spec": json.loads(spec_key)} for spec_key in spec_keys]
    estimates = [job_estimate("receptive_field", payload) for payload in payloads]
    expected = estimates[0] if len(estimates) == 1 else combine(estimates, "receptive_field", "models")
    models = len(payloads)
    what = "the receptive-field trace" + ("" if models == 1 else " of both models" if models == 2
                                          else f" of {models} models")
    signature = job_key("receptive_field", {"specs": [payload["spec"] for payload in payloads]})
    if not confirm_estimate(expected, what, f"{key}_rf_estimate", signature):
        return None
    return [run_job("receptive_field", payload, f"Tracing {payload['spec']['arch']} for receptive fields",
                    expected=one) for payload, one in zip(payloads, estimates)]


def cached_rf(spec_key: str, key: str) -> dict | None:
    """One spec's receptive-field report behind its estimate (see cached_rfs); None while a long trace waits."""
    reports = cached_rfs([spec_key], key)
    return None if reports is None else reports[0]


@st.cache_data(max_entries=32, show_spinner=False)
def cached_swap_points(spec_key: str) -> dict:
    return BACKEND.swap_points(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_swapped_modules(spec_key: str) -> list[str]:
    return BACKEND.swapped_modules(json.loads(spec_key))


@st.cache_data(max_entries=128, show_spinner=False)
def cached_compare_row(spec_key: str) -> dict:
    return BACKEND.compare_row(json.loads(spec_key))


@st.cache_data(max_entries=128, show_spinner=False)
def cached_training_costs(spec_key: str) -> dict:
    return BACKEND.training_costs(json.loads(spec_key))


@st.cache_data(max_entries=64, show_spinner=False)
def _cost_sweep(spec_key: str, sides: tuple[int, ...]) -> list:
    return BACKEND.resolution_sweep(json.loads(spec_key), list(sides), False)


def cached_sweep(spec_key: str, sides: tuple[int, ...], latency: bool = False) -> list:
    """Cost per input side (meta device, here); with `latency`, timed too (a job)."""
    if not latency:
        return _cost_sweep(spec_key, tuple(sides))
    spec = json.loads(spec_key)
    return run_job("latency_sweep", {"spec": spec, "sides": list(sides)}, f"Timing {spec['arch']} across sizes")


@st.cache_data(max_entries=4, show_spinner=False)
def cached_attention_formulas(sides: tuple[int, ...]) -> list:
    return BACKEND.attention_formulas(list(sides))


def cost_of(spec: ModelSpec) -> dict:
    return cached_cost(spec.key())


def fvcore_of(spec: ModelSpec) -> dict:
    return cached_fvcore(spec.key())


RANDOM_WEIGHTS_NOTE = (
    "Weights are random: no pretrained weights are loaded. Costs do not depend on weight values."
)
