import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def clear_streamlit_caches():
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    yield
    st.cache_data.clear()
    st.cache_resource.clear()


def block_network(monkeypatch):
    """No way out to the network for the rest of the test: torch.hub's downloads and any new socket connection
    fail as they do on a machine without one."""
    import urllib.error

    import torch

    def no_network(*args, **kwargs):
        raise urllib.error.URLError(socket.gaierror(-2, "Name or service not known"))

    def no_connection(*args, **kwargs):
        raise OSError(-2, "Name or service not known")

    monkeypatch.setattr(torch.hub, "urlopen", no_network)
    monkeypatch.setattr(socket, "create_connection", no_connection)


def wait_until(condition, timeout=60.0):
    """Polls `condition` until it holds; fails the test after `timeout` seconds."""
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def app_server():
    """The real app, served by streamlit on a free loopback port."""
    port = _free_port()
    log = open(ROOT / "artifacts" / "streamlit-test.log", "w") if (ROOT / "artifacts").is_dir() else subprocess.DEVNULL
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port), "--server.address", "127.0.0.1"],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url + "/_stcore/health", timeout=2)
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("streamlit did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="session")
def browser():
    if not os.path.exists(CHROMIUM):
        if os.environ.get("CI"):
            pytest.fail("Debian's chromium is not installed; the test script installs it")
        pytest.skip("chromium not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--disable-quic"],
        )
        yield b
        b.close()


def pytest_collection_modifyitems(config, items):
    """Markers from what a test uses, so none is forgotten: a test that drives the browser is `browser` and
    `slow`; one that starts a real app server or a Ray instance is `slow`. A test marked `gpu` is skipped without CUDA. The fast inner loop is
    `pytest -m "not slow"`."""
    no_gpu = None
    for item in items:
        if item.get_closest_marker("gpu"):
            if no_gpu is None:
                import torch

                no_gpu = pytest.mark.skip(reason="needs a CUDA GPU") if not torch.cuda.is_available() else False
            if no_gpu:
                item.add_marker(no_gpu)
        fixtures = set(getattr(item, "fixturenames", ()))
        if "browser" in fixtures:
            item.add_marker(pytest.mark.browser)
        if fixtures & {"browser", "app_server", "ray_address"}:
            item.add_marker(pytest.mark.slow)
