"""Heartbeats, operator station list, model manifest and artifacts, probes."""

from __future__ import annotations

import hashlib

import pytest
import requests

from cloud.models import publish_model
from tests.cloud.cloud_helpers import auth

HEARTBEAT = {
    "station_id": "st-1",
    "time": 1_700_000_000.5,
    "power_state": "normal",
    "battery": {"percent": 81.5, "charging": True},
    "queue": {"depth": 12, "bytes": 345678, "by_state": {"stored": 10, "analysed": 2}},
    "disk": {"free_bytes": 10_000_000, "total_bytes": 32_000_000},
    "models": {"wildcam-det": "1.2.0"},
    "units_seen": ["unit-a", "unit-b"],
    "software_version": "0.1.0",
}


@pytest.fixture
def server(make_live):
    return make_live()


def test_ping_needs_no_token(server):
    body = requests.get(f"{server.url}/v1/ping", timeout=30).json()
    assert body["ok"] is True and isinstance(body["time"], float)


def test_heartbeat_shows_in_the_operator_station_list(server, station_token, admin_token):
    token, admin = station_token(server, "st-1"), admin_token(server)
    response = requests.post(
        f"{server.url}/v1/heartbeat", json=HEARTBEAT, headers=auth(token), timeout=30
    )
    assert response.status_code == 200 and response.json()["ok"] is True
    stations = requests.get(f"{server.url}/v1/stations", headers=auth(admin), timeout=30).json()[
        "stations"
    ]
    assert [s["station_id"] for s in stations] == ["st-1"]
    last = stations[0]["last_heartbeat"]
    assert last["queue"]["depth"] == 12 and last["units_seen"] == ["unit-a", "unit-b"]
    assert stations[0]["last_heartbeat_at"] == pytest.approx(response.json()["server_time"])


def test_heartbeat_with_wrong_types_is_400_with_the_field(server, station_token):
    token = station_token(server, "st-1")
    bad = {**HEARTBEAT, "queue": {"depth": "many", "bytes": 1}}
    response = requests.post(
        f"{server.url}/v1/heartbeat", json=bad, headers=auth(token), timeout=30
    )
    assert response.status_code == 400 and "queue.depth" in response.json()["detail"]


def test_config_admin_token_opens_operator_routes(make_live):
    server = make_live()
    server.config.auth.admin_token = "operator-secret-from-config"
    response = requests.get(
        f"{server.url}/v1/stations", headers=auth("operator-secret-from-config"), timeout=30
    )
    assert response.status_code == 200


@pytest.fixture
def published(server, tmp_path):
    artifact = tmp_path / "det.tar"
    artifact.write_bytes(bytes(range(256)) * 40)
    entry = publish_model(server.service.db, server.service.store, artifact, "wildcam-det", "1.2.0")
    return entry, artifact.read_bytes()


def test_manifest_lists_published_models(server, station_token, published):
    entry, data = published
    token = station_token(server, "st-1")
    body = requests.get(f"{server.url}/v1/models/manifest", headers=auth(token), timeout=30).json()
    assert body["models"] == [
        {
            "name": "wildcam-det",
            "version": "1.2.0",
            "sha256": hashlib.sha256(data).hexdigest(),
            "size": len(data),
            "url": "/v1/models/wildcam-det/1.2.0/artifact",
            "published_at": entry["published_at"],
        }
    ]


def test_manifest_etag_answers_304_until_a_new_publish(server, station_token, published, tmp_path):
    token = station_token(server, "st-1")
    first = requests.get(f"{server.url}/v1/models/manifest", headers=auth(token), timeout=30)
    etag = first.headers["etag"]
    again = requests.get(
        f"{server.url}/v1/models/manifest",
        headers={**auth(token), "If-None-Match": etag},
        timeout=30,
    )
    assert again.status_code == 304 and again.content == b""
    newer = tmp_path / "det2.tar"
    newer.write_bytes(b"v2")
    publish_model(server.service.db, server.service.store, newer, "wildcam-det", "1.3.0")
    changed = requests.get(
        f"{server.url}/v1/models/manifest",
        headers={**auth(token), "If-None-Match": etag},
        timeout=30,
    )
    assert changed.status_code == 200 and len(changed.json()["models"]) == 2


def test_artifact_whole_and_ranges(server, station_token, published):
    _, data = published
    token = station_token(server, "st-1")
    url = f"{server.url}/v1/models/wildcam-det/1.2.0/artifact"
    whole = requests.get(url, headers=auth(token), timeout=30)
    assert whole.status_code == 200 and whole.content == data
    assert whole.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    part = requests.get(url, headers={**auth(token), "Range": "bytes=100-199"}, timeout=30)
    assert part.status_code == 206 and part.content == data[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(data)}"
    tail = requests.get(url, headers={**auth(token), "Range": "bytes=-10"}, timeout=30)
    assert tail.status_code == 206 and tail.content == data[-10:]
    rest = requests.get(
        url, headers={**auth(token), "Range": f"bytes={len(data) - 5}-"}, timeout=30
    )
    assert rest.content == data[-5:]


def test_artifact_range_past_the_end_is_416(server, station_token, published):
    _, data = published
    token = station_token(server, "st-1")
    response = requests.get(
        f"{server.url}/v1/models/wildcam-det/1.2.0/artifact",
        headers={**auth(token), "Range": f"bytes={len(data)}-"},
        timeout=30,
    )
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{len(data)}"


def test_unknown_artifact_is_404(server, station_token, published):
    token = station_token(server, "st-1")
    response = requests.get(
        f"{server.url}/v1/models/wildcam-det/9.9/artifact", headers=auth(token), timeout=30
    )
    assert response.status_code == 404


def test_health_ready_and_metrics(server, station_token):
    assert requests.get(f"{server.url}/healthz", timeout=30).json() == {"ok": True}
    assert requests.get(f"{server.url}/readyz", timeout=30).json() == {"ok": True}
    token = station_token(server, "st-1")
    requests.post(f"{server.url}/v1/heartbeat", json=HEARTBEAT, headers=auth(token), timeout=30)
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    assert "fieldstation_cloud_heartbeats_total 1.0" in text
    assert 'fieldstation_cloud_requests_total{code="200",route="/v1/heartbeat"} 1.0' in text


def test_openapi_document_describes_the_v1_routes(server):
    document = requests.get(f"{server.url}/openapi.json", timeout=30).json()
    for path in (
        "/v1/ping",
        "/v1/captures/batch",
        "/v1/captures/lookup",
        "/v1/heartbeat",
        "/v1/models/manifest",
        "/v1/models/{name}/{version}/artifact",
        "/v1/stations",
        "/v1/captures",
    ):
        assert path in document["paths"], path
    batch = document["paths"]["/v1/captures/batch"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in batch
