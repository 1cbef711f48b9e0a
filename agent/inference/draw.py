"""A capture with its detections drawn on it: boxes and labels, for `infer --draw` and the page."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, ImageDraw

from agent.inference.package import Detection

COLOURS = {"animal": "#2ecc40", "person": "#ff4136", "vehicle": "#0074d9", "other": "#ffdc00"}


def draw_detections(jpeg: bytes, detections: Sequence[Detection], quality: int = 90) -> bytes:
    """The JPEG with each detection's box and "label score" drawn; whole-frame results as a
    caption in the top-left corner."""
    image = Image.open(io.BytesIO(jpeg)).convert("RGB")
    pen = ImageDraw.Draw(image)
    w, h = image.size
    width = max(2, round(min(w, h) / 200))
    captions = 0
    for d in _flatten(detections):
        colour = COLOURS.get(d.group, COLOURS["other"])
        text = f"{d.label} {d.score:.2f}"
        if d.box is None:
            pen.text((4, 4 + 12 * captions), text, fill=colour)
            captions += 1
            continue
        x, y, bw, bh = d.box
        x0, y0, x1, y1 = x * w, y * h, (x + bw) * w, (y + bh) * h
        pen.rectangle((x0, y0, x1, y1), outline=colour, width=width)
        tx0, ty0, tx1, ty1 = pen.textbbox((x0, y0), text)
        top = max(0.0, y0 - (ty1 - ty0) - 2)
        pen.rectangle((x0, top, x0 + (tx1 - tx0) + 4, top + (ty1 - ty0) + 2), fill=colour)
        pen.text((x0 + 2, top), text, fill="black")
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def _flatten(detections: Sequence[Detection]) -> list[Detection]:
    out: list[Detection] = []
    for d in detections:
        out.append(d)
        out.extend(d.children)
    return out
