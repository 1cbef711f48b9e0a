"""Cloud faults: a full disk is 503 + Retry-After, every body is bounded, every refusal counted."""

from __future__ import annotations

import csv
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloud.config import CloudConfig, validate
from cloud.export.camtrap import export_camtrap_dp
from tests.cloud.cloud_helpers import auth, item, statuses, upload
from tests.cloud.cloud_services import LiveServer
from tests.helpers import jpeg, tmpfs


def rejections(server: LiveServer, reason: str) -> float:
    text = requests.get(f"{server.url}/metrics", timeout=10).text
    key = f'fieldstation_cloud_rejections_total{{reason="{reason}"}} '
    for line in text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


def heartbeat(server: LiveServer, token: str, body: bytes | dict) -> requests.Response:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return requests.post(
        f"{server.url}/v1/heartbeat",
        data=data,
        headers={**auth(token), "Content-Type": "application/json"},
        timeout=60,
    )


def nested(depth: int, open_: str = "[", close: str = "]") -> str:
    return open_ * depth + close * depth


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "tmpfs") as mount:
        yield mount


def test_full_local_store_answers_503_with_retry_after_then_recovers(small_disk, station_token):
    config = CloudConfig()
    config.server.data_dir = str(small_disk / "cloud")  # SQLite and the local store, both full
    validate(config)
    server = LiveServer(config).start()
    try:
        token = station_token(server, "st-1")
        filler = small_disk / "filler"
        free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
        filler.write_bytes(b"\0" * max(0, free - 400_000))
        codes = []
        for n in range(12):
            images = [jpeg(100 * n + k, (160, 120)) for k in range(4)]
            entries = [item(f"c{n}-{k}", data) for k, data in enumerate(images)]
            response = upload(server.url, token, "st-1", entries)
            codes.append(response.status_code)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert response.headers["retry-after"].isdigit()
        assert 503 in codes, f"the disk never filled: {codes}"
        filler.unlink()
        entries = [item("after", jpeg(9999, (160, 120)))]
        assert statuses(upload(server.url, token, "st-1", entries)) == ["stored"]
    finally:
        server.stop()


# --- bounded bodies and schemas ------------------------------------------------------------------


@pytest.fixture
def server(make_live):
    return make_live()


def test_ten_mib_heartbeat_extra_is_refused_413_and_counted(server, station_token):
    token = station_token(server, "st-1")
    body = {"station_id": "st-1", "time": time.time(), "extra": "x" * (10 << 20)}
    response = heartbeat(server, token, body)
    assert response.status_code == 413
    assert rejections(server, "too_large") == 1
    assert server.service.db.list_stations()[0]["last_heartbeat"] is None


def test_heartbeat_extra_under_the_body_limit_is_still_bounded(server, station_token):
    token = station_token(server, "st-1")
    big = {"station_id": "st-1", "time": time.time(), "extra": "x" * 100_000}
    deep = {"station_id": "st-1", "time": time.time(), "power": json.loads(nested(20))}
    many = {"station_id": "st-1", "time": time.time(), "units_seen": ["u"] * 5000}
    for body in (big, deep, many):
        assert heartbeat(server, token, body).status_code == 400
    assert rejections(server, "schema") == 3
    ok = {"station_id": "st-1", "time": time.time(), "power": {"state": "night", "soc": 0.4}}
    assert heartbeat(server, token, ok).status_code == 200


def test_capture_meta_is_bounded(server, station_token):
    token = station_token(server, "st-1")
    data = jpeg(1)
    entries = [
        item("big-meta", data, meta={"note": "x" * 20_000}),
        item("deep-meta", data, meta={"a": json.loads(nested(12))}),
        item("fine", data, meta={"firmware": "0.3.1"}),
    ]
    response = upload(server.url, token, "st-1", entries)
    assert statuses(response) == ["rejected", "rejected", "stored"]
    assert rejections(server, "schema") == 2


def test_refusals_that_never_reach_a_route_are_counted(server, station_token):
    token = station_token(server, "st-1")
    assert requests.get(f"{server.url}/v1/stations", timeout=10).status_code == 401
    assert (
        requests.get(f"{server.url}/v1/stations", headers=auth(token), timeout=10).status_code
        == 403
    )
    body = {"station_id": "st-2", "time": time.time()}
    assert heartbeat(server, token, body).status_code == 403
    assert rejections(server, "no_token") == 1
    assert rejections(server, "not_admin_token") == 1
    assert rejections(server, "wrong_station") == 1


# --- nested and oversized JSON on every JSON body ------------------------------------------------

JSON_ROUTES = ["heartbeat", "lookup", "manifest", "report"]
JSON_PATHS = {
    "heartbeat": "/v1/heartbeat",
    "lookup": "/v1/captures/lookup",
    "report": "/v1/models/report",
}
REFUSALS = ("schema", "bad_request", "bad_manifest", "too_large")


@pytest.fixture
def token(server, station_token) -> str:
    return station_token(server, "st-1")


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(JSON_ROUTES),
    depth=st.integers(min_value=1, max_value=60_000),
    brace=st.booleans(),
    wrap=st.booleans(),
)
def test_deeply_nested_json_is_a_counted_4xx_never_a_500(server, token, route, depth, brace, wrap):
    doc = '{"a":' * depth + "0" + "}" * depth if brace else nested(depth)
    if wrap:  # inside an otherwise valid body, where a schema's free-form part would take it
        doc = f'{{"station_id": "st-1", "time": 1, "capture_ids": [], "items": [{doc}]}}'
    before = sum(rejections(server, r) for r in REFUSALS)
    if route == "manifest":
        response = requests.post(
            f"{server.url}/v1/captures/batch",
            files=[("manifest", (None, doc, "application/json"))],
            headers=auth(token),
            timeout=60,
        )
    else:
        response = requests.post(
            f"{server.url}{JSON_PATHS[route]}",
            data=doc.encode(),
            headers={**auth(token), "Content-Type": "application/json"},
            timeout=60,
        )
    assert response.status_code != 500, response.text
    if response.status_code != 200:  # a shallow wrapped document may be a valid empty request
        assert 400 <= response.status_code < 500, response.text
        assert sum(rejections(server, r) for r in REFUSALS) == before + 1


