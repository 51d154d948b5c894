"""Figures a student reads correctly: log axes labelled at decades, tables with units and human names that open
at a depth showing structure, the latency sweep's spread, swaps named for what they added, and every caption
checked against the numbers of the figure it describes."""
import json
import math
import re
from pathlib import Path

import pytest

from explorer.compare import READY_MADE, compare_row, spec_from_item
from explorer.cost import analyse
from explorer.errors import ExplorerError
from explorer.layers import rolled_up
from explorer.spec import ModelSpec
from tests.conftest import ROOT
from tests.page_support import open_page
from ui.components import (before_after, changed_place, changed_places_text, parse_batch_list, rf_frame,
                           structural_depth)
from ui.figures import (attention_formula_plot, class_weight_plot, cost_treemap, decade_text, decade_texts, label_decades,
                        label_sides, roofline_plot, sweep_plot)

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")


def open_heavy_page(page=None, **query):
    return open_page(page, timeout=240, **query)  # the heaviest pages, on a busy machine


def log_axes(fig) -> dict[str, dict]:
    layout = fig.to_plotly_json()["layout"]
    return {name: axis for name, axis in layout.items() if re.fullmatch(r"[xy]axis\d*", name) and axis.get("type") == "log"}


def plotted(fig, letter: str) -> list[float]:
    return [float(v) for trace in fig.data for v in (getattr(trace, letter) or ()) if v is not None and v > 0]


def assert_decades_only(fig, axis_names: set[str]):
    """Each named log axis: labelled ticks at powers of ten only, covering the data, at least two of them."""
    axes = log_axes(fig)
    assert set(axes) == axis_names
    for name, axis in axes.items():
        ticks = axis["tickvals"]
        exponents = [math.log10(t) for t in ticks]
        assert all(abs(e - round(e)) < 1e-9 for e in exponents), (name, ticks)
        assert [round(b) - round(a) for a, b in zip(exponents, exponents[1:])] == [1] * (len(ticks) - 1)
        assert len(ticks) >= 2 and axis["ticktext"] == decade_texts([round(e) for e in exponents])
        values = plotted(fig, name[0])
        assert ticks[0] <= min(values) and max(values) <= ticks[-1], (name, ticks, min(values), max(values))
        assert axis["range"] == [round(exponents[0]), round(exponents[-1])]
        # the minor grid (2…9 × each decade) carries no labels
        assert all(round(v / 10 ** math.floor(math.log10(v) + 1e-9)) in range(2, 10) for v in axis["minor"]["tickvals"])


def test_names_at_the_ends_of_a_scatter_run_inwards():
    # VoVNet vs DenseNet in GMACs: the DenseNets in the left quarter of the 2.834–7.074 span (densenet169 at 12 %),
    # the VoVNets at the right; a point in the middle half stays centred
    gmacs = [2.834, 3.360, 7.072, 7.074]
    assert label_sides(gmacs) == ["top right", "top right", "top left", "top left"]
    assert label_sides([0.0, 5.0, 10.0]) == ["top right", "top center", "top left"]
    assert label_sides([5.0]) == ["top right"] and label_sides([]) == []


def test_decades_are_written_as_a_student_reads_them():
    assert [decade_text(e) for e in (-4, -3, -1, 0, 2, 3, 4, 6)] == [
        "10⁻⁴", "0.001", "0.1", "1", "100", "1,000", "10⁴", "10⁶"]


def test_the_roofline_labels_decades_on_both_axes():
    peaks = {"tflops": 1.2, "bandwidth_gb_s": 25.0, "source": "measured"}
    models = [{"label": "resnet18 batch 1", "tflops": 0.11, "intensity": 30.6}]
    layers = [{"label": "conv1", "intensity": 61.0, "tflops": 0.3, "share": 0.06},
              {"label": "relu", "intensity": 0.125, "tflops": 0.0021, "share": 0.01}]
    fig = roofline_plot(peaks, models, layers, "fp32")
    assert_decades_only(fig, {"xaxis", "yaxis"})
    # 0.0021 … 1.2 TFLOP/s: the y ticks run from 0.001 to 10, one per decade
    assert fig.layout.yaxis.ticktext == ("0.001", "0.01", "0.1", "1", "10")
    assert all(trace.line.color not in ("black", "white", "#000000", "#ffffff") for trace in fig.data)


