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
