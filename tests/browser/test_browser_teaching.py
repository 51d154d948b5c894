"""The pages as a class sees them, in headless Chromium at 1440 and 800 px, light and dark: no headline number
cut, labels present, charts readable in the browser's colour scheme, and every request to this machine only.
Screenshots of every page go to artifacts/ for review."""
import re
from urllib.parse import urlparse

import pytest
from playwright.sync_api import expect

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

# Each page with what must be on it once it has rendered (a metric label, a chart, a heading).
PAGES = [
    ("home", "/", "Architecture families"),
    ("catalog", "/Catalog", "Beyond the roster"),
    ("model", "/Model?arch=resnet50", "fvcore, MAC ops only"),
    ("swap", "/Swap?arch=resnet50&swaps=attn:se@all", "Parameters, swapped"),
    ("latency", "/Latency", "Pick models and batch sizes"),
    ("compare", "/Compare?ready=vovnet_vs_densenet", "Trade-offs"),
    ("tours", "/Tours?tour=shufflenet_v2", "Think about it"),
    ("losses", "/Losses", "b = e^(γ/α) − 1"),
    ("inside", "/Inside?arch=resnet18&view=Receptive%20fields", "Receptive field (pixels)"),
    ("graph", "/Graph?arch=resnet18", "Double-click a group"),
]

# Cut text: an element whose content is wider than its box (CSS ellipsis keeps the text, so read the widths).
CLIPPED = """els => els.filter(e => e.innerText.trim()
                                 && (e.scrollWidth > e.clientWidth + 1 || e.innerText.trim().endsWith('…')))
                 .map(e => e.innerText.trim())"""


def settle(page, must_show: str):
    """Waits for the page's own text, for the script run to end (the status widget goes away) and for every
    element's code to load (a loaded machine shows grey skeletons for a while)."""
    page.get_by_text(must_show, exact=False).first.wait_for(timeout=180_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=180_000)
    expect(page.get_by_test_id("stSkeleton")).to_have_count(0, timeout=120_000)
    page.wait_for_timeout(800)  # charts draw after the run


def loopback_only(requests: list[str]) -> list[str]:
    """Requests that leave this machine: anything but 127.0.0.1 / localhost (data: and blob: stay in the page)."""
    away = []
    for url in requests:
        parsed = urlparse(url)
        if parsed.scheme in ("data", "blob", "about"):
            continue
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            away.append(url)
    return away


def whole_text_elements(page):
    """Every metric's value, label and delta element, and every control's label and button's text (Streamlit
    cuts a label that does not fit with an ellipsis): each must show its whole text."""
    return page.locator("[data-testid='stMetricValue'], [data-testid='stMetricValue'] *, "
                        "[data-testid='stMetricLabel'] p, [data-testid='stMetricDelta'] div, "
                        "[data-testid='stWidgetLabel'] [data-testid='stMarkdownContainer'], "
                        "[data-testid='stButton'] [data-testid='stMarkdownContainer']")


def screenshot(page, name: str, width: int):
    """The whole page: Streamlit scrolls inside its own container, so the window is made tall for the picture."""
    if not (ROOT / "artifacts").is_dir():
        return
    height = page.evaluate("() => Math.max(...[...document.querySelectorAll('[data-testid=stMain], "
                           "[data-testid=stAppScrollToBottomContainer], section')].map(e => e.scrollHeight), 1000)")
    page.set_viewport_size({"width": width, "height": min(int(height) + 40, 6000)})
    page.wait_for_timeout(600)
    page.screenshot(path=str(ROOT / "artifacts" / f"teaching-{name}-{width}.png"))
    page.set_viewport_size({"width": width, "height": 1000})


@pytest.mark.parametrize("width", [1440, 800])
def test_every_page_shows_whole_numbers_and_fetches_nothing_from_the_internet(app_server, browser, width):
    context = browser.new_context(viewport={"width": width, "height": 1000})
    requests: list[str] = []
    context.on("request", lambda request: requests.append(request.url))
    page = context.new_page()
    cut: dict[str, list[str]] = {}
    for name, path, must_show in PAGES:
        page.goto(app_server + path)
        settle(page, must_show)
        clipped = whole_text_elements(page).evaluate_all(CLIPPED)
        if clipped:
            cut[name] = clipped
        labels = page.get_by_test_id("stMetricLabel").all_inner_texts()
        assert all(label.strip() for label in labels), f"{name}: a metric without a label"
        screenshot(page, name, width)
        menu = page.get_by_test_id("stSidebar").locator("a").all_text_contents()
        assert [m.strip() for m in menu[:3]] == ["Home", "Catalog", "Model"], (name, menu[:3])
    context.close()
    assert not cut, f"numbers or labels cut at {width} px: {cut}"
    assert requests and not loopback_only(requests), loopback_only(requests)[:5]


