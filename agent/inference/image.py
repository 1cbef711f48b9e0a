"""JPEG in, model tensor out: checked header, DCT-domain downscaled decode, resize or letterbox.

Pillow's `draft` asks libjpeg to decode at 1/2, 1/4 or 1/8 scale in the DCT domain, so a
1600x1200 capture headed for a 128x128 model costs a fraction of a full decode.
"""

from __future__ import annotations

import io
import math
import struct
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image

MAX_PIXELS = 50_000_000  # a 50 MP header is already far beyond any ESP32 camera
MIN_SIDE = 16


class ImageError(ValueError):
    """A capture whose bytes cannot be analysed; the message says why."""


@dataclass(frozen=True)
class Letterbox:
    """Where the original image sits inside the model input, in input-normalised units."""

    x0: float = 0.0
    y0: float = 0.0
    sx: float = 1.0  # fraction of the input's width the image covers
    sy: float = 1.0

    def to_original(self, box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in input-normalised units -> clipped (x, y, w, h) of the original."""
        x0 = min(max((box[0] - self.x0) / self.sx, 0.0), 1.0)
        y0 = min(max((box[1] - self.y0) / self.sy, 0.0), 1.0)
        x1 = min(max((box[2] - self.x0) / self.sx, 0.0), 1.0)
        y1 = min(max((box[3] - self.y0) / self.sy, 0.0), 1.0)
        return (x0, y0, x1 - x0, y1 - y0)


def open_jpeg(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> Image.Image:
    """Parse the header only (no pixels decoded yet) and refuse what must not be decoded."""
    if not data:
        raise ImageError("empty image (0 bytes)")
    if data[:2] != b"\xff\xd8":
        raise ImageError(f"not a JPEG: starts with {data[:4].hex()} instead of ffd8 (SOI)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG"])
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image header too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, struct.error, IndexError) as exc:
        raise ImageError(f"unreadable JPEG header: {exc}") from None
    width, height = image.size
    if width * height > max_pixels:
        raise ImageError(
            f"image header says {width}x{height} = {width * height} pixels, over the limit "
            f"of {max_pixels}; not decoded"
        )
    if min(width, height) < min_side:
        raise ImageError(f"image is {width}x{height}, smaller than {min_side} pixels on a side")
    return image


def decode(image: Image.Image, request: tuple[int, int] | None = None) -> Image.Image:
    """Decode to RGB, at the smallest DCT scale still at least `request` (w, h) in size."""
    try:
        if request is not None:
            image.draft("RGB", request)
        rgb = image.convert("RGB")
    except (OSError, SyntaxError, ValueError, struct.error, IndexError) as exc:
        raise ImageError(f"corrupt JPEG data: {exc}") from None
    return rgb


def decode_jpeg(
    data: bytes,
    request: tuple[int, int] | None = None,
    *,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> tuple[Image.Image, tuple[int, int]]:
    """Checked, downscaled decode: (RGB image, original (width, height))."""
    image = open_jpeg(data, max_pixels=max_pixels, min_side=min_side)
    size = image.size
    return decode(image, request), size


def draft_request(size: tuple[int, int], target: tuple[int, int], letterbox: bool) -> tuple[int, int]:
    """The smallest decode size that still covers the model input (w, h) after resizing."""
    w, h = size
    tw, th = target
    if letterbox:
        scale = min(tw / w, th / h)
        return (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))
    return (min(tw, w), min(th, h))


def fit(
    image: Image.Image, width: int, height: int, *, letterbox: bool, pad: int = 0
) -> tuple[Image.Image, Letterbox]:
    """Resize to (width, height): stretched, or aspect kept and centred on a padded canvas."""
    if not letterbox:
        if image.size != (width, height):
            image = image.resize((width, height), Image.BILINEAR)
        return image, Letterbox()
    w, h = image.size
    scale = min(width / w, height / h)
    cw, ch = max(1, round(w * scale)), max(1, round(h * scale))
    resized = image.resize((cw, ch), Image.BILINEAR) if (cw, ch) != (w, h) else image
    if (cw, ch) == (width, height):
        return resized, Letterbox()
    canvas = Image.new("RGB", (width, height), (pad, pad, pad))
    px, py = (width - cw) // 2, (height - ch) // 2
    canvas.paste(resized, (px, py))
    return canvas, Letterbox(px / width, py / height, cw / width, ch / height)


def pixels_to_tensor(
    image: Image.Image,
    *,
    dtype: np.dtype,
    mean: np.ndarray,
    std: np.ndarray,
    quantisation: tuple[float, int],
    bgr: bool = False,
    nchw: bool = False,
) -> np.ndarray:
    """RGB pixels -> a [1, ...] tensor: (pixel - mean) / std, then the tensor's own quantisation."""
    pixels = np.asarray(image, dtype=np.float32)
    if bgr:
        pixels = pixels[..., ::-1]
    real = (pixels - mean) / std
    if np.issubdtype(dtype, np.integer):
        scale, zero_point = quantisation
        info = np.iinfo(dtype)
        real = np.clip(np.rint(real / scale + zero_point), info.min, info.max)
    tensor = real.astype(dtype, copy=False)
    if nchw:
        tensor = tensor.transpose(2, 0, 1)
    return np.ascontiguousarray(tensor[np.newaxis])
