"""What the graph shows on top of its cost rows: receptive fields by hand, Inside links the Inside page reads,
a measured per-layer run joined onto every leaf, and the node-by-node diff of two specs."""
import json
import urllib.parse

import pytest

from explorer.backend import BACKEND
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.graph import build_graph, graph_of
from explorer.graph_overlays import (INSIDE_VIEW_RULES, diff_graph, diff_summary, inside_links, latency_run_of,
                                     receptive_field_by_node, time_by_node)
from explorer.models import swapped_modules
from explorer.spec import ModelSpec
from explorer.views.registry import VIEW_IDS, inside_views


@pytest.fixture(scope="module")
def resnet18():
    spec = ModelSpec("resnet18")
    cost = analyse(spec)
    return spec, cost, build_graph(spec, cost)


@pytest.fixture(scope="module")
def resnet18_rf(resnet18):
    spec, _, graph = resnet18
    return receptive_field_by_node(graph, BACKEND.receptive_field(spec.to_dict()))


def test_resnet18_receptive_fields_by_hand(resnet18_rf):
    # stem conv 7×7 stride 2: rf 7, jump 2; max-pool 3×3 stride 2: rf 7 + 2·2 = 11, jump 4;
    # layer1.0.conv1 3×3 stride 1: rf 11 + 2·4 = 19, jump 4; conv2: 19 + 2·4 = 27
    assert (resnet18_rf["conv1"]["rf"], resnet18_rf["conv1"]["jump"]) == ([7, 7], [2, 2])
    assert (resnet18_rf["maxpool"]["rf"], resnet18_rf["maxpool"]["jump"]) == ([11, 11], [4, 4])
    assert (resnet18_rf["layer1.0.conv1"]["rf"], resnet18_rf["layer1.0.conv1"]["jump"]) == ([19, 19], [4, 4])
    assert resnet18_rf["layer1.0.conv1"]["text"].startswith("receptive field 19 px, jump (cumulative stride) 4 px")
    # layer2.0.conv1 is the 3×3 stride-2 conv of the block: rf = (rf after layer1: 11 + 4·2·4 = 43) + 2·4 = 51, jump 8
    assert (resnet18_rf["layer2.0.conv1"]["rf"], resnet18_rf["layer2.0.conv1"]["jump"]) == ([51, 51], [8, 8])
    # the residual addition (an op node), the ReLU's second call and the block (a group) match their rows too
    assert resnet18_rf["layer1.0.add_#1"]["rf"] == resnet18_rf["layer1.0.bn2"]["rf"] == [27, 27]
    assert resnet18_rf["layer1.0.relu@2"]["rf"] == [27, 27] and resnet18_rf["layer1.0.relu"]["rf"] == [19, 19]
    assert resnet18_rf["layer1.0"]["rf"] == [27, 27]
    # after global pooling a unit sees everything
    assert resnet18_rf["fc"]["global"] and "whole input" in resnet18_rf["fc"]["text"]


def test_every_module_of_a_conv_trunk_gets_its_receptive_field(resnet18, resnet18_rf):
    _, _, graph = resnet18
    missing = [n["id"] for n in graph["nodes"] if n["kind"] in ("module", "call") and n["id"] not in resnet18_rf]
    assert missing == []


def test_inside_links_name_views_the_inside_page_reads(resnet18):
    spec, _, graph = resnet18
    assert set(INSIDE_VIEW_RULES) <= set(VIEW_IDS)
    labels = {v.label for v in inside_views()}
    links = inside_links(graph, spec.with_(swaps=("preset:se",)))
    conv = {link["view"] for link in links["layer1.0.conv1"]}
    assert conv == {"rf", "cam"}
    assert "fc" not in links  # a 1×1000 output has no map to look at
    url = next(link["url"] for link in links["layer1.0.conv1"] if link["view"] == "rf")
    path, _, query = url.partition("?")
    assert path == "/Inside"
    params = urllib.parse.parse_qs(query)
    assert params == {"arch": ["resnet18"], "view": ["Receptive fields"], "swaps": ["preset:se"],
                      "layer": ["layer1.0.conv1"]}
    # the layer as each view's picker names it: the receptive-field table counts a module's later calls from 0
    rf_of_second_call = next(link["url"] for link in links["layer1.0.relu@2"] if link["view"] == "rf")
    assert urllib.parse.parse_qs(rf_of_second_call.partition("?")[2])["layer"] == ["layer1.0.relu@1"]
    assert all(link["label"] in labels for entries in links.values() for link in entries)
    # the Inside page opens no builder options: no link rather than a link to another model
    assert inside_links(graph, spec.with_(options={"num_classes": 10})) == {}


