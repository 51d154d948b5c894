"""The app in headless Chromium: time until the first page is interactive after `streamlit run`,
and until the resnet50 model page shows its totals (targets: 5 s and 2 s)."""
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from benchmarks.common import print_table

ROOT = Path(__file__).resolve().parents[1]


def main():
    from playwright.sync_api import sync_playwright

    port = 8765
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                             "--server.address", "127.0.0.1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
                "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"])
            while True:
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=1)
                    break
                except OSError:
                    time.sleep(0.1)
            page = browser.new_page()
            page.goto(url)
            page.get_by_text("Start here").wait_for(timeout=60_000)
            rows.append(["home page interactive after server start", f"{time.perf_counter() - start:.2f}", "5"])

            metric = page.get_by_test_id("stMetric").filter(has_text=re.compile(r"^MACs")).get_by_test_id("stMetricValue")
            t = time.perf_counter()
            page.get_by_role("link", name="Model: build resnet50").click()
            metric.wait_for(timeout=60_000)
            rows.append(["resnet50 model page, first visit (link on the home page)", f"{time.perf_counter() - t:.2f}", "2"])
            page.goto(url)
            page.get_by_text("Start here").wait_for(timeout=60_000)
            t = time.perf_counter()
            page.get_by_role("link", name="Model: build resnet50").click()
            metric.wait_for(timeout=60_000)
            rows.append(["resnet50 model page, second visit (cached)", f"{time.perf_counter() - t:.2f}", "2"])
            t = time.perf_counter()
            page.goto(url + "/Model?arch=resnet50")
            metric.wait_for(timeout=60_000)
            rows.append(["resnet50 model page, full browser reload of its URL", f"{time.perf_counter() - t:.2f}", "-"])
            browser.close()
    finally:
        proc.terminate()
        proc.wait(10)
    print_table("App timings in headless Chromium (seconds)", ["what", "seconds", "target"], rows)


if __name__ == "__main__":
    main()
