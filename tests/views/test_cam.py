"""Images, weights and CAMs: bad inputs get messages, hooks are always removed, checkpoints load safely."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from explorer.catalog import resolve
from explorer.errors import ExplorerError
from explorer.images import load_image, sample_images, to_input
from explorer.models import build_model
from explorer.spec import ModelSpec
from explorer.views.cam import compute_attribution, compute_cam, default_target_layer, hook_count, token_grid
from explorer.weights import load_pretrained, load_state, read_checkpoint


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_sample_images_ship_with_the_project():
    assert {"shapes", "stripes", "checker"} <= set(sample_images())


@pytest.mark.parametrize(
    "data,message",
    [
        (b"definitely not an image", "not an image"),
        (png_bytes(Image.new("RGB", (1, 1))), "at least 16 pixels"),
    ],
)
def test_unusable_images_are_refused_with_a_reason(data, message):
    with pytest.raises(ExplorerError, match=message):
        load_image(data)


def test_huge_images_are_refused_before_decoding():
    # A 60-megapixel PNG of one colour compresses to a few kB; the size check reads only the header.
    big = png_bytes(Image.new("L", (10000, 6000)))
    with pytest.raises(ExplorerError, match="60.0 megapixels"):
        load_image(big)


def test_16_bit_and_rgba_images_are_converted_with_a_note():
    sixteen = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
    image, notes = load_image(png_bytes(sixteen))
    assert image.mode == "RGB" and "16-bit" in notes[0]
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))
    image, notes = load_image(png_bytes(rgba))
    assert image.getpixel((0, 0)) == (255, 255, 255)  # fully transparent -> white
    assert "transparency" in notes[0]


def test_to_input_normalises_to_the_model_size():
    image, _ = load_image(sample_images()["checker"])
    x = to_input(image, (3, 64, 96))
    assert x.shape == (1, 3, 64, 96)
    for channel, (mean, std) in enumerate(zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))):
        assert float(x[0, channel].max()) == pytest.approx((1 - mean) / std, rel=1e-4)  # white squares
        assert float(x[0, channel].min()) == pytest.approx(-mean / std, rel=1e-4)  # black squares


def _input(size=(3, 96, 96)):
    image, _ = load_image(sample_images()["shapes"])
    return to_input(image, size)


@pytest.mark.slow
def test_gradcam_plus_plus_on_a_cnn_and_hooks_removed():
    model = build_model(ModelSpec("resnet18", input_size=(3, 96, 96)), "cpu")
    before = hook_count(model)
    result = compute_cam(model, _input(), "gradcam++")
    assert result["layer"] == "layer4"
    assert result["heat"].shape == (96, 96) and 0 <= result["heat"].min() and result["heat"].max() <= 1
    assert hook_count(model) == before == 0


@pytest.mark.slow
def test_hooks_are_removed_when_the_cam_fails():
    model = build_model(ModelSpec("resnet18", input_size=(3, 96, 96)), "cpu")
    with pytest.raises(ExplorerError):
        compute_cam(model, _input(), "gradcam++", class_index=5000)
    with pytest.raises(Exception):
        compute_cam(model, _input(), "gradcam++", layer="layer4", class_index=-7)
    assert hook_count(model) == 0


@pytest.mark.parametrize("arch,layer,layout", [
    ("timm:deit_tiny_patch16_224", "blocks.11.norm1", "tokens"),
    ("swin_t", "features.7.1.norm1", "nhwc"),
])
@pytest.mark.slow
def test_transformer_targets_and_reshapes_are_derived_from_the_model(arch, layer, layout):
    model = build_model(ModelSpec(arch), "cpu")
    x = _input((3, 224, 224))
    assert default_target_layer(model, x) == layer
    result = compute_cam(model, x, "eigencam")
    assert result["layer_layout"] == layout and result["heat"].shape == (224, 224)
    assert hook_count(model) == 0


def test_token_grid_finds_the_class_token_prefix():
    assert token_grid(197, (224, 224)) == (1, 14, 14)  # ViT-B/16: CLS + 14×14
    assert token_grid(198, (224, 224)) == (2, 14, 14)  # DeiT distilled: CLS + distillation token
    assert token_grid(196, (224, 224)) == (0, 14, 14)
    assert token_grid(1 + 12 * 16, (192, 256)) == (1, 12, 16)


@pytest.mark.slow
def test_zero_initialised_vit_head_is_explained_not_shown_as_a_blank():
    model = build_model(ModelSpec("vit_b_16", input_size=(3, 64, 64)), "cpu")
    result = compute_cam(model, _input((3, 64, 64)), "gradcam")
    assert float(result["heat"].max()) == 0.0 and "zero" in result["note"]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["integrated_gradients", "saliency", "occlusion"])
def test_captum_attributions(method):
    model = build_model(ModelSpec("resnet18", input_size=(3, 64, 64)), "cpu")
    result = compute_attribution(model, _input((3, 64, 64)), method)
    assert result["heat"].shape == (64, 64) and result["heat"].max() == pytest.approx(1.0)
    assert hook_count(model) == 0


def test_checkpoints_load_weights_only_and_report_key_problems(tmp_path):
    model = build_model(ModelSpec("resnet18"), "cpu")
    state = {f"module.{k}": v.clone() + 1 for k, v in model.state_dict().items()}  # DataParallel-style names
    state.pop("module.fc.bias")
    state["module.fc.weight"] = torch.zeros(10, 512)  # a 10-class head: shape mismatch
    state["module.extra.weight"] = torch.zeros(3)
    buffer = io.BytesIO()
    torch.save({"state_dict": state}, buffer)
    fresh = build_model(ModelSpec("resnet18"), "cpu")
    report = load_state(fresh, read_checkpoint(buffer.getvalue(), "ckpt.pth"), source="upload")
    assert report["missing"] == ["fc.bias", "fc.weight"]
    assert report["unexpected"] == ["extra.weight"]
    assert report["mismatched"] == [{"key": "fc.weight", "checkpoint": [10, 512], "model": [1000, 512]}]
    assert torch.equal(fresh.conv1.weight, model.conv1.weight + 1)


def test_a_checkpoint_of_the_base_model_loads_into_a_swapped_one():
    base = build_model(ModelSpec("resnet18"), "cpu")
    state = {k: v.clone() + 1 for k, v in base.state_dict().items()}
    swapped = build_model(ModelSpec("resnet18", swaps=("attn:se@all",)), "cpu")  # bn2 → Sequential(bn2, SE)
    report = load_state(swapped, state, source="base")
    assert report["unexpected"] == [] and report["mismatched"] == []
    assert report["loaded"] == len(state)  # every base tensor, the wrapped BatchNorms included
    assert all(".1.fc" in k for k in report["missing"]) and len(report["missing"]) == 8 * 4  # 8 SEs × 2 convs × w, b
    assert torch.equal(swapped.layer1[0].bn2[0].weight, base.layer1[0].bn2.weight + 1)


def test_a_checkpoint_loads_through_a_wrapped_branch_even_where_names_collide():
    base = build_model(ModelSpec("mobilenet_v2"), "cpu")
    state = {k: v.clone() + 1 for k, v in base.state_dict().items() if v.is_floating_point()}
    swapped = build_model(ModelSpec("mobilenet_v2", swaps=("attn:se@all",)), "cpu")  # conv → Sequential(conv, SE)
    report = load_state(swapped, state, source="base")
    assert report["loaded"] == len(state) and report["unexpected"] == [] and report["mismatched"] == []
    # features.1.conv.0.1 was the BN after the depthwise conv; under the wrapper that name is the project conv
    assert torch.equal(swapped.features[1].conv[0][1].weight, base.features[1].conv[1].weight + 1)
    assert torch.equal(swapped.features[1].conv[0][0][1].weight, base.features[1].conv[0][1].weight + 1)


def test_safetensors_and_refusals():
    from safetensors.torch import save

    model = build_model(ModelSpec("resnet18"), "cpu")
    data = save({k: v.contiguous() for k, v in model.state_dict().items()})
    assert set(read_checkpoint(data, "w.safetensors")) == set(model.state_dict())
    with pytest.raises(ExplorerError, match="must be .safetensors"):
        read_checkpoint(data, "w.pkl")
    with pytest.raises(ExplorerError, match="weights-only"):
        read_checkpoint(b"garbage", "w.pt")


def test_pickled_objects_are_refused_by_weights_only():
    class Evil:
        def __reduce__(self):
            return (print, ("this must never run",))

    buffer = io.BytesIO()
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": Evil()}, buffer)
    with pytest.raises(ExplorerError, match="weights-only"):
        read_checkpoint(buffer.getvalue(), "evil.pth")


def test_pretrained_weights_come_from_the_cache_without_network(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    variant = resolve("resnet18")
    model = build_model(ModelSpec("resnet18"), "cpu")
    with pytest.raises(ExplorerError, match="not in the cache"):
        load_pretrained(model, variant, allow_download=False)
    # Put a checkpoint where torchvision's cache keeps it: it loads with no download.
    import torchvision

    url = torchvision.models.ResNet18_Weights.DEFAULT.url
    (tmp_path / "checkpoints").mkdir()
    reference = {k: torch.full_like(v, 0.5) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    torch.save(reference, tmp_path / "checkpoints" / url.rsplit("/", 1)[-1])
    report = load_pretrained(model, variant, allow_download=False)
    assert report["missing"] == [] and report["unexpected"] == []
    assert float(model.conv1.weight.flatten()[0]) == 0.5


@pytest.mark.slow
def test_dense_outputs_get_cams_of_a_whole_class_map():
    """Segmentation / keypoint models: a class's score is its map summed over positions. The CAM of
    HRNetV2's 19-class map equals the CAM of a classifier whose logits are those sums."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from explorer.views.cam import _ClassTotals

    model = build_model(ModelSpec("hrnet_w18_v2", input_size=(3, 64, 128)), "cpu")
    x = _input((3, 64, 128))
    result = compute_cam(model, x, "gradcam", class_index=3)
    assert result["output"] == "dense" and result["layer"] == "neck"  # the 270-channel concat, not the class maps
    assert result["heat"].shape == (64, 128)
    assert hook_count(model) == 0
    with GradCAM(model=_ClassTotals(model), target_layers=[model.neck]) as cam:
        same = cam(input_tensor=x, targets=[ClassifierOutputTarget(3)])[0]
    np.testing.assert_allclose(result["heat"], same, atol=1e-5)
    attribution = compute_attribution(model, x, "saliency")
    assert attribution["heat"].shape == (64, 128)


@pytest.mark.slow
def test_detectors_are_told_why_they_get_no_cam():
    model = build_model(ModelSpec("asff", input_size=(3, 128, 128)), "cpu")
    with pytest.raises(ExplorerError, match="this model returns dict"):
        compute_cam(model, _input((3, 128, 128)), "gradcam++")
    assert hook_count(model) == 0
