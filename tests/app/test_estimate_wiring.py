"""The Compare page's timings go through their estimate: a long quick latency or timed sweep waits for its
Run click, and nothing is timed before it (on a CPU, where ViT-L/16's timings are long)."""
import pytest
import torch

from explorer.estimates import estimate
from explorer.spec import ModelSpec
from tests.page_support import open_page

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU these timings are short: they run at once")

VIT_L_16_MACS = 61_555_000_000  # torchvision: 61.555 GMACs


@pytest.mark.slow  # about 30 s on 2 busy cores: ViT-L/16 traced on the meta device at each size, several times
def test_compare_waits_for_a_run_click_before_a_long_timing_and_a_long_timed_sweep():
    at = open_page("pages/6_Compare.py", set='["vit_l_16"]')
    at.toggle(key="compare_latency").set_value(True).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    warning = next(w.value for w in at.warning if "is slow" in w.value)
    # quick settings on a CPU: 3 warm-up + 3 timed runs at batch 1 (a run of 4 s is over the 1.5 s budget)
    assert warning.startswith("**The timing on a CPU is slow:** about 6 image forwards (6 runs × 1 image: batch 1)"
                              " × 61.55 GMACs = 369.33 GMACs"), warning
    shown = estimate("quick_bench", {"spec": ModelSpec("vit_l_16").to_dict()})
    assert shown.macs == pytest.approx(6 * VIT_L_16_MACS, rel=1e-4)
    assert [b.label for b in at.button if b.label.startswith("Run the timing")] == [
        f"Run the timing (about {round(shown.seconds)} s)"]
    assert "latency (ms, batch 1)" not in at.selectbox(key="compare_x").options  # nothing timed yet

    at.multiselect(key="compare_sides").set_value([192, 224]).run()
    at.button(key="compare_sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    sweep = next(w.value for w in at.warning if w.value.startswith("**The timed sweep"))
    # a quick timing at each side: 6 forwards of 45.0 GMACs at 192, 6 of 61.55 at 224
    assert sweep.startswith("**The timed sweep on a CPU is slow:** about 12 image forwards (a quick batch-1 timing at "
                            "each side 192, 224) × 53.25 GMACs = 638.95 GMACs"), sweep
    both = estimate("latency_sweep", {"spec": ModelSpec("vit_l_16").to_dict(), "sides": [192, 224]})
    assert [b.label for b in at.button if b.label.startswith("Run the timed sweep")] == [
        f"Run the timed sweep (about {round(both.seconds)} s)"]
    assert not at.session_state["compare_sweep_rows"] if "compare_sweep_rows" in at.session_state else True

    at.toggle(key="compare_latency").set_value(False).run()  # cost only: no job, no estimate, at once
    at.button(key="compare_sweep").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    rows = at.session_state["compare_sweep_rows"]
    assert [r["side"] for r in rows] == [192, 224] and rows[1]["gmacs"] == pytest.approx(VIT_L_16_MACS / 1e9, rel=1e-4)
    assert all(r.get("latency_ms") is None for r in rows)


def test_a_timed_sweep_estimates_only_the_sides_the_model_takes():
    """vit_b_16 cannot take 100×100 (not a multiple of its 16-pixel patches): the sweep's row says so and times
    nothing there, so the estimate counts the 224 side alone rather than refusing the whole sweep."""
    spec = ModelSpec("vit_b_16").to_dict()
    both = estimate("latency_sweep", {"spec": spec, "sides": [100, 224]})
    alone = estimate("latency_sweep", {"spec": spec, "sides": [224]})
    assert both.forwards == alone.forwards == 6 and both.seconds == pytest.approx(alone.seconds)
    assert "at each side 224" in both.text()
    none = estimate("latency_sweep", {"spec": spec, "sides": [100]})
    assert none.forwards == 0 and "takes none of these sides" in none.text()


@pytest.mark.slow  # about 20 s on 2 busy cores: both jobs run in a worker process
def test_the_channel_paths_show_their_estimate_before_each_job():
    at = open_page("pages/3_Inside.py", arch="resnet18", view="Channel connectivity", swaps="conv:igcv2@layer1.0.conv1")
    assert not at.exception and not at.error, [e.value for e in at.error]
    captions = [c.value for c in at.caption if c.value.startswith("Estimate: ")]
    # two jobs, the search for blocks and the chosen block's paths: a build and the convs' patterns each
    spec = ModelSpec("resnet18", swaps=("conv:igcv2@layer1.0.conv1",)).to_dict()
    blocks = estimate("connectivity", {"spec": spec, "module": None})
    assert blocks.forwards == 0 and not blocks.long
    assert captions == [f"Estimate: {blocks.text()}."] * 2, captions
    assert "channel patterns on one-hot channels (no image forward)" in captions[0], captions[0]
