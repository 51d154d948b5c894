"""A cancelled job stays cancelled: the next rerun of the page (any widget touched) does not queue the same
request again; the person's "Run again" (or the page's own button, `asked=True`) does."""
import pytest
from streamlit.testing.v1 import AppTest

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")


def _page(asked: bool = False):
    import streamlit as st

    from ui.jobs import JobCancelled, run_job

    st.toggle("touch", key="touch")  # a widget to rerun the page with
    try:
        result = run_job("hold", {"seconds": 0.01, "megabytes": 1}, "Holding the worker", asked=asked)
        st.markdown(f"held {result['held_s']} s")
    except JobCancelled as exc:
        st.warning(str(exc))


def _cancelled_before(at: AppTest) -> AppTest:
    from explorer.jobs import job_key

    at.session_state["cancelled_jobs"] = {job_key("hold", {"seconds": 0.01, "megabytes": 1})}
    return at


@pytest.mark.slow
def test_a_cancelled_request_waits_for_run_again_and_then_runs():
    at = _cancelled_before(AppTest.from_function(_page, default_timeout=120))
    at.run()
    assert [w.value for w in at.warning] == ["Holding the worker was cancelled; “Run again” runs it"]
    assert not at.markdown  # nothing was run
    at.toggle(key="touch").set_value(True).run()  # a rerun for another reason: still cancelled
    assert at.warning and not at.markdown
    again = next(b for b in at.button if b.label == "Run again: Holding the worker")
    again.click().run()
    assert [m.value for m in at.markdown] == ["held 0.01 s"] and not at.warning
    assert at.session_state["cancelled_jobs"] == set()


@pytest.mark.slow
def test_the_pages_own_button_asks_again():
    at = _cancelled_before(AppTest.from_function(_page, kwargs={"asked": True}, default_timeout=120))
    at.run()
    assert [m.value for m in at.markdown] == ["held 0.01 s"] and not at.warning
