"""Bad input and abuse: limits, JPEG magic, schema reasons, tokens, injection, rate limits."""

from __future__ import annotations

import json

import pytest
import requests

from tests.cloud.cloud_helpers import auth, batch_files, item, statuses, upload
from tests.helpers import jpeg


@pytest.fixture
def server(make_live):
    return make_live(max_body_bytes=400_000, max_item_bytes=100_000, max_items=5)


def post(server, token, files=None, data=None, headers=None):
    return requests.post(
        f"{server.url}/v1/captures/batch",
        files=files,
        data=data,
        headers={**auth(token), **(headers or {})},
        timeout=30,
    )


def test_missing_token_is_401(server):
    response = requests.post(
        f"{server.url}/v1/captures/batch", files=batch_files("st-1", []), timeout=30
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"


def test_unknown_token_is_401(server, station_token):
    station_token(server, "st-1")
    fake = "fsc_0123456789abcdef_" + "A" * 43
    assert post(server, fake, files=batch_files("st-1", [])).status_code == 401


def test_tampered_secret_of_a_real_token_is_401(server, station_token):
    token = station_token(server, "st-1")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert post(server, tampered, files=batch_files("st-1", [])).status_code == 401


def test_revoked_station_token_is_401(server, station_token):
    token = station_token(server, "st-1")
    server.service.db.revoke_station("st-1")
    assert post(server, token, files=batch_files("st-1", [item("c1", jpeg(1))])).status_code == 401


def test_token_cannot_upload_for_another_station(server, station_token):
    token = station_token(server, "st-1")
    station_token(server, "st-2")
    response = post(server, token, files=batch_files("st-2", [item("c1", jpeg(1))]))
    assert response.status_code == 403
    assert server.service.db.query_captures(station_id="st-2") == []


def test_token_cannot_heartbeat_for_another_station(server, station_token):
    token = station_token(server, "st-1")
    response = requests.post(
        f"{server.url}/v1/heartbeat",
        json={"station_id": "st-2", "time": 1.0},
        headers=auth(token),
        timeout=30,
    )
    assert response.status_code == 403


def test_station_token_cannot_use_operator_routes(server, station_token):
    token = station_token(server, "st-1")
    for path in ("/v1/stations", "/v1/captures"):
        assert requests.get(server.url + path, headers=auth(token), timeout=30).status_code == 403


def test_body_over_limit_is_413(server, station_token):
    token = station_token(server, "st-1")
    entries = [item(f"c{i}", jpeg(i, (200, 200)) + b"\0" * 95_000) for i in range(5)]
    response = upload(server.url, token, "st-1", entries)
    assert response.status_code == 413
    assert "400000" in response.json()["detail"]


def test_item_over_limit_is_413_naming_the_part(server, station_token):
    token = station_token(server, "st-1")
    big = jpeg(1) + b"\0" * 120_000
    response = upload(server.url, token, "st-1", [item("c1", big, part="bigpart")])
    assert response.status_code == 413
    assert "bigpart" in response.json()["detail"]


def test_too_many_items_is_413(server, station_token):
    token = station_token(server, "st-1")
    entries = [item(f"c{i}", jpeg(i), variant="none") for i in range(6)]
    assert upload(server.url, token, "st-1", entries).status_code == 413


def test_part_without_jpeg_magic_is_rejected(server, station_token):
    token = station_token(server, "st-1")
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 100
    response = upload(server.url, token, "st-1", [item("c1", png)])
    result = response.json()["results"][0]
    assert result["status"] == "rejected" and "JPEG" in result["reason"]


def test_image_digest_mismatch_is_rejected(server, station_token):
    token = station_token(server, "st-1")
    entry, data = item("c1", jpeg(1), variant="thumbnail", sent=jpeg(2))
    entry["image_sha256"] = "0" * 64
    result = upload(server.url, token, "st-1", [(entry, data)]).json()["results"][0]
    assert result["status"] == "rejected" and "image_sha256" in result["reason"]


def test_full_variant_must_be_the_original_bytes(server, station_token):
    token = station_token(server, "st-1")
    entry, _ = item("c1", jpeg(1))
    other = jpeg(2)
    entry["image_sha256"] = None
    result = upload(server.url, token, "st-1", [(entry, other)]).json()["results"][0]
    assert result["status"] == "rejected" and "original" in result["reason"]


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"variant": "raw"}, "variant"),
        ({"sha256": "xyz"}, "sha256"),
        ({"size": -1}, "size"),
        ({"unit_time_kind": "fortnights"}, "unit_time_kind"),
        (
            {"detections": [{"label": "fox", "group": "animal", "score": 1.5, "box": None}]},
            "detections.0.score",
        ),
        (
            {"detections": [{"label": "fox", "group": "animal", "score": 0.5, "box": [0.1, 0.2]}]},
            "detections.0.box",
        ),
    ],
)
def test_schema_problem_rejects_the_item_with_the_field_in_the_reason(
    server, station_token, change, field
):
    token = station_token(server, "st-1")
    entry, data = item("c1", jpeg(1))
    entry.update(change)
    result = upload(server.url, token, "st-1", [(entry, data)]).json()["results"][0]
    assert result["status"] == "rejected"
    assert result["reason"].startswith(field), result["reason"]


