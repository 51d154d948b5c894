"""Graph view speed: the large models open collapsed to their stages, then one group opens, in the browser.

Target: ViT-H/14, ConvNeXt-XL, DETR and BERT-large open collapsed in under 2 s on the 2-core machine: the server's
part (the cost report, which the pages cache, plus the data-flow trace) and the browser's (parse the embedded graph,
lay out the stages). Expanding one group happens in the browser alone.
"""
import os
import shutil
import time

import torch

from benchmarks.common import print_table, timed
from explorer.cost import analyse
from explorer.graph import build_graph
from explorer.spec import ModelSpec

MODELS = {"ViT-H/14": "vit_h_14", "ConvNeXt-XL": "timm:convnext_xlarge", "DETR": "detr_r50", "BERT-large": "bert_large"}
# the group each model's drawing opens in the browser: its biggest stage
FIRST_GROUP = {"vit_h_14": "encoder", "timm:convnext_xlarge": "stages", "detr_r50": "transformer", "bert_large": "encoder"}


def browser_seconds(pages: dict[str, str]) -> dict[str, tuple[float, float]]:
    """(draw collapsed, open one group) in headless Chromium, seconds, per model; empty without Chromium."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        return {}
    from playwright.sync_api import sync_playwright

    out = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for arch, html in pages.items():
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            start = time.perf_counter()
            page.set_content(html)
            page.wait_for_function("window.architectureGraph !== undefined")
            drawn = time.perf_counter() - start
            opened = page.evaluate(
                "(id) => { const t = performance.now(); const g = window.architectureGraph; g.expanded.add(id);"
                " g.render(true); return (performance.now() - t) / 1000; }", FIRST_GROUP[arch])
            out[arch] = (drawn, opened)
            page.close()
        browser.close()
    return out


def main():
    from ui.graph import graph_html

    rows, pages = [], {}
    for label, arch in MODELS.items():
        spec = ModelSpec(arch)
        cost_first, cost_median = timed(lambda spec=spec: analyse(spec), repeats=3)
        cost = analyse(spec)
        graph_first, graph_median = timed(lambda spec=spec, cost=cost: build_graph(spec, cost), repeats=3)
        graph = build_graph(spec, cost)
        html_first, _ = timed(lambda graph=graph: graph_html(graph), repeats=1)
        pages[arch] = graph_html(graph)
        rows.append([label, arch, len(graph["nodes"]), f"{len(pages[arch]) / 1e6:.2f}", f"{cost_first:.2f}",
                     f"{cost_median:.2f}", f"{graph_first:.2f}", f"{graph_median:.2f}", f"{html_first:.3f}"])
    in_browser = browser_seconds(pages)
    for row in rows:
        drawn, opened = in_browser.get(row[1], (float("nan"), float("nan")))
        server = float(row[5]) + float(row[7])
        row += [f"{drawn:.2f}", f"{server + drawn:.2f}", f"{opened:.2f}"]
    print_table(
        f"Graph view, native input, {torch.get_num_threads()} threads, {os.cpu_count()} cores (seconds; HTML in MB)",
        ["model", "arch", "nodes", "HTML", "cost first", "cost median", "flow+graph first", "flow+graph median",
         "HTML build", "browser: draw stages", "open collapsed, total (medians)", "browser: open one group"],
        rows,
    )


if __name__ == "__main__":
    main()
