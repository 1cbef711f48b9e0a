"""Endpoints and links failing in every way: nothing lost, one copy per cloud, records agree."""

from __future__ import annotations

import logging

from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures, assert_consistent


def _uploaded(station) -> int:
    return station.states().get("uploaded", 0)


def test_primary_stopped_mid_drain_fails_over_then_returns(new_station, links):
    station = new_station(primary="aws")
    add_captures(station.store, 40, kinds=["animal"])
    links["aws"].proxy.set("delay", delay_s=0.02)  # slow enough to stop it mid-drain
    station.start()
    wait_for(lambda: _uploaded(station) >= 8, what="first batches at aws")
    links["aws"].stop()
    links["aws"].proxy.set("pass")
    wait_for(lambda: _uploaded(station) == 40, what="drained via failover")
    held_before = station.held()
    assert held_before["azure"] or held_before["gcp"], "nothing went to a failover endpoint"
    links["aws"].start()
    wait_for(lambda: station.uploader.status()["current"] == "aws", what="back on the primary")
    new = add_captures(station.store, 8, kinds=["person"], start=100)
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained after aws returned")
    station.stop()
    held = assert_consistent(station, links)
    assert set(new) <= held["aws"], "did not return to the primary"


def test_slow_cloud_still_drains_to_primary(new_station, links):
    station = new_station(primary="gcp")
    ids = add_captures(station.store, 16, kinds=["animal", "empty"])
    links["gcp"].proxy.set("delay", delay_s=0.05)
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained over the slow link")
    station.stop()
    held = assert_consistent(station, links)
    assert held["gcp"] == set(ids)


def test_cloud_answering_500_is_in_doubt_and_settled_by_lookup(new_station, links):
    station = new_station(primary="azure")
    ids = add_captures(station.store, 24, kinds=["person", "vehicle"])
    links["azure"].proxy.set("error500")  # the cloud stores the batch, the station sees a 500
    station.start()
    wait_for(lambda: _uploaded(station) == 24, what="drained via failover")
    with station.store.read() as conn:
        doubt = conn.execute(
            "SELECT count(*) FROM upload_deliveries WHERE endpoint = 'azure' AND doubt_variant IS NOT NULL"
        ).fetchone()[0]
    assert doubt > 0, "the 500 batches were not recorded as in doubt"
    links["azure"].proxy.set("pass")
    wait_for(lambda: station.pending_or_doubt() == 0, what="doubt settled at azure")
    station.stop()
    held = assert_consistent(station, links)
    # the batches that got a 500 had in fact been stored: azure holds them, learnt by lookup
    assert held["azure"], "lookup found nothing at azure"
    twice = {i for i in ids if i in held["azure"] and (i in held["aws"] or i in held["gcp"])}
    assert twice, "expected second copies from the batches in doubt"


def test_lost_answers_are_settled_without_resending(new_station, links):
    station = new_station(primary="aws")
    add_captures(station.store, 16, kinds=["animal"])
    links["aws"].proxy.set("drop_response")
    links["azure"].proxy.set("down")
    links["gcp"].proxy.set("down")
    station.start()
    wait_for(lambda: station.uploader.status()["state"] == "offline", what="offline")
    links["aws"].proxy.set("pass")
    wait_for(lambda: station.pending_or_doubt() == 0, what="settled")
    station.stop()
    for name in ("azure", "gcp"):
        links[name].proxy.set("pass")
    held = assert_consistent(station, links)
    # everything went to aws (in doubt, then found there by lookup): nothing sent a second time
    assert held["aws"] == set(station.ids())
    assert held["azure"] == held["gcp"] == set()
    sent = station.metrics.registry.get_sample_value(
        "fieldstation_upload_items_total", {"endpoint": "aws", "status": "duplicate"}
    )
    assert not sent


def test_429_with_retry_after_is_honoured_in_place(new_station, links):
    links["gcp"].start(
        env={
            "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_PER_MINUTE": "120",
            "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_BURST": "2",
        }
    )
    station = new_station(primary="gcp", batch_max_items=2)
    ids = add_captures(station.store, 12, kinds=["animal"])
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained past the rate limit")
    station.stop()
    throttled = station.metrics.registry.get_sample_value(
        "fieldstation_upload_requests_total",
        {"endpoint": "gcp", "kind": "batch", "result": "throttled"},
    )
    assert throttled and throttled > 0, "the cloud never answered 429"
    held = assert_consistent(station, links)
    assert held["gcp"] == set(ids), "a Retry-After within retry_max_s should not fail over"


def test_every_link_cut_then_restored_logs_once_each_way(new_station, links, caplog):
    caplog.set_level(logging.INFO, logger="agent.upload")
    station = new_station(primary="azure", attempts=2, endpoint_read_timeout_s=0.5)
    add_captures(station.store, 24, kinds=["animal", "person", "empty"])
    for cloud in links.values():
        cloud.proxy.set("blackhole")
    station.start()
    wait_for(lambda: station.uploader.status()["state"] == "offline", what="offline")
    wait_for(lambda: _probes(station, "azure") >= 2, what="probes while offline")
    for cloud in links.values():
        cloud.proxy.set("pass")
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained after restore")
    station.stop()
    assert_consistent(station, links)
    down = [r for r in caplog.records if r.getMessage().startswith("link down")]
    up = [r for r in caplog.records if r.getMessage().startswith("link up")]
    assert len(down) == 1 and len(up) == 1, [r.getMessage() for r in down + up]
    assert "backlog 24 captures" in down[0].getMessage()


def _probes(station, endpoint: str) -> float:
    value = station.metrics.registry.get_sample_value(
        "fieldstation_upload_requests_total",
        {"endpoint": endpoint, "kind": "ping", "result": "error"},
    )
    return value or 0.0


def test_a_refused_token_fails_over_and_says_why(new_station, links):
    station = new_station(primary="aws")
    station.uploader.endpoints["aws"]._token = "fsc_wrong"
    ids = add_captures(station.store, 6, kinds=["animal"])
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained via failover")
    station.stop()
    held = assert_consistent(station, links)
    assert held["aws"] == set()
    assert held["azure"] | held["gcp"] == set(ids)
    aws = next(e for e in station.uploader.status()["endpoints"] if e["name"] == "aws")
    assert aws["breaker"] == "open" and "HTTP 401" in aws["last_error"]


def test_all_three_failing_at_once_then_healed(new_station, links):
    links["gcp"].start(
        env={
            "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_PER_MINUTE": "120",
            "FIELDSTATION_CLOUD_LIMITS_RATE_LIMIT_BURST": "1",
        }
    )
    station = new_station(primary="aws", batch_max_items=4)
    add_captures(station.store, 40, kinds=["person", "animal", "vehicle", "empty", "received"])
    links["aws"].proxy.set("delay", delay_s=0.02)
    links["azure"].proxy.set("error500")
    station.start()
    wait_for(lambda: _uploaded(station) >= 4, what="first batches at the slow primary")
    links["aws"].stop()  # the slow primary dies mid-drain
    wait_for(lambda: _uploaded(station) >= 20, what="progress through the 429s")
    links["aws"].start()
    links["aws"].proxy.set("pass")
    links["azure"].proxy.set("pass")
    wait_for(lambda: station.pending_or_doubt() == 0, what="healed and drained")
    station.stop()
    assert_consistent(station, links)
