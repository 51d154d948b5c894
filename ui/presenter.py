"""Presenter mode for a projector: what a page needs to show one step per 1280×720 screen.

- ``presenter_style()``: the sidebar and the toolbar out of the way, large type, tight spacing, large table text.
- ``for_screen(fig)``: the one place a chart gets the presenter layout. Every chart a tour step shows passes
  through it: the tour's own through ``show_chart``, the Inside views' (Swin masks, receptive fields, channel
  connectivity) as their ``layout`` argument. In presenter mode its text is at least PRESENTER_FONT_PX (a
  projector's back row reads 18 px, not Plotly's 12) and its height fits beside the prose; otherwise it is
  left exactly as drawn.
- ``presenter_table(frame, columns)``: in presenter mode, a table as HTML in large type (st.dataframe's canvas
  ignores the page's CSS), formatted as its column configuration says, scrolling inside a box when it has
  more rows than the screen holds. It never scrolls sideways while its names (first column) and its last,
  descriptive column can wrap: the figures between never do.
- ``arrow_keys(previous_key, next_key)``: ← / → press the page's Previous / Next buttons. A tiny same-origin
  iframe (streamlit.components.v1.html) listens to the page's keydown and clicks the buttons Streamlit renders
  with those keys; keys typed into a text box or a menu are left alone.

The mode is a session flag (``st.session_state[PRESENTER_FLAG]``) that the page sets from its link (?present=1).
"""
from __future__ import annotations

import functools
import json
import re
import textwrap

import pandas as pd
import streamlit as st
import streamlit.components.v1 as components

from explorer.text import escape_markdown
from ui.common import plot_config

PRESENTER_FLAG = "presenter_mode"
PRESENTER_FONT_PX = 20  # axis ticks, labels, legend, colour bars, annotations and hover text
PRESENTER_TITLE_PX = 22
PRESENTER_CHART_HEIGHT = 380  # px: beside the prose (or under a short table), within a 720-pixel-high screen
PRESENTER_TABLE_HEIGHT = 330  # px: a taller table scrolls inside its box (about 8 rows and the header)
TITLE_LINE_CHARS = 44  # a chart title's line at PRESENTER_TITLE_PX in the figure column (~700 px)

_STYLE = """<style>
section[data-testid="stSidebar"], div[data-testid="stSidebarCollapsedControl"], header[data-testid="stHeader"]
  {display: none !important}
.stMainBlockContainer {padding: 0.5rem 2rem 0.5rem 2rem !important; max-width: 100% !important}
.stMainBlockContainer p, .stMainBlockContainer li {font-size: 1.15rem; line-height: 1.38}
.stMainBlockContainer h2 {font-size: 2rem; padding: 0.2rem 0}
.stMainBlockContainer h3 {font-size: 1.55rem; padding: 0 0 0.2rem 0}
.stMainBlockContainer [data-testid="stCaptionContainer"] p {font-size: 1.05rem}
.stMainBlockContainer [data-testid="stMetricValue"] p {font-size: 1.9rem; line-height: 1.3}
.stMainBlockContainer [data-testid="stMetricLabel"] p {font-size: 1.1rem}
.stMainBlockContainer [data-testid="stVerticalBlock"] {gap: 0.5rem}
.stMainBlockContainer [data-testid="stSelectbox"] input {font-size: 1.2rem !important; font-weight: 600}
.stMainBlockContainer [data-testid="stTable"] th, .stMainBlockContainer [data-testid="stTable"] td
  {padding: 0.15rem 0.35rem; vertical-align: bottom}
.stMainBlockContainer [data-testid="stTable"] p {font-size: 1.125rem; line-height: 1.3; margin: 0}
.stMainBlockContainer [data-testid="stTable"] tbody p {white-space: nowrap}
.stMainBlockContainer [data-testid="stTable"] tbody th p, .stMainBlockContainer [data-testid="stTable"] tbody td:last-child p
  {white-space: normal}
.stMainBlockContainer [data-testid="stTable"] thead p {font-weight: 600}
</style>"""


def presenter_on() -> bool:
    return bool(st.session_state.get(PRESENTER_FLAG))


def presenter_style():
    """The projector layout: call once per run, in presenter mode only."""
    st.markdown(_STYLE, unsafe_allow_html=True)


def _wrapped(text: str | None, line_chars: int) -> str | None:
    """A title broken into lines of at most `line_chars` characters (Plotly does not wrap titles)."""
    if not text:
        return text
    lines = re.split(r"<br\s*/?>", text)
    return "<br>".join(part for line in lines for part in (textwrap.wrap(line, line_chars) or [""]))