def test_the_long_tail_weights_label_decades_on_both_axes():
    from explorer.losses import class_weights, long_tail_counts

    counts = long_tail_counts(100, 5000, 100)
    weights = class_weights(counts, 0.999, 1.76e-3)
    kept = weights.pop("EQL negatives kept")
    fig = class_weight_plot(counts.tolist(), weights, kept)
    assert_decades_only(fig, {"xaxis", "yaxis"})
    assert fig.layout.xaxis.ticktext == ("10¹", "10²", "10³", "10⁴")  # class sizes 50 … 5,000: one style per axis


@pytest.mark.slow
def test_the_attention_formula_chart_labels_decades():
    from explorer.backend import BACKEND

    rows = BACKEND.attention_formulas([224, 448, 672, 896])
    fig = attention_formula_plot(rows)
    assert_decades_only(fig, {"yaxis"})


def test_the_batch_sweep_ticks_each_batch_timed_and_shades_p10_to_p90():
    rows = [{"model": "resnet18", "batch": b, "median_ms": m, "p10_ms": lo, "p90_ms": hi}
            for b, m, lo, hi in ((1, 10.0, 9.5, 12.5), (8, 60.0, 58.0, 61.0), (64, 450.0, 440.0, 470.0))]
    fig = sweep_plot(rows, "median_ms", "Latency", "ms per batch", band=("p10_ms", "p90_ms"))
    assert fig.layout.xaxis.type == "log" and fig.layout.xaxis.tickvals == (1, 8, 64)
    band, line = fig.data
    assert band.fill == "toself" and list(band.x) == [1, 8, 64, 64, 8, 1]
    assert list(band.y) == [12.5, 61.0, 470.0, 440.0, 58.0, 9.5]  # p90 going out, p10 coming back
    assert list(line.y) == [10.0, 60.0, 450.0] and band.legendgroup == line.legendgroup == "resnet18"
    assert band.name == "resnet18: p10–p90"  # the legend says what the shading is
    assert band.fillcolor.startswith("rgba(") and line.line.color == "#636efa"


def test_a_figure_without_log_axes_is_left_alone():
    import plotly.graph_objects as go

    fig = label_decades(go.Figure(go.Scatter(x=[1, 2], y=[3, 4])))
    assert fig.layout.xaxis.tickvals is None and fig.layout.yaxis.tickvals is None


def test_the_per_layer_table_opens_at_a_depth_that_shows_structure():
    """ConvNeXt's depth 1 is one row with 99.7 % of the MACs; its depth 2 is the first with no row above half."""
    layers = analyse(ModelSpec("torchvision:convnext_tiny"), with_layers=True)["layers"]
    shares = {d: max(r["share_macs"] for r in rolled_up(layers, d)) for d in (1, 2)}
    assert shares[1] > 0.99 and shares[2] <= 0.5
    assert structural_depth(layers) == 2
    resnet = analyse(ModelSpec("resnet18"), with_layers=True)["layers"]
    assert structural_depth(resnet) == 1  # layer1…layer4 hold 25 % each: depth 1 already shows the stages
    vit = analyse(ModelSpec("vit_b_16"), with_layers=True)["layers"]
    assert structural_depth(vit) == 3 and max(r["share_macs"] for r in rolled_up(vit, 2)) > 0.99


def test_the_treemap_keeps_the_network_order_and_prints_values_with_units():
    layers = analyse(ModelSpec("resnet18"), with_layers=True)["layers"]
    fig = cost_treemap(layers, "MACs", 1)
    treemap = fig.data[0]
    assert treemap.sort is False
    assert list(treemap.ids) == [r["name"] for r in layers if r["depth"] <= 1 and (r["macs"] > 0 or r["depth"] == 0)]
    assert list(treemap.ids)[1:6] == ["conv1", "layer1", "layer2", "layer3", "layer4"]
    assert "M MACs" in treemap.texttemplate and "%{customdata[1]" in treemap.texttemplate
    conv1 = list(treemap.ids).index("conv1")
    assert treemap.customdata[conv1][1] == pytest.approx(118.013952)  # 7×7×3×64 × 112² MACs, in millions


