"""The WildCAM-firmware-compatible HTTP intake, over real HTTP on loopback."""

from __future__ import annotations

import json
import time

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.broker import free_port
from agent.scenes import scene_jpeg
from tests.helpers import metric, wait_for


@pytest.fixture
def station(make_station):
    return make_station()


def base(station) -> str:
    return f"http://{station.config.http.listen}"


def upload(station, meta, image=None, headers=None) -> requests.Response:
    files = {"metadata": (None, meta if isinstance(meta, str) else json.dumps(meta))}
    if image is not None:
        files["image"] = ("c.jpg", image, "image/jpeg")
    return requests.post(
        f"{base(station)}/api/detections", files=files, headers=headers, timeout=10
    )


def test_register_answers_200_and_records_the_unit(station):
    r = requests.post(
        f"{base(station)}/api/cameras/register",
        json={
            "device_id": "a1b2c3",
            "name": "Cam 1",
            "location_name": "ridge",
            "firmware_version": "3.0.1",
            "latitude": -1.5,
            "longitude": 36.8,
        },
        timeout=5,
    )
    assert r.status_code == 200
    unit = station.store.units()[0]
    assert (unit["unit_id"], unit["name"], unit["latitude"]) == ("a1b2c3", "Cam 1", -1.5)


def test_upload_is_201_then_a_retransmit_is_200_and_stored_once(station):
    jpeg = scene_jpeg(3)
    now = int(time.time())  # a unit clock is read as a date only when it agrees with ours
    meta = {"device_id": "a1b2c3", "timestamp": now, "species": "deer", "confidence": 0.8}
    first = upload(station, meta, jpeg)
    second = upload(station, meta, jpeg)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["capture_id"] == second.json()["capture_id"]
    row = station.store.captures_in_state("received")[0]
    assert row["unit_time_kind"] == "epoch_s" and row["captured_at"] == now
    assert json.loads(row["meta"])["unit_species"] == "deer"
    assert station.store.read_image(row["id"]) == jpeg
    assert station.store.queue_summary()["pending"] == 1


def test_millis_since_boot_timestamp_is_kept_with_its_kind(station):
    r = upload(station, {"device_id": "ff01", "timestamp": 123456}, scene_jpeg(1))
    assert r.status_code == 201
    row = station.store.captures_in_state("received")[0]
    assert row["unit_time"] == 123456 and row["unit_time_kind"] == "boot_ms"
    assert row["captured_at"] == row["received_at"] and row["received_at"] > 1.7e9


def test_status_answers_exactly_200(station):
    r = requests.post(
        f"{base(station)}/api/cameras/ab12/status",
        json={"battery_level": 55, "battery_voltage": 3.7, "humidity": 80},
        timeout=5,
    )
    assert r.status_code == 200
    assert station.store.units()[0]["battery_mv"] == 3700


@pytest.mark.parametrize(
    "meta,image,status,reason",
    [
        ({"device_id": "ABC", "timestamp": 1}, b"\xff\xd8x\xff\xd9", 400, "bad_device_id"),
        ({"device_id": "abc", "timestamp": "now"}, b"\xff\xd8x\xff\xd9", 400, "bad_timestamp"),
        ({"device_id": "abc", "timestamp": 1}, b"GIF89a not a jpeg", 400, "not_jpeg"),
        ({"device_id": "abc", "timestamp": 1}, None, 400, "missing_image"),
        ("{not json", b"\xff\xd8x\xff\xd9", 400, "bad_json"),
        (
            {"device_id": "abc", "timestamp": 1, "confidence": 7},
            b"\xff\xd8x\xff\xd9",
            400,
            "bad_field",
        ),
    ],
)
def test_bad_uploads_get_a_4xx_with_a_reason_and_are_counted(station, meta, image, status, reason):
    r = upload(station, meta, image)
    assert r.status_code == status and r.json()["reason"] == reason and r.json()["error"]
    assert metric(station, "fieldstation_rejected_total", path="http", reason=reason) == 1
    assert station.store.queue_summary()["pending"] == 0


def test_oversized_body_is_413(station):
    big = b"\xff\xd8" + b"\0" * (6 << 20) + b"\xff\xd9"
    r = upload(station, {"device_id": "abc", "timestamp": 1}, big)
    assert r.status_code == 413


def test_token_is_required_when_configured(make_station):
    station = make_station(http={"token": "s3cret"})
    meta = {"device_id": "abc", "timestamp": 1}
    assert upload(station, meta, scene_jpeg(1)).status_code == 401
    assert (
        upload(station, meta, scene_jpeg(1), {"Authorization": "Bearer wrong"}).status_code == 401
    )
    ok = upload(station, meta, scene_jpeg(1), {"Authorization": "Bearer s3cret"})
    assert ok.status_code == 201
    assert metric(station, "fieldstation_rejected_total", path="http", reason="unauthorised") == 2


def test_lan_listener_serves_only_intake(make_station):
    port = free_port()
    make_station(http={"lan_listen": f"127.0.0.1:{port}"})
    lan = f"http://127.0.0.1:{port}"
    wait_for(lambda: _answers(lan), what="LAN listener")
    assert requests.get(f"{lan}/metrics", timeout=5).status_code == 404
    assert requests.get(f"{lan}/api/status", timeout=5).status_code == 404
    r = requests.post(
        f"{lan}/api/cameras/ab/status", json={"battery_level": 5, "battery_voltage": 3.3}, timeout=5
    )
    assert r.status_code == 200


def _answers(url: str) -> bool:
    try:
        requests.get(url, timeout=1)
        return True
    except requests.ConnectionError:
        return False


# --- fuzz: whatever a unit sends, the station answers 2xx/4xx and never stores garbage -----------


@given(
    device=st.one_of(st.text(max_size=40), st.integers(), st.none()),
    timestamp=st.one_of(
        st.integers(-(2**70), 2**70), st.floats(), st.text(max_size=5), st.none(), st.booleans()
    ),
    image=st.one_of(st.binary(max_size=3000), st.just(b"\xff\xd8\xff\xd9")),
    raw_meta=st.one_of(st.none(), st.binary(max_size=200)),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_uploads_never_break_the_intake(station, device, timestamp, image, raw_meta):
    before = station.store.queue_summary()["pending"]
    if raw_meta is not None:
        files = {
            "metadata": ("m.json", raw_meta, "application/json"),
            "image": ("c.jpg", image, "image/jpeg"),
        }
        r = requests.post(f"{base(station)}/api/detections", files=files, timeout=10)
    else:
        r = upload(station, {"device_id": device, "timestamp": timestamp}, image)
    assert r.status_code in (200, 201, 400, 413), r.text
    after = station.store.queue_summary()["pending"]
    if r.status_code in (200, 201):
        row = station.store.get_capture(r.json()["capture_id"])
        assert station.store.read_image(row["id"]) == image
    else:
        assert after == before and r.json()["reason"]


@given(
    body=st.binary(max_size=2000),
    ctype=st.sampled_from(
        [
            "multipart/form-data; boundary=xyz",
            "multipart/form-data",
            "application/json",
            "multipart/form-data; boundary=",
        ]
    ),
)
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
def test_random_raw_bodies_get_4xx(station, body, ctype):
    r = requests.post(
        f"{base(station)}/api/detections", data=body, headers={"Content-Type": ctype}, timeout=10
    )
    assert 400 <= r.status_code < 500, r.text
    assert station.store.queue_summary()["pending"] == 0