def test_unknown_item_fields_are_kept_in_meta(server, station_token):
    token = station_token(server, "st-1")
    entry, data = item("c1", jpeg(1))
    entry["priority"] = 7
    assert statuses(upload(server.url, token, "st-1", [(entry, data)])) == ["stored"]
    assert server.service.db.get_capture("st-1", "c1").meta == {
        "firmware": "0.3.1",
        "_extra": {"priority": 7},
    }


def test_missing_image_part_is_rejected(server, station_token):
    token = station_token(server, "st-1")
    entry, _ = item("c1", jpeg(1))
    result = upload(server.url, token, "st-1", [(entry, None)]).json()["results"][0]
    assert result["status"] == "rejected" and "not in the request" in result["reason"]


@pytest.mark.parametrize(
    "capture_id",
    ["../../etc/passwd", "/abs", "..", "x';DROP TABLE captures;--", "a b", "", "x" * 200, "é"],
)
def test_hostile_capture_ids_are_rejected_and_nothing_is_written(
    server, station_token, capture_id, tmp_path
):
    token = station_token(server, "st-1")
    response = upload(server.url, token, "st-1", [item(capture_id, jpeg(1), part="img0")])
    assert statuses(response) == ["rejected"]
    assert response.json()["results"][0]["reason"].startswith("capture_id")
    assert server.service.db.query_captures() == []
    assert not (tmp_path / "etc").exists()


def test_odd_but_valid_ids_are_stored_inside_the_store(server, station_token, admin_token):
    token, admin = station_token(server, "st-1"), admin_token(server)
    for capture_id in ("a..b", "x:1.jpg", "A-_.:9"):
        data = jpeg(len(capture_id))
        assert statuses(upload(server.url, token, "st-1", [item(capture_id, data, part="p")])) == [
            "stored"
        ]
        image = requests.get(
            f"{server.url}/v1/captures/st-1/{capture_id}/image", headers=auth(admin), timeout=30
        )
        assert image.content == data
    root = server.service.store.root
    assert all(p.resolve().is_relative_to(root) for p in root.rglob("*"))


def test_sql_in_operator_filters_is_data_not_sql(server, station_token, admin_token):
    token, admin = station_token(server, "st-1"), admin_token(server)
    statuses(upload(server.url, token, "st-1", [item("c1", jpeg(1))]))
    for params in ({"label": "x' OR '1'='1"}, {"station_id": "st-1' OR 1=1 --"}):
        listed = requests.get(
            f"{server.url}/v1/captures", params=params, headers=auth(admin), timeout=30
        )
        assert listed.status_code == 200 and listed.json()["count"] == 0
    assert len(server.service.db.query_captures()) == 1


