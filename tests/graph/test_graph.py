"""The architecture graph: hand-counted nodes, data flow with shapes, MACs that add up, swaps as a diff,
every catalog row drawn, safe embedding in the page, the command line, and one browser click."""
import collections
import io
import json
import re
import time
import xml.etree.ElementTree as ET
from contextlib import redirect_stdout

import pytest

from explorer.catalog import load_catalog
from explorer.cli import main
from explorer.cost import analyse
from explorer.graph import INPUT_ID, OUTPUT_ID, as_json, build_graph, collapsed, graph_of, parse_depth, to_dot, to_svg
from explorer.errors import ExplorerError
from explorer.spec import ModelSpec
from tests.conftest import ROOT

RESNET50_STAGE_CHAIN = [INPUT_ID, "conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool",
                        "fc", OUTPUT_ID]


@pytest.fixture(scope="module")
def resnet50():
    spec = ModelSpec("resnet50")
    return analyse(spec), build_graph(spec)


def test_fully_expanded_resnet50_has_its_53_convs_and_every_edge_a_shape(resnet50):
    _, graph = resnet50
    convs = [n["id"] for n in graph["nodes"] if n["type"] == "Conv2d"]
    # 1 stem + 16 bottlenecks × 3 + 4 downsample shortcuts
    assert len(convs) == 1 + 16 * 3 + 4 == 53
    assert sum(1 for c in convs if c.endswith("downsample.0")) == 4
    ids = {n["id"] for n in graph["nodes"]}
    assert graph["edges"]
    for edge in graph["edges"]:
        assert edge["src"] in ids and edge["dst"] in ids
        assert edge["shape"] and all(isinstance(s, int) and s > 0 for s in edge["shape"])


def test_leaf_macs_add_up_to_the_cost_reports_total(resnet50):
    cost, graph = resnet50
    leaves = [n for n in graph["nodes"] if not n["group"]]
    assert sum(n["macs"] for n in leaves) == cost["macs"] == 4_089_184_256
    # cut at the stages, the inclusive figures still add up to the model
    top = collapsed(graph, 1)["nodes"]
    assert sum(n["macs"] for n in top) == cost["macs"]
    assert sum(n["params"] for n in top) == cost["params"] == 25_557_032


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vit_b_16", "timm:convnext_tiny", "densenet121", "mobilenet_v3_small"])
def test_leaf_macs_add_up_where_blocks_compute_in_their_own_forward(arch):
    """ViT's attention, ConvNeXt's layer scale, DenseNet's concatenations, MobileNetV3's SE products run in a
    container's own forward: their ops become nodes, so no MAC is lost or counted twice."""
    spec = ModelSpec(arch)
    cost = analyse(spec)
    graph = build_graph(spec, cost)
    assert sum(n["macs"] for n in graph["nodes"] if not n["group"]) == cost["macs"]


def test_resnet50_cut_at_the_stages_is_one_chain_with_the_tensor_shapes(resnet50):
    _, graph = resnet50
    top = collapsed(graph, 1)
    assert [n["id"] for n in top["nodes"]] == RESNET50_STAGE_CHAIN
    edges = {(e["src"], e["dst"]): e["shape"] for e in top["edges"]}
    assert set(edges) == set(zip(RESNET50_STAGE_CHAIN, RESNET50_STAGE_CHAIN[1:]))
    assert edges[("maxpool", "layer1")] == [1, 64, 56, 56]
    assert edges[("layer1", "layer2")] == [1, 256, 56, 56]
    assert edges[("layer3", "layer4")] == [1, 1024, 14, 14]
    assert edges[("avgpool", "fc")] == [1, 2048]
    assert [n["id"] for n in top["nodes"] if n.get("collapsed")] == ["layer1", "layer2", "layer3", "layer4"]


def test_a_residual_add_merges_the_branch_and_the_shortcut(resnet50):
    _, graph = resnet50
    into = collections.defaultdict(set)
    for edge in graph["edges"]:
        into[edge["dst"]].add(edge["src"])
    add = "layer1.0.add_#1"
    assert into[add] == {"layer1.0.bn3", "layer1.0.downsample.1"}
    # the block's ReLU runs three times: one node per call, the weights-free calls in order
    assert into["layer1.0.relu@3"] == {add}
    assert into["layer1.1.add_#1"] == {"layer1.1.bn3", "layer1.0.relu@3"}  # identity shortcut