def test_attention_and_deformable_nodes_link_to_their_views():
    nodes = [{"id": "encoder.layers.encoder_layer_0.self_attention", "type": "MultiheadAttention", "kind": "module",
              "output_shape": [1, 197, 768]},
             {"id": "layer4.0.conv2", "type": "DeformConv", "kind": "module", "output_shape": [1, 512, 7, 7]},
             {"id": "blocks.0.attn@2", "type": "Attention", "kind": "call", "module": "blocks.0.attn", "call": 2,
              "output_shape": [1, 197, 768]}]
    links = inside_links({"nodes": nodes}, ModelSpec("resnet50"))
    assert [link["view"] for link in links[nodes[0]["id"]]] == ["attention"]
    assert [link["view"] for link in links[nodes[1]["id"]]] == ["rf", "cam", "offsets"]
    layer_of = lambda url: urllib.parse.parse_qs(url.partition("?")[2])["layer"][0]  # noqa: E731
    assert {layer_of(link["url"]) for link in links[nodes[1]["id"]]} == {"layer4.0.conv2"}
    # the attention view names a module's second call 'name#1' (explorer.views.attention_kinds)
    assert [layer_of(link["url"]) for link in links[nodes[2]["id"]]] == ["blocks.0.attn#1"]
    # Swin's window view picks a block (by stage and number): a block's attention links to its block, a stage to none
    swin = [{"id": "features.1.1", "type": "SwinTransformerBlock", "kind": "module", "output_shape": [1, 56, 56, 96]},
            {"id": "features.1.1.attn", "type": "ShiftedWindowAttention", "kind": "module", "parent": "features.1.1",
             "output_shape": [1, 56, 56, 96]},
            {"id": "layers.0", "type": "SwinTransformerStage", "kind": "module", "output_shape": [1, 56, 56, 96]}]
    swin_links = {node: next(link["url"] for link in entries if link["view"] == "swin")
                  for node, entries in inside_links({"nodes": swin}, ModelSpec("swin_t")).items()}
    assert layer_of(swin_links["features.1.1"]) == layer_of(swin_links["features.1.1.attn"]) == "features.1.1"
    assert "layer" not in urllib.parse.parse_qs(swin_links["layers.0"].partition("?")[2])


@pytest.mark.slow  # torch.profiler alone takes 5-10 s on two loaded cores
def test_a_measured_per_layer_run_covers_every_leaf_node(resnet18):
    from explorer.latency import BenchSettings, bench

    spec = resnet18[0]
    small = spec.with_(input_size=(3, 64, 64))
    result = bench(small, BenchSettings(device="cpu", batches=(1,), per_layer=True, min_runs=1, min_seconds=0.0,
                                        max_seconds=1.0))
    run = latency_run_of(result, small)
    assert run is not None and run["batch"] == 1 and run["device"]
    assert latency_run_of(result, spec) is None  # another input size is another model
    small_graph = build_graph(small)
    joined = time_by_node(small_graph, run["layers"])
    times = joined["times"]
    leaf_modules = [n["id"] for n in small_graph["nodes"] if n["kind"] == "module" and not n["group"]]
    assert len(leaf_modules) == len(run["layers"]) and set(leaf_modules) <= set(times)
    assert all(times[name] > 0 for name in leaf_modules)
    # the ops a block runs itself (residual additions) run outside every leaf's profiler range
    assert sorted(joined["untimed"]) == sorted(n["id"] for n in small_graph["nodes"] if n["kind"] == "op")
    # the block ReLU (called twice) is timed for both calls together
    assert "layer1.0.relu" in joined["calls_together"]
    # a group is the sum of its leaves; the stages add up to every leaf
    inside_layer1 = [n for n in leaf_modules if n.startswith("layer1.")]
    assert times["layer1"] == pytest.approx(sum(times[n] for n in inside_layer1))
    top = [n["id"] for n in small_graph["nodes"] if n["parent"] is None and n["kind"] != "io"]
    assert sum(times[n] for n in top) == pytest.approx(sum(row["time_ms"] for row in run["layers"]))


