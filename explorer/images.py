"""Input images for the views: validation with clear messages, and preprocessing to a model's input."""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from explorer.errors import ExplorerError
from explorer.models import one_line

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "images"
MAX_MEGAPIXELS = 40
MAX_IMAGE_BYTES = 20 * 10**6  # the file itself; a 40-megapixel JPEG is well under it
# The decoders tried, and nothing else (EPS, for one, would run Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP", "BMP", "TIFF", "GIF")
# PIL warns from 89 megapixels on; everything over MAX_MEGAPIXELS is refused below with a message of
# our own, so PIL's warning would only be a second line on stderr.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
MIN_SIDE = 16
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


# Photographs first (assets/README.md credits them), the cat the default; then the drawn test patterns.
PHOTOGRAPHS = ("cat", "coffee", "astronaut", "rocket")
DEFAULT_SAMPLE = "cat"
SAMPLE_CREDITS = {
    "cat": "Chelsea the cat, photographed by Stefan van der Walt (CC0), from scikit-image's sample data",
    "coffee": "A cup of coffee, photographed by Rachel Michetti (CC0), from scikit-image's sample data",
    "astronaut": "Astronaut Eileen Collins, NASA (public domain), from scikit-image's sample data",
    "rocket": "DSCOVR's launch on a Falcon 9, SpaceX (public domain), from scikit-image's sample data",
}


def sample_images() -> dict[str, Path]:
    """The shipped sample images by name, the default first: photographs, then drawn patterns."""
    files = {p.stem: p for p in sorted([*ASSETS.glob("*.jpg"), *ASSETS.glob("*.png")])}
    order = [name for name in PHOTOGRAPHS if name in files] + sorted(name for name in files if name not in PHOTOGRAPHS)
    return {name: files[name] for name in order}


def default_sample() -> Path:
    return sample_images()[DEFAULT_SAMPLE]


def read_image_file(path: str | Path) -> bytes:
    """An image file's bytes: only a regular file, only up to MAX_IMAGE_BYTES, checked before reading."""
    shown = repr(str(path)[:200])
    try:
        _check_regular_file(os.stat(path), shown)
        # O_NONBLOCK: a FIFO swapped in after the stat must not block the open; fstat checks what was opened.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as handle:
            _check_regular_file(os.fstat(handle.fileno()), shown)
            data = handle.read(MAX_IMAGE_BYTES + 1)  # a file that grew, or a /proc file whose stat says 0
    except OSError as exc:
        raise ExplorerError(f"cannot read the image file {shown}: {exc.strerror or exc}") from None
    if len(data) > MAX_IMAGE_BYTES:
        raise ExplorerError(f"the image file {shown} is over the {MAX_IMAGE_BYTES // 10**6} MB limit")
    return data


def _check_regular_file(info: os.stat_result, shown: str) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ExplorerError(f"the image {shown} is not a regular file (a directory, device or pipe)")
    if info.st_size > MAX_IMAGE_BYTES:
        raise ExplorerError(f"the image file {shown} is {info.st_size / 1e6:,.1f} MB; the limit is "
                            f"{MAX_IMAGE_BYTES // 10**6} MB")


def load_image(source: str | Path | bytes) -> tuple[Image.Image, list[str]]:
    """An RGB image and notes on what was converted; ExplorerError for what cannot be used.

    `source` is a path (the CLI) or an upload's bytes (the pages): the file's size and the image's
    declared pixel count are checked before its pixels are decoded."""
    notes: list[str] = []
    if isinstance(source, bytes):
        if len(source) > MAX_IMAGE_BYTES:
            raise ExplorerError(f"the image file is {len(source) / 1e6:,.1f} MB; the limit is "
                                f"{MAX_IMAGE_BYTES // 10**6} MB")
        data = source
    else:
        data = read_image_file(source)
    limit = f"the limit is {MAX_MEGAPIXELS} megapixels: downscale it first"
    try:
        image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = image.size  # known before decoding the pixels
    except Image.DecompressionBombError as exc:  # over twice PIL's own threshold: refused while opening
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        size = f"{int(declared.group(1)) / 1e6:,.1f} megapixels" if declared else "too many pixels"
        raise ExplorerError(f"the image declares {size}; {limit}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ExplorerError("this file is not an image in a format accepted here "
                            "(PNG, JPEG, WebP, BMP, TIFF or GIF)") from None
    if width * height > MAX_MEGAPIXELS * 1e6:
        raise ExplorerError(f"the image is {width}×{height} ({width * height / 1e6:.1f} megapixels); {limit}")
    if min(width, height) < MIN_SIDE:
        raise ExplorerError(f"the image is {width}×{height}; it needs at least {MIN_SIDE} pixels on each side")
    try:
        image.load()
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise ExplorerError(f"the image could not be decoded: {one_line(exc)}") from None
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