def test_the_receptive_field_table_has_human_columns_and_pixel_text():
    from explorer.backend import BACKEND

    rows = [r for r in BACKEND.receptive_field(ModelSpec("resnet18").to_dict())["rows"] if r["op"] != "container"]
    frame = rf_frame(rows)
    assert list(frame.columns) == ["Layer", "Type", "Receptive field (px)", "Jump (px)", "First unit's centre (px)",
                                   "Output (H×W)", "Approximate"]
    conv1 = frame[frame["Layer"] == "conv1"].iloc[0]
    # a 7×7 conv with stride 2 on 224×224: field 7, jump 2, output 112×112
    assert (conv1["Receptive field (px)"], conv1["Jump (px)"], conv1["Output (H×W)"]) == ("7 × 7", "2 × 2", "112×112")
    assert frame[frame["Layer"] == "fc"].iloc[0]["Receptive field (px)"] == "whole input"


@pytest.mark.parametrize("text, sizes", [("1, 8, 64", [1, 8, 64]), ("64 8 8 1", [1, 8, 64]), ("1;2", [1, 2]),
                                         (" 1024 ", [1024])])
def test_a_typed_batch_list_is_read(text, sizes):
    assert parse_batch_list(text) == sizes


@pytest.mark.parametrize("text, reason", [
    ("", "at least one"), ("0", "from 1 to 1,024: not 0"), ("1, 2000", "not 2000"), ("1.5", "not 1.5"),
    ("8, eight", "not eight"), (", ".join(map(str, range(1, 40))), "at most 32 batch sizes"),
    ("1," * 150, "characters long"), ("[x](http://evil.test)", "not [x](http://evil.test)"),
])
def test_a_bad_batch_list_says_why(text, reason):
    with pytest.raises(ExplorerError, match=re.escape(reason)):
        parse_batch_list(text)


def test_an_added_se_block_is_named_as_se_with_before_and_after():
    base = {r["name"]: r for r in analyse(ModelSpec("resnet18"), with_layers=True)["layers"]}
    swapped = {r["name"]: r for r in analyse(ModelSpec("resnet18", swaps=("attn:se@all",)), with_layers=True)["layers"]}
    place = changed_place("layer1.0.bn2", base, swapped)
    assert place["label"] == "SE added after layer1.0.bn2"
    assert place["type"] == "BatchNorm2d → BatchNorm2d + SE"
    # BN of 64 channels: 128; SE with reduction 16: 64→4 (+4 bias) and 4→64 (+64 bias) = 580 more
    assert before_after(place["before"]["params"], swapped["layer1.0.bn2"]["params"], lambda v: f"{v:,}") == "128 → 708"
    assert changed_place("layer1.0.bn2.1", base, swapped)["label"] == "layer1.0.bn2.1 (added)"
    assert changed_place("layer1.0.bn2.0", base, swapped)["before"] is base["layer1.0.bn2"]
    names = [f"layer{s}.{b}.bn2" for s in range(1, 5) for b in range(2)]
    assert changed_places_text(names, base, swapped) == "SE added after " + ", ".join(f"`{n}`" for n in names)
    dcn = {r["name"]: r for r in analyse(ModelSpec("resnet18", swaps=("conv:dcn@layer4.0.conv2",)),
                                          with_layers=True)["layers"]}
    assert changed_place("layer4.0.conv2", base, dcn)["type"] == "Conv2d → DeformConv"
    assert changed_places_text(["layer4.0.conv2"], base, dcn) == "replaced: `layer4.0.conv2`"


@pytest.mark.slow
def test_the_swap_page_shows_before_and_after_per_layer():
    at = open_heavy_page("pages/4_Swap.py", arch="resnet18", swaps="attn:se@all", input="3,64,64")
    assert not at.error, [e.value for e in at.error]
    assert any(m.value.startswith("**8 places changed**: SE added after `layer1.0.bn2`") for m in at.markdown)
    table = at.dataframe[0].value
    row = table[table["layer"] == "layer1.0.bn2"].iloc[0]
    assert row["shown as"] == "SE added after layer1.0.bn2" and row["params"] == "128 → 708"
    assert row["type"] == "BatchNorm2d → BatchNorm2d + SE"
    assert "Sequential" not in " ".join(table[table["layer"].str.endswith("bn2")]["type"])


@pytest.mark.slow
def test_a_fold_says_when_it_costs_what_the_base_model_costs():
    """DO-Conv folds into the very conv it replaced: the folded model's cost is the base model's."""
    at = open_heavy_page("pages/4_Swap.py", arch="resnet18", swaps="conv:doconv@layer1.0.conv1", input="3,64,64")
    next(b for b in at.button if b.label.startswith("Fold")).click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    from explorer.reparam import fold_report

    spec = ModelSpec("resnet18", swaps=("conv:doconv@layer1.0.conv1",), input_size=(3, 64, 64))
    report = fold_report(spec)
    base = analyse(ModelSpec("resnet18", input_size=(3, 64, 64)), with_layers=False)
    equal = report["folded_cost"]["params"] == base["params"] and report["folded_cost"]["macs"] == base["macs"]
    says_equal = any("equals the base model's cost" in c.value for c in at.caption)
    assert equal and says_equal


