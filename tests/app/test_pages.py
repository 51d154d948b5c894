"""Every page under streamlit's AppTest: renders, shows the engine's numbers, survives bad input."""
import pytest

from explorer.cost import analyse
from explorer.spec import ModelSpec
from explorer.units import format_count
from tests.page_support import metric, open_page
from tests.markdown_support import shown_text

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")


def test_home_counts_the_catalog():
    at = open_page()
    assert metric(at, "Architecture families") == "64"


def test_catalog_search_filters_the_table():
    at = open_page("pages/1_Catalog.py")
    full = at.dataframe[0].value
    at.text_input(key="catalog_query").input("swin").run()
    table = at.dataframe[0].value
    assert set(table["id"]) == {"swin_t", "swin_s", "swin_b"}
    assert len(full) >= 170


def test_catalog_source_filter():
    at = open_page("pages/1_Catalog.py")
    at.multiselect(key="catalog_sources").select("native").run()
    table = at.dataframe[0].value
    assert set(table["source"]) == {"native"}
    assert set(table["status"]) <= {"ready", "needs native implementation"}


@pytest.mark.slow
def test_model_page_shows_the_engine_totals():
    at = open_page("pages/2_Model.py", arch="resnet50")
    expected = analyse(ModelSpec("resnet50"), with_layers=False)
    assert metric(at, "MACs") == format_count(expected["macs"]) == "4.09 G"
    assert metric(at, "Parameters") == "25.56 M"
    assert metric(at, "fvcore, MAC ops only") == "4.09 GMAC"
    assert at.query_params["arch"] == ["resnet50"] or at.query_params["arch"] == "resnet50"


def test_model_page_rolls_up_by_depth():
    at = open_page("pages/2_Model.py", arch="resnet18")
    table = at.dataframe[1].value  # [0] published vs measured, [1] per-layer
    assert list(table["layer"])[:4] == ["conv1", "bn1", "relu", "maxpool"]
    at.slider(key="model_depth").set_value(2).run()
    deeper = at.dataframe[1].value
    assert "layer1.0" in set(deeper["layer"]) and "layer1" not in set(deeper["layer"])
    assert deeper["MACs (M)"].sum() == pytest.approx(table["MACs (M)"].sum())


@pytest.mark.slow
def test_bad_input_is_a_message_and_the_page_recovers():
    at = open_page("pages/2_Model.py", arch="vit_b_16")
    at.text_input(key="model_input").input("3,100,100").run()
    assert not at.exception
    assert any("cannot take input 3×100×100" in e.value for e in at.error)
    # The person's choice of model survives; fixing the input brings the figures back.
    assert at.selectbox(key="model_arch").value == "vit_b_16"
    at.text_input(key="model_input").input("3,224,224").run()
    assert not at.error
    assert metric(at, "MACs") == "17.56 G"


@pytest.mark.slow
def test_garbage_in_every_field_never_raises():
    at = open_page("pages/2_Model.py", arch="resnet18")
    at.text_input(key="model_input").input("three by three").run()
    assert not at.exception and at.error
    at.text_input(key="model_input").input("").run()
    at.text_input(key="model_options").input("{not json").run()
    assert not at.exception and "JSON" in at.error[0].value
    at.text_input(key="model_options").input('{"num_classes": 10}').run()
    assert not at.error
    assert metric(at, "Parameters") == format_count(11_689_512 - 1000 * 512 - 1000 + 10 * 512 + 10)
    at.text_input(key="model_arch_text").input("timm:definitely_not_a_model").run()
    assert not at.exception and "timm has no model" in at.error[0].value


def test_a_url_with_a_library_model_opens_it():
    at = open_page("pages/2_Model.py", arch="timm:resnet10t")
    assert not at.error
    assert at.text_input(key="model_arch_text").value == "timm:resnet10t"


@pytest.mark.slow
def test_latency_page_runs_a_sweep_and_keeps_it():
    at = open_page("pages/5_Latency.py")
    assert "Pick models" in at.info[0].value
    at.text_input(key="lat_batch_text").input("1")  # CPU default is 1, 2: time batch 1 only
    at.button[0].click().run()
    assert not at.exception and not at.error
    sweep = at.dataframe[0].value
    assert list(sweep["model"]) == ["resnet18"] and list(sweep["batch"]) == [1]
    assert (sweep["median_ms"] > 0).all()
    layers = at.dataframe[1].value
    assert "conv1" in set(layers["name"]) and set(layers["bound"]) <= {"compute", "memory"}
    # Results survive an unrelated rerun (the person's state is kept).
    at.selectbox(key="lat_roof_model").select("resnet18").run()
    assert len(at.dataframe) == 2


