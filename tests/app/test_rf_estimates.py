"""The receptive-field trace, the Swin window masks and the spatial-transformer demo show their estimate before
they run, like every other job: a short one in a caption, a long one in a warning with a Run button, and nothing
traced before the click. None of them is long on the roster with a CPU (the trace runs no real forward: resnet18
about 1 s, vit_h_14 about 14 s), so the long case is forced by lowering explorer.estimates.LONG_JOB_S.

resnet18 by hand: 11,689,512 parameters (torchvision) and 68 rows in its cost report (see
tests/backend/test_estimates.py): 0.5 s + 0.02 s per million parameters + 3 ms per row = 0.94 s, "about 1 s"."""
import pytest

from explorer.estimates import BUILD_S, BUILD_S_PER_PARAM, RF_TRACE_S_PER_LAYER, estimate
from explorer.spec import ModelSpec
from explorer.views.registry import view_by_id
from tests.page_support import metric, open_page

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")

RESNET18_PARAMS, RESNET18_ROWS = 11_689_512, 68
RESNET18_RF_S = BUILD_S + BUILD_S_PER_PARAM * RESNET18_PARAMS + RF_TRACE_S_PER_LAYER * RESNET18_ROWS  # 0.94 s
RF_TEXT = ("about 1 s to build the model and trace its layers' shapes on the meta device, no real forward unless "
           "torch.fx cannot trace it (68 layers)")


@pytest.fixture
def long_jobs(monkeypatch):
    """Every job over 0.5 s counts as long: its estimate in a warning, and a Run button before it starts."""
    monkeypatch.setattr("explorer.estimates.LONG_JOB_S", 0.5)


def _no_errors(at):
    assert not at.exception and not at.error, [e.value for e in [*at.exception, *at.error]]


def test_the_receptive_field_estimate_is_the_hand_count():
    shown = estimate("receptive_field", {"spec": ModelSpec("resnet18").to_dict()})
    assert shown.seconds == pytest.approx(RESNET18_RF_S) and round(RESNET18_RF_S, 2) == 0.94
    assert shown.text() == RF_TEXT


def test_a_long_receptive_field_trace_on_the_inside_page_waits_for_its_run_click(long_jobs):
    at = open_page("pages/3_Inside.py", arch="resnet18", view=view_by_id("rf").label)
    _no_errors(at)
    assert [w.value for w in at.warning] == [
        "**The receptive\\-field trace on a CPU is slow:** "
        f"{RF_TEXT}. It runs in the worker with its progress shown "
        "and a Cancel button; other sessions' jobs wait behind it."]
    assert [b.label for b in at.button if b.label.startswith("Run ")] == ["Run the receptive-field trace (about 1 s)"]
    assert not at.metric and not at.get("plotly_chart")  # nothing traced before the click
    assert "inside_rf_layer" not in at.session_state


def test_the_swap_page_asks_once_for_both_models_traces(long_jobs):
    at = open_page("pages/4_Swap.py", arch="resnet18", swaps="act:relu6@all")
    _no_errors(at)
    side = [w.value for w in at.warning if w.value.startswith("**The receptive\\-field trace of both models")]
    # relu6 for relu keeps resnet18's 68 rows: twice the single trace
    assert side == ["**The receptive\\-field trace of both models on a CPU is slow:** about 2 s to build the model and "
                    "trace its layers' shapes on the meta device, no real forward unless torch.fx cannot trace it "
                    "(2 models: 68 layers). It runs in the worker with its progress shown and a Cancel button; other "
                    "sessions' jobs wait behind it."], side
    assert [b.key for b in at.button if b.label == "Run the receptive-field trace of both models (about 2 s)"] == [
        "swap_side_rf_estimate_run"]
    assert not any("Theoretical receptive field of the deepest spatial layer" in c.value for c in at.caption)
    at.radio(key="swap_inside_view").set_value(view_by_id("rf").swap_label).run()  # the view: its own button
    _no_errors(at)
    assert [b.key for b in at.button if b.label.startswith("Run the receptive-field trace of both")] == [
        "swap_side_rf_estimate_run", "swap_rf_rf_estimate_run"]
    assert not at.get("plotly_chart")