@pytest.mark.slow
def test_the_model_page_opens_its_table_at_the_structural_depth():
    at = open_heavy_page("pages/2_Model.py", arch="vgg16")
    assert at.slider(key="model_depth").value == 2  # VGG's depth 1 is features (99 %) and classifier
    table = at.dataframe[1].value
    assert max(table["share of MACs (%)"]) <= 50 and "features.0" in set(table["layer"])


@pytest.mark.slow
def test_the_latency_page_times_batch_by_batch_and_flags_its_spread():
    at = open_heavy_page("pages/5_Latency.py", input="3,32,32")
    # a form's fields are sent with its button: typed and clicked in one run
    at.text_input(key="lat_batch_text").input("4, 1")
    at.checkbox(key="lat_per_layer").uncheck()
    at.button[0].click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sweep = at.dataframe[0].value
    assert list(sweep["batch"]) == [1, 4] and (sweep["median_ms"] > 0).all()
    wide = any(row.p90_ms / row.p10_ms > 1.2 for row in sweep.itertuples())
    few = any(row.runs < 10 for row in sweep.itertuples())
    warnings = [w.value for w in at.warning]
    assert any("spread widely" in w for w in warnings) == wide
    assert any("few timed runs" in w for w in warnings) == few
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    bands = [t for chart in charts[:2] for t in chart["data"] if t.get("fill") == "toself"]
    assert len(bands) == 2  # one p10–p90 band on the latency chart, one on the throughput chart
    at.text_input(key="lat_batch_text").input("1, 5000")
    at.button[0].click().run()
    assert any("not 5000" in e.value for e in at.error)


# --- wording: each caption against the figure it describes ----------------------------------------------------

def ratio_claims(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"(\d+(?:\.\d+)?)×", text)]


def test_the_vovnet_caption_states_the_charts_ratios():
    rows = {a: compare_row(spec_from_item(a)) for a in ("densenet121", "vovnet39a")}
    why = READY_MADE["vovnet_vs_densenet"]["why"]
    assert "similar MACs" not in why
    macs, moved, intensity = ratio_claims(why)
    assert macs == round(rows["vovnet39a"]["gmacs"] / rows["densenet121"]["gmacs"], 1)  # 7.07 / 2.83 GMACs
    assert moved == round(rows["vovnet39a"]["memory_access_mb"] / rows["densenet121"]["memory_access_mb"], 2)
    assert intensity == round(rows["vovnet39a"]["intensity_flops_per_byte"]
                              / rows["densenet121"]["intensity_flops_per_byte"], 1)


@pytest.mark.slow
def test_the_nasnet_tour_step_states_its_chart():
    from explorer.tours import load_tours

    text = next(s["text"] for t in load_tours() for s in t["steps"] if "3.3 GB per image" in s["text"])
    nasnet, senet = compare_row(spec_from_item("nasnetalarge")), compare_row(spec_from_item("senet154"))
    assert round(nasnet["memory_access_mb"] / 1e3, 1) == 3.3 and round(senet["memory_access_mb"] / 1e3, 1) == 1.7
    share = int(re.search(r"for (\d+)% more MACs \(([\d.]+) against ([\d.]+) G\)", text).group(1))
    assert share == round(100 * (nasnet["gmacs"] / senet["gmacs"] - 1))
    assert f"({nasnet['gmacs']:.1f} against {senet['gmacs']:.1f} G)" in text


def test_the_swin_formula_caption_matches_its_chart():
    """Doubling the side quadruples the tokens: MSA's MACs grow faster than 4× (the N² term), W-MSA's exactly 4×."""
    from explorer.backend import BACKEND

    rows = BACKEND.attention_formulas([224, 448])
    by = {(r["model"], r["side"]): r["formula_macs"] for r in rows}
    models = {r["model"] for r in rows}
    growth = {m: by[(m, 448)] / by[(m, 224)] for m in models}
    windowed = [m for m, r in ((r["model"], r) for r in rows) if "M²" in r["formula"]]
    global_ = [m for m, r in ((r["model"], r) for r in rows) if "N²" in r["formula"]]
    assert windowed and global_
    assert all(growth[m] == pytest.approx(4.0) for m in windowed)
    assert all(growth[m] > 4.5 for m in global_)