OVERLAY_MAX_SIDE = 640  # pixels on the overlay's longer side: enough for a page column or a slide


def overlay_size(image_size: tuple[int, int], max_side: int = OVERLAY_MAX_SIDE) -> tuple[int, int]:
    """(width, height) of an overlay of an image of `image_size` (width, height): the image's own aspect
    ratio, the longer side at most `max_side` (a small image is not enlarged)."""
    width, height = image_size
    scale = min(1.0, max_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def heat_colours(values: np.ndarray) -> np.ndarray:
    """The overlay's blue → cyan → yellow → red ramp (jet-like) for values in [0, 1]: RGB in [0, 1]."""
    v = np.clip(np.asarray(values, dtype=np.float32), 0, 1)[..., None]
    return np.concatenate([np.clip(1.5 - np.abs(4 * v - 3), 0, 1), np.clip(1.5 - np.abs(4 * v - 2), 0, 1),
                           np.clip(1.5 - np.abs(4 * v - 1), 0, 1)], axis=-1)


def heat_colourscale(steps: int = 11) -> list[list]:
    """The same ramp as a Plotly colourscale, for a colour bar that matches the overlay."""
    colours = (heat_colours(np.linspace(0, 1, steps)) * 255).round().astype(int)
    return [[i / (steps - 1), f"rgb({r},{g},{b})"] for i, (r, g, b) in enumerate(colours)]


def heat_overlay(image: Image.Image, heat: np.ndarray, alpha: float = 0.5,
                 max_side: int = OVERLAY_MAX_SIDE) -> Image.Image:
    """The heat map (H×W in [0, 1], at the model's input size) stretched back over the image at the image's
    own aspect ratio: the model saw the image resized to its input, so its map is resized the other way."""
    width, height = overlay_size(image.size, max_side)
    base = np.asarray(image.convert("RGB").resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
    resized = Image.fromarray(np.asarray(heat, dtype=np.float32)).resize((width, height), Image.BILINEAR)
    blended = (1 - alpha) * base + alpha * heat_colours(np.asarray(resized))
    return Image.fromarray((np.clip(blended, 0, 1) * 255).astype(np.uint8))


def with_colour_bar(overlay: Image.Image, low: str = "0 (least)", high: str = "1 (most)") -> Image.Image:
    """The overlay with the ramp as a vertical colour bar on its right and its two ends labelled: for a PNG
    written outside the app (the app draws its own bar)."""
    from PIL import ImageDraw, ImageFont

    width, height = overlay.size
    bar_w, margin = max(12, height // 24), 8
    font = ImageFont.load_default(size=max(11, height // 30))
    label_w = max(ImageDraw.Draw(overlay).textlength(text, font=font) for text in (low, high))
    canvas = Image.new("RGB", (width + 3 * margin + bar_w + int(label_w), height), "white")
    canvas.paste(overlay.convert("RGB"), (0, 0))
    ramp = heat_colours(np.linspace(1, 0, height))[:, None, :].repeat(bar_w, axis=1)
    canvas.paste(Image.fromarray((ramp * 255).astype(np.uint8)), (width + margin, 0))
    draw = ImageDraw.Draw(canvas)
    x = width + 2 * margin + bar_w
    draw.text((x, 0), high, fill="black", font=font)
    draw.text((x, height), low, fill="black", font=font, anchor="ld")
    return canvas
