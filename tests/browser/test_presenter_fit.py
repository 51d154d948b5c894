"""Presenter mode on a projector's 1280×720 screen, in headless Chromium: a tour step fits the screen without
scrolling, no table on it scrolls sideways, and every chart on it, the Inside views' included, has text of at
least 18 px, with no two point labels on top of each other.

By default the steps most likely to overflow: for each figure kind, the step with the longest prose (prose is
what fills the screen), the comparison with the most rows, and the steps that once did not fit (ONCE_TOO_BIG).
EXPLORER_TEST_EVERY_TOUR_STEP=1 walks every step of every tour instead, one page per tour with →: all 227 steps
of the 64 tours took 4 min 28 s on 2 cores.
"""
import os
import re

from playwright.sync_api import expect

from explorer.tours import load_tours
from ui.presenter import PRESENTER_FONT_PX

SCREEN = {"width": 1280, "height": 720}
# scrollHeight is a whole number of pixels; a fitting step reads exactly 720. The slack covers font metrics
# that differ by a pixel or two per line on another machine's fonts, not a hidden row or chart.
FIT_TOLERANCE_PX = 8
EVERY_STEP = os.environ.get("EXPLORER_TEST_EVERY_TOUR_STEP") == "1"
# what a step of each figure kind draws once it is complete: (Plotly charts, tables); a channel-connectivity
# step draws its two charts in two tabs (the hidden tab's text has no size: chart_font_sizes skips it)
DRAWN = {"compare": (1, 1), "layer_table": (0, 1), "model_totals": (1, 0), "receptive_field": (1, 0),
         "swin_mask": (2, 0), "resolution_sweep": (1, 0), "connectivity": (2, 0)}
# Steps that were too tall (the channel connectivity drawn in full under the prose), had a table wider than the
# figure column (its last column out of sight) or crowded point labels, each checked from now on.
ONCE_TOO_BIG = {("igcv", 3), ("shufflenet_v1", 2), ("refinedet", 3), ("detr", 2), ("spinenet", 2),
                ("efficientnet", 2), ("shufflenet_v1", 3)}


def _prose(step: dict) -> int:
    return len(step["text"]) + len(step["question"])


def steps_most_likely_to_overflow() -> list[tuple[str, int]]:
    """(tour, step number): per figure kind the longest prose, and the comparison with the most rows."""
    steps = [(tour["family"], number, step) for tour in load_tours() for number, step in enumerate(tour["steps"], 1)]
    chosen = {}
    for family, number, step in steps:
        kind = step["figure"]["kind"]
        if kind not in chosen or _prose(step) > _prose(chosen[kind][2]):
            chosen[kind] = (family, number, step)
    most_rows = max((s for s in steps if s[2]["figure"]["kind"] == "compare"), key=lambda s: len(s[2]["figure"]["specs"]))
    return sorted({(family, number) for family, number, _ in [*chosen.values(), most_rows]} | ONCE_TOO_BIG)


def content_height(page) -> int:
    """How tall the page's content is: Streamlit scrolls its main section, not the document."""
    return page.evaluate("""() => Math.max(document.documentElement.scrollHeight,
        ...[...document.querySelectorAll('[data-testid="stMain"], [data-testid="stAppViewContainer"]')]
            .map(e => e.scrollHeight))""")


def chart_font_sizes(page) -> list[float]:
    """The computed font size of every visible text of the step's charts: ticks, axis and colour-bar titles,
    chart titles, legends, annotations (subplot titles) and treemap labels."""
    return page.evaluate("""() => [...document.querySelectorAll('.stPlotlyChart svg text')]
        .filter(e => e.textContent.trim() && e.getBBox().width > 0)
        .map(e => parseFloat(getComputedStyle(e).fontSize))""")


def tables_wider_than_their_box(page) -> list[str]:
    """Each table that scrolls sideways (its box's content wider than the box), as 'header: content > box px'."""
    return page.evaluate("""() => [...document.querySelectorAll('[data-testid="stTable"]')]
        .flatMap(table => [table, ...table.querySelectorAll('div')])
        .filter(box => box.clientWidth > 0 && box.scrollWidth > box.clientWidth + 1)
        .map(box => `${(box.querySelector('th') || box).textContent.trim().slice(0, 30)}: `
                    + `${box.scrollWidth} > ${box.clientWidth} px`)""")