def test_latency_page_reports_a_bad_library_name():
    at = open_page("pages/5_Latency.py")
    at.multiselect(key="lat_models").unselect("resnet18")
    at.text_input(key="lat_extra").input("timm:nope")
    at.button[0].click().run()
    assert not at.exception
    assert any("timm has no model" in e.value for e in at.error)


@pytest.mark.slow
def test_swap_page_shows_base_and_swapped_side_by_side():
    at = open_page("pages/4_Swap.py", arch="resnet50", swaps="preset:dcnv2")
    assert not at.error
    assert metric(at, "Parameters, base") == "25.56 M"
    swapped = analyse(ModelSpec("resnet50", swaps=("preset:dcnv2",)), with_layers=False)
    assert metric(at, "MACs, swapped") == format_count(swapped["macs"])
    assert any("13 places changed" in m.value for m in at.markdown)
    # A swap that cannot fit is a message; the page and the person's text survive.
    at.text_area(key="swap_text").input("conv:dcn@layer1.0.conv1").run()
    assert not at.exception and "1×1 conv" in at.error[0].value
    assert at.text_area(key="swap_text").value == "conv:dcn@layer1.0.conv1"


@pytest.mark.slow
def test_swap_page_folds_repvgg_with_identical_outputs():
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="conv:repvgg@layer1.*.conv1")
    next(b for b in at.button if b.label.startswith("Fold")).click().run()
    assert not at.exception and not at.error
    from explorer.reparam import fold_report

    report = fold_report(ModelSpec("resnet18", swaps=("conv:repvgg@layer1.*.conv1",)))
    assert metric(at, "Max |output difference|") == f"{report['max_abs_diff']:.2e}"
    # fp32 rounding accumulates through the network: within 1e-5 of the output's own scale
    assert report["max_abs_diff"] <= 1e-5 * max(1.0, report["output_scale"])


@pytest.mark.slow
@pytest.mark.parametrize("view", ["Grad-CAM++ and attributions", "Receptive fields", "Deformable offsets",
                                  "Spatial transformer"])
def test_inside_views_render(view):
    at = open_page("pages/3_Inside.py", arch="resnet18", view=view, swaps="conv:dcn@layer4.*.conv2")
    assert not at.error, [e.value for e in at.error]
    if view == "Receptive fields":
        assert metric(at, "Jump / stride (pixels)") == "32 × 32"


@pytest.mark.slow
def test_inside_swin_windows_match_the_worked_example():
    at = open_page("pages/3_Inside.py", arch="swin_t", view="Swin shifted windows")
    assert any("15 of 64 windows carry a mask" in m.value for m in at.markdown)
    at.selectbox(key="inside_swin_stage").select(2).run()
    assert any("7 of 16 windows carry a mask" in m.value for m in at.markdown)


@pytest.mark.slow
def test_compare_page_table_comes_from_the_url():
    at = open_page("pages/6_Compare.py", set='["resnet18", "mobilenet_v2"]')
    table = at.dataframe[0].value
    assert list(table["label"]) == ["resnet18", "mobilenet_v2"]
    assert table["gmacs"].iloc[0] == pytest.approx(1.814, abs=1e-3)


def test_losses_page_curves_respond_to_their_sliders():
    at = open_page("pages/8_Losses.py")
    assert not at.error
    assert any("19.09" in m.value for m in at.markdown)  # b for α = 0.5, γ = 1.5
    at.slider(key="loss_gamma").set_value(1.0).run()
    assert any("6.39" in m.value for m in at.markdown)  # e^2 − 1


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["lenet5", "gcn", "bert_base", "cyclemlp_b1", "detr_r50", "unetr"])
def test_model_page_renders_native_models_of_every_input_kind(arch):
    """Flat models (one level of layers), token ids, graphs, volumes and detector outputs."""
    at = open_page("pages/2_Model.py", arch=arch)
    assert not at.error, [e.value for e in at.error]
    expected = analyse(ModelSpec(arch), with_layers=False)
    assert metric(at, "MACs") == format_count(expected["macs"])


@pytest.mark.parametrize("arch,kind", [("bert_base", "tokens"), ("unetr", "volume"), ("gcn", "graph")])
def test_inside_page_explains_that_its_views_need_images(arch, kind):
    at = open_page("pages/3_Inside.py", arch=arch)
    assert not at.error and f"takes {kind} input" in at.info[0].value


