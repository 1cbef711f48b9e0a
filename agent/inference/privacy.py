"""The privacy policy for the person group: blur, drop (upload metadata only) or keep.

Blurring works on the full-resolution original and writes a new JPEG (no EXIF); the original
never leaves the station.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageFilter

from agent.inference import image as img
from agent.inference.package import Detection

POLICIES = ("blur", "drop", "keep")
PRIVATE_GROUP = "person"
BLUR_MARGIN = 0.25  # face detectors box the face only; hair, ears and chin need covering too


def private_boxes(
    detections: Sequence[Detection],
) -> list[tuple[float, float, float, float] | None]:
    """Boxes of every person-group result (a classifier's on its parent's box; None = frame)."""
    out: list[tuple[float, float, float, float] | None] = []
    for d in detections:
        if d.group == PRIVATE_GROUP or any(c.group == PRIVATE_GROUP for c in d.children):
            out.append(d.box)
    return out


def upload_variant(policy: str, detections: Sequence[Detection]) -> str:
    """'original', 'blurred' or 'none': which image, if any, the uploader may send."""
    if policy not in POLICIES:
        raise ValueError(f"unknown person policy {policy!r}; one of {', '.join(POLICIES)}")
    if policy == "keep" or not private_boxes(detections):
        return "original"
    return "blurred" if policy == "blur" else "none"


def blur_jpeg(
    jpeg: bytes,
    boxes: Sequence[tuple[float, float, float, float] | None],
    *,
    margin: float = BLUR_MARGIN,
    quality: int = 90,
    max_pixels: int = img.MAX_PIXELS,
) -> bytes:
    """A new JPEG with each normalised (x, y, w, h) box, grown by `margin`, blurred beyond
    recognition; a None box blurs the whole frame."""
    picture, (w, h) = img.decode_jpeg(jpeg, max_pixels=max_pixels)
    for box in boxes:
        if box is None:
            left, top, right, bottom = 0, 0, w, h
        else:
            x, y, bw, bh = box
            left = max(0, int((x - bw * margin) * w))
            top = max(0, int((y - bh * margin) * h))
            right = min(w, round((x + bw * (1 + margin)) * w))
            bottom = min(h, round((y + bh * (1 + margin)) * h))
        if right <= left or bottom <= top:
            continue
        region = picture.crop((left, top, right, bottom))
        # pixelate then smooth: no detail at the scale of facial features survives
        side = max(right - left, bottom - top)
        cells = max(1, side // 12)
        small = region.resize(
            (max(1, (right - left) // cells), max(1, (bottom - top) // cells)), Image.BILINEAR
        )
        region = small.resize(region.size, Image.NEAREST).filter(
            ImageFilter.GaussianBlur(radius=max(2, cells // 2))
        )
        picture.paste(region, (left, top))
    out = io.BytesIO()
    picture.save(out, "JPEG", quality=quality, optimize=True)
    return out.getvalue()
