"""Opens a page of the app under streamlit.testing.v1.AppTest, as the sidebar would."""
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


def open_page(page=None, timeout=120, **query):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=timeout)
    at.run()
    if page:
        for key, value in query.items():
            at.query_params[key] = value
        at.switch_page(page)
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def metric(at, label):
    return next(m.value for m in at.metric if m.label == label)
