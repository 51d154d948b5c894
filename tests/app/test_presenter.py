"""Presenter mode on a projector's 1280×720 screen, in headless Chromium: the arrow keys move between steps and
the URL follows, a step fits the screen, the sidebar is out of the way and chart text is large."""
import re

import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT
from ui.presenter import PRESENTER_FONT_PX

SCREEN = {"width": 1280, "height": 720}
FIT_TOLERANCE_PX = 8  # sub-pixel rounding and the last block's bottom margin


def wait_for_the_step(page, step: int, total: str = r"\d+", chart: bool = False):
    page.get_by_text(re.compile(rf"^Step {step} of {total}")).wait_for(timeout=90_000)
    page.get_by_text(re.compile(r"^Think about it")).wait_for(timeout=90_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=90_000)  # the rerun is over
    if chart:
        page.locator(".stPlotlyChart .xtick text").first.wait_for(timeout=90_000)


def press(page, key: str):
    """Press a key on the page once the presenter's key listener (a same-origin iframe's script) is in place."""
    page.wait_for_function("() => typeof window.__presenterKeydown === 'function'", timeout=30_000)
    page.locator("body").press(key)


def content_height(page) -> int:
    """How tall the page's content is: Streamlit scrolls its main section, not the document."""
    return page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')]
            .map(e => e.scrollHeight))""")


def chart_font_sizes(page) -> list[float]:
    """The computed font size of every tick label, axis title and legend entry of the step's charts."""
    return page.evaluate("""() => [...document.querySelectorAll(
        '.stPlotlyChart .xtick text, .stPlotlyChart .ytick text, .stPlotlyChart .g-xtitle text,'
        + ' .stPlotlyChart .g-ytitle text, .stPlotlyChart .legendtext')]
        .map(e => parseFloat(getComputedStyle(e).fontSize))""")


@pytest.mark.slow
def test_presenter_mode_on_a_1280_by_720_screen(app_server, browser):
    page = browser.new_page(viewport=SCREEN)
    page.goto(app_server + "/Tours?tour=vovnet&present=1")
    wait_for_the_step(page, 1)
    total = re.search(r"of (\d+)", page.get_by_text(re.compile(r"^Step 1 of")).inner_text()).group(1)
    # the page's style hides the sidebar once the browser has applied it (a moment after the step renders)
    expect(page.get_by_test_id("stSidebar")).to_be_hidden(timeout=15_000)

    press(page, "ArrowRight")
    wait_for_the_step(page, 2, total, chart=True)
    expect(page).to_have_url(re.compile(r"[?&]step=2(&|$)"), timeout=30_000)
    assert "present=1" in page.url
    artifacts = ROOT / "artifacts"
    if artifacts.is_dir():
        page.screenshot(path=str(artifacts / "presenter-vovnet-step2-1280x720.png"))

    # Step 2 (VoVNet vs DenseNet: the prose beside a chart and its table) fits one screen.
    assert content_height(page) <= SCREEN["height"] + FIT_TOLERANCE_PX
    sizes = chart_font_sizes(page)
    assert len(sizes) >= 8 and min(sizes) >= PRESENTER_FONT_PX >= 18, sizes

    press(page, "ArrowLeft")
    wait_for_the_step(page, 1, total)
    expect(page).to_have_url(re.compile(r"[?&]step=1(&|$)"), timeout=30_000)
    assert page.get_by_test_id("stException").count() == 0
    page.close()


# --- the presenter layout itself: no browser, no server --------------------------------------------------------

def _figure_fonts(fig) -> list[float]:
    """Every font size a Plotly figure sets after Plotly's own defaults: text a size does not name inherits the
    layout font."""
    layout = fig.layout
    base = layout.font.size
    sizes = [base, layout.title.font.size or base, layout.legend.font.size or base]
    for axis in [*fig.select_xaxes(), *fig.select_yaxes()]:
        sizes += [axis.tickfont.size or base, axis.title.font.size or base]
    for trace in fig.data:
        if "colorbar" in trace:
            sizes += [trace.colorbar.tickfont.size or base, trace.colorbar.title.font.size or base]
    sizes += [annotation.font.size or base for annotation in layout.annotations]
    return sizes


