"""Empty-frame policy, thumbnails first, rejections, budget, windows, heartbeats, pause and restart."""

from __future__ import annotations

import time

import requests

from agent.capture import Capture
from agent.metrics import Metrics
from agent.upload.worker import Uploader
from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures, analyse, assert_consistent


def test_empty_frames_go_as_thumbnails_and_thumbnails_first_upgrades_in_place(new_station, links):
    station = new_station(primary="aws", empty_policy="thumbnail", thumbnails_first=True)
    ids = add_captures(station.store, 12, kinds=["animal", "empty", "person"], size=(320, 240))
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    held = assert_consistent(station, links)
    assert held["aws"] == set(ids)
    variants = {r["capture_id"]: r["variant"] for r in links["aws"].records(station.station_id)}
    for i, cid in enumerate(ids):
        assert variants[cid] == ("thumbnail" if i % 3 == 1 else "full"), (i, variants[cid])
    # every capture went once as a thumbnail, then the non-empty ones again as full images
    items = station.metrics.registry.get_sample_value(
        "fieldstation_upload_items_total", {"endpoint": "aws", "status": "stored"}
    )
    upgrades = station.metrics.registry.get_sample_value(
        "fieldstation_upload_items_total", {"endpoint": "aws", "status": "duplicate"}
    )
    assert (items, upgrades) == (12, 8)


def test_skip_policy_sends_only_the_record_of_an_empty_frame(new_station, links):
    station = new_station(primary="gcp", empty_policy="skip")
    ids = add_captures(station.store, 4, kinds=["empty"])
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    assert_consistent(station, links)
    records = links["gcp"].records(station.station_id)
    assert {r["capture_id"] for r in records} == set(ids)
    assert {r["variant"] for r in records} == {"none"}
    assert all(r["image_url"] is None for r in records)


def test_an_item_the_cloud_rejects_is_failed_with_the_reason(new_station, links):
    station = new_station(primary="azure")
    good = add_captures(station.store, 3, kinds=["animal"])
    bad = Capture("unit-1", "bad", "serial", b"not a jpeg at all", time.time())
    station.store.add_capture(bad)
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="settled")
    station.stop()
    row = station.store.get_capture(bad.id)
    assert row["state"] == "failed"
    assert "azure: rejected" in row["error"] and "JPEG" in row["error"]
    held = links["azure"].lookup(station.tokens["azure"], [*good, bad.id])
    assert set(held) == set(good)


def test_daily_budget_stops_captures_but_not_heartbeats(new_station, links):
    station = new_station(primary="aws", daily_budget_bytes=12000, batch_max_items=2)
    add_captures(station.store, 10, kinds=["animal"])
    station.start()
    wait_for(lambda: station.uploader.status()["state"] == "budget_exhausted", what="budget spent")
    heartbeats = _heartbeats(station, "aws")
    wait_for(lambda: _heartbeats(station, "aws") > heartbeats, what="a heartbeat over budget")
    station.stop()
    status = station.uploader.status()
    assert status["state"] == "budget_exhausted"
    assert 0 < station.states().get("uploaded", 0) < 10
    # captures never overspend; only the small heartbeats may go past the budget
    beats = sum(_heartbeats(station, n) for n in ("aws", "azure", "gcp"))
    assert status["bytes_today"] <= 12000 + 1500 * beats
    assert status["budget_left_bytes"] < 4000  # the next capture did not fit


def test_outside_the_window_only_heartbeats_go(new_station, links):
    now = time.localtime()
    start = (now.tm_hour + 2) % 24
    window = f"{start:02d}:00-{(start + 1) % 24:02d}:00"
    station = new_station(primary="azure", windows=[window])
    add_captures(station.store, 3, kinds=["person"])
    station.start()
    wait_for(lambda: _heartbeats(station, "azure") >= 1, what="a heartbeat")
    station.stop()
    assert station.uploader.status()["state"] == "outside_window"
    assert station.states() == {"received": 0, "analysed": 3} or station.states() == {"analysed": 3}
    info = requests.get(
        links["azure"].direct_url + "/v1/stations",
        headers={"Authorization": f"Bearer {links['azure'].admin}"},
        timeout=10,
    ).json()["stations"]
    me = next(s for s in info if s["station_id"] == station.station_id)
    assert me["last_heartbeat"]["queue"]["depth"] == 3


