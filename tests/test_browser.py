"""The real app in headless Chromium, driven as a person would."""
import re

import pytest

from tests.conftest import ROOT



def test_catalog_to_model_page_reads_total_macs(app_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_server + "/Catalog")
    search = page.get_by_role("textbox", name="Search")
    search.wait_for(timeout=60_000)
    search.fill("resnet50")
    search.press("Enter")
    # Wait for the rerun to finish filtering before clicking: VGG's family drops out of the list.
    page.get_by_text(re.compile(r"^VGG · 2015")).wait_for(state="detached", timeout=60_000)
    page.get_by_text(re.compile(r"^ResNet · 2016")).click()
    page.get_by_role("link", name="resnet50", exact=True).click()
    page.wait_for_url(re.compile(r"/Model\?arch=resnet50"), timeout=30_000)
    macs = page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^MACs")).get_by_test_id("stMetricValue")
    macs.wait_for(timeout=60_000)
    assert macs.inner_text().strip() == "4.09 G"
    params = page.get_by_test_id("stMetric").filter(has_text="Parameters").get_by_test_id("stMetricValue")
    assert params.inner_text().strip() == "25.56 M"
    if (ROOT / "artifacts").is_dir():
        page.screenshot(path=str(ROOT / "artifacts" / "model-resnet50.png"), full_page=True)
    page.close()


def test_bad_input_in_the_browser_shows_a_message_not_a_traceback(app_server, browser):
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(app_server + "/Model?arch=vit_b_16&input=3,100,100")
    alert = page.get_by_text("cannot take input 3×100×100")
    alert.wait_for(timeout=60_000)
    assert page.get_by_test_id("stException").count() == 0
    assert "Traceback" not in page.content()
    page.close()
