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

    def to_original(
        self, box: tuple[float, float, float, float]
    ) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) in input-normalised units -> clipped (x, y, w, h) of the original."""
        x0 = min(max((box[0] - self.x0) / self.sx, 0.0), 1.0)
        y0 = min(max((box[1] - self.y0) / self.sy, 0.0), 1.0)
        x1 = min(max((box[2] - self.x0) / self.sx, 0.0), 1.0)
        y1 = min(max((box[3] - self.y0) / self.sy, 0.0), 1.0)
        return (x0, y0, x1 - x0, y1 - y0)


_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the JPEG frame header, read without decoding anything.

    Our own few lines (not Pillow's) so an oversized header is refused with the station's
    limit and message before any decoder sees it.
    """
    if data[:2] != b"\xff\xd8":
        raise ImageError(
            f"not a JPEG: starts with {data[:4].hex() or 'nothing'} instead of ffd8 (SOI)"
        )
    i = 2
    n = len(data)
    while i < n:
        if data[i] != 0xFF:
            raise ImageError(f"corrupt JPEG header: expected a marker at byte {i}")
        while i < n and data[i] == 0xFF:  # fill bytes
            i += 1
        if i >= n:
            break
        marker = data[i]
        i += 1
        if marker in _STANDALONE:
            continue
        if marker in (0xD9, 0xDA):
            raise ImageError("corrupt JPEG header: no frame header (SOF) before the image data")
        if i + 2 > n:
            break
        length = int.from_bytes(data[i : i + 2], "big")
        if length < 2:
            raise ImageError(f"corrupt JPEG header: segment length {length} at byte {i}")
        if marker in _SOF:
            if length < 8 or i + 7 > n:
                break
            height = int.from_bytes(data[i + 3 : i + 5], "big")
            width = int.from_bytes(data[i + 5 : i + 7], "big")
            return width, height
        i += length
    raise ImageError("truncated JPEG: the data ends before the frame header (SOF)")


def open_jpeg(
    data: bytes, *, max_pixels: int = MAX_PIXELS, min_side: int = MIN_SIDE
) -> Image.Image:
    """Parse the header only (no pixels decoded yet) and refuse what must not be decoded."""
    if not data:
        raise ImageError("empty image (0 bytes)")
    width, height = jpeg_size(data)
    _check_size(width, height, max_pixels, min_side)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=["JPEG"])
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image header too large: {exc}") from None
    except (OSError, SyntaxError, ValueError, struct.error, IndexError) as exc:
        raise ImageError(f"unreadable JPEG header: {exc}") from None
    if image.size != (width, height):
        raise ImageError(f"JPEG header sizes disagree: {image.size} and {(width, height)}")
    return image


def _check_size(width: int, height: int, max_pixels: int, min_side: int) -> None:
    if width * height > max_pixels:
        raise ImageError(
            f"image header says {width}x{height} = {width * height} pixels, over the limit "
            f"of {max_pixels}; not decoded"
        )
    if min(width, height) < min_side:
        raise ImageError(f"image is {width}x{height}, smaller than {min_side} pixels on a side")


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


def draft_request(
    size: tuple[int, int], target: tuple[int, int], letterbox: bool
) -> tuple[int, int]:
    """The smallest decode size that still covers the model input (w, h) after resizing."""
    w, h = size
    tw, th = target
    if letterbox:
        scale = min(tw / w, th / h)
        return (max(1, math.ceil(w * scale)), max(1, math.ceil(h * scale)))
    return (min(tw, w), min(th, h))


def fit(
    image: Image.Image, width: int, height: int, *, letterbox: bool, pad: int = 0
) -> tuple[np.ndarray, Letterbox]:
    """Resize to (width, height) pixels, HxWx3 uint8: stretched, or aspect kept and centred
    between pad bars (letterbox)."""
    if not letterbox:
        if image.size != (width, height):
            image = image.resize((width, height), _filter(image.size, (width, height)))
        return np.asarray(image), Letterbox()
    w, h = image.size
    scale = min(width / w, height / h)
    cw, ch = max(1, min(width, round(w * scale))), max(1, min(height, round(h * scale)))
    resized = image.resize((cw, ch), _filter((w, h), (cw, ch))) if (cw, ch) != (w, h) else image
    if (cw, ch) == (width, height):
        return np.asarray(resized), Letterbox()
    canvas = np.full((height, width, 3), pad, np.uint8)
    px, py = (width - cw) // 2, (height - ch) // 2
    canvas[py : py + ch, px : px + cw] = np.asarray(resized)
    return canvas, Letterbox(px / width, py / height, cw / width, ch / height)


def _filter(src: tuple[int, int], dst: tuple[int, int]) -> Image.Resampling:
    # area averaging (BOX) when shrinking: as good as bilinear there and a third cheaper
    shrinking = dst[0] <= src[0] and dst[1] <= src[1]
    return Image.Resampling.BOX if shrinking else Image.Resampling.BILINEAR


class Normaliser:
    """HxWx3 uint8 pixels -> the model's [1, ...] input: (pixel - mean) / std, then the tensor's
    own quantisation for integer inputs (through a per-channel lookup table)."""

    def __init__(
        self,
        *,
        dtype: np.dtype,
        mean: np.ndarray,
        std: np.ndarray,
        quantisation: tuple[float, int],
        bgr: bool = False,
        nchw: bool = False,
    ) -> None:
        self.dtype = np.dtype(dtype)
        self.bgr = bgr
        self.nchw = nchw
        mean = np.asarray(mean, np.float32)
        std = np.asarray(std, np.float32)
        # mean and std are in the model's channel order (a BGR model lists blue first)
        self.scale = (1.0 / std).astype(np.float32)
        self.offset = (-mean / std).astype(np.float32)
        # numpy is slow at broadcasting a 3-vector along the last axis, so the common case
        # (one mean and std for all channels) runs as scalar arithmetic
        self.uniform = bool(
            np.all(self.scale == self.scale[0]) and np.all(self.offset == self.offset[0])
        )
        self.table = None
        if self.dtype.kind in "iu":
            real = (
                np.arange(256, dtype=np.float32)[None, :] * self.scale[:, None]
                + self.offset[:, None]
            )
            q_scale, zero_point = quantisation
            info = np.iinfo(self.dtype)
            self.table = np.clip(np.rint(real / q_scale + zero_point), info.min, info.max).astype(
                self.dtype
            )  # [3, 256]: pixel value -> quantised input, per channel

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if self.bgr:
            pixels = pixels[..., ::-1]
        if self.table is not None:
            if self.uniform:
                tensor = np.take(self.table[0], pixels)
            else:
                tensor = np.empty(pixels.shape, self.dtype)
                for c in range(3):
                    np.take(self.table[c], pixels[..., c], out=tensor[..., c])
        else:
            tensor = pixels.astype(np.float32)
            if self.uniform:
                tensor *= self.scale[0]
                tensor += self.offset[0]
            else:
                for c in range(3):
                    tensor[..., c] *= self.scale[c]
                    tensor[..., c] += self.offset[c]
            if self.dtype != np.float32:
                tensor = tensor.astype(self.dtype)
        if self.nchw:
            tensor = tensor.transpose(2, 0, 1)
        return np.ascontiguousarray(tensor[np.newaxis])