# --- dates in the export -------------------------------------------------------------------------


def test_camtrap_export_carries_each_timestamp_source(make_live, station_token, tmp_path):
    server = make_live()
    token = station_token(server, "st-1", location=(52.1, 5.2))
    entries = [
        item(
            "clock",
            jpeg(1),
            captured_at=1_700_000_000.0,
            unit_time=1_700_000_000,
            unit_time_kind="epoch_s",
            meta={"time_source": "unit_clock"},
        ),
        item(
            "named",
            jpeg(2),
            captured_at=1_700_000_100.0,
            unit_time=52_000,
            unit_time_kind="boot_ms",
            meta={"time_source": "file_name"},
        ),
        item(
            "recv",
            jpeg(3),
            captured_at=None,
            unit_time=1_300_000_000,
            unit_time_kind="boot_ms",
            meta={},
        ),
    ]
    assert statuses(upload(server.url, token, "st-1", entries)) == ["stored"] * 3
    export_camtrap_dp(server.service.db, server.service.store, tmp_path / "dp")
    with (tmp_path / "dp" / "media.csv").open() as f:
        comments = {r["fileName"]: r["mediaComments"] for r in csv.DictReader(f)}
    assert comments["clock.jpg"].endswith("timestamp from unit_clock")
    assert comments["named.jpg"].endswith("timestamp from file_name")
    assert comments["recv.jpg"].endswith("timestamp from received")
    with (tmp_path / "dp" / "observations.csv").open() as f:
        notes = {r["eventID"]: r["observationComments"] for r in csv.DictReader(f)}
    assert notes["st-1:named"] == "timestamp from file_name"


# --- model and rollout routes --------------------------------------------------------------------


def post(server: LiveServer, token: str, path: str, body: dict) -> requests.Response:
    return requests.post(f"{server.url}{path}", json=body, headers=auth(token), timeout=60)


def test_model_report_is_bounded_and_refusals_counted(server, token):
    # 15k names fit under the 256 KiB body limit; 100k do not and are refused before the schema
    many = {"models": {f"m{n}": {} for n in range(15_000)}}
    deep = {"models": {"det": {"job": json.loads(nested(20))}}}
    big = {"models": {"det": {"bad": {"1.0": "x" * 100_000}}}}
    long_name = {"models": {"d" * 10_000: {}}}
    for body in (many, deep, big, long_name):
        assert post(server, token, "/v1/models/report", body).status_code == 400
    assert rejections(server, "schema") == 4
    huge = {"models": {f"m{n}": {} for n in range(100_000)}}
    assert post(server, token, "/v1/models/report", huge).status_code == 413
    assert rejections(server, "too_large") == 1
    station = {  # the shape model sync sends
        "models": {
            "wildcam-det": {
                "active": "1.2.0",
                "previous": ["1.1.0"],
                "probation": True,
                "job": {"version": "1.2.0", "state": "active", "reason": None, "at": 1.5},
                "bad": {"1.0.9": "self-test failed: output 0 off by 5.0"},
                "rolled_back": {},
                "shadow": {"version": "1.2.0", "agreement": 0.97, "frames": 40},
            }
        }
    }
    assert post(server, token, "/v1/models/report", station).status_code == 200


def test_rollout_body_is_bounded(server, admin_token):
    admin = admin_token(server)
    fine = {"name": "wildcam-det", "version": "1.2.0", "waves": [{"percent": 10}]}
    bodies = [
        {**fine, "name": "n" * 10_000},
        {**fine, "version": "v" * 10_000},
        {**fine, "waves": [{"stations": ["st-1"] * 5000}]},
        {**fine, "waves": [{"stations": ["s" * 10_000]}]},
        {**fine, "waves": [{"cohort": "c" * 10_000}]},
        {**fine, "timeout_s": 1e300},
    ]
    for body in bodies:
        response = post(server, admin, "/v1/rollouts", body)
        assert response.status_code == 400, (body.keys(), response.text)
    assert rejections(server, "schema") == len(bodies)


def test_rollout_refusals_are_counted_with_their_reason(server, admin_token, token):
    admin = admin_token(server)
    unpublished = {"name": "wildcam-det", "version": "9.9.9", "waves": [{"percent": 10}]}
    assert post(server, admin, "/v1/rollouts", unpublished).status_code == 409
    assert rejections(server, "not_published") == 1
    response = requests.get(f"{server.url}/v1/rollouts/nope", headers=auth(admin), timeout=10)
    assert response.status_code == 404
    assert post(server, admin, "/v1/rollouts/nope/promote", {}).status_code == 404
    assert rejections(server, "unknown_rollout") == 2
    assert post(server, admin, "/v1/rollouts/nope/explode", {}).status_code == 404
    assert rejections(server, "unknown_action") == 1
    response = requests.get(
        f"{server.url}/v1/models/nope/1.0/artifact", headers=auth(token), timeout=10
    )
    assert response.status_code == 404
    assert rejections(server, "unknown_model") == 1
