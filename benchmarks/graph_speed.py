"""Graph view speed: the large models open collapsed to their stages (and fully expanded), then one group opens.

Target: ViT-H/14, ConvNeXt-XL, DETR and BERT-large open collapsed in under 2 s on the 2-core machine: the server's
part (the graph from nothing, as the Graph page builds it: explorer.backend's graph, one meta-device pass that gives
the cost report and the data flow together; and with the cost report already cached) plus the page payload and the
browser's part (parse the embedded graph, lay it out). Expanding one group happens in the browser alone. Wall and
CPU seconds (medians); the browser's CPU is its renderer's main-thread task time (Chrome's TaskDuration metric).

Measured 2026-12-03 on the 2-core machine shared with other work (load average about 9 during both runs, so wall
times are inflated; CPU times are the steadier figures). Wall s / CPU s, medians of 3:

    server, graph from nothing (what the Graph page pays when nothing is cached)
    model         before: cost pass + flow pass    after: one pass (flow recorder on the cost trace, fast meta
                                                   paths for layer norm / addmm / softmax / scaling, meta build
                                                   without the initialisers' kernels)
    ViT-H/14      1.74 / 0.88                      0.47 / 0.27
    ConvNeXt-XL   1.12 / 0.89                      0.42 / 0.23
    DETR          0.59 / 0.58                      0.43 / 0.27
    BERT-large    0.92 / 0.70                      0.17 / 0.17

    open collapsed to the stages, total (server + HTML + browser draw) | open fully expanded, total
    ViT-H/14      2.18 / 1.24  ->  1.09 / 0.71                         | 10.58 / 9.56  ->  5.83 / 5.45
    ConvNeXt-XL   1.96 / 1.62  ->  1.12 / 0.71                         |  9.60 / 9.18  ->  4.65 / 4.32
    DETR          1.27 / 1.02  ->  1.08 / 0.79                         | 10.97 / 10.68 ->  6.34 / 6.10
    BERT-large    2.08 / 1.44  ->  0.78 / 0.53                         |  6.68 / 6.32  ->  3.65 / 3.51

The browser's share (drawing collapsed 0.4-0.7 s wall; fully expanded 3.5-6 s, almost all of it the layout of
400-600 nodes) is ui/graph.py's, whose page changed between the two runs too; the HTML build is under 0.02 s.
`python -m benchmarks graph_speed`.
"""
import os
import shutil
import statistics
import time

import torch

from benchmarks.common import print_table
from explorer.cost import analyse
from explorer.graph import build_graph
from explorer.spec import ModelSpec

MODELS = {"ViT-H/14": "vit_h_14", "ConvNeXt-XL": "timm:convnext_xlarge", "DETR": "detr_r50", "BERT-large": "bert_large"}
# the group each model's drawing opens in the browser: its biggest stage
FIRST_GROUP = {"vit_h_14": "encoder", "timm:convnext_xlarge": "stages", "detr_r50": "transformer", "bert_large": "encoder"}


def timed_cpu(fn, repeats: int = 3) -> tuple[float, float]:
    """(median wall seconds, median CPU seconds of this process) over `repeats` calls after one warm-up call."""
    fn()
    walls, cpus = [], []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - wall)
        cpus.append(time.process_time() - cpu)
    return statistics.median(walls), statistics.median(cpus)


def _task_seconds(cdp) -> float:
    metrics = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    return metrics.get("TaskDuration", float("nan"))


def browser_seconds(pages: dict[str, dict[str, str]]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per model and drawing ("collapsed", "expanded"): (wall, renderer CPU) seconds to draw in headless
    Chromium, and for "open group" the seconds to open the first stage of the collapsed drawing; empty without
    Chromium."""
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(chromium):
        return {}
    from playwright.sync_api import sync_playwright

    out: dict[str, dict[str, tuple[float, float]]] = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        for arch, drawings in pages.items():
            out[arch] = {}
            for kind, html in drawings.items():
                page = browser.new_page(viewport={"width": 1440, "height": 900})
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                busy = _task_seconds(cdp)
                start = time.perf_counter()
                page.set_content(html)
                page.wait_for_function("window.architectureGraph !== undefined", timeout=120_000)
                out[arch][kind] = (time.perf_counter() - start, _task_seconds(cdp) - busy)
                if kind == "collapsed":
                    busy = _task_seconds(cdp)
                    opened = page.evaluate(
                        "(id) => { const t = performance.now(); const g = window.architectureGraph; g.expanded.add(id);"
                        " g.render(true); return (performance.now() - t) / 1000; }", FIRST_GROUP[arch])
                    out[arch]["open group"] = (opened, _task_seconds(cdp) - busy)
                page.close()
        browser.close()
    return out


def main():
    from ui.graph import graph_html

    rows, pages = [], {}
    for label, arch in MODELS.items():
        spec = ModelSpec(arch)
        cold = timed_cpu(lambda spec=spec: build_graph(spec))  # what the page's BACKEND.graph runs
        cost = analyse(spec)
        cached = timed_cpu(lambda spec=spec, cost=cost: build_graph(spec, cost))
        graph = build_graph(spec)
        html = timed_cpu(lambda graph=graph: graph_html(graph), repeats=1)
        pages[arch] = {"collapsed": graph_html(graph, open_depth=1),
                       "expanded": graph_html(graph, open_depth=graph["max_depth"])}
        rows.append([label, len(graph["nodes"]), len(graph["edges"]), f"{len(pages[arch]['collapsed']) / 1e6:.2f}",
                     f"{cold[0]:.2f} / {cold[1]:.2f}", f"{cached[0]:.2f} / {cached[1]:.2f}", f"{html[0]:.3f}"])
    in_browser = browser_seconds(pages)
    nan = (float("nan"), float("nan"))
    for row, arch in zip(rows, MODELS.values()):
        drawn = in_browser.get(arch, {})
        server_wall, server_cpu = (float(x) for x in row[4].split(" / "))
        html_wall = float(row[6])
        for kind in ("collapsed", "expanded"):
            wall, cpu = drawn.get(kind, nan)
            row += [f"{wall:.2f} / {cpu:.2f}", f"{server_wall + html_wall + wall:.2f} / {server_cpu + cpu:.2f}"]
        row.append("{:.2f} / {:.2f}".format(*drawn.get("open group", nan)))
    print_table(
        f"Graph view, native input, {torch.get_num_threads()} threads, {os.cpu_count()} cores, load average "
        f"{os.getloadavg()[0]:.1f} (wall s / CPU s, medians; HTML in MB)",
        ["model", "nodes", "edges", "HTML", "server: graph from nothing", "server: cost cached", "HTML build",
         "browser: collapsed", "open collapsed, total", "browser: expanded", "open expanded, total",
         "browser: open one group"],
        rows,
    )


if __name__ == "__main__":
    main()
