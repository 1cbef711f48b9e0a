"""What the audit of the station page found as a technician meets it: a station whose every sync
endpoint is unreachable, or whose buffer holds an alarm, must not read as all well; a detection at
an image's edge must not widen the page past a 360 px phone."""

from __future__ import annotations

import json

import pytest
import requests

from agent.config import ByteSize
from agent.inference.package import Detection
from agent.scenes import scene_jpeg
from tests.helpers import free_port, jpeg, wait_for
from tests.web.page_rig import Field, log_in

pytestmark = pytest.mark.timeout(120)


def test_overview_says_uploads_are_offline_though_the_station_is_ready(make_station):
    dead = free_port()  # nothing listens there: the link is down
    station = make_station(
        f"""
[[upload.endpoints]]
name = "aws"
url = "http://127.0.0.1:{dead}"
token = "t0ken"
"""
    )
    url = f"http://{station.config.http.listen}"
    meta = json.dumps({"device_id": "a1b2c3", "timestamp": 1764115200})
    r = requests.post(
        f"{url}/api/detections",
        files={"metadata": (None, meta), "image": ("c.jpg", scene_jpeg(3), "image/jpeg")},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    wait_for(lambda: station.status()["upload"]["online"] is False, 30, "uploads offline")
    # no alarm: a station with no link is normal, so /readyz stays ready ...
    assert requests.get(f"{url}/readyz", timeout=5).status_code == 200
    page = requests.get(f"{url}/", timeout=5).text  # loopback, no password: the page itself
    # ... but the first line a technician reads says the captures are not leaving
    assert "READY" in page and "nothing is unwell" not in page
    assert "uploads offline: no sync endpoint answers (aws: " in page
    assert "1 captures wait here" in page


def test_overview_names_the_buffers_own_alarm_instead_of_all_is_well(make_station):
    # a quota smaller than one capture that may not be evicted (not yet analysed or uploaded)
    station = make_station(storage={"quota_bytes": ByteSize(1 << 20), "evict_interval_s": 1.0})
    url = f"http://{station.config.http.listen}"
    meta = json.dumps({"device_id": "a1b2c3", "timestamp": 1764115200})
    r = requests.post(
        f"{url}/api/detections",
        files={"metadata": (None, meta), "image": ("c.jpg", jpeg(4, (1400, 1000)), "image/jpeg")},
        timeout=10,
    )
    assert r.status_code == 201, r.text
    wait_for(lambda: station.store.alarms(), 30, "the storage_quota alarm")
    page = requests.get(f"{url}/", timeout=5).text
    assert "nothing is unwell" not in page
    lead = page[page.index('id="ready-words"') :].split("</p>")[0]
    assert "storage_quota: buffer holds" in lead


def test_a_box_at_the_right_edge_stays_inside_a_360_px_phone(field_station: Field, browser):
    store = field_station.station.store
    unit = field_station.units["cam-north"]
    n = field_station.captures_of("cam-north")
    for seed in (61, 62):
        unit.capture(scene_jpeg(seed))
    wait_for(lambda: field_station.captures_of("cam-north") >= n + 2, 15, "two captures")
    # the older of the two is the right-hand card of the phone's two columns
    older = store.latest_captures(unit_id="cam-north", limit=2)[1]["id"]
    # a deer at the right edge of the frame: its label is wider than its box
    deer = Detection("red-deer", "animal", 0.93, (0.9, 0.05, 0.1, 0.3), "wildcam-detector", "3")
    store.save_analysis(older, [deer], empty=False, upload_variant="original", summary={})
    page = log_in(browser, field_station.url, width=360, height=780)
    page.goto(f"{field_station.url}/captures?unit=cam-north")
    assert "red-deer 93%" in page.locator("#captures .capture").nth(1).inner_text()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 360, f"the captures page is {width} px wide on a 360 px phone"
    page.context.close()