@pytest.mark.slow
def test_compare_page_keeps_each_accuracy_metric_on_its_own_axis():
    """ImageNet top-1 and COCO box AP are not one scale: each metric is its own choice of y axis."""
    at = open_page("pages/6_Compare.py", set='["resnet18", "spinenet49"]')
    assert not at.error
    choices = at.selectbox(key="compare_y").options
    assert choices[:2] == ["published COCO val2017 box AP (%)", "published ImageNet top-1 (%)"]
    assert list(at.dataframe[0].value["published_metric"]) == ["ImageNet top-1 (%)", "COCO val2017 box AP (%)"]
    at.selectbox(key="compare_y").set_value("published ImageNet top-1 (%)").run()
    # the metric name is escaped markdown (a typed one comes from a link): read it without the backslashes
    assert any("No published ImageNet top-1 (%) for: spinenet49" in c.value.replace("\\", "") for c in at.caption)


def test_inside_receptive_field_of_a_chosen_unit_on_the_image():
    at = open_page("pages/3_Inside.py", arch="resnet18", view="Receptive fields")
    assert at.slider(key="inside_rf_unit_y").value == 3  # the centre of layer4's 7×7 grid
    at.selectbox(key="inside_rf_layer").select("layer1.0.conv2").run()  # 56×56 units, 27-pixel field
    assert at.slider(key="inside_rf_unit_y").max == 55
    assert not any("reaches past the image" in c.value for c in at.caption)  # the centre unit's box fits
    at.slider(key="inside_rf_unit_y").set_value(0).run()
    at.slider(key="inside_rf_unit_x").set_value(0).run()
    assert any("reaches past the image" in c.value for c in at.caption)  # the corner unit's does not


@pytest.mark.slow
@pytest.mark.parametrize(("arch", "text"), [("asff", "Mean weight over the grid"), ("m2det320", "8 TUMs × 256")])
def test_inside_fusion_weights_view(arch, text):
    at = open_page("pages/3_Inside.py", arch=arch, view="Fusion weights")
    assert not at.error, [e.value for e in at.error]
    assert any(text in c.value for c in at.caption)


@pytest.mark.slow
def test_inside_cam_on_a_segmentation_model_names_class_maps():
    at = open_page("pages/3_Inside.py", arch="hrnet_w18_v2", view="Grad-CAM++ and attributions", input="3,128,256")
    assert not at.error, [e.value for e in at.error]
    assert any("class map" in c.value for c in at.caption)


@pytest.mark.slow
def test_swap_page_lists_transformer_swaps_as_changed_places():
    at = open_page("pages/4_Swap.py", arch="swin_t", swaps="tfm:window(size=8)@all", input="3,256,256")
    assert not at.error, [e.value for e in at.error]
    assert any("12 places changed" in m.value for m in at.markdown)  # 2 + 2 + 6 + 2 window attentions
    swapped = analyse(ModelSpec("swin_t", swaps=("tfm:window(size=8)@all",), input_size=(3, 256, 256)),
                      with_layers=False)
    assert metric(at, "MACs, swapped") == format_count(swapped["macs"])


@pytest.mark.slow
def test_compare_page_sweep_times_each_size_when_latency_is_on():
    at = open_page("pages/6_Compare.py", set='["resnet18"]')
    at.multiselect(key="compare_sides").set_value([64, 96]).run()
    at.button(key="compare_sweep").click().run()
    assert any("Measure latency" in c.value for c in at.caption)  # cost only, and how to add latency
    charts = len(at.get("plotly_chart"))
    at.toggle(key="compare_latency").set_value(True).run()
    at.button(key="compare_sweep").click().run()
    assert not at.exception and not at.error
    assert len(at.get("plotly_chart")) == charts + 1  # latency against input side, beside MACs
    assert not any("Turn on “Measure latency”" in c.value for c in at.caption)


@pytest.mark.slow
def test_compare_page_offers_the_most_common_metric_first():
    at = open_page("pages/6_Compare.py", set='["resnet18", "mobilenet_v2", "spinenet49"]')
    assert at.selectbox(key="compare_y").options[:2] == ["published ImageNet top-1 (%)", "published COCO val2017 box AP (%)"]


