"""The Graph page in headless Chromium: a click on a node shows its receptive field and its Inside links."""
import time

from playwright.sync_api import expect

from tests.conftest import ROOT


def test_a_click_on_a_node_shows_its_receptive_field(app_server, browser):
    page = browser.new_page(viewport={"width": 1440, "height": 1100})
    page.goto(app_server + "/Graph?arch=resnet18&rf=1")  # the link turns the receptive fields on (a job)
    frame = page.frame_locator("iframe").first
    frame.locator("#cy canvas").first.wait_for(timeout=180_000)
    position = None
    end = time.monotonic() + 60
    while position is None and time.monotonic() < end:
        position = frame.locator("body").evaluate(
            "() => { const g = window.architectureGraph; if (!g) return null; const n = g.cy.$id('layer1');"
            " if (!n.length) return null; g.cy.center(n); const p = n.renderedPosition(); return [p.x, p.y]; }")
        if position is None:
            time.sleep(0.5)
    assert position, "the graph never drew layer1"
    box = frame.locator("#cy").bounding_box()
    page.mouse.click(box["x"] + position[0], box["y"] + position[1])
    # stem 7×7/2 (rf 7, jump 2), max-pool 3×3/2 (rf 11, jump 4), then four 3×3 convs at jump 4: 11 + 4·2·4 = 43
    rf = frame.get_by_test_id("graph-node-rf")
    expect(rf).to_be_visible(timeout=10_000)
    expect(rf).to_contain_text("receptive field 43 px, jump (cumulative stride) 4 px on a 56 map")
    links = frame.get_by_test_id("graph-node-links")
    expect(links.get_by_role("link", name="Receptive fields")).to_have_attribute(
        "href", "/Inside?arch=resnet18&view=Receptive%20fields")
    assert page.get_by_test_id("stException").count() == 0
    shots = ROOT / "artifacts"
    if shots.is_dir():
        page.screenshot(path=str(shots / "graph-rf-resnet18.png"), full_page=True)
    page.close()