@pytest.mark.slow
def test_densenet_concatenations_are_nodes_with_every_earlier_layer_coming_in():
    graph = build_graph(ModelSpec("densenet121"))
    into = collections.defaultdict(set)
    for edge in graph["edges"]:
        into[edge["dst"]].add(edge["src"])
    cat = "features.denseblock1.denselayer3.cat#1"
    assert next(n for n in graph["nodes"] if n["id"] == cat)["type"] == "aten.cat"
    # the block input (the transition's pool) and the two earlier layers' new features
    assert into[cat] == {"features.pool0", "features.denseblock1.denselayer1.conv2",
                         "features.denseblock1.denselayer2.conv2"}


def test_the_dcnv2_preset_marks_exactly_its_13_convs_with_their_deltas():
    graph = graph_of(ModelSpec("resnet50", swaps=("preset:dcnv2",)))
    changed = [n for n in graph["nodes"] if n["changed"]]
    expected = [f"layer{stage}.{block}.conv2" for stage, blocks in ((2, 4), (3, 6), (4, 3)) for block in range(blocks)]
    assert sorted(n["id"] for n in changed) == sorted(expected) and len(changed) == 13
    base = {row["name"]: row for row in analyse(ModelSpec("resnet50"))["layers"]}
    for node in changed:
        assert node["base_type"] == "Conv2d"
        assert node["delta"]["macs"] == node["macs"] - base[node["id"]]["macs"] > 0
        assert node["delta"]["params"] == node["params"] - base[node["id"]]["params"] > 0
    untouched = next(n for n in graph["nodes"] if n["id"] == "layer1")
    assert "delta" not in untouched and not untouched["changed"]
    assert next(n for n in graph["nodes"] if n["id"] == "layer3")["delta"]["macs"] == sum(
        n["delta"]["macs"] for n in changed if n["id"].startswith("layer3."))


def _implemented_catalog_ids():
    return [v.id for v in load_catalog().variants.values() if v.implemented]


@pytest.mark.slow  # about 3 minutes of CPU (every catalog model traced twice on the meta device; 13 min on a loaded machine)
def test_every_catalog_row_draws_collapsed_to_its_stages():
    failures = []
    for arch in _implemented_catalog_ids():
        try:
            graph = collapsed(build_graph(ModelSpec(arch)), 1)
        except Exception as exc:  # collect them all, then fail with the list
            failures.append(f"{arch}: {type(exc).__name__}: {str(exc)[:120]}")
            continue
        ids = {n["id"] for n in graph["nodes"]}
        if not graph["edges"] or any(e["src"] not in ids or e["dst"] not in ids for e in graph["edges"]):
            failures.append(f"{arch}: edges do not join its stages")
        elif not any(e["src"] == INPUT_ID for e in graph["edges"]) or not any(e["dst"] == OUTPUT_ID for e in graph["edges"]):
            failures.append(f"{arch}: no path from the input or to the output")
    assert not failures, "\n".join(failures)


def test_depth_is_a_bounded_whole_number_or_all():
    assert parse_depth("all") is None and parse_depth("3") == 3
    for bad in ("0", "-1", "65", "two", "1.5"):
        with pytest.raises(ExplorerError, match="depth"):
            parse_depth(bad)


def test_dot_and_svg_draw_what_is_shown(resnet50):
    _, graph = resnet50
    top = collapsed(graph, 1)
    dot = to_dot(top)
    assert dot.count(" -> ") == len(top["edges"]) == 11
    assert '"layer1" -> "layer2" [label="1×256×56×56"]' in dot
    svg = ET.fromstring(to_svg(top))
    rects = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect") if r.get("rx")]
    assert len(rects) == len(top["nodes"]) == 12
    with pytest.raises(ExplorerError, match="measure"):
        to_svg(top, "flops")


def test_names_cannot_break_out_of_the_pages_script_element():
    from ui.graph import embed_json, graph_html, vendored_scripts

    hostile = 'a</script><script>alert(1)</script>\u2028<!--&'
    text = embed_json({"name": hostile})
    assert not re.search(r"[<>&\u2028\u2029]", text)
    assert json.loads(text) == {"name": hostile}
    graph = {"arch": "x", "input_shape": [1, 3], "totals": {"params": 0, "macs": 0, "memory_access_bytes": 0,
                                                              "activations": 0},
             "nodes": [{"id": hostile, "type": hostile, "parent": None, "depth": 1, "group": False, "kind": "module",
                        "params": 0, "macs": 0, "memory_access_bytes": 0, "activations": 0, "output_shape": [1],
                        "calls": 1, "changed": False}], "edges": []}
    page = graph_html(graph)
    assert page.lower().count("</script") == 3  # our own three elements, none from the data
    assert "alert(1)" in page and "<script>alert(1)" not in page
    # nothing is fetched: no external script, stylesheet or URL outside the vendored libraries' licence comments
    own = page.replace(vendored_scripts(), "").replace("http://www.w3.org/2000/svg", "")
    assert not re.search(r"https?://|<script[^>]+src=|<link|@import", own)


