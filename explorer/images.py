"""Input images for the views: validation with clear messages, and preprocessing to a model's input."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from explorer.errors import ExplorerError

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"
MAX_MEGAPIXELS = 40
MIN_SIDE = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def sample_images() -> dict[str, Path]:
    return {p.stem: p for p in sorted(ASSETS.glob("*.png"))}


def load_image(source: str | Path | bytes) -> tuple[Image.Image, list[str]]:
    """An RGB image and notes on what was converted; ExplorerError for what cannot be used."""
    notes: list[str] = []
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise ExplorerError(f"cannot read the image file: {exc.strerror or exc}") from None
    try:
        image = Image.open(io.BytesIO(data))
        width, height = image.size  # known before decoding the pixels
    except (UnidentifiedImageError, OSError, ValueError):
        raise ExplorerError("this file is not an image PIL can read (PNG, JPEG, WebP, BMP, TIFF, …)") from None
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise ExplorerError(f"the image is {width}×{height} ({width * height / 1e6:.1f} megapixels); the limit is "
                            f"{MAX_MEGAPIXELS} megapixels: downscale it first")
    if min(width, height) < MIN_SIDE:
        raise ExplorerError(f"the image is {width}×{height}; it needs at least {MIN_SIDE} pixels on each side")
    try:
        image.load()
    except (OSError, Image.DecompressionBombError) as exc:
        raise ExplorerError(f"the image could not be decoded: {exc}") from None
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        span = array.max() - array.min() or 1.0
        image = Image.fromarray(((array - array.min()) / span * 255).astype(np.uint8))
        notes.append("16-bit image scaled to 8 bits per channel")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
        notes.append("transparency flattened onto white")
    if image.mode != "RGB":
        if image.mode not in ("RGBA",):
            notes.append(f"{image.mode} image converted to RGB")
        image = image.convert("RGB")
    return image, notes


def to_input(image: Image.Image, input_size: tuple[int, ...], mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """Resize to the model's (C, H, W) and normalise: a 1×C×H×W float tensor."""
    channels, height, width = input_size[-3:]
    resized = image.resize((width, height), Image.BILINEAR)
    array = np.asarray(resized, dtype=np.float32) / 255.0
    if channels == 1:
        array = array.mean(axis=2, keepdims=True)
        mean, std = (sum(mean) / 3,), (sum(std) / 3,)
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    tensor = (tensor - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    return tensor.unsqueeze(0)


def heat_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5) -> Image.Image:
    """The heat map (H×W in [0, 1]) in a blue→red colour ramp over the image resized to it."""
    h, w = heat.shape
    base = np.asarray(image.convert("RGB").resize((w, h), Image.BILINEAR), dtype=np.float32) / 255.0
    v = np.clip(heat, 0, 1)[..., None]
    colour = np.concatenate([np.clip(1.5 - np.abs(4 * v - 3), 0, 1), np.clip(1.5 - np.abs(4 * v - 2), 0, 1),
                             np.clip(1.5 - np.abs(4 * v - 1), 0, 1)], axis=2)  # jet-like
    blended = (1 - alpha) * base + alpha * colour
    return Image.fromarray((blended * 255).astype(np.uint8))