def test_paused_uploader_sends_nothing_until_resumed(new_station, links):
    station = new_station(primary="gcp")
    add_captures(station.store, 4, kinds=["animal"])
    station.uploader.pause("battery low")
    for _ in range(3):
        station.uploader.step()
    assert station.uploader.status()["paused"] == "battery low"
    assert station.states() == {"analysed": 4}
    station.uploader.resume()
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained after resume")
    station.stop()
    assert_consistent(station, links)


def test_after_a_restart_nothing_acknowledged_is_sent_again(new_station, links):
    station = new_station(primary="aws")
    add_captures(station.store, 10, kinds=["animal"])
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    metrics = Metrics()
    config_uploader = Uploader(station.store, station.uploader_config, metrics)
    for _ in range(3):
        config_uploader.step()
    sent = metrics.registry.get_sample_value(
        "fieldstation_upload_requests_total", {"endpoint": "aws", "kind": "batch", "result": "ok"}
    )
    assert not sent
    assert_consistent(station, links)


def _heartbeats(station, endpoint: str) -> float:
    value = station.metrics.registry.get_sample_value(
        "fieldstation_upload_requests_total",
        {"endpoint": endpoint, "kind": "heartbeat", "result": "ok"},
    )
    return value or 0.0


def test_a_blurred_capture_sends_only_the_blurred_copy_and_then_drops_the_original(
    new_station, links
):
    from tests.helpers import jpeg

    station = new_station(primary="aws")
    (cid,) = add_captures(station.store, 1, kinds=["received"])
    blurred = jpeg(999)
    # what the inference worker's privacy step writes
    analyse(station.store, cid, "person", upload_variant="blurred", blurred=blurred)
    assert station.store.read_image(cid, "original") is not None
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    records = links["aws"].records(station.station_id)
    assert [(r["capture_id"], r["variant"]) for r in records] == [(cid, "blurred")]
    assert station.store.get_capture(cid)["state"] == "uploaded"
    assert station.store.read_image(cid, "original") is None  # never left, now gone
    assert station.store.read_image(cid, "blurred") == blurred


def test_a_person_found_by_the_body_leaves_only_blurred_and_the_original_goes(
    new_station, links, tmp_path
):
    import hashlib
    import io
    from pathlib import Path

    from PIL import Image
    from skimage import data

    from agent.config import parse_config
    from agent.inference.worker import InferenceWorker

    station = new_station(primary="aws")
    pixels = data.astronaut().copy()
    pixels[40:190, 150:300] = 128  # her face covered: only the body finder (HOG) can see her
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "JPEG", quality=92)
    capture = Capture(
        unit_id="cam-1", unit_ref="1", path="http", jpeg=buf.getvalue(), received_at=time.time()
    )
    station.store.add_capture(capture)
    detector = Path(__file__).resolve().parents[2] / "models" / "fixtures" / "blob-ssd"
    inference = parse_config(
        f'[station]\nid = "{station.station_id}"\ndata_dir = "{tmp_path}"\n[inference]\n'
        f'detector = "{detector}"\nbody_models = ["opencv-hog"]\n'
    )
    worker = InferenceWorker(station.store, inference, Metrics())
    worker.reload_if_changed()
    assert worker.run_once() == 1, worker.last_error
    blurred = station.store.read_image(capture.id, "blurred")
    assert blurred is not None and blurred != capture.jpeg
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    (record,) = links["aws"].records(station.station_id)
    assert (record["capture_id"], record["variant"]) == (capture.id, "blurred")
    assert record["image_sha256"] == hashlib.sha256(blurred).hexdigest()
    assert station.store.read_image(capture.id, "original") is None
