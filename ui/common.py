"""Page setup, error display and cached calls into the engine's backend."""
from __future__ import annotations

import contextlib
import json
import logging
import threading
import traceback

import streamlit as st

from explorer.backend import BACKEND
from explorer.errors import ExplorerError
from explorer.spec import ModelSpec

log = logging.getLogger("explorer.ui")


def page_setup(title: str, icon: str = ":material/explore:"):
    st.set_page_config(page_title=f"{title} · Architecture Explorer", page_icon=icon, layout="wide")
    with st.sidebar:
        info = cached_device_info()
        st.caption("Compute backend: in this process")
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
    st.warning(f"The link's model could not be opened here: {reason}. Showing {default} instead.")
    return default


def escape_markdown(text: str) -> str:
    """Messages are shown as markdown: keep names like __init__ or layer4.*.conv2 as typed (code spans between
    backticks are left alone: markdown shows them literally already)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # the even parts lie outside code spans
        parts[i] = parts[i].replace("\\", "\\\\").replace("_", "\\_").replace("*", "\\*")
    return "`".join(parts)


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


@st.cache_data(max_entries=32, show_spinner=False)
def cached_fvcore(spec_key: str) -> dict:
    return BACKEND.fvcore(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_bench(spec_key: str) -> dict:
    """Batch-1 latency on the default device, quick settings (the swap page's live figure)."""
    return BACKEND.quick_bench(json.loads(spec_key))


@st.cache_data(max_entries=16, show_spinner=False)
def cached_fold(spec_key: str) -> dict:
    return BACKEND.fold(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_rf(spec_key: str) -> dict:
    return BACKEND.receptive_field(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_swap_points(spec_key: str) -> dict:
    return BACKEND.swap_points(json.loads(spec_key))


@st.cache_data(max_entries=32, show_spinner=False)
def cached_swapped_modules(spec_key: str) -> list[str]:
    return BACKEND.swapped_modules(json.loads(spec_key))


@st.cache_data(max_entries=128, show_spinner=False)
def cached_compare_row(spec_key: str) -> dict:
    return BACKEND.compare_row(json.loads(spec_key))


@st.cache_data(max_entries=64, show_spinner=False)
def cached_sweep(spec_key: str, sides: tuple[int, ...], latency: bool = False) -> list:
    return BACKEND.resolution_sweep(json.loads(spec_key), list(sides), latency)


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