def _connectivity_like_figure():
    """Two rows of heatmaps with subplot titles at 10 px and a colour bar, as ui.connectivity draws them."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=2, cols=2, subplot_titles=["conv<br>3×3", "group<br>1×1", "so far", "so far"])
    for row in (1, 2):
        for col in (1, 2):
            fig.add_trace(go.Heatmap(z=[[0, 1], [1, 0]], colorbar=dict(title="paths (count)")), row=row, col=col)
    fig.update_annotations(font_size=10)
    fig.update_layout(height=660, title="Top: each factor in call order (black = connected, 0/1). Bottom: paths")
    return fig


def test_presenter_layout_raises_every_text_of_a_figure_and_wraps_its_title():
    from ui.presenter import PRESENTER_CHART_HEIGHT, presenter_layout

    fig = presenter_layout(_connectivity_like_figure(), title_chars=24)
    sizes = _figure_fonts(fig)
    assert len(sizes) == 3 + 4 * 2 * 2 + 4 * 2 + 4  # layout, 4 x + 4 y axes, 4 colour bars, 4 subplot titles
    assert min(sizes) >= PRESENTER_FONT_PX >= 18
    assert fig.layout.height == PRESENTER_CHART_HEIGHT  # 660 px would not fit beside the prose
    lines = fig.layout.title.text.split("<br>")
    assert len(lines) == 4 and max(map(len, lines)) <= 24
    assert " ".join(lines) == "Top: each factor in call order (black = connected, 0/1). Bottom: paths"
    assert all(trace.colorbar.title.side == "right" for trace in fig.data)


def test_outside_presenter_mode_a_figure_is_left_exactly_as_drawn(monkeypatch):
    import streamlit as st

    from ui import presenter

    monkeypatch.setattr(st, "session_state", {presenter.PRESENTER_FLAG: False})
    fig = _connectivity_like_figure()
    before = fig.to_json()
    assert presenter.for_screen(fig) is fig and fig.to_json() == before
    assert presenter.narrow(height=300)(fig).to_json() == before
    monkeypatch.setattr(st, "session_state", {presenter.PRESENTER_FLAG: True})
    assert presenter.narrow(height=300)(fig).layout.height == 300


def test_presenter_tables_keep_the_column_formats():
    from ui.presenter import _printf_to_format

    assert _printf_to_format("%,d")(25557032) == "25,557,032"
    assert _printf_to_format("%,.2f")(4089.1844) == "4,089.18"
    assert _printf_to_format("%.1f%%")(12.345) == "12.3%"
    assert _printf_to_format("%,.3f")(float("nan")) == ""
    assert _printf_to_format(None) is None  # text columns are shown as they are


def test_a_comparison_folds_what_its_rows_share_into_the_headers():
    from ui.tour_figures import PRESENTER_COMPARE_COLUMNS, _compare_columns_shown

    same = [{"input": "3×224×224", "published_metric": "ImageNet top-1 (%)"},
            {"input": "3×224×224", "published_metric": None}]
    shown = _compare_columns_shown(same)
    assert shown["label"] == "Model (input 3×224×224)" and "input" not in shown
    assert shown["published_top1"] == "Published ImageNet top-1 (%)" and "published_metric" not in shown
    mixed = [{"input": "3×224×224", "published_metric": "ImageNet top-1 (%)"},
             {"input": "3×640×640", "published_metric": "COCO val2017 box AP (%)"}]
    # several metrics: each figure with its metric, in the last column (tests/app/test_presenter_compact.py)
    assert list(_compare_columns_shown(mixed)) == [*list(PRESENTER_COMPARE_COLUMNS)[:-1], "published with metric"]


def test_presenter_tour_step_tables_are_html_tables_in_large_type():
    """In presenter mode a layer-table step and a comparison step draw st.table (HTML, which the page's CSS
    enlarges) with the presenter's columns; the normal view keeps its interactive dataframe."""
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params.update({"tour": "resnet", "step": "1", "present": "1"})
    at.switch_page("pages/7_Tours.py")
    at.run()
    assert not at.exception and len(at.table) == 1 and len(at.dataframe) == 0
    frame = at.table[0].value
    assert frame.index.name == "Layer" and list(frame.columns) == ["Params", "MACs (M)", "MACs share",
                                                                   "Memory access (MB)", "Output"]
    assert frame.loc["conv1", "Params"] == "9,408" and frame.loc["conv1", "MACs (M)"] == "118.01"  # 64·3·7·7
    at.toggle(key="tour_present").set_value(False).run()
    assert not at.exception and len(at.table) == 0 and len(at.dataframe) == 1
