"""Group commit: batches waiting together share one store write and one transaction; every
answered capture is durable, even when the service is killed in the middle of a write."""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from cloud.config import load_config
from cloud.process import CloudService
from cloud.service import Service
from tests.cloud.cloud_helpers import item, statuses, upload
from tests.helpers import jpeg, wait_for


def slow_first_write(store: Any, monkeypatch: Any, seconds: float = 3.0) -> list[list[str]]:
    """Record the keys of each store write; the first one takes `seconds`, so others queue."""
    calls: list[list[str]] = []
    real = store.storing

    @contextmanager
    def storing(objects: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        calls.append([key for key, _ in objects])
        if len(calls) == 1:
            time.sleep(seconds)
        with real(objects, *args, **kwargs) as name:
            yield name

    monkeypatch.setattr(store, "storing", storing)
    return calls


def test_batches_waiting_together_share_one_write_and_are_all_stored(
    make_live, station_token, monkeypatch
):
    server = make_live("sqlite+pack")
    stations = [f"st-{n}" for n in range(4)]
    tokens = {s: station_token(server, s) for s in stations}
    writes = slow_first_write(server.service.ingest.store, monkeypatch)
    images = {s: [jpeg(10 * n + k) for k in range(3)] for n, s in enumerate(stations)}

    def send(station: str) -> list[str]:
        entries = [item(f"{station}-c{k}", data) for k, data in enumerate(images[station])]
        return statuses(upload(server.url, tokens[station], station, entries))

    with ThreadPoolExecutor(4) as pool:
        first = pool.submit(send, stations[0])
        wait_for(lambda: writes, 30, "the first write")  # under way: the others queue behind it
        others = [pool.submit(send, s) for s in stations[1:]]
        answers = [first.result()] + [f.result() for f in others]

    assert answers == [["stored"] * 3] * 4
    assert [len(keys) for keys in writes] == [3, 9]  # two writes for four batches
    held = {(r.station_id, r.capture_id): r for r in server.service.db.query_captures()}
    for station in stations:
        for k, data in enumerate(images[station]):
            row = held[(station, f"{station}-c{k}")]
            assert row.image_key is not None
            assert server.service.store.get(row.image_key) == data


def test_two_batches_of_one_station_are_stored_one_after_the_other(
    make_live, station_token, monkeypatch
):
    # a thumbnail, then the full image of the same capture, both waiting for the next write:
    # the second is answered as if sent later (an upgrade), not as a copy in the same write
    server = make_live("sqlite+pack")
    token, other = station_token(server, "st-1"), station_token(server, "st-2")
    writes = slow_first_write(server.service.ingest.store, monkeypatch)
    original, thumb = jpeg(1, (320, 240)), jpeg(2)
    with ThreadPoolExecutor(3) as pool:
        busy = pool.submit(upload, server.url, other, "st-2", [item("x", jpeg(3))])
        wait_for(lambda: writes, 30, "st-2's write")  # busy: both st-1 batches queue behind it
        first = pool.submit(
            upload, server.url, token, "st-1", [item("c1", original, "thumbnail", thumb)]
        )
        commits = server.service.ingest.commits
        wait_for(lambda: commits.waiting() == 1, 30, "the thumbnail queued first")
        second = pool.submit(upload, server.url, token, "st-1", [item("c1", original)])
        assert statuses(busy.result()) == ["stored"]
        answers = [first.result().json()["results"], second.result().json()["results"]]

    assert [r["status"] for r in answers[0]] == ["stored"]
    assert answers[1][0]["status"] == "duplicate"
    assert answers[1][0]["reason"] == "image upgraded from 'thumbnail' to 'full'"
    assert len(writes) == 3  # st-2, then st-1's thumbnail, then its full image
    row = server.service.db.get_capture("st-1", "c1")
    assert row is not None and row.variant == "full" and row.image_key is not None
    assert server.service.store.get(row.image_key) == original


def test_on_sqlite_a_pack_stores_images_in_the_capture_rows_commit(
    make_live, station_token, monkeypatch
):
    # one database commit names the images and stores the rows: no commit of the store's own
    server = make_live("sqlite+pack")
    token = station_token(server, "st-1")
    store = server.service.store
    own_commits: list[int] = []
    real = store._transaction
    monkeypatch.setattr(store, "_transaction", lambda: own_commits.append(1) or real())
    images = [jpeg(k) for k in range(3)]
    entries = [item(f"c{k}", data) for k, data in enumerate(images)]
    assert statuses(upload(server.url, token, "st-1", entries)) == ["stored"] * 3
    assert own_commits == []
    for k, data in enumerate(images):
        row = server.service.db.get_capture("st-1", f"c{k}")
        assert row is not None and row.image_key is not None
        assert store.get(row.image_key) == data


def test_a_batch_over_four_mib_is_stored_like_any_other(make_live, station_token):
    # checked on a worker thread rather than the event loop; the answer is the same
    server = make_live("sqlite+pack")
    token = station_token(server, "st-1")
    images = [b"\xff\xd8\xff\xe0" + os.urandom(1 << 20) for _ in range(5)]
    entries = [item(f"big-{k}", data) for k, data in enumerate(images)]
    assert statuses(upload(server.url, token, "st-1", entries)) == ["stored"] * 5
    for k, data in enumerate(images):
        row = server.service.db.get_capture("st-1", f"big-{k}")
        assert row is not None and row.image_key is not None
        assert server.service.store.get(row.image_key) == data


def test_no_answered_capture_is_lost_when_the_service_is_killed_mid_write(tmp_path: Path):
    env = {
        "FIELDSTATION_CLOUD_STORAGE_BACKEND": "pack",
        "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_PER_MINUTE": "0",
        "FIELDSTATION_CLOUD_SERVER_LOG_LEVEL": "warning",
    }
    data_dir = tmp_path / "cloud"
    stored: dict[tuple[str, str], str] = {}  # (station, capture) -> sha256, answered "stored"
    lock = threading.Lock()
    stop = threading.Event()
    with CloudService.start(data_dir, env=env) as cloud:
        stations = [f"st-{n}" for n in range(4)]
        tokens = {s: cloud.add_station(s) for s in stations}

        def client(station: str) -> None:
            n = 0
            while not stop.is_set():
                batch = [jpeg(hash((station, n, k)) % 10**6) for k in range(5)]
                entries = [item(f"{station}-{n}-{k}", d) for k, d in enumerate(batch)]
                n += 1
                try:
                    response = upload(cloud.url, tokens[station], station, entries)
                except requests.RequestException:
                    return  # the service is gone
                if response.status_code != 200:
                    return
                with lock:
                    for (entry, _), result in zip(entries, response.json()["results"], strict=True):
                        if result["status"] == "stored":
                            stored[(station, entry["capture_id"])] = entry["sha256"]

        threads = [threading.Thread(target=client, args=(s,)) for s in stations]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 30
        while len(stored) < 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        cloud.process.kill()  # SIGKILL while the clients keep uploading: writes are in flight
        cloud.process.wait(30)
        stop.set()
        for t in threads:
            t.join(60)

    assert len(stored) >= 200, "too few captures were answered before the kill"
    service = Service.open(load_config(env=env, data_dir=str(data_dir)))
    try:
        held = {(r.station_id, r.capture_id): r for r in service.db.query_captures()}
        for key, sha in stored.items():
            row = held.get(key)
            assert row is not None, f"answered capture {key} is lost"
            assert row.image_key is not None
            assert hashlib.sha256(service.store.get(row.image_key)).hexdigest() == sha
    finally:
        service.close()
