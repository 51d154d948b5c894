"""Every long job shows its estimate before it starts: the Latency page's timing, with its unit, and a Run click
before a long one is queued."""
import re

import pytest

from explorer.estimates import BUILD_S, BUILD_S_PER_PARAM, META_TRACE_S
from tests.page_support import open_page

RESNET50_MACS, RESNET50_PARAMS = 4_089_184_256, 25_557_032


def _latency(models, batches):
    at = open_page("pages/5_Latency.py")
    at.multiselect(key="lat_models").set_value(models)
    at.text_input(key="lat_batch_text").input(batches)
    at.button[0].click().run()  # the form's Run
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_a_long_timing_shows_its_estimate_and_waits_for_the_run_click():
    at = _latency(["resnet50"], "1, 64")
    warning = next(w.value for w in at.warning if "is slow" in w.value)
    assert warning.startswith("**The timing on a CPU is slow:** about 398 image forwards"), warning
    # On a CPU the page asks for 5 timed runs and 0.3 s at each batch size, at about 15 GMAC/s: batch 1 runs
    # 3 warm-up + 5 timed; batch 64 (17 s a run) is held to 3 + 3 by the 10 s budget; the per-layer profile runs
    # 6 more at batch 1: 8 + 6 × 64 + 6 = 398 forwards of 4.09 GMACs = 1.63 TMACs.
    assert "× 4.09 GMACs = 1.63 TMACs: about 2 min at about 15 GMAC/s, a typical CPU figure" in warning, warning
    seconds = 398 * RESNET50_MACS / 15e9 + BUILD_S + BUILD_S_PER_PARAM * RESNET50_PARAMS + 3 * META_TRACE_S
    minutes = int(re.search(r"about (\d+) min at", warning).group(1))
    assert minutes == round(seconds / 60) == 2
    run = [b for b in at.button if b.label.startswith("Run the timing (about ")]
    assert [b.label for b in run] == ["Run the timing (about 2 min)"]
    assert not at.dataframe and not at.get("plotly_chart")  # nothing was timed before the click
    assert at.session_state["latency_pending"]  # the request waits for it


@pytest.mark.slow
def test_a_short_timing_shows_its_estimate_runs_at_once_and_measures_the_rate():
    # batch 3, which no other test times: a result another test left in this process's job cache would come back
    # without running, and measure no rate
    at = _latency(["resnet18"], "3")
    estimate = next(c.value for c in at.caption if c.value.startswith("Estimate: "))
    assert re.search(r"about \d+ image forwards \(.+\) × 1\.81 GMACs = [\d.]+ GMACs: about \d+ s at about 15 GMAC/s",
                     estimate), estimate
    assert not any(b.label.startswith("Run the timing") for b in at.button)
    assert list(at.dataframe[0].value["batch"]) == [3]  # timed without a click
    rate = at.session_state["job_gmacs_per_s"]["cpu"]  # this session's own measured forward rate
    assert 0.1 < rate < 10_000
    at.text_input(key="lat_batch_text").input("2")
    at.button[0].click().run()
    shown = [c.value for c in at.caption] + [w.value for w in at.warning]  # short or long on a busy machine
    again = next(text for text in shown if "GMAC/s this device" in text)
    assert f"at the {rate:,.3g} GMAC/s this device ran at in this session" in again, again
