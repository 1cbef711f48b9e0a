"""One capture through the models: decode, detector, optional classifier on each crop.

The detector-then-classifier pattern is MegaDetector's: a generic detector finds animals, people
and vehicles; a species classifier then labels each animal crop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from PIL import Image

from agent.inference import image as img
from agent.inference.package import Detection, ModelPackage

STAGES = ("decode", "preprocess", "invoke", "postprocess")


@dataclass
class Analysis:
    """What the models found in one capture, with the time each stage took."""

    detections: list[Detection]
    size: tuple[int, int]  # original width, height
    timings: dict[str, float] = field(default_factory=dict)
    models: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.detections

    @property
    def groups(self) -> set[str]:
        return {d.group for d in self.detections} | {
            c.group for d in self.detections for c in d.children
        }

    def summary(self) -> dict[str, Any]:
        """The `analysis` JSON stored with the capture."""
        return {
            "models": self.models,
            "size": list(self.size),
            "timings_ms": {k: round(v * 1000, 3) for k, v in self.timings.items()},
            "detections": len(self.detections),
        }


class Pipeline:
    """A detector (or whole-frame classifier) and an optional classifier for its crops."""

    def __init__(
        self,
        detector: ModelPackage,
        classifier: ModelPackage | None = None,
        *,
        classify_groups: tuple[str, ...] = ("animal",),
        crop_margin: float = 0.1,
        max_pixels: int = img.MAX_PIXELS,
        min_side: int = img.MIN_SIDE,
    ) -> None:
        self.detector = detector
        self.classifier = classifier
        self.classify_groups = classify_groups
        self.crop_margin = crop_margin
        self.max_pixels = max_pixels
        self.min_side = min_side

    @property
    def models(self) -> list[ModelPackage]:
        return [m for m in (self.detector, self.classifier) if m is not None]

    def analyse(self, jpeg: bytes) -> Analysis:
        """Run the models on one JPEG; raises ImageError for bytes that cannot be analysed."""
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        header = img.open_jpeg(jpeg, max_pixels=self.max_pixels, min_side=self.min_side)
        size = header.size
        picture = img.decode(header, self.detector.draft_request(size))
        timings["decode"] = time.perf_counter() - t0
        found = self.detector.run(picture, timings)
        if self.classifier is not None and any(
            d.box is not None and d.group in self.classify_groups for d in found
        ):
            found = self._classify_crops(jpeg, size, found, timings)
        return Analysis(
            detections=found,
            size=size,
            timings=timings,
            models=[f"{m.name}@{m.version}" for m in self.models],
        )

    def _classify_crops(
        self,
        jpeg: bytes,
        size: tuple[int, int],
        found: list[Detection],
        timings: dict[str, float],
    ) -> list[Detection]:
        assert self.classifier is not None
        spec = self.classifier.card.input
        boxes = [d.box for d in found if d.box is not None and d.group in self.classify_groups]
        # decode again only as large as the smallest crop needs to fill the classifier's input
        smallest = min(min(b[2] * size[0], b[3] * size[1]) for b in boxes)
        scale = min(1.0, max(spec.width, spec.height) / max(smallest, 1.0))
        t0 = time.perf_counter()
        full = img.decode(
            img.open_jpeg(jpeg, max_pixels=self.max_pixels, min_side=self.min_side),
            (max(1, round(size[0] * scale)), max(1, round(size[1] * scale))),
        )
        timings["decode"] = timings.get("decode", 0.0) + time.perf_counter() - t0
        out = []
        for d in found:
            if d.box is None or d.group not in self.classify_groups:
                out.append(d)
                continue
            crop = _crop(full, d.box, self.crop_margin)
            labels = self.classifier.run(crop, timings)
            out.append(replace(d, children=tuple(labels)))
        return out


def _crop(image: Image.Image, box: tuple[float, float, float, float], margin: float) -> Image.Image:
    w, h = image.size
    x, y, bw, bh = box
    mx, my = bw * margin, bh * margin
    left = max(0, int((x - mx) * w))
    top = max(0, int((y - my) * h))
    right = min(w, max(left + 1, round((x + bw + mx) * w)))
    bottom = min(h, max(top + 1, round((y + bh + my) * h)))
    return image.crop((left, top, right, bottom))
