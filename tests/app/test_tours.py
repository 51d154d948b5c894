"""Every tour step renders under AppTest: its text, its live figure and its question."""
import pytest
from streamlit.testing.v1 import AppTest

from explorer.catalog import load_catalog
from explorer.tours import FIGURE_KINDS, load_tours
from tests.conftest import ROOT

pytestmark = pytest.mark.usefixtures("clear_streamlit_caches")
TOURS = load_tours()


def test_every_roster_family_has_a_tour_with_valid_steps():
    families = {f.id for f in load_catalog().families}
    assert {t["family"] for t in TOURS} == families
    for tour in TOURS:
        assert 3 <= len(tour["steps"]) <= 5, tour["family"]
        for step in tour["steps"]:
            assert step["text"] and step["question"].endswith("?")
            assert step["figure"]["kind"] in FIGURE_KINDS


@pytest.mark.slow
@pytest.mark.parametrize("family", [t["family"] for t in TOURS])
def test_every_step_of_the_tour_renders(family):
    tour = next(t for t in TOURS if t["family"] == family)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params["tour"] = family
    at.switch_page("pages/7_Tours.py")
    at.run()
    for index, step in enumerate(tour["steps"]):
        assert not at.exception, (family, index, [e.value for e in at.exception])
        assert not at.error, (family, index, [e.value for e in at.error])
        assert any(step["title"] in s.value for s in at.subheader), (family, index)
        assert any(step["question"] in i.value for i in at.info)
        if index < len(tour["steps"]) - 1:
            next_button = next(b for b in at.button if b.label == "Next →")
            next_button.click().run()
    assert at.query_params["step"] in (str(len(tour["steps"])), [str(len(tour["steps"]))])


def test_presenter_view_keeps_the_step_in_the_url():
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=180)
    at.run()
    at.query_params["tour"] = "swin"
    at.query_params["step"] = "2"
    at.query_params["present"] = "1"
    at.switch_page("pages/7_Tours.py")
    at.run()
    assert not at.exception and at.toggle(key="tour_present").value is True
    assert "Step 2 of" in at.caption[0].value
