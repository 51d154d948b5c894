"""The wide tables of the normal pages in a 800-pixel-wide window (the sidebar open, as a page first opens) and at
1440: the identifying column and the headline figures are in view without scrolling sideways, the identifying
column stays in view when the grid is scrolled to its last column, and the Catalog's "More columns" brings the
rest of its columns.

st.dataframe draws with glide-data-grid on a canvas; beside it glide keeps an accessible <table> whose header
cells are the columns it draws: the pinned ones and those the grid's viewport shows, one cut at its right edge
included. So the drawn headers less the last are wholly in view when the grid scrolls sideways, and all of them
when it does not."""
import pytest
from playwright.sync_api import expect

from tests.conftest import wait_until

NARROW, WIDE = 800, 1440
COMPARED = '["resnet50","mobilenet_v2","timm:convnext_tiny"]'

# page, its URL, which st.dataframe of the page (in page order), a button to press first, the headers in view at
# 800 px (the pinned ones first) and those in view at 1440 px besides them
TABLES = {
    "catalog": ("/Catalog", 0, None, ["Open", "Model id", "Params (M)", "GMACs", "Published"],
                ["Metric", "Mem. access (MB)", "Year", "Family"]),
    "model": ("/Model?arch=resnet50", 1, None, ["Layer", "Params", "MACs (M)", "MACs share", "Mem. access (MB)"],
              ["Type", "Output shape"]),
    "swap": ("/Swap?arch=resnet50&swaps=attn:se@all", 0, None, ["Layer", "Params", "MACs"], ["Mem. access", "Type"]),
    "compare": (f"/Compare?set={COMPARED}", 0, None, ["Model", "Params (M)", "GMACs", "Mem. access (MB)", "Published"],
                ["Metric"]),
    "latency": ("/Latency?arch=resnet18&batch=1", 0, "Run", ["Model", "Batch", "Median (ms)", "Images/s", "p10 (ms)",
                                                             "p90 (ms)"], ["TFLOP/s", "GB/s"]),
}
PINNED = {"catalog": 2}  # how many of the first headers are pinned: "open →" and the id on the Catalog; else 1


def drawn_headers(grid) -> list[str]:
    return grid.evaluate("el => [...el.querySelectorAll('table th')].map(th => th.textContent)")


def sideways(grid) -> tuple[int, int]:
    """The grid's scrolling width and its visible width, in CSS pixels."""
    return tuple(grid.evaluate("el => { const s = el.querySelector('.dvn-scroller'); "
                               "return [s.scrollWidth, s.clientWidth]; }"))


def wholly_in_view(grid) -> list[str]:
    """The headers of the columns wholly in view, left to right."""
    headers = drawn_headers(grid)
    scroll_width, client_width = sideways(grid)
    return headers if scroll_width <= client_width + 1 else headers[:-1]


def open_table(browser, app_server, width: int, name: str):
    path, index, button, _, _ = TABLES[name]
    page = browser.new_page(viewport={"width": width, "height": 900})
    page.goto(app_server + path)
    if button:
        page.get_by_role("button", name=button, exact=True).first.click(timeout=90_000)
    grid = page.get_by_test_id("stDataFrame").nth(index)
    grid.wait_for(timeout=180_000)
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=180_000)  # the page has finished
    grid.scroll_into_view_if_needed()
    wait_until(lambda: len(drawn_headers(grid)) > 1, timeout=30)
    return page, grid


@pytest.mark.parametrize("name", list(TABLES))
def test_the_headline_columns_are_in_view_at_800_px_and_the_name_stays_pinned(app_server, browser, name):
    page, grid = open_table(browser, app_server, NARROW, name)
    headline = TABLES[name][3]
    shown = wholly_in_view(grid)
    assert shown[:len(headline)] == headline, shown  # the pinned name first, then the headline figures, all whole
    assert page.get_by_test_id("stSidebar").is_visible()  # with the sidebar open, as a page first opens
    scroll_width, client_width = sideways(grid)
    assert scroll_width > client_width, (scroll_width, client_width)  # too wide for 800 px: it does scroll
    # scrolled to its last column, the first figure gone from view, the identifying column is still drawn first
    pinned = PINNED.get(name, 1)
    grid.evaluate("el => { const s = el.querySelector('.dvn-scroller'); s.scrollLeft = s.scrollWidth; }")
    wait_until(lambda: headline[pinned] not in drawn_headers(grid), timeout=30)
    assert drawn_headers(grid)[:pinned] == headline[:pinned]
    page.close()


@pytest.mark.parametrize("name", list(TABLES))
def test_the_headline_and_descriptive_columns_are_in_view_at_1440_px(app_server, browser, name):
    page, grid = open_table(browser, app_server, WIDE, name)
    _, _, _, headline, more = TABLES[name]
    shown = wholly_in_view(grid)
    assert shown[:len(headline) + len(more)] == headline + more, shown
    page.close()


def test_more_columns_brings_the_catalogs_other_columns_with_the_id_still_pinned(app_server, browser):
    page, grid = open_table(browser, app_server, NARROW, "catalog")
    compact_width = sideways(grid)[0]
    page.get_by_text("More columns", exact=True).click()
    wait_until(lambda: sideways(grid)[0] > compact_width, timeout=60)  # the rerun has drawn the other columns
    expect(page.get_by_test_id("stStatusWidget")).to_have_count(0, timeout=60_000)
    grid.evaluate("el => { const s = el.querySelector('.dvn-scroller'); s.scrollLeft = s.scrollWidth; }")
    # the compact set ends with the paper's link; the rest come after it, the published cost last
    wait_until(lambda: drawn_headers(grid)[-1] == "Published GMACs", timeout=30)
    drawn = drawn_headers(grid)
    assert drawn[:2] == ["Open", "Model id"]
    assert "Published params (M)" in drawn and "Params (M)" not in drawn, drawn
    page.close()
