"""A station drains its buffer to its primary cloud, most valuable first, and records it."""

from __future__ import annotations

from upload_helpers import add_captures, assert_consistent, wait_for


def test_backlog_reaches_primary_cloud_once(new_station, links):
    station = new_station(primary="azure")
    ids = add_captures(
        station.store, 30, kinds=["person", "animal", "vehicle", "empty", "received"]
    )
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="backlog drained")
    station.stop()
    held = assert_consistent(station, links)
    assert held["azure"] == set(ids)
    assert held["aws"] == held["gcp"] == set()
    status = station.uploader.status()
    assert status["primary"] == "azure"
    azure = next(e for e in status["endpoints"] if e["name"] == "azure")
    assert azure["bytes_today"] > sum(station.store.get_capture(i)["size"] for i in ids)
    assert azure["items_today"] == 30
