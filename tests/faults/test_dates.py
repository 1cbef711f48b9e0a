"""Dates are never invented: WildCAM's millis() is never read as a calendar date."""

from __future__ import annotations

import datetime as dt
import json
import time

import pytest
import requests

from agent.capture import capture_time, classify_unit_time, date_in_file_name
from agent.scenes import scene_jpeg

SKEW = 900.0
# 15 days of uptime in milliseconds: the old rule read this as 2011-03-13.
FIFTEEN_DAYS_MS = 1_300_000_000


@pytest.fixture
def station(make_station):
    return make_station()


def upload(station, meta: dict, seed: int) -> requests.Response:
    files = {
        "metadata": (None, json.dumps(meta)),
        "image": ("c.jpg", scene_jpeg(seed, (160, 120)), "image/jpeg"),
    }
    url = f"http://{station.config.http.listen}/api/detections"
    return requests.post(url, files=files, timeout=10)


def stored(station) -> dict:
    (row,) = station.store.captures_in_state("received")
    return {**dict(row), "meta": json.loads(row["meta"])}


@pytest.mark.parametrize("uptime_ms", [1_000_000_000, FIFTEEN_DAYS_MS, 4_000_000_000])
def test_millis_after_eleven_days_of_uptime_is_boot_time(uptime_ms):
    now = time.time()
    assert classify_unit_time(uptime_ms, now, SKEW) == "boot_ms"


def test_a_clock_that_agrees_with_ours_is_a_date():
    now = time.time()
    assert classify_unit_time(int(now) - 30, now, SKEW) == "epoch_s"
    assert classify_unit_time(int(now * 1000) + 5000, now, SKEW) == "epoch_ms"
    assert classify_unit_time(int(now) - 2 * 86400, now, SKEW) == "boot_ms"


def test_long_uptime_capture_gets_the_receive_time_and_says_so(station):
    before = time.time()
    r = upload(station, {"device_id": "a1b2", "timestamp": FIFTEEN_DAYS_MS}, 1)
    assert r.status_code == 201
    row = stored(station)
    assert row["unit_time"] == FIFTEEN_DAYS_MS and row["unit_time_kind"] == "boot_ms"
    assert before - 1 <= row["captured_at"] <= time.time() + 1
    assert row["meta"]["time_source"] == "received"


def test_reported_uptime_corrects_the_receive_time(station):
    # taken at millis 1_300_000_000, sent 90 s later
    meta = {
        "device_id": "a1b2",
        "timestamp": FIFTEEN_DAYS_MS,
        "uptime_ms": FIFTEEN_DAYS_MS + 90_000,
    }
    before = time.time()
    assert upload(station, meta, 2).status_code == 201
    row = stored(station)
    assert before - 91 <= row["captured_at"] <= time.time() - 89
    assert row["meta"]["time_source"] == "unit_uptime"


def test_re_upload_takes_its_date_from_the_sd_card_file_name(station):
    taken = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=3, hours=2)
    name = f"/wildlife/images/{taken:%Y%m%d_%H%M%S}_deer.jpg"
    meta = {"device_id": "a1b2", "timestamp": 52_000, "file_path": name}
    assert upload(station, meta, 3).status_code == 201
    row = stored(station)
    assert row["captured_at"] == taken.timestamp()
    assert row["meta"]["time_source"] == "file_name"
    assert row["unit_time"] == 52_000 and row["unit_time_kind"] == "boot_ms"


def test_a_plausible_unit_clock_is_kept(station):
    now = int(time.time()) - 20
    assert upload(station, {"device_id": "a1b2", "timestamp": now}, 4).status_code == 201
    row = stored(station)
    assert row["unit_time_kind"] == "epoch_s" and row["captured_at"] == now
    assert row["meta"]["time_source"] == "unit_clock"


def test_file_names_without_a_believable_date_are_ignored():
    now = time.time()
    assert date_in_file_name("/img/123456789_deer.jpg", now, SKEW) is None
    assert date_in_file_name("/img/20251399_250000.jpg", now, SKEW) is None
    future = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    assert date_in_file_name(f"{future:%Y%m%d_%H%M%S}.jpg", now, SKEW) is None
    assert date_in_file_name("/img/20010101_000000.jpg", now, SKEW) is None  # RTC never set


def test_capture_time_never_returns_a_boot_relative_date():
    now = time.time()
    for value in (0, 1, 999_999_999, FIFTEEN_DAYS_MS, 4_100_000_000, 2**40):
        kind = classify_unit_time(value, now, SKEW)
        at, source = capture_time(value, kind, now, skew_s=SKEW)
        assert abs(at - now) <= SKEW, (value, kind, at, source)
