"""Presenter mode for a projector: what a page needs to show one step per 1280×720 screen.

- ``presenter_style()``: the sidebar and the toolbar out of the way, large type, tight spacing.
- ``show_chart(fig)``: every chart of the page through here; in presenter mode its text is at least
  PRESENTER_FONT_PX (a projector's back row reads 18 px, not Plotly's 12) and its height fits beside the prose.
- ``arrow_keys(previous_key, next_key)``: ← / → press the page's Previous / Next buttons. A tiny same-origin
  iframe (streamlit.components.v1.html) listens to the page's keydown and clicks the buttons Streamlit renders
  with those keys; keys typed into a text box or a menu are left alone.

The mode is a session flag (``st.session_state[PRESENTER_FLAG]``) that the page sets from its link (?present=1).
"""
from __future__ import annotations

import json

import streamlit as st
import streamlit.components.v1 as components

from ui.common import plot_config

PRESENTER_FLAG = "presenter_mode"
PRESENTER_FONT_PX = 20  # axis ticks, labels, legend and hover text
PRESENTER_TITLE_PX = 24
PRESENTER_CHART_HEIGHT = 380  # px: beside the prose (or under a short table), within a 720-pixel-high screen

_STYLE = """<style>
section[data-testid="stSidebar"], div[data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"]
  {display: none !important}
.stMainBlockContainer {padding-top: 1rem !important; padding-bottom: 0.5rem !important; max-width: 100% !important}
.stMainBlockContainer p, .stMainBlockContainer li {font-size: 1.3rem; line-height: 1.45}
.stMainBlockContainer h2 {font-size: 2rem; padding: 0.2rem 0}
.stMainBlockContainer h3 {font-size: 1.6rem; padding: 0.2rem 0}
.stMainBlockContainer [data-testid="stCaptionContainer"] p {font-size: 1.05rem}
.stMainBlockContainer [data-testid="stMetricValue"] {font-size: 2rem}
.stMainBlockContainer [data-testid="stMetricLabel"] p {font-size: 1.1rem}
.stMainBlockContainer [data-testid="stVerticalBlock"] {gap: 0.6rem}
.stMainBlockContainer [data-testid="stSelectbox"] input {font-size: 1.3rem !important; font-weight: 600}
</style>"""


def presenter_on() -> bool:
    return bool(st.session_state.get(PRESENTER_FLAG))


def presenter_style():
    """The projector layout: call once per run, in presenter mode only."""
    st.markdown(_STYLE, unsafe_allow_html=True)


def presenter_layout(fig):
    """`fig` (a Plotly figure) with every text at least PRESENTER_FONT_PX and a height that fits the screen."""
    fig.update_layout(font=dict(size=PRESENTER_FONT_PX), title_font_size=PRESENTER_TITLE_PX,
                      legend_font_size=PRESENTER_FONT_PX, hoverlabel_font_size=PRESENTER_FONT_PX,
                      height=min(fig.layout.height or PRESENTER_CHART_HEIGHT, PRESENTER_CHART_HEIGHT),
                      margin=dict(t=40, b=10, r=40))
    fig.update_traces(cliponaxis=False, selector=dict(type="scatter"))  # labels of points at the edges stay whole
    fig.update_xaxes(tickfont_size=PRESENTER_FONT_PX, title_font_size=PRESENTER_FONT_PX)
    fig.update_yaxes(tickfont_size=PRESENTER_FONT_PX, title_font_size=PRESENTER_FONT_PX)
    return fig


def show_chart(fig, **kwargs):
    """st.plotly_chart at full width with the app's export settings; large type in presenter mode."""
    if presenter_on():
        presenter_layout(fig)
    st.plotly_chart(fig, width="stretch", config=plot_config(), **kwargs)


_ARROW_KEYS = """<script>
const host = window.parent;
const keys = %s;
if (host.__presenterKeydown) host.removeEventListener("keydown", host.__presenterKeydown);
host.__presenterKeydown = (event) => {
  if (!window.frameElement || !window.frameElement.isConnected) {  // this frame is gone: so is presenter mode
    host.removeEventListener("keydown", host.__presenterKeydown);
    return;
  }
  const target = event.target;
  if (event.altKey || event.ctrlKey || event.metaKey || target.isContentEditable
      || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName)) return;
  const key = keys[event.key];
  const button = key && host.document.querySelector(".st-key-" + key + " button");
  if (button && !button.disabled) { event.preventDefault(); button.click(); }
};
host.addEventListener("keydown", host.__presenterKeydown);
</script>"""


def arrow_keys(previous_key: str, next_key: str):
    """← and → press the buttons made with st.button(..., key=previous_key / next_key)."""
    mapping = json.dumps({"ArrowLeft": previous_key, "ArrowRight": next_key})
    components.html(_ARROW_KEYS % mapping, height=0)