def test_unparseable_manifest_is_400_with_reason(server, station_token):
    token = station_token(server, "st-1")
    response = post(server, token, files=[("manifest", (None, "{not json", "application/json"))])
    assert response.status_code == 400
    assert "manifest is not valid JSON" in response.json()["detail"]


def test_manifest_missing_is_400(server, station_token):
    token = station_token(server, "st-1")
    response = post(server, token, files=[("img0", ("a.jpg", jpeg(1), "image/jpeg"))])
    assert response.status_code == 400 and "manifest" in response.json()["detail"]


def test_manifest_items_not_a_list_is_400(server, station_token):
    token = station_token(server, "st-1")
    manifest = json.dumps({"station_id": "st-1", "items": {"a": 1}})
    response = post(server, token, files=[("manifest", (None, manifest, "application/json"))])
    assert response.status_code == 400 and "items" in response.json()["detail"]


def test_json_body_instead_of_multipart_is_400(server, station_token):
    token = station_token(server, "st-1")
    response = requests.post(
        f"{server.url}/v1/captures/batch",
        json={"station_id": "st-1", "items": []},
        headers=auth(token),
        timeout=30,
    )
    assert response.status_code == 400 and "multipart" in response.json()["detail"]


def test_truncated_multipart_body_is_400(server, station_token):
    token = station_token(server, "st-1")
    prepared = requests.Request(
        "POST", f"{server.url}/v1/captures/batch", files=batch_files("st-1", [item("c1", jpeg(1))])
    ).prepare()
    body = prepared.body[: len(prepared.body) // 2]
    response = requests.post(
        f"{server.url}/v1/captures/batch",
        data=body,
        headers={**auth(token), "Content-Type": prepared.headers["Content-Type"]},
        timeout=30,
    )
    assert response.status_code == 400
    assert server.service.db.query_captures() == []


def test_lookup_of_more_than_1000_ids_is_400(server, station_token):
    token = station_token(server, "st-1")
    response = requests.post(
        f"{server.url}/v1/captures/lookup",
        json={"capture_ids": [f"c{i}" for i in range(1001)]},
        headers=auth(token),
        timeout=30,
    )
    assert response.status_code == 400


def test_rate_limit_answers_429_with_retry_after(make_live, station_token):
    server = make_live(rate_limit_per_minute=1, rate_limit_burst=2)
    token = station_token(server, "st-1")
    codes = [post(server, token, files=batch_files("st-1", [])).status_code for _ in range(2)]
    assert codes == [200, 200]
    limited = post(server, token, files=batch_files("st-1", []))
    assert limited.status_code == 429
    assert int(limited.headers["retry-after"]) >= 1
    # Another station has its own bucket.
    other = station_token(server, "st-2")
    assert post(server, other, files=batch_files("st-2", [])).status_code == 200


def test_unreachable_object_store_answers_503_with_retry_after(make_live, station_token):
    from tests.helpers import free_port

    server = make_live()
    # Swap in an S3 store whose endpoint has nothing listening.
    from cloud.config import StorageConfig
    from cloud.storage.s3 import S3Store

    dead = StorageConfig(
        backend="s3",
        bucket="gone",
        endpoint_url=f"http://127.0.0.1:{free_port()}",
        access_key_id="x",
        secret_access_key="x",
    )
    server.service.store = server.service.ingest.store = S3Store(dead)
    token = station_token(server, "st-1")
    response = upload(server.url, token, "st-1", [item("c1", jpeg(1))])
    assert response.status_code == 503
    assert response.headers["retry-after"] == "5"
    assert server.service.db.query_captures() == []
    ready = requests.get(f"{server.url}/readyz", timeout=30)
    assert ready.status_code == 503 and "storage" in ready.json()["problems"][0]


def test_rejections_are_counted_in_metrics(server, station_token):
    token = station_token(server, "st-1")
    upload(server.url, token, "st-1", [item("../x", jpeg(1))])
    text = requests.get(f"{server.url}/metrics", timeout=30).text
    assert 'fieldstation_cloud_rejections_total{reason="schema"} 1.0' in text
    assert 'fieldstation_cloud_captures_total{status="rejected"} 1.0' in text
