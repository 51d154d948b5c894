"""Inside shows something true: real photographs, weights from the caches (a plain sentence offline), no class
label from random weights, overlays at the image's own aspect ratio, estimates and progress for long methods,
and any library model from a link."""
import base64
import io
import json
import re

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image
from streamlit.testing.v1 import AppTest

from explorer.catalog import resolve
from explorer.errors import ExplorerError
from explorer.images import (DEFAULT_SAMPLE, MAX_IMAGE_BYTES, PHOTOGRAPHS, heat_overlay, load_image, sample_images,
                             with_colour_bar)
from explorer.views.cam import compute_cam, forward_passes, method_passes
from tests.conftest import ROOT, block_network
from tests.markdown_support import shown_text

CAM_VIEW = "Grad-CAM++ and attributions"


# --- the sample photographs ----------------------------------------------------------------------------

def test_the_default_sample_is_the_cat_photograph():
    samples = sample_images()
    assert DEFAULT_SAMPLE == "cat" and next(iter(samples)) == "cat"  # the first option is the default
    image, notes = load_image(samples["cat"])
    assert image.size == (451, 300) and image.mode == "RGB" and not notes  # skimage.data.chelsea: 300 × 451 × 3
    # A photograph, not a drawn pattern: tens of thousands of distinct colours (shapes.png has a handful).
    assert len(np.unique(np.asarray(image).reshape(-1, 3), axis=0)) > 20_000
    drawn, _ = load_image(samples["shapes"])
    assert len(np.unique(np.asarray(drawn).reshape(-1, 3), axis=0)) < 50


@pytest.mark.parametrize(("name", "size"), [("cat", (451, 300)), ("coffee", (600, 400)), ("astronaut", (512, 512)),
                                            ("rocket", (640, 427))])
def test_every_photograph_ships_small_and_credited(name, size):
    path = sample_images()[name]
    assert path.stat().st_size < 300_000 < MAX_IMAGE_BYTES
    assert load_image(path)[0].size == size
    credits = (ROOT / "assets" / "README.md").read_text()
    row = next(line for line in credits.splitlines() if line.startswith(f"| `{path.name}`"))
    assert ("CC0" in row or "Public domain" in row) and f"{size[0]} × {size[1]}" in row
    assert set(PHOTOGRAPHS) <= set(sample_images())


# --- overlays at the image's own aspect ratio, with a colour bar -----------------------------------------

@pytest.mark.parametrize(("size", "expected"), [((400, 300), (400, 300)), ((1600, 1200), (640, 480)),
                                                ((300, 451), (300, 451))])
def test_a_heat_map_is_stretched_back_to_the_image_aspect(size, expected):
    image = Image.new("RGB", size, (128, 128, 128))
    heat = np.zeros((224, 224), dtype=np.float32)
    heat[:, 112:] = 1.0  # the right half hot, at the model's square input
    overlay = heat_overlay(image, heat)
    assert overlay.size == expected  # 4:3 stays 4:3 (it was squashed to 224 × 224 before)
    pixels = np.asarray(overlay).astype(int)
    left, right = pixels[:, : expected[0] // 4], pixels[:, -expected[0] // 4:]
    assert right[..., 0].mean() > left[..., 0].mean() + 40  # red where the map is hot
    assert left[..., 2].mean() > right[..., 2].mean() + 40  # blue where it is cold


def test_the_written_overlay_carries_a_colour_bar():
    overlay = heat_overlay(Image.new("RGB", (400, 300), "white"), np.zeros((224, 224), dtype=np.float32))
    framed = np.asarray(with_colour_bar(overlay)).astype(int)
    assert framed.shape[0] == 300 and framed.shape[1] > 400
    bar = framed[:, 400 + 8 + 2]  # a column inside the bar
    assert bar[2, 0] > 100 and bar[2, 2] < 60  # top: red (1 = most)
    assert bar[-3, 2] > 100 and bar[-3, 0] < 60  # bottom: blue (0 = least)


# --- long methods: the estimate and real progress --------------------------------------------------------

def test_forward_counts_of_each_method():
    assert forward_passes("scorecam", (224, 224), channels=2048) == 3 + 1 + 2048  # resnet50's layer4
    assert forward_passes("gradcam++", (224, 224)) == 3 + 1 + 2  # one forward, one backward (as two)
    assert method_passes("integrated_gradients", (224, 224)) == (24, 24)
    assert method_passes("occlusion", (224, 224)) == (1 + 27 * 27, 0)  # 16-pixel squares every 8 pixels


class _TinyCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))

    def forward(self, x):
        return self.head(self.features(x))