def test_long_swin_masks_wait_for_their_run_click(long_jobs):
    at = open_page("pages/3_Inside.py", arch="swin_t", view=view_by_id("swin").label)
    _no_errors(at)
    shown = estimate("swin_masks", {"spec": ModelSpec("swin_t").to_dict(), "stage": 1, "block": 1})
    assert shown.text() == "about 1 s to build the model and read its windows (no forward)"  # 1.07 s
    assert [w.value for w in at.warning if "is slow" in w.value] == [
        f"**The window masks on a CPU is slow:** {shown.text()}. It runs in the worker with its progress shown and "
        "a Cancel button; other sessions' jobs wait behind it."]
    assert [b.label for b in at.button if b.label.startswith("Run ")] == ["Run the window masks (about 1 s)"]
    assert not any("windows carry a mask" in m.value for m in at.markdown)


@pytest.mark.slow  # about 20 s on 2 busy cores: the traces run in a worker process
def test_short_traces_show_their_estimate_and_a_click_runs_a_long_one(monkeypatch):
    at = open_page("pages/3_Inside.py", arch="resnet18", view=view_by_id("rf").label, layer="layer2.0.conv1")
    _no_errors(at)
    assert f"Estimate: {RF_TEXT}." in [c.value for c in at.caption]  # short: at once, its estimate said
    assert metric(at, "Receptive field (pixels)") == "51 × 51"  # 7, 11, 43 at jump 4, then + 2·4 (see test_inside_layer_link)

    at = open_page("pages/9_Graph.py", arch="resnet18")  # the node panel's toggle: short, so it runs at once
    at.toggle(key="graph_rf").set_value(True).run()
    _no_errors(at)
    assert f"Estimate: {RF_TEXT}." in [c.value for c in at.caption]

    at = open_page("pages/3_Inside.py", arch="resnet18", view=view_by_id("stn").label)
    _no_errors(at)
    assert ("Estimate: under 1 s to build a small spatial transformer and resample one 160 × 160 image."
            in [c.value for c in at.caption])
    assert at.get("plotly_chart")  # the grid was drawn without a click

    monkeypatch.setattr("explorer.estimates.LONG_JOB_S", 0.5)
    at = open_page("pages/3_Inside.py", arch="resnet34", view=view_by_id("rf").label, layer="layer2.0.conv1")
    assert not at.metric
    next(b for b in at.button if b.label.startswith("Run the receptive-field trace")).click().run()
    _no_errors(at)
    assert metric(at, "Receptive field (pixels)") == "67 × 67"  # layer1's three blocks: 11 + 6·2·4 = 59, then + 2·4


CONNECTIVITY = dict(arch="resnet18", view=view_by_id("connectivity").label, swaps="conv:igcv2@layer1.0.conv1",
                    layer="layer1.0")


def test_a_linked_block_waits_with_the_search_for_blocks_behind_one_estimate(long_jobs):
    """The link's block is checked against the blocks the search finds: the same job, estimate and Run button the
    view shows, once (before, the check ran the search at once, without an estimate)."""
    at = open_page("pages/3_Inside.py", **CONNECTIVITY)
    _no_errors(at)
    spec = ModelSpec("resnet18", swaps=("conv:igcv2@layer1.0.conv1",)).to_dict()
    blocks = estimate("connectivity", {"spec": spec, "module": None})
    assert [w.value for w in at.warning] == [
        f"**The search for blocks on a CPU is slow:** {blocks.text()}. It runs in the worker with its progress shown "
        "and a Cancel button; other sessions' jobs wait behind it."]
    assert [b.key for b in at.button if b.label.startswith("Run ")] == ["inside_connectivity_blocks_estimate_run"]
    assert "inside_connectivity_block" not in at.session_state  # nothing searched yet; the link's block waits


@pytest.mark.slow  # about 15 s on 2 busy cores: the search and the block's paths run in a worker process
def test_after_the_click_the_linked_block_is_chosen_and_its_estimate_shown_once(long_jobs):
    at = open_page("pages/3_Inside.py", **CONNECTIVITY)
    at.button(key="inside_connectivity_blocks_estimate_run").click().run()
    _no_errors(at)
    assert at.selectbox(key="inside_connectivity_block").value == "layer1.0"  # the link's, not the innermost
    searches = [w.value for w in at.warning if w.value.startswith("**The search for blocks")]
    assert len(searches) == 1, searches  # the link check's copy was cleared: the view shows it
    assert [b.label for b in at.button if b.label.startswith("Run ")] == ["Run the channel-path trace (about 1 s)"]
