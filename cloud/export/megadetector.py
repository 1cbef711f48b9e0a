"""MegaDetector batch-output format (v1.4) export, the JSON Timelapse and other tools load.

Boxed detections of groups animal/person/vehicle become MD detections (categories 1/2/3); labels
more specific than the group become `classifications` on the detection (box-less classifier
results are attached to the image's best animal detection).
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import cloud
from cloud.db import CaptureRow, Database
from cloud.export.camtrap import safe_file_part
from cloud.storage import ObjectStore

FORMAT_VERSION = "1.4"
DETECTION_CATEGORIES = {"1": "animal", "2": "person", "3": "vehicle"}
_CATEGORY_OF = {name: key for key, name in DETECTION_CATEGORIES.items()}


def image_file(row: CaptureRow) -> str:
    """Relative path of the image, as written next to the JSON with `--images`."""
    return f"{safe_file_part(row.station_id)}/{safe_file_part(row.capture_id)}.jpg"


def export_megadetector(
    db: Database,
    store: ObjectStore,
    out: Path,
    since: float | None = None,
    until: float | None = None,
    include_images: bool = False,
) -> dict[str, int]:
    """Write the batch-output JSON to `out`; return counts of images and detections."""
    rows = db.query_captures(since=since, until=until)
    classes: dict[str, str] = {}
    images: list[dict[str, Any]] = []
    detectors: set[str] = set()
    n_detections = 0
    for row in rows:
        entry: dict[str, Any] = {"file": image_file(row)}
        if not row.image_key:
            entry["failure"] = "no image uploaded (metadata only)"
        detections = []
        unboxed: list[tuple[str, float]] = []
        for det in row.detections:
            if det["model"]:
                detectors.add(" ".join(p for p in (det["model"], det["model_version"]) if p))
            category = _CATEGORY_OF.get(det["group"])
            specific = det["label"].lower() not in DETECTION_CATEGORIES.values()
            if det["box"] and category:
                item: dict[str, Any] = {
                    "category": category,
                    "conf": round(float(det["score"]), 4),
                    "bbox": [round(float(v), 4) for v in det["box"]],
                }
                if specific:
                    item["classifications"] = [[_class_id(classes, det["label"]), item["conf"]]]
                detections.append(item)
            elif specific and det["group"] == "animal":
                unboxed.append((det["label"], float(det["score"])))
        animals = [d for d in detections if d["category"] == "1"]
        if unboxed and animals:
            best = max(animals, key=lambda d: d["conf"])
            best.setdefault("classifications", []).extend(
                [_class_id(classes, label), round(score, 4)] for label, score in unboxed
            )
        if row.image_key:
            entry["detections"] = detections
            entry["max_detection_conf"] = max((d["conf"] for d in detections), default=0.0)
            n_detections += len(detections)
            if include_images:
                target = out.parent / entry["file"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(store.get(row.image_key))
        images.append(entry)
    document: dict[str, Any] = {
        "info": {
            "format_version": FORMAT_VERSION,
            "detector": ", ".join(sorted(detectors)) or "unknown",
            "detection_completion_time": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "exporter": f"fieldstation-cloud {cloud.__version__}",
        },
        "detection_categories": DETECTION_CATEGORIES,
        "images": images,
    }
    if classes:
        document["classification_categories"] = classes
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(document, indent=1) + "\n", encoding="utf-8")
    return {"images": len(images), "detections": n_detections}


def _class_id(classes: dict[str, str], label: str) -> str:
    for key, name in classes.items():
        if name == label:
            return key
    key = str(len(classes) + 1)
    classes[key] = label
    return key