@pytest.mark.slow
def test_the_diff_of_resnet50_against_itself_swapped_marks_exactly_the_changed_nodes():
    first, second = ModelSpec("resnet50"), ModelSpec("resnet50", swaps=("preset:dcnv2",))
    first_cost, second_cost = analyse(first), analyse(second)
    diffed = diff_graph(first, first_cost, second, build_graph(second, second_cost))
    changed = {n["id"] for n in diffed["nodes"] if n["changed"]}
    assert changed == set(swapped_modules(second)) and len(changed) == 13
    assert set(diffed["changed"]) == changed
    # the same marks as the Swap page's drawing, where the base is the model without the swaps
    swap_page = graph_of(second)
    for ours, theirs in zip(diffed["nodes"], swap_page["nodes"]):
        assert (ours["id"], ours["changed"], ours.get("delta"), ours.get("new")) == \
               (theirs["id"], theirs["changed"], theirs.get("delta"), theirs.get("new"))
    summary = diff_summary(diffed)
    assert summary["new"] == 13 and summary["removed"] == 0  # each deformable conv's offset conv is new
    assert summary["delta_totals"]["macs"] == second_cost["macs"] - first_cost["macs"]
    assert diffed["nodes"][0]["id"] == "(input)"
    assert next(n for n in diffed["nodes"] if n["id"] == "layer2")["delta"]["params"] == \
        sum(n["delta"]["params"] for n in diffed["nodes"] if n["id"].startswith("layer2.") and n["id"].count(".") == 1)


@pytest.mark.slow
def test_the_diff_of_two_swapped_specs_and_of_two_sizes(resnet18):
    se, dcn = ModelSpec("resnet18", swaps=("attn:se@all",)), ModelSpec("resnet18", swaps=("conv:dcn@layer4.*.conv2",))
    se_cost = analyse(se)
    diffed = diff_graph(se, se_cost, dcn, build_graph(dcn))
    changed = set(diffed["changed"])
    # against the SE model, the deformable convs changed and so did every block's SE wrapper (gone again)
    assert set(swapped_modules(dcn)) <= changed
    assert set(swapped_modules(se)) <= changed
    assert len(changed) == len(swapped_modules(dcn)) + len(swapped_modules(se))
    assert diffed["removed"] and all(any(r.startswith(s + ".") for s in swapped_modules(se)) for r in diffed["removed"])
    # the same model at two input sizes: nothing changed, every conv's MACs moved, no parameter did
    small = ModelSpec("resnet18", input_size=(3, 160, 160))
    large, _, large_graph = resnet18
    sized = diff_graph(small, analyse(small), large, large_graph)
    assert sized["changed"] == [] and sized["removed"] == []
    convs = [n for n in sized["nodes"] if n["type"] == "Conv2d"]
    assert convs and all(n["delta"]["macs"] > 0 and n["delta"]["params"] == 0 for n in convs)


def test_a_diff_of_two_architectures_is_refused(resnet18):
    spec, cost, graph = resnet18
    with pytest.raises(ExplorerError, match="needs the same architecture"):
        diff_graph(ModelSpec("resnet34"), analyse(ModelSpec("resnet34")), spec, graph)


def test_the_command_line_prints_the_diff_and_refuses_two_architectures(capsys):
    from explorer.cli import main

    code = main(["graph", "resnet18", "--swap", "conv:dcn@layer4.*.conv2", "--diff", "resnet18", "--depth", "2", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    # counted over every node before --depth folds the blocks: 2 deformable convs, each with a new offset conv
    assert out["changed"] == ["layer4.0.conv2", "layer4.1.conv2"]
    assert out["diff"]["changed"] == 2 and out["diff"]["new"] == 2 and out["removed"] == []
    assert out["diff_against"]["swaps"] == [] and out["base_totals"]["macs"] == analyse(ModelSpec("resnet18"))["macs"]
    assert next(n for n in out["nodes"] if n["id"] == "layer4")["delta"]["params"] == out["diff"]["delta_totals"]["params"]
    assert main(["graph", "resnet18", "--diff", "resnet34", "--json"]) == 2
    assert "needs the same architecture" in capsys.readouterr().err


def test_overlay_text_and_links_travel_escaped_into_the_drawing(resnet18):
    from ui.graph import graph_html

    _, _, graph = resnet18
    hostile = "</script><script>alert(1)</script>"
    page = graph_html(graph, overlays={"rf": {"conv1": hostile}, "times": {"conv1": 1.5},
                                       "links": {"conv1": [{"label": hostile, "url": "javascript:alert(1)"}]},
                                       "time_about": hostile, "changed_label": hostile})
    assert hostile not in page and "<script>alert" not in page
    assert page.count("\\u003c/script\\u003e\\u003cscript\\u003ealert(1)") == 4
    # the panel sets text with textContent and follows only the app's own Inside links
    assert 'startsWith("/Inside?")' in page and "innerHTML = G." not in page