def test_the_losses_captions_cite_no_document_and_match_their_figure():
    from explorer.losses import class_weights, long_tail_counts

    at = open_heavy_page("pages/8_Losses.py")
    captions = " ".join(c.value for c in at.caption)
    assert "document" not in captions
    assert "the rarest class gets the largest weight, the most frequent the smallest" in captions
    counts = long_tail_counts(100, 5000, 100)  # the page's defaults
    weights = class_weights(counts, 0.999, 1.76e-3)
    cost_sensitive = weights["cost-sensitive CE"]
    assert cost_sensitive.index(max(cost_sensitive)) == int(counts.argmin())
    assert cost_sensitive.index(min(cost_sensitive)) == int(counts.argmax())
    # the grey band's legend names the classes below λ: the caption's "classes whose frequency is below λ"
    chart = json.loads(at.get("plotly_chart")[2].proto.spec)
    band = next(t for t in chart["data"] if t.get("fill") == "toself")
    below = int(((counts / counts.sum()) < 1.76e-3).sum())
    assert band["name"] == f"EQL: negatives suppressed ({below} classes)" and below > 0


def test_no_caption_or_tour_cites_the_document():
    texts = [Path(ROOT, "explorer/data/tours.json").read_text()] + [
        p.read_text() for p in [*Path(ROOT, "pages").glob("*.py"), *Path(ROOT, "ui").glob("*.py")]]
    texts.append(json.dumps(READY_MADE))
    assert not [t for t in texts if re.search(r"\bthe document\b", t.replace("document.getElementById", ""))]


def test_an_unknown_library_model_names_where_its_names_are_listed():
    import timm

    from explorer.catalog import catalog_rows, resolve

    with pytest.raises(ExplorerError) as raised:
        resolve("timm:zzqq_no_such_model_at_all")
    message = str(raised.value)
    assert "the Catalog page and" not in message and "timm.list_models()" in message
    assert "the Catalog lists only the roster" in message
    assert len(catalog_rows()) < len(timm.list_models())  # the Catalog does not list every timm model


def test_the_sidebar_calls_the_entry_page_home():
    import tomllib

    from ui.common import app_pages

    config = tomllib.loads(Path(ROOT, ".streamlit/config.toml").read_text())
    assert config["client"]["showSidebarNavigation"] is False  # Streamlit's own menu would say "app"
    assert "base" not in config.get("theme", {})  # the browser's light or dark preference decides
    pages = app_pages()
    assert pages[0] == ("app.py", "Home") and len(pages) == 1 + len(list(Path(ROOT, "pages").glob("[!._]*.py")))
    at = open_heavy_page()
    links = [link.proto.label for link in at.sidebar.get("page_link")]
    assert links[:3] == ["Home", "Catalog", "Model"] and "app" not in links


@pytest.mark.slow
def test_the_vit_swin_pvt_caption_matches_its_sweep():
    """'Swin 4×, ViT and PVT more than 4×' when the side doubles (224 → 448: four times the tokens)."""
    from explorer.backend import BACKEND

    why = READY_MADE["vit_swin_pvt"]["why"]
    growth = {}
    for arch in READY_MADE["vit_swin_pvt"]["specs"]:
        low, high = BACKEND.resolution_sweep(spec_from_item(arch).to_dict(), [224, 448], False)
        growth[arch] = high["gmacs"] / low["gmacs"]
    assert "Swin's windowed attention then costs 4× the MACs" in why and "more than 4×" in why
    assert growth["swin_t"] == pytest.approx(4.0, rel=0.01)
    assert growth["vit_b_16"] > 4.2 and growth["pvt_v2_b2"] > 4.2  # PVT's reduction divides N², it stays quadratic


@pytest.mark.slow
def test_the_efficientnet_caption_roughly_doubles_per_step():
    rows = [compare_row(spec_from_item(item)) for item in READY_MADE["efficientnet_scaling"]["specs"]]
    assert "roughly doubling FLOPs per step" in READY_MADE["efficientnet_scaling"]["why"]
    per_step = (rows[-1]["gmacs"] / rows[0]["gmacs"]) ** (1 / (len(rows) - 1))
    assert 1.8 < per_step < 2.2  # B0 0.39 → B7 37.7 GMACs: 1.92× per step
