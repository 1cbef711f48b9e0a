"""A station drains its buffer to its primary cloud, most valuable first, and records it."""

from __future__ import annotations

from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures, assert_consistent


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
    # one request per capture: nothing the cloud acknowledged was sent to it again
    resent = station.metrics.registry.get_sample_value(
        "fieldstation_upload_items_total", {"endpoint": "azure", "status": "duplicate"}
    )
    assert not resent


def test_uploads_in_value_order(new_station, links):
    station = new_station(primary="gcp", batch_max_items=3)
    kinds = ["empty", "received", "vehicle", "animal", "person"]
    ids = add_captures(station.store, 15, kinds=kinds)
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    assert_consistent(station, links)
    with station.store.read() as conn:
        order = [
            r[0] for r in conn.execute("SELECT id FROM captures ORDER BY state_changed_at, rowid")
        ]
    rank = {"person": 0, "animal": 0, "vehicle": 1, "received": 2, "empty": 3}
    ranks = [rank[kinds[ids.index(cid) % 5]] for cid in order]
    assert ranks == sorted(ranks), ranks