def overlapping_point_labels(page) -> list[str]:
    """The pairs of a chart's point labels (scatter text) whose boxes overlap by more than 2 px each way."""
    return page.evaluate("""() => [...document.querySelectorAll('.stPlotlyChart')].flatMap(chart => {
        const labels = [...chart.querySelectorAll('.textpoint text')].filter(e => e.getBBox().width > 0)
            .map(e => [e.textContent, e.getBoundingClientRect()]);
        const pairs = [];
        labels.forEach(([a, ra], i) => labels.slice(i + 1).forEach(([b, rb]) => {
            const across = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
            const down = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
            if (across > 2 && down > 2) pairs.push(`${a} / ${b}`);
        }));
        return pairs;
    })""")


def wait_until_drawn(page, number: int, total: int, kind: str):
    """The step's prose, then its figure: as many charts (each drawn) and tables as its kind makes, with no
    spinner or job notice left (the Inside views run their work as jobs), and none of the last step's elements:
    Streamlit keeps them, marked stale, until the rerun ends, so a step read too early holds both."""
    page.get_by_text(re.compile(rf"^Step {number} of {total}")).wait_for(timeout=120_000)
    expect(page.get_by_text(re.compile(r"^Think about it"))).to_have_count(1, timeout=120_000)  # the last step's gone
    charts, tables = DRAWN.get(kind, (0, 0))
    page.wait_for_function("""([charts, tables]) => {
        const drawn = [...document.querySelectorAll('.stPlotlyChart')];
        return drawn.length >= charts && drawn.every(c => c.querySelector('.main-svg'))
            && document.querySelectorAll('[data-testid="stTable"], [data-testid="stDataFrame"]').length >= tables
            && !document.querySelector('[data-testid="stSpinner"], [data-testid="stStatusWidget"]')
            && !document.querySelector('[data-stale="true"]');
    }""", arg=[charts, tables], timeout=150_000)
    expect(page.get_by_text("Cancel", exact=True)).to_have_count(0, timeout=150_000)  # no job still running


def check_the_step(page, family: str, number: int, kind: str, problems: list):
    height = content_height(page)
    if height > SCREEN["height"] + FIT_TOLERANCE_PX:
        problems.append(f"{family} step {number} ({kind}) is {height} px tall")
    for wide in tables_wider_than_their_box(page):
        problems.append(f"{family} step {number} ({kind}) has a table that scrolls sideways ({wide})")
    for pair in overlapping_point_labels(page):
        problems.append(f"{family} step {number} ({kind}) has point labels on top of each other: {pair}")
    sizes = chart_font_sizes(page)
    if DRAWN.get(kind, (0, 0))[0] and not sizes:
        problems.append(f"{family} step {number} ({kind}) shows no chart text")
    if sizes and min(sizes) < PRESENTER_FONT_PX:
        problems.append(f"{family} step {number} ({kind}) has chart text of {min(sizes)} px")
    if page.get_by_test_id("stException").count():
        problems.append(f"{family} step {number} ({kind}) shows an error")


def test_the_fullest_tour_steps_fit_a_1280_by_720_screen_with_large_chart_text(app_server, browser):
    tours = {tour["family"]: tour for tour in load_tours()}
    page = browser.new_page(viewport=SCREEN)
    problems = []
    if EVERY_STEP:
        for family, tour in tours.items():
            page.goto(f"{app_server}/Tours?tour={family}&present=1")
            for number, step in enumerate(tour["steps"], 1):
                if number > 1:
                    page.wait_for_function("() => typeof window.__presenterKeydown === 'function'", timeout=30_000)
                    page.locator("body").press("ArrowRight")
                wait_until_drawn(page, number, len(tour["steps"]), step["figure"]["kind"])
                check_the_step(page, family, number, step["figure"]["kind"], problems)
    else:
        chosen = steps_most_likely_to_overflow()
        assert len(chosen) >= 9  # every figure kind the tours use, text only included
        for family, number in chosen:
            steps = tours[family]["steps"]
            page.goto(f"{app_server}/Tours?tour={family}&step={number}&present=1")
            kind = steps[number - 1]["figure"]["kind"]
            wait_until_drawn(page, number, len(steps), kind)
            check_the_step(page, family, number, kind, problems)
    page.close()
    assert not problems, "\n".join(problems)