def _cli(*argv) -> tuple[int, str]:
    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def test_the_command_line_prints_the_graph_as_json_and_refuses_bad_requests(tmp_path, capsys):
    code, text = _cli("graph", "resnet18", "--depth", "1", "--json")
    assert code == 0
    data = json.loads(text)
    assert [n["id"] for n in data["nodes"]][:2] == [INPUT_ID, "conv1"]
    for node in data["nodes"]:
        assert {"id", "type", "parent", "params", "macs", "memory_access_bytes", "output_shape", "changed"} <= set(node)
    assert {"src", "dst", "shape"} == set(data["edges"][0])
    assert sum(n["macs"] for n in data["nodes"]) == analyse(ModelSpec("resnet18"))["macs"]

    code, text = _cli("graph", "resnet50", "--depth", "2", "--swap", "preset:dcnv2", "--json")
    assert code == 0 and len(json.loads(text)["changed"]) == 13

    svg = tmp_path / "r18.svg"
    code, _ = _cli("graph", "resnet18", "--depth", "1", "--svg", str(svg))
    assert code == 0 and ET.parse(svg).getroot().tag.endswith("svg")
    assert _cli("graph", "resnet18", "--depth", "0", "--json")[0] == 2
    assert _cli("graph", "resnet18", "--svg", str(tmp_path / "no-such-folder" / "x.svg"))[0] == 2
    assert "--svg" in capsys.readouterr().err


def test_the_json_has_the_issues_fields_and_a_depth_cut(resnet50):
    _, graph = resnet50
    data = as_json(collapsed(graph, 2))
    assert data["depth"] == 2
    assert max(n["depth"] for n in data["nodes"]) == 2
    assert json.loads(json.dumps(data)) == data


def _tiny_onnx():
    """A small model with a residual add, a concatenation, a grouped conv and a linear head, exported offline."""
    import warnings

    import torch
    import torch.nn as nn

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.grouped = nn.Conv2d(8, 8, 3, padding=1, groups=2, bias=False)
            self.mix = nn.Conv2d(16, 16, 1)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            y = self.stem(x)
            y = y + self.grouped(y)
            y = self.mix(torch.cat([y, torch.relu(y)], 1))
            return self.fc(y.mean((2, 3)))

    model, x = Tiny().eval(), torch.randn(1, 3, 16, 16)
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), buffer, dynamo=False, opset_version=17)
    return model, x, buffer.getvalue()


def test_an_exported_onnx_file_reads_back_with_the_torch_models_params_and_macs():
    from explorer.cost import trace_costs
    from explorer.model_files import read_onnx

    model, x, data = _tiny_onnx()
    graph = read_onnx(data, "tiny.onnx")
    torch_cost = trace_costs(model, x).total
    # 3·8·9+8 + 8·4·9 + 16·16+16 + 16·10+10 parameters; conv MACs 16²·(8·27 + 8·36 + 16·16) + 160 for the head
    assert graph["totals"]["params"] == sum(p.numel() for p in model.parameters()) == 954
    assert graph["totals"]["macs"] == torch_cost.macs == 16 * 16 * (8 * 27 + 8 * 36 + 16 * 16) + 160
    assert graph["totals"]["memory_access_bytes"] == torch_cost.memory_access_bytes
    assert not graph["uncounted_ops"]
    into = collections.defaultdict(set)
    for edge in graph["edges"]:
        into[edge["dst"]].add(edge["src"])
        assert edge["shape"]
    assert into["Add"] == {"stem/stem.1/Relu", "grouped/Conv"}
    assert into["Concat"] == {"Add", "Relu"}
    stem = next(n for n in graph["nodes"] if n["id"] == "stem")
    assert stem["group"] and stem["params"] == 3 * 8 * 9 + 8
    assert collapsed(graph, 1)["nodes"]