@pytest.mark.slow
def test_score_cam_reports_every_batch_and_removes_its_hook():
    torch.manual_seed(0)
    model, messages = _TinyCNN().eval(), []
    result = compute_cam(model, torch.randn(1, 3, 32, 32), "scorecam", layer="features", progress=messages.append,
                         scorecam_batch=4)
    # one forward for the CAM's own scores, then the 16 channels in batches of 4
    assert messages == [f"{n} of about 17 image forwards" for n in (1, 5, 9, 13, 17)]
    assert result["layer_channels"] == 16 and result["heat"].shape == (32, 32)
    assert not model._forward_pre_hooks


# --- weights: the caches first, a plain sentence offline -------------------------------------------------

@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """torch.hub's and the Hugging Face Hub's caches in a fresh folder, and no way out to the network."""
    from huggingface_hub import constants

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    block_network(monkeypatch)
    return tmp_path


@pytest.mark.parametrize(("arch", "host"), [("resnet18", "download.pytorch.org"), ("timm:resnet10t", "huggingface.co")])
def test_fetch_without_a_network_is_one_plain_sentence(empty_caches, capsys, arch, host):
    from explorer.cli import main

    assert main(["weights", "fetch", arch]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: could not download the pretrained weights of {arch}: ")
    assert f"{host} cannot be reached (this machine seems to have no network connection)" in err
    assert f"python -m explorer weights fetch {arch}" in err
    assert "URLError" not in err and "urlopen" not in err and "Errno" not in err


def test_allowing_the_download_offline_refuses_the_weights_in_plain_words(empty_caches):
    from explorer.job_kinds import WeightsRefused, model_with_weights

    with pytest.raises(WeightsRefused) as refused:
        model_with_weights({"arch": "resnet18"}, {"kind": "pretrained", "allow_download": True})
    assert str(refused.value).startswith("could not download the pretrained weights of resnet18: download.pytorch.org "
                                         "cannot be reached")
    assert "URLError" not in str(refused.value)


def test_pretrained_weights_come_from_the_cache_and_nothing_else(empty_caches, capsys):
    from explorer.cli import main
    from explorer.models import build_model
    from explorer.spec import ModelSpec
    from explorer.weights import load_pretrained, pretrained_source

    variant = resolve("resnet18")
    with pytest.raises(ExplorerError, match="not in the cache on this machine; allow the download"):
        load_pretrained(build_model(ModelSpec("resnet18")), variant)  # the URL opener would fail the download
    # A file in torch.hub's folder under torchvision's name is what loads, offline.
    torch.manual_seed(1)
    saved = build_model(ModelSpec("resnet18")).state_dict()
    path = pretrained_source(variant).cache_path
    assert path == empty_caches / "torch" / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(saved, path)
    torch.manual_seed(2)
    model = build_model(ModelSpec("resnet18"))
    report = load_pretrained(model, variant)
    assert report["loaded"] == len(saved) == 122 and not report["missing"]
    assert torch.equal(model.conv1.weight, saved["conv1.weight"])
    assert main(["weights", "list", "resnet18", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["models"] == [{"arch": "resnet18", "weights": "ResNet18_Weights.IMAGENET1K_V1", "cached": True,
                                 "file": str(path), "bytes": path.stat().st_size,
                                 "from": "https://download.pytorch.org/models/resnet18-f37072fd.pth"}]
    assert main(["weights", "list", "--json"]) == 0
    cached = json.loads(capsys.readouterr().out)["cached"]
    assert [row["models"] for row in cached] == [["resnet18 (IMAGENET1K_V1)"]]


def _kept_checkpoints_app():
    import streamlit as st

    from ui.inside import keep_checkpoint

    for arch, name in [("a", "a1"), ("b", "b1"), ("a", "a2"), ("c", "c1"), ("d", "d1")]:
        keep_checkpoint(arch, name, name.encode())
    st.write({arch: kept["name"] for arch, kept in st.session_state.inside_checkpoints.items()})


@pytest.mark.slow
def test_an_uploaded_checkpoint_is_kept_one_per_model():
    at = AppTest.from_function(_kept_checkpoints_app).run()
    assert not at.exception
    assert at.session_state.inside_checkpoints == {"a": {"name": "a2", "data": b"a2"}, "c": {"name": "c1", "data": b"c1"},
                                                   "d": {"name": "d1", "data": b"d1"}}


# --- the Inside page -----------------------------------------------------------------------------------

def open_inside(**query):
    import streamlit as st

    st.cache_data.clear()
    st.cache_resource.clear()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.run()
    for key, value in query.items():
        at.query_params[key] = value
    at.switch_page("pages/3_Inside.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _texts(at) -> list[str]:
    texts = [shown_text(e.value) for kind in ("markdown", "caption", "info", "warning", "error", "success") for e in at.get(kind)]
    for chart in at.get("plotly_chart"):
        layout = json.loads(chart.proto.spec)["layout"]
        texts.append(json.dumps(layout.get("title", "")))
    return texts


def _overlay_size(chart) -> tuple[int, int]:
    source = json.loads(chart.proto.spec)["data"][0]["source"]
    return Image.open(io.BytesIO(base64.b64decode(source.split(",", 1)[1]))).size


@pytest.mark.slow
def test_random_weights_print_no_label_and_the_overlay_keeps_the_photo_aspect():
    import torchvision

    at = open_inside(arch="resnet18", view=CAM_VIEW)
    assert not at.error, [e.value for e in at.error]
    assert any(i.value.startswith("**Weights are random.**") for i in at.info)
    caption = next(c.value for c in at.caption if c.value.startswith("gradcam++ for class "))
    index = int(caption.split("gradcam++ for class ")[1].split(" ")[0])
    assert "(random weights: meaningless)" in caption
    label = torchvision.models.ResNet18_Weights.DEFAULT.meta["categories"][index]
    texts = _texts(at)
    assert not any(label in text for text in texts), label  # e.g. "photocopier (96.8 %)" is never printed
    assert not any("Top classes" in text or "%)" in text for text in texts)
    (overlay,) = at.get("plotly_chart")
    width, height = _overlay_size(overlay)
    assert (width, height) == (451, 300)  # the cat's own 451 × 300, not the model's 224 × 224
    assert json.loads(overlay.proto.spec)["data"][1]["marker"]["showscale"] is True  # the colour bar


@pytest.mark.slow
def test_score_cam_shows_its_estimate_and_waits_for_a_click():
    at = open_inside(arch="resnet50", view=CAM_VIEW)
    at.selectbox(key="inside_cam_method").select("scorecam").run()
    assert not at.exception and not at.error
    assert at.number_input(key="inside_cam_scorecam_batch").value == 8  # the CPU default
    warning = next(w.value for w in at.warning if "scorecam on a CPU is slow" in w.value)
    # 3 + 1 + 2048 forwards of resnet50's 4,089,184,256 MACs = 8.391 TMACs
    assert "about 2,052 image forwards" in warning and "× 4.09 GMACs = 8.39 TMACs: about " in warning, warning
    # the time shown is those MACs at the speed shown (measured by the page's first CAM job, or the CPU default)
    value, unit, rate = re.search(r"TMACs: about ([\d.]+) (s|min|h) at (?:about |the )([\d.,]+) GMAC/s",
                                  warning).groups()
    seconds = 2052 * 4_089_184_256 / (float(rate.replace(",", "")) * 1e9)
    shown = float(value) * {"s": 1, "min": 60, "h": 3600}[unit]
    assert abs(shown - seconds) <= 0.01 * seconds + {"s": 1, "min": 30, "h": 180}[unit]
    assert any(b.label.startswith("Run scorecam (about ") for b in at.button)
    assert not at.get("plotly_chart")  # nothing started before the click


def test_a_library_model_from_the_link_is_opened():
    at = open_inside(arch="timm:resnet10t", view="Swin shifted windows")  # a view that computes nothing here
    assert at.text_input(key="inside_arch_text").value == "timm:resnet10t"
    assert at.query_params["arch"] in ("timm:resnet10t", ["timm:resnet10t"])
    assert not any("Showing resnet50 instead" in w.value for w in at.warning)
    assert any("Pick a Swin model" in i.value for i in at.info)
    at = open_inside(arch="timm:no_such_net", view="Swin shifted windows")
    warning = " ".join(w.value for w in at.warning)
    assert "timm has no model named" in warning and "Showing resnet50 instead" in warning
    assert at.text_input(key="inside_arch_text").value == "" and at.selectbox(key="inside_arch").value == "resnet50"


@pytest.mark.slow
def test_pretrained_weights_that_are_not_cached_are_refused_in_plain_words():
    from explorer.weights import pretrained_source

    if pretrained_source(resolve("resnet18")).cached_file() is not None:
        pytest.skip("this machine has resnet18's weights cached")  # the refusal needs an empty cache (no download here)
    at = open_inside(arch="resnet18", view=CAM_VIEW)
    at.radio(key="inside_cam_weights").set_value("pretrained").run()
    assert not at.exception
    assert any(shown_text(c.value).startswith("Not cached on this machine (ResNet18_Weights.IMAGENET1K_V1). Before a "
                                              "class, run python -m explorer weights fetch resnet18") for c in at.caption)
    (error,) = at.error
    assert shown_text(error.value).startswith("Nothing is drawn: the pretrained weights could not be loaded: the "
                                              "pretrained weights of resnet18 (ResNet18_Weights.IMAGENET1K_V1) are not "
                                              "in the cache on this machine; allow the download, or fetch them")
    assert "Error" not in error.value
    assert not at.get("plotly_chart") and not any(i.value.startswith("**Weights are random.**") for i in at.info)
