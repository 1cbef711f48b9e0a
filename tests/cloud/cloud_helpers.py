"""Building captures and batch requests the way a station's uploader does."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from typing import Any

import requests

from cloud.db import CaptureRow


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def item(
    capture_id: str,
    original: bytes,
    variant: str = "full",
    sent: bytes | None = None,
    part: str | None = None,
    **fields: Any,
) -> tuple[dict[str, Any], bytes | None]:
    """A manifest item and the bytes of its image part (None for variant "none")."""
    body = original if variant == "full" else sent
    entry: dict[str, Any] = {
        "capture_id": capture_id,
        "unit_id": "unit-a",
        "path": "serial",
        "sha256": sha(original),
        "size": len(original),
        "received_at": time.time(),
        "captured_at": 1_700_000_000.0,
        "unit_time": 123456,
        "unit_time_kind": "boot_ms",
        "trigger": "pir",
        "variant": variant,
        "image_part": None if variant == "none" else (part or f"img-{capture_id}"[:60]),
        "image_sha256": None if body is None else sha(body),
        "empty": False,
        "detections": [
            {
                "label": "Vulpes vulpes",
                "group": "animal",
                "score": 0.91,
                "box": [0.1, 0.2, 0.3, 0.4],
                "model": "wildcam-det",
                "model_version": "1.2.0",
            }
        ],
        "meta": {"firmware": "0.3.1"},
    }
    entry.update(fields)
    return entry, body


def batch_files(
    station_id: str, entries: list[tuple[dict[str, Any], bytes | None]]
) -> list[tuple[str, tuple[str | None, bytes | str, str]]]:
    files: list[tuple[str, tuple[str | None, bytes | str, str]]] = [
        (
            "manifest",
            (
                None,
                json.dumps({"station_id": station_id, "items": [e for e, _ in entries]}),
                "application/json",
            ),
        )
    ]
    for entry, data in entries:
        if data is not None and entry.get("image_part"):
            files.append((entry["image_part"], (f"{entry['capture_id']}.jpg", data, "image/jpeg")))
    return files


def upload(
    url: str, token: str, station_id: str, entries: list[tuple[dict[str, Any], bytes | None]]
) -> requests.Response:
    return requests.post(
        f"{url}/v1/captures/batch",
        files=batch_files(station_id, entries),
        headers={"Authorization": f"Bearer {token}"},
        timeout=60,
    )


def statuses(response: requests.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [r["status"] for r in response.json()["results"]]


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def capture_row(
    capture_id: str, labels: Sequence[str] = (), image_key: str | None = None
) -> CaptureRow:
    """A capture row as ingest builds it: its detections' labels, its image's key if any."""
    return CaptureRow(
        station_id="st-1",
        capture_id=capture_id,
        unit_id="u",
        path="serial",
        sha256="0" * 64,
        size=1,
        received_at=1.0,
        captured_at=None,
        uploaded_at=2.0,
        trigger=None,
        unit_time=None,
        unit_time_kind=None,
        variant="none" if image_key is None else "full",
        image_key=image_key,
        image_sha256=None if image_key is None else "0" * 64,
        image_size=None if image_key is None else 1,
        empty=None,
        detections=[{"label": x, "group": "animal", "score": 0.5, "box": None} for x in labels],
        meta={},
    )