def presenter_layout(fig, height: int = PRESENTER_CHART_HEIGHT, title_chars: int = TITLE_LINE_CHARS,
                     annotation_chars: int | None = None):
    """`fig` (a Plotly figure) with every text at least PRESENTER_FONT_PX and a height of at most `height`.

    Titles wrap at `title_chars` characters (a narrow chart gets a smaller number) and the top margin grows
    with their lines; annotations (subplot titles) wrap at `annotation_chars` when given; colour-bar titles
    turn to the bar's side, where they take no width from the plot."""
    title = _wrapped(fig.layout.title.text, title_chars)
    if annotation_chars:
        fig.for_each_annotation(lambda note: note.update(text=_wrapped(note.text, annotation_chars)))
    title_lines = title.count("<br>") + 1 if title else 0
    # subplot titles of the top row stand above the plot, in the same margin as the title
    top_note_lines = max((note.text.count("<br>") + 1 for note in fig.layout.annotations
                          if note.text and note.yref == "paper" and (note.y or 0) >= 0.95), default=0)
    fig.update_layout(font=dict(size=PRESENTER_FONT_PX),
                      # from the top edge down (Plotly lifts a multi-line title's first line a little: the pad),
                      # over a top margin sized for its lines
                      title=dict(text=title, font_size=PRESENTER_TITLE_PX, yref="container", y=1, yanchor="top",
                                 pad=dict(t=16)),
                      legend_font_size=PRESENTER_FONT_PX, hoverlabel_font_size=PRESENTER_FONT_PX,
                      uniformtext=dict(minsize=PRESENTER_FONT_PX, mode="hide"),  # treemap labels: large or none
                      height=min(fig.layout.height or height, height),
                      margin=dict(t=30 + round(1.3 * (PRESENTER_TITLE_PX * title_lines + PRESENTER_FONT_PX * top_note_lines)),
                                  b=10, r=30, l=10))
    fig.update_traces(cliponaxis=False, selector=dict(type="scatter"))  # labels of points at the edges stay whole
    fig.update_traces(colorbar=dict(tickfont_size=PRESENTER_FONT_PX, title_font_size=PRESENTER_FONT_PX,
                                    title_side="right"), selector=lambda trace: "colorbar" in trace)
    fig.update_annotations(font_size=PRESENTER_FONT_PX)  # subplot titles and notes
    fig.update_xaxes(tickfont_size=PRESENTER_FONT_PX, title_font_size=PRESENTER_FONT_PX)
    fig.update_yaxes(tickfont_size=PRESENTER_FONT_PX, title_font_size=PRESENTER_FONT_PX)
    return fig


def for_screen(fig, **presenter_options):
    """The figure as the page shows it: presenter_layout(fig, **presenter_options) in presenter mode, else as is."""
    return presenter_layout(fig, **presenter_options) if presenter_on() else fig


def narrow(**presenter_options):
    """for_screen with options, as one argument for a view's `layout`: narrow(title_chars=24, height=340)."""
    return functools.partial(for_screen, **presenter_options)


def show_chart(fig, **presenter_options):
    """st.plotly_chart at full width with the app's export settings; large type in presenter mode (where
    `presenter_options`, e.g. height=300, go to presenter_layout)."""
    st.plotly_chart(for_screen(fig, **presenter_options), width="stretch", config=plot_config())


def _printf_to_format(printf: str | None):
    """Streamlit's column format ("%,.2f", "%,d", "%.1f%%") as a Python formatter; None for plain text."""
    match = re.fullmatch(r"%(,?)(\.\d+)?([dfe])(%%)?", printf or "")
    if not match:
        return None
    comma, precision, kind, percent = match.groups()
    spec = "{:" + comma + (precision or "") + kind + "}" + ("%" if percent else "")
    return lambda value: "" if value is None or pd.isna(value) else spec.format(value)


def _plain(value) -> str:
    """A text cell, shown as typed: st.table renders its cells as markdown."""
    return "" if value is None or (isinstance(value, float) and pd.isna(value)) else escape_markdown(value)


TABLE_HEADER_PX, TABLE_ROW_PX = 100, 30  # a row of 18 px type with its padding; a header of up to four lines
TABLE_LINE_PX = 24  # each further line of a row whose last column wraps


LONG_NAME_CHARS = 24  # a name longer than this (~230 px at 18 px type) may wrap in a presenter table


def _breakable(name: str) -> str:
    """A long row name with a chance to wrap after each ".", "@" and "," (a nested layer's path, a swap's target
    list; not inside a number), where it has no space: it wraps in its column instead of pushing the table
    sideways. A shorter name stays whole: a chance to wrap lets the browser narrow its column even when the
    table fits, at the cost of taller rows."""
    if len(name) <= LONG_NAME_CHARS:
        return name
    return re.sub(r"(?<=[@,])(?=\S)|(?<=\.)(?=[^\d\s])", "\u200b", name)


def presenter_table_height(rows: int, most: int = PRESENTER_TABLE_HEIGHT, row_lines: int = 1) -> int:
    """How tall presenter_table draws `rows` rows of `row_lines` lines each, in pixels (at most `most`)."""
    return min(most, TABLE_HEADER_PX + (TABLE_ROW_PX + TABLE_LINE_PX * (row_lines - 1)) * rows)


def presenter_table(frame: pd.DataFrame, columns: dict, most: int = PRESENTER_TABLE_HEIGHT):
    """The frame's `columns` (Streamlit column configurations by key, in order) as an HTML table in large type,
    with the configurations' labels and number formats: st.dataframe draws on a canvas that the page's CSS
    cannot enlarge. A table taller than `most` pixels scrolls inside its box."""
    frame = frame[[key for key in columns if key in frame]]
    shown = pd.DataFrame({
        columns[key]["label"]: frame[key].map(_printf_to_format(columns[key].get("type_config", {}).get("format"))
                                              or _plain)
        for key in frame})
    names = shown.columns[0]
    shown[names] = shown[names].map(_breakable)
    # a list in the last column ("1×256×80×80, 1×256×40×40") may wrap to a line an item: counted as such
    lines = shown[shown.columns[-1]].map(lambda cell: 1 + str(cell).count(", ")) if len(shown.columns) > 1 else []
    tall = TABLE_HEADER_PX + sum(TABLE_ROW_PX + TABLE_LINE_PX * (n - 1) for n in lines) > most
    box = st.container(height=most, border=False) if tall else st.container()
    box.table(shown.set_index(names))


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