@pytest.mark.slow
def test_inside_channel_connectivity_of_an_igcv2_swap():
    at = open_page("pages/3_Inside.py", arch="resnet18", view="Channel connectivity",
                   swaps="conv:igcv2@layer1.0.conv1")
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="inside_connectivity_block").value == "layer1.0.conv1"  # the innermost block
    assert metric(at, "Paths per (output, input) channel pair") == "1"
    assert any("exactly one path" in s.value for s in at.success)
    at.selectbox(key="inside_connectivity_block").select("layer1.0").run()  # with the shortcut: 64 or 65 paths
    assert metric(at, "Paths per (output, input) channel pair") == "64–65"


def test_inside_channel_connectivity_says_what_to_try_without_grouped_convs():
    at = open_page("pages/3_Inside.py", arch="resnet18", view="Channel connectivity")
    assert not at.error
    assert any("conv:igcv2@layer1.0.conv1" in i.value for i in at.info)


@pytest.mark.slow
def test_swap_page_shows_inside_views_beside_the_original():
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="conv:igcv2@layer1.0.conv1")
    assert at.radio(key="swap_inside_view").value == "nothing"
    at.radio(key="swap_inside_view").set_value("Receptive field across depth").run()
    assert not at.error, [e.value for e in at.error]
    at.radio(key="swap_inside_view").set_value("Channel connectivity").run()
    assert metric(at, "Paths per (output, input) channel pair") == "1"
    at.radio(key="swap_inside_view").set_value("Grad-CAM++ and friends").run()
    assert not at.error and not at.exception, [e.value for e in at.error]
    captions = [c.value for c in at.caption]
    assert any("Both maps explain the base model's top class" in c for c in captions)
    # the same class in both maps: the base's top class
    classes = [c for c in captions if c.startswith("gradcam++ for ")]
    assert len(classes) == 2 and classes[0].split(" at ")[0] == classes[1].split(" at ")[0]


@pytest.mark.slow
def test_receptive_fields_default_to_a_layer_and_handle_a_one_unit_grid():
    at = open_page("pages/3_Inside.py", arch="m2det320", view="Receptive fields")
    assert not at.error, [e.value for e in at.error]
    chosen = at.selectbox(key="inside_rf_layer").value
    assert "permute" not in chosen and "reshape" not in chosen  # a module, not a layout op of the head
    at = open_page("pages/3_Inside.py", arch="resnet50", view="Receptive fields", input="3,10,10")
    assert not at.error, [e.value for e in at.error]  # layer4 is 1×1 here: no slider to build
    assert any("output grid is 1×1: one unit" in c.value for c in at.caption)


@pytest.mark.slow
def test_links_with_a_wrong_model_view_or_input_say_so():
    at = open_page("pages/3_Inside.py", arch="nosuch", view="nosuch")
    warnings = " ".join(w.value for w in at.warning)
    assert "unknown architecture 'nosuch'" in warnings and "Showing resnet50 instead" in warnings
    assert "view named 'nosuch'" in warnings
    at = open_page("pages/4_Swap.py", arch="nosuch")
    assert any("Showing resnet50 instead" in w.value for w in at.warning)
    at = open_page("pages/3_Inside.py", arch="resnet50", input="3,224")
    assert any("give its input as C,H,W (3 numbers" in shown_text(e.value) for e in at.error)
    assert not any("These views work on image models" in i.value for i in at.info)


def test_swap_errors_name_the_options_and_keep_names_as_typed():
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="conv:igcv2(foo=3)@layer1.0.conv1")
    message = " ".join(shown_text(e.value) for e in at.error)  # messages are escaped markdown: as a reader sees them
    assert "igcv2 has no option 'foo' (its options: chain)" in message
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="conv:igc@layer1.0.bn1")
    assert any("no convolution is named like layer1.0.bn1" in shown_text(e.value) for e in at.error)


def test_latency_page_takes_its_models_from_the_link():
    at = open_page("pages/5_Latency.py", arch="resnet18,nosuch,lenet5")
    assert at.multiselect(key="lat_models").value == ["resnet18", "lenet5"]
    assert any("nosuch" in w.value for w in at.warning)


@pytest.mark.slow
def test_model_page_switches_models_from_its_own_controls():
    at = open_page("pages/2_Model.py", arch="resnet18")
    at.selectbox(key="model_arch").select("vgg16").run()
    assert metric(at, "Parameters") == "138.36 M"  # VGG-16, torchvision's num_params 138,357,544
    assert at.query_params["arch"] in ("vgg16", ["vgg16"])
    at.text_input(key="model_arch_text").input("timm:resnet18").run()
    assert metric(at, "Parameters") == "11.69 M"
    at.selectbox(key="model_arch").select("resnet50").run()  # the catalog pick replaces the typed name
    assert at.text_input(key="model_arch_text").value == ""
    assert metric(at, "Parameters") == "25.56 M"