def luminance(css_colour: str) -> float:
    red, green, blue = (int(v) for v in re.findall(r"\d+", css_colour)[:3])
    return (0.2126 * red + 0.7152 * green + 0.0722 * blue) / 255


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_app_and_its_charts_follow_the_browsers_colour_scheme(app_server, browser, scheme):
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, color_scheme=scheme)
    page = context.new_page()
    page.goto(app_server + "/Losses")
    settle(page, "b = e^(γ/α) − 1")
    page.locator(".js-plotly-plot .xtick text").first.wait_for(timeout=60_000)
    background = page.get_by_test_id("stApp").evaluate("e => getComputedStyle(e).backgroundColor")
    tick = page.locator(".js-plotly-plot .xtick text").first.evaluate("e => getComputedStyle(e).fill")
    title = page.locator(".js-plotly-plot .gtitle").first.evaluate("e => getComputedStyle(e).fill")
    assert luminance(background) < 0.2 if scheme == "dark" else luminance(background) > 0.9
    # chart text stands out from the page in either scheme (plotly follows Streamlit's theme)
    assert abs(luminance(tick) - luminance(background)) > 0.4, (scheme, tick, background)
    assert abs(luminance(title) - luminance(background)) > 0.6, (scheme, title, background)
    # the long-tail chart's log axes carry decade labels only
    page.get_by_role("tab", name="Long-tail class weights").click()
    settle(page, "How each method weighs a class")
    ticks = page.locator(".js-plotly-plot").filter(has_text="How each method weighs a class").locator(
        ".xtick text").evaluate_all("els => els.map(e => e.textContent)")
    assert ticks == ["10¹", "10²", "10³", "10⁴"], ticks  # one style per axis (ui.figures.decade_texts)
    screenshot(page, f"losses-{scheme}", 1440)
    context.close()


def test_the_catalogs_open_is_one_click_in_the_same_tab(app_server, browser):
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    page = context.new_page()
    page.goto(app_server + "/Catalog")
    settle(page, "Beyond the roster")
    grid = page.get_by_test_id("stDataFrame").first
    box = grid.bounding_box()
    # the first column is "Open"; the header row is about 35 px high, each row 35 px: the first data row's cell
    page.mouse.click(box["x"] + 30, box["y"] + 35 + 17)
    expect(page).to_have_url(re.compile(r"/Model\?arch=lenet5"), timeout=60_000)
    assert len(context.pages) == 1  # no new tab
    from explorer.cost import analyse
    from explorer.spec import ModelSpec
    from explorer.units import format_count

    params = page.get_by_test_id("stMetric").filter(has_text="Parameters").get_by_test_id("stMetricValue").first
    params.wait_for(timeout=120_000)
    assert params.inner_text().strip() == format_count(analyse(ModelSpec("lenet5"), with_layers=False)["params"])
    context.close()


def test_a_latency_sweep_shows_its_band_and_a_roofline_labelled_at_decades(app_server, browser):
    context = browser.new_context(viewport={"width": 800, "height": 1000})
    page = context.new_page()
    page.goto(app_server + "/Latency?arch=resnet18&batch=1,2&input=3,64,64")
    settle(page, "Pick models and batch sizes")
    page.get_by_role("button", name="Run").click()
    settle(page, "Ridge point")
    charts = page.locator(".js-plotly-plot")
    latency = charts.filter(has_text="Latency (median, ms)")
    assert latency.locator(".fills path").count() >= 1  # the p10–p90 band
    assert latency.locator(".xtick text").evaluate_all("els => els.map(e => e.textContent)") == ["1", "2"]
    roofline = charts.filter(has_text="Roofline")
    decades = {"0.001", "0.01", "0.1", "1", "10", "100", "1,000"} | {f"10{s}" for s in "⁴⁵⁶⁷⁻"}
    for axis in (".xtick text", ".ytick text"):
        ticks = roofline.locator(axis).evaluate_all("els => els.map(e => e.textContent)")
        assert ticks and all(t in decades or re.fullmatch("10[⁻⁰¹²³⁴⁵⁶⁷⁸⁹]+", t) for t in ticks), ticks
    assert not whole_text_elements(page).evaluate_all(CLIPPED)
    screenshot(page, "latency-run", 800)
    context.close()
