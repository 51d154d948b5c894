"""benchmarks/load.py: its websocket client speaks Streamlit's protocol to a real server of this app, and it
refuses to drive anything but a loopback server."""
import subprocess
import sys

import pytest

from benchmarks.load import ROOT, LoadSettings, check_loopback_url, run_load
from explorer.errors import ExplorerError


@pytest.mark.slow
def test_two_sessions_open_the_model_page_once_each():
    summary = run_load(LoadSettings(url=None, sessions=2, rounds=1, minutes=1, pages=("model",), page_timeout_s=45))
    model = summary["kinds"]["model"]
    assert summary["started_server"] and summary["sessions"] == 2
    assert (model["opened"], model["ok"], model["failed"]) == (2, 2, 0)
    assert len(model["times_s"]) == 2 and all(t > 0 for t in model["times_s"])
    assert model["p50_s"] > 0 and model["p95_s"] >= model["p50_s"]
    assert summary["failures"] == {} and summary["sessions_cut_off"] == 0
    assert all(summary["kinds"][k]["opened"] == 0 for k in ("inside", "latency", "latency_run"))
    assert summary["jobs_done"] == 0  # a Model page is not a job
    # The server imports torch and builds two models: its resident memory is well above 100 MiB.
    assert summary["peak_rss_bytes"] > 100 * 2**20


@pytest.mark.parametrize("url", [
    "http://example.com:8501", "http://10.0.0.5:8501", "http://127.0.0.1.nip.io:8501", "http://[::2]:8501",
    "ftp://127.0.0.1:8501", "http://user:pw@127.0.0.1:8501", "http://127.0.0.1:8501/?x=1", "http://127.0.0.1:99999",
    "http://0.0.0.0:8501",
])
def test_non_loopback_urls_are_refused(url):
    with pytest.raises(ExplorerError):
        check_loopback_url(url)


@pytest.mark.parametrize("url, base", [
    ("http://127.0.0.1:8501/", "http://127.0.0.1:8501"),
    ("http://LOCALHOST:8765", "http://localhost:8765"),
    ("http://[::1]:8501/app/", "http://[::1]:8501/app"),
])
def test_loopback_urls_are_accepted(url, base):
    assert check_loopback_url(url) == base


def test_the_cli_refuses_a_remote_url_in_one_line_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "benchmarks", "load", "--url", "http://example.com:8501",
                           "--sessions", "30"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "example.com" in lines[0] and "127.0.0.1" in lines[0]


def test_queue_positions_waits_and_errors_are_read_from_the_elements():
    from streamlit.proto.Alert_pb2 import Alert
    from streamlit.proto.Element_pb2 import Element

    from benchmarks.load import RunResult, Session

    def alert(body, fmt):
        element = Element()
        element.alert.body, element.alert.format = body, fmt
        return element

    caption = Element()
    caption.markdown.body = "Runs queue for the device one at a time, so sessions never disturb each other's timings."
    result, errors = RunResult(), []
    for element in [caption, alert("resnet18: waiting for the cpu, position 3 in the queue", Alert.WARNING),
                    alert("resnet18: waiting for the cpu, position 1 in the queue", Alert.WARNING),
                    alert("Done: waited 4.25 s in the queue, ran 2.0 s", Alert.INFO),
                    alert(r"unknown architecture 'x\_y' \(see the Catalog\)", Alert.ERROR)]:
        Session._read_element(element, result, errors)
    assert result.queue_position == 3 and result.waited_s == 4.25
    assert errors == ["error: unknown architecture 'x_y' (see the Catalog)"]
    # the app's own wording while a job waits
    result = RunResult()
    Session._read_element(alert("gradcam++ on resnet18: waiting for the compute worker, 7 jobs ahead in the queue "
                                "(waited 12 s). Sessions take turns.", Alert.INFO), result, errors)
    assert result.queue_position == 7 and result.waited_s == 12.0
