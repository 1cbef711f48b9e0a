"""The inference worker inside a real station: a unit uploads over HTTP, detections follow."""

from __future__ import annotations

import json
import threading

import requests

from agent.daemon import Station
from tests.conftest import station_config

from .conftest import MODELS


def test_an_uploaded_photo_is_analysed_blurred_and_reported(tmp_path, photos, blazeface_installed):
    config = station_config(
        tmp_path,
        f'[inference]\ndetector = "{MODELS / "blazeface-full-range"}"\nperson_policy = "blur"\n'
        "poll_interval_s = 0.1\n",
    )
    seen: dict[str, list] = {}
    done = threading.Event()

    def on_result(capture_id, detections):
        seen[capture_id] = detections
        if len(seen) == 2:
            done.set()

    station = Station(config)  # the station wires its own inference worker from [inference]
    assert station.inference is not None
    station.on_analysed(on_result)
    station.start()
    try:
        for i, name in enumerate(("astronaut", "coffee")):
            r = requests.post(
                f"http://{config.http.listen}/api/detections",
                files={
                    "metadata": (None, json.dumps({"device_id": "ca7e", "timestamp": 1000 + i})),
                    "image": (f"{name}.jpg", photos[name].read_bytes(), "image/jpeg"),
                },
                timeout=10,
            )
            assert r.status_code == 201, r.text
        assert done.wait(60), f"analysed only {list(seen)}"
        metrics = requests.get(f"http://{config.http.listen}/metrics", timeout=10).text
    finally:
        station.stop()
    by_label = {cid: [d.label for d in found] for cid, found in seen.items()}
    # BlazeFace finds her face, the default body finder (OpenCV HOG) her body
    assert sorted(by_label.values()) == [[], ["face", "person"]]
    for cid, labels in by_label.items():
        row = station.store.get_capture(cid)
        assert row["state"] == "analysed"
        assert row["upload_variant"] == ("blurred" if labels else "original")
        assert (station.store.read_image(cid, "blurred") is not None) == bool(labels)
    assert 'fieldstation_inference_captures_total{outcome="analysed"} 1.0' in metrics
    assert 'fieldstation_inference_captures_total{outcome="empty"} 1.0' in metrics