def test_the_command_line_reads_an_onnx_file(tmp_path):
    model, _, data = _tiny_onnx()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(data)
    code, text = _cli("graph", str(path), "--depth", "all", "--json")
    assert code == 0
    nodes = json.loads(text)["nodes"]
    assert sum(n["params"] for n in nodes if not n["group"]) == sum(p.numel() for p in model.parameters())
    assert _cli("graph", str(path), "--swap", "attn:se@all", "--json")[0] == 2
    assert _cli("graph", str(tmp_path / "missing.onnx"), "--json")[0] == 2


def test_model_files_that_are_not_onnx_or_too_large_are_refused(monkeypatch):
    from explorer import model_files

    with pytest.raises(ExplorerError, match="not an .onnx file"):
        model_files.read_onnx(b"\x00", "weights.pt")
    with pytest.raises(ExplorerError, match="not a readable ONNX model"):
        model_files.read_onnx(b"\xff" * 64, "broken.onnx")
    monkeypatch.setattr(model_files, "MAX_ONNX_BYTES", 100)
    with pytest.raises(ExplorerError, match="over the limit"):
        model_files.read_onnx(b"\x00" * 101, "big.onnx")


def _open_graph_page(**query):
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/9_Graph.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_the_graph_page_summarises_the_model_and_embeds_its_graph(clear_streamlit_caches):
    at = _open_graph_page(arch="resnet50", swaps="preset:dcnv2")
    text = " ".join(m.value for m in at.markdown)
    assert re.search(r"resnet50.*input 1×3×224×224: 26\.43 M parameters, 4\.31 G MACs", text)
    assert any("13 changed blocks" in c.value for c in at.caption)
    assert not at.error


def test_the_graph_page_says_what_is_wrong_with_a_bad_request(clear_streamlit_caches):
    at = _open_graph_page(arch="vit_b_16", input="3,100,100")
    assert any("cannot take input" in e.value for e in at.error)


@pytest.mark.slow
def test_the_graph_page_draws_and_a_click_shows_the_nodes_row(app_server, browser):
    from playwright.sync_api import expect

    shots = ROOT / "artifacts"
    for width in (1440, 800):
        page = browser.new_page(viewport={"width": width, "height": 1100})
        page.goto(app_server + "/Graph?arch=resnet50")
        frame = page.frame_locator("iframe").first
        frame.locator("#cy canvas").first.wait_for(timeout=120_000)
        # the drawing opens at the stages; pick one by name and click it where Cytoscape drew it
        position = None
        end = time.monotonic() + 60
        while position is None and time.monotonic() < end:
            position = frame.locator("body").evaluate(
                "() => { const g = window.architectureGraph; if (!g) return null; const n = g.cy.$id('layer3');"
                " if (!n.length) return null; g.cy.center(n); const p = n.renderedPosition(); return [p.x, p.y]; }")
            if position is None:
                time.sleep(0.5)
        assert position, "the graph never drew layer3"
        box = frame.locator("#cy").bounding_box()
        page.mouse.click(box["x"] + position[0], box["y"] + position[1])
        row = frame.get_by_test_id("graph-node-row")
        expect(row).to_be_visible(timeout=10_000)
        expect(row).to_contain_text("Sequential")
        expect(row).to_contain_text("1×1024×14×14")
        macs = analyse(ModelSpec("resnet50"))["layers"]
        layer3 = next(r for r in macs if r["name"] == "layer3")
        expect(row).to_contain_text(f"{layer3['macs']:,}")
        assert page.get_by_test_id("stException").count() == 0
        if shots.is_dir():
            page.screenshot(path=str(shots / f"graph-resnet50-{width}.png"), full_page=True)
        page.close()


# --- one pass for the cost report and the data flow (issue 16) ---------------------------------------------

def test_the_graph_comes_from_one_forward_pass_that_also_gives_the_cost_report(monkeypatch):
    """The data-flow recorder rides on the cost engine's own trace: one forward pass, and the report it gives
    is the one analyse gives on its own; the graph is the same whether or not the caller holds the report."""
    import explorer.cost as cost_module
    from explorer.graph import trace_flow

    spec = ModelSpec("resnet18")
    alone = analyse(spec)
    passes = []
    real_trace = cost_module.trace_costs
    monkeypatch.setattr(cost_module, "trace_costs", lambda *a, **k: passes.append(1) or real_trace(*a, **k))
    report, flow = trace_flow(spec)
    assert passes == [1]
    assert report == alone
    assert flow.edges and flow.call_nodes["layer1.0.relu@2"]["call"] == 2
    graph = build_graph(spec)
    assert len(passes) == 2
    assert graph == build_graph(spec, alone)
    assert sum(n["macs"] for n in graph["nodes"] if not n["group"]) == alone["macs"] == 1_814_073_344


