"""The upload suite, run against every database + object store combination (see BACKENDS)."""

from __future__ import annotations

import threading

import requests

from tests.cloud.cloud_helpers import auth, item, sha, statuses, upload
from tests.helpers import jpeg


def test_batch_of_full_thumbnail_and_metadata_only_is_stored(live, station_token):
    token = station_token(live, "st-1")
    full, original, thumb = jpeg(1), jpeg(2, (320, 240)), jpeg(3, (32, 24))
    entries = [
        item("cap-full", full),
        item("cap-thumb", original, variant="thumbnail", sent=thumb),
        item("cap-none", jpeg(4), variant="none", empty=True, detections=[]),
    ]
    response = upload(live.url, token, "st-1", entries)
    assert response.json() == {
        "results": [
            {"capture_id": "cap-full", "status": "stored", "reason": None},
            {"capture_id": "cap-thumb", "status": "stored", "reason": None},
            {"capture_id": "cap-none", "status": "stored", "reason": None},
        ]
    }


def test_stored_image_bytes_come_back_unchanged(live, station_token, admin_token):
    token, admin = station_token(live, "st-1"), admin_token(live)
    full = jpeg(5, (640, 480))
    statuses(upload(live.url, token, "st-1", [item("cap-1", full)]))
    image = requests.get(
        f"{live.url}/v1/captures/st-1/cap-1/image", headers=auth(admin), timeout=30
    )
    assert image.status_code == 200
    assert image.content == full
    assert image.headers["etag"] == f'"{sha(full)}"'


def test_same_capture_again_is_duplicate_without_second_copy(live, station_token):
    token = station_token(live, "st-1")
    entry = item("cap-1", jpeg(6))
    assert statuses(upload(live.url, token, "st-1", [entry])) == ["stored"]
    first = live.service.db.get_capture("st-1", "cap-1")
    assert statuses(upload(live.url, token, "st-1", [entry])) == ["duplicate"]
    again = live.service.db.get_capture("st-1", "cap-1")
    assert again.image_key == first.image_key and again.uploaded_at == first.uploaded_at


def test_same_id_with_other_bytes_is_conflict_and_keeps_the_first(live, station_token, admin_token):
    token, admin = station_token(live, "st-1"), admin_token(live)
    first, other = jpeg(7), jpeg(8)
    assert statuses(upload(live.url, token, "st-1", [item("cap-1", first)])) == ["stored"]
    response = upload(live.url, token, "st-1", [item("cap-1", other)])
    assert statuses(response) == ["conflict"]
    assert sha(first) in response.json()["results"][0]["reason"]
    image = requests.get(
        f"{live.url}/v1/captures/st-1/cap-1/image", headers=auth(admin), timeout=30
    )
    assert image.content == first


def test_full_image_after_thumbnail_upgrades_the_stored_variant(live, station_token, admin_token):
    token, admin = station_token(live, "st-1"), admin_token(live)
    original = jpeg(9, (320, 240))
    thumb = item("cap-1", original, variant="thumbnail", sent=jpeg(10, (32, 24)))
    assert statuses(upload(live.url, token, "st-1", [thumb])) == ["stored"]
    response = upload(live.url, token, "st-1", [item("cap-1", original)])
    assert response.json()["results"][0] == {
        "capture_id": "cap-1",
        "status": "duplicate",
        "reason": "image upgraded from 'thumbnail' to 'full'",
    }
    image = requests.get(
        f"{live.url}/v1/captures/st-1/cap-1/image", headers=auth(admin), timeout=30
    )
    assert image.content == original and image.headers["x-capture-variant"] == "full"


def test_thumbnail_after_full_does_not_downgrade(live, station_token):
    token = station_token(live, "st-1")
    original = jpeg(11)
    statuses(upload(live.url, token, "st-1", [item("cap-1", original)]))
    thumb = item("cap-1", original, variant="thumbnail", sent=jpeg(12, (16, 16)))
    response = upload(live.url, token, "st-1", [thumb])
    assert response.json()["results"][0]["status"] == "duplicate"
    assert live.service.db.get_capture("st-1", "cap-1").variant == "full"


def test_bad_item_is_rejected_and_the_others_are_stored(live, station_token):
    token = station_token(live, "st-1")
    bad, _ = item("cap-bad", jpeg(13), path="carrier-pigeon")
    response = upload(
        live.url, token, "st-1", [item("cap-a", jpeg(14)), (bad, jpeg(13)), item("cap-b", jpeg(15))]
    )
    results = response.json()["results"]
    assert [r["status"] for r in results] == ["stored", "rejected", "stored"]
    assert results[1]["reason"].startswith("path:")


def test_lookup_reports_only_this_stations_held_captures(live, station_token):
    token1, token2 = station_token(live, "st-1"), station_token(live, "st-2")
    original = jpeg(16)
    statuses(upload(live.url, token1, "st-1", [item("cap-1", original)]))
    statuses(upload(live.url, token2, "st-2", [item("cap-2", jpeg(17))]))
    held = requests.post(
        f"{live.url}/v1/captures/lookup",
        json={"capture_ids": ["cap-1", "cap-2", "cap-missing"]},
        headers=auth(token1),
        timeout=30,
    )
    assert held.status_code == 200
    assert held.json() == {"held": {"cap-1": {"sha256": sha(original), "variant": "full"}}}


def test_concurrent_uploads_of_one_capture_store_it_once(live, station_token):
    token = station_token(live, "st-1")
    entries = [item(f"cap-{i}", jpeg(100 + i)) for i in range(6)]
    answers: list[list[str]] = []

    def send() -> None:
        answers.append(statuses(upload(live.url, token, "st-1", entries)))

    threads = [threading.Thread(target=send) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for index in range(6):
        column = sorted(a[index] for a in answers)
        assert column == ["duplicate", "duplicate", "stored"]
    assert len(live.service.db.query_captures(station_id="st-1")) == 6


def test_operator_lists_captures_by_station_time_and_label(live, station_token, admin_token):
    token, admin = station_token(live, "st-1"), admin_token(live)
    fox = item("cap-fox", jpeg(18), captured_at=1_700_000_100.0)
    car = item(
        "cap-car",
        jpeg(19),
        captured_at=1_700_000_200.0,
        detections=[
            {
                "label": "car",
                "group": "vehicle",
                "score": 0.7,
                "box": None,
                "model": "m",
                "model_version": "1",
            }
        ],
    )
    statuses(upload(live.url, token, "st-1", [fox, car]))
    listed = requests.get(
        f"{live.url}/v1/captures",
        params={"station_id": "st-1", "since": 1_700_000_150, "label": "car"},
        headers=auth(admin),
        timeout=30,
    ).json()
    assert [c["capture_id"] for c in listed["captures"]] == ["cap-car"]
    assert listed["captures"][0]["detections"][0]["group"] == "vehicle"
    everything = requests.get(f"{live.url}/v1/captures", headers=auth(admin), timeout=30).json()
    assert [c["capture_id"] for c in everything["captures"]] == ["cap-fox", "cap-car"]
