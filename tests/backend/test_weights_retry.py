"""Weights that could not be loaded are not a result to keep: the job service hands the failure to whoever waits,
caches nothing, and the same request loads the weights once they are in the cache (or the network is back)."""

import numpy as np
import pytest
import torch
import torchvision

from explorer.catalog import resolve
from explorer.jobs import JobService
from explorer.weights import pretrained_source
from tests.conftest import block_network

ARCH = "squeezenet1_1"  # torchvision's smallest classifier with pretrained weights: 1.2 M parameters


@pytest.fixture
def offline_empty_cache(tmp_path, monkeypatch):
    """torch.hub's cache in a fresh folder (TORCH_HOME) and no way out to the network."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    block_network(monkeypatch)
    return tmp_path


@pytest.mark.slow
def test_a_failed_download_is_not_cached_and_a_retry_loads_the_filled_cache(offline_empty_cache):
    service = JobService(workers=0)  # the jobs run in this process, through the same cache as the web server's
    payload = {"spec": {"arch": ARCH}, "weights": {"kind": "pretrained", "allow_download": True},
               "image": np.full((48, 64, 3), 128, np.uint8), "method": "gradcam"}
    try:
        first = service.run("s1", "cam", payload)
        assert first["weights_error"].startswith(f"could not download the pretrained weights of {ARCH}: "
                                                 "download.pytorch.org cannot be reached")
        # what `python -m explorer weights fetch` would leave: the state dict where torchvision's cache looks
        cache_path = pretrained_source(resolve(ARCH)).cache_path
        assert cache_path.is_relative_to(offline_empty_cache)
        state = torchvision.models.squeezenet1_1().state_dict()
        cache_path.parent.mkdir(parents=True, exist_ok=True)  # the failed download made the folder
        torch.save(state, cache_path)

        job = service.submit("s1", "cam", payload)  # the same request, asked again: it runs again
        retried = service.run("s1", "cam", payload)
        assert not job.cached and service.computations == 2
        assert "weights_error" not in retried
        report = retried["weights_report"]
        assert report["loaded"] == len(state) and report["unexpected"] == [] and report["mismatched"] == []
        assert retried["heat"].shape == (224, 224)  # the map at the model's input, the image resized to it
        # a result that did load is cached as before: a third ask computes nothing
        assert service.submit("s2", "cam", payload).cached and service.computations == 2
    finally:
        service.shutdown()
