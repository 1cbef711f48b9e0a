"""Stations with model sync against one real cloud: config, captures in, rollouts out."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import requests
from PIL import Image, ImageDraw

from agent.broker import free_port
from agent.config import Config, parse_config
from agent.daemon import Station
from agent.scenes import scene_jpeg
from cloud.process import CloudService

from .conftest import NAME

# Scenes (agent/scenes.py seeds) with the animal the v1/v2 fixture finds and no bright blob.
ANIMAL_SEEDS = [2, 4, 5, 10, 13, 14, 17, 20, 22, 26, 29, 34]


def station_toml(
    data: Path,
    station_id: str,
    cloud: CloudService,
    token: str,
    keys: list[str],
    extra: str = "",
    model: str = NAME,
    url: str | None = None,
    upload_extra: str = "",
) -> str:
    return f"""
[station]
id = "{station_id}"
data_dir = "{data}"

[http]
listen = "127.0.0.1:{free_port()}"

[inference]
enabled = true
poll_interval_s = 0.1
reload_interval_s = 1
threads = 1

[power]
enabled = false  # no power rail here; model sync's power gate is tested on its own

[upload]
enabled = false
{upload_extra}

[[upload.endpoints]]
name = "cloud"
url = "{url or cloud.url}"
token = "{token}"

[modelsync]
enabled = true
model = "{model}"
trusted_keys = {json.dumps(keys)}
poll_interval_s = 0.3
shadow_captures = 6
probation_s = 600
probation_min_captures = 4
download_deadline_s = 20
{extra}
"""


def station_config(
    data: Path, station_id: str, cloud: CloudService, token: str, keys: list[str], extra: str = ""
) -> Config:
    return parse_config(station_toml(data, station_id, cloud, token, keys, extra), "<fleet>")


def start(config: Config) -> Station:
    station = Station(config)
    station.start()
    return station


def scene(seed: int, blob: bool = False) -> bytes:
    """A field scene; `blob` adds the bright square the v4 fixture (blob-yolo-cn) looks for."""
    data = scene_jpeg(seed, (320, 240))
    if not blob:
        return data
    im = Image.open(io.BytesIO(data)).convert("RGB")
    w, h = im.size
    ImageDraw.Draw(im).rectangle([w // 2, h // 4, w // 2 + w // 6, h // 4 + h // 6], fill="white")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=90)
    return out.getvalue()


def send(station: Station, jpeg: bytes, n: int) -> None:
    """A WildCAM unit posts a photo to the station's intake."""
    r = requests.post(
        f"http://{station.config.http.listen}/api/detections",
        files={
            "metadata": (None, json.dumps({"device_id": "ca7e", "timestamp": 1000 + n})),
            "image": (f"img{n}.jpg", jpeg, "image/jpeg"),
        },
        timeout=10,
    )
    assert r.status_code == 201, r.text


def active(station: Station) -> str | None:
    p = station.inference.pipeline if station.inference else None
    return p.detector.card.version if p is not None else None


def rollout(cloud: CloudService, admin: str, version: str, waves: list[dict], **spec: Any) -> dict:
    r = requests.post(
        f"{cloud.url}/v1/rollouts",
        json={"name": NAME, "version": version, "waves": waves, **spec},
        headers={"Authorization": f"Bearer {admin}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text
    return r.json()


def status(cloud: CloudService, admin: str) -> dict:
    r = requests.get(
        f"{cloud.url}/v1/rollouts/{NAME}", headers={"Authorization": f"Bearer {admin}"}, timeout=10
    )
    assert r.status_code == 200, r.text
    return r.json()


def by_station(doc: dict) -> dict[str, tuple[str, str | None]]:
    return {s["station_id"]: (s["state"], s["reason"]) for s in doc["stations"]}


def wait_status(cloud: CloudService, admin: str, check: Any, timeout: float, what: str) -> dict:
    """The rollout status once `check(doc)` holds (bounded in time)."""
    from tests.helpers import wait_for

    def ready() -> dict | None:
        doc = status(cloud, admin)
        return doc if check(doc) else None

    return wait_for(ready, timeout, what)