def test_each_call_of_a_module_called_several_times_adds_up_to_its_row():
    """ResNet-18's block ReLU runs twice per block: one node per call, whose MACs, memory access and activations
    add up to the module's row in the cost report (views cost nothing, as in the report)."""
    graph = build_graph(ModelSpec("resnet18"))
    calls = collections.defaultdict(list)
    for node in graph["nodes"]:
        if "all_calls" in node or node["kind"] == "call":
            calls[node.get("module", node["id"])].append(node)
    assert len(calls) == 8  # one ReLU per basic block
    for name, nodes in calls.items():
        assert sorted(n.get("call", 1) for n in nodes) == [1, 2], name
        first = next(n for n in nodes if "all_calls" in n)
        for key in ("macs", "memory_access_bytes", "activations"):
            assert sum(n[key] for n in nodes) == first["all_calls"][key], (name, key)
        assert first["all_calls"]["memory_access_bytes"] > 0


def test_the_fast_meta_paths_match_the_real_meta_kernels_in_every_dtype():
    """Layer norm (contiguous and ConvNeXt's channels-last input), Linear's addmm, attention's softmax and the
    scaling of a transposed query by a number: the shortcut outputs have the shape, dtype and strides the meta
    kernels give, in fp32, fp16 and bf16."""
    import torch
    import torch.nn as nn

    from tests.meta_support import FastPathCheck

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm = nn.LayerNorm(16)
            self.attention = nn.MultiheadAttention(16, 4)
            self.fc = nn.Linear(16, 8)

        def forward(self, x):  # x: (batch, 16 channels, 3, 5)
            y = self.norm(x.permute(0, 2, 3, 1)).flatten(1, 2)  # a permuted (non-contiguous) input
            y = self.norm(y.transpose(0, 1).contiguous())
            y = self.attention(y, y, y, need_weights=False)[0]
            return self.fc(y * 0.5).mean()

    check = FastPathCheck()

    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        model = Block().to(device="meta", dtype=dtype).eval()
        with torch.no_grad(), check:
            model(torch.empty(2, 16, 3, 5, device="meta", dtype=dtype))
    checked = check.checked
    assert checked["native_layer_norm"] == 6 and checked["_safe_softmax"] == 3
    assert checked["addmm"] >= 6 and checked["mul"] >= 3


def test_the_meta_build_without_initialisers_has_the_same_parameters_and_report():
    """Building on meta skips the weight initialisers' in-place kernels (no values to write): every parameter and
    buffer keeps its name, shape, dtype, strides and trainability."""
    from explorer.cost import build_on_meta
    from explorer.models import build_model

    def layout(model):
        return [(name, tuple(t.shape), t.dtype, t.stride(), t.requires_grad, t.device.type)
                for name, t in [*model.named_parameters(), *model.named_buffers()]]

    spec = ModelSpec("timm:convnext_atto")
    initialised = build_model(spec, device="meta")
    assert layout(build_on_meta(spec)) == layout(initialised)
    params = analyse(spec)["params"]
    assert params == sum(p.numel() for p in initialised.parameters())
    assert round(params / 1e6, 1) == 3.7  # timm's published size of convnext_atto


def test_the_graph_page_gets_its_graph_from_the_backend_like_the_cost_report(monkeypatch, clear_streamlit_caches):
    from explorer.backend import BACKEND
    from ui.graph import cached_graph

    asked = []
    real_graph = BACKEND.graph
    monkeypatch.setattr(BACKEND, "graph", lambda spec: asked.append(spec) or real_graph(spec))
    spec = ModelSpec("resnet18")
    graph = cached_graph(spec.key())
    assert asked == [spec.to_dict()]
    assert graph == build_graph(spec)
    assert sum(n["macs"] for n in graph["nodes"] if not n["group"]) == graph["totals"]["macs"] == 1_814_073_344


def test_totals_add_every_field():
    """Totals.add spells its fields out (it runs for every op): a field added later must be added there too."""
    from dataclasses import fields

    from explorer.cost import Totals

    names = [f.name for f in fields(Totals)]
    total = Totals(**{name: i + 1 for i, name in enumerate(names)})
    total.add(Totals(**{name: 10 * (i + 1) for i, name in enumerate(names)}))
    assert [getattr(total, name) for name in names] == [11 * (i + 1) for i in range(len(names))]