def test_catalog_names_the_metric_of_each_published_accuracy():
    at = open_page("pages/1_Catalog.py")
    at.text_input(key="catalog_query").input("transformer").run()
    table = at.dataframe[0].value
    row = table[table["id"] == "transformer_base"].iloc[0]
    assert row["published accuracy"] == 27.3 and row["metric"] == "WMT 2014 En-De BLEU"


@pytest.mark.slow
def test_compare_set_takes_only_buildable_entries_and_removes_one_at_a_time():
    at = open_page("pages/6_Compare.py", set='["resnet18"]')
    at.text_input(key="compare_extra").input('{"arch": "resnet18", "swaps": ["conv:dcn@nowhere"]}').run()
    at.button(key="compare_add_button").click().run()
    assert any("Not added" in e.value and "fits nowhere" in e.value for e in at.error)
    assert at.session_state.compare_set == ["resnet18"]
    at.text_input(key="compare_extra").input("nosuch").run()
    at.button(key="compare_add_button").click().run()
    assert any("unknown architecture 'nosuch'" in e.value for e in at.error)
    at.multiselect(key="compare_add").select("mobilenet_v2").run()
    at.text_input(key="compare_extra").input('{"arch": "resnet18", "swaps": ["preset:eca"]}').run()
    at.button(key="compare_add_button").click().run()
    assert len(at.session_state.compare_set) == 3
    assert at.multiselect(key="compare_add").value == [] and at.text_input(key="compare_extra").value == ""
    at.selectbox(key="compare_remove").select("mobilenet_v2").run()
    assert "mobilenet_v2" not in at.session_state.compare_set and len(at.session_state.compare_set) == 2
    assert not at.exception


@pytest.mark.slow
def test_the_vovnet_comparison_opens_on_memory_access_against_macs():
    at = open_page("pages/6_Compare.py")
    at.selectbox(key="compare_ready").select("vovnet_vs_densenet").run()
    assert not at.error and not at.exception, [e.value for e in at.error]
    assert at.selectbox(key="compare_x").value == "GMACs"
    assert at.selectbox(key="compare_y").value == "memory access (MB)"


@pytest.mark.slow
def test_swap_page_shows_swin_windows_of_both_models():
    at = open_page("pages/4_Swap.py", arch="swin_t", swaps="tfm:window(size=8)@all", input="3,256,256")
    at.radio(key="swap_inside_view").set_value("Swin windows").run()
    assert not at.error and not at.exception, [e.value for e in at.error]
    texts = [m.value for m in at.markdown if m.value.startswith("Stage 1, block 1")]
    # 256 / 4 = 64×64 tokens: 7×7 windows (padded to 70) for the base, 8×8 windows after the swap
    assert len(texts) == 2 and "window 7×7" in texts[0] and "window 8×8" in texts[1]


@pytest.mark.slow
def test_model_page_lets_a_bad_link_be_corrected():
    at = open_page("pages/2_Model.py", arch="resnet18", input="3,abc")
    assert at.error
    at.text_input(key="model_input").input("3,224,224").run()
    assert not at.error and at.text_input(key="model_input").value == "3,224,224"
    assert metric(at, "Parameters") == "11.69 M"


@pytest.mark.slow
def test_latency_page_times_a_model_on_every_worker_side_by_side(monkeypatch):
    """A lab's workers compared on one chart: the same model on each worker, each row naming where it ran,
    one roofline per worker's device (here two local CPU workers)."""
    import streamlit as st

    import explorer.jobs as jobs

    service = jobs.JobService(workers=2, time_limit_s=300)
    monkeypatch.setattr(jobs, "_SERVICE", service)
    st.cache_resource.clear()
    try:
        at = open_page("pages/5_Latency.py", input="3,64,64")
        at.text_input(key="lat_batch_text").input("1")
        at.checkbox(key="lat_per_layer").uncheck()
        at.checkbox(key="lat_everywhere").check()
        at.button[0].click().run()
        assert not at.exception and not at.error, [e.value for e in at.error]
        sweep = at.dataframe[0].value
        assert sorted(sweep["worker"]) == ["worker-0", "worker-1"]
        assert len(set(sweep["model"])) == 2 and all(m.startswith("resnet18 · ") for m in sweep["model"])
        assert (sweep["median_ms"] > 0).all()
        assert len(at.get("plotly_chart")) == 2 + 2  # latency and throughput, then one roofline per worker
    finally:
        st.cache_resource.clear()
        service.shutdown()
