"""Failover is prompt: a blackholed endpoint is given up after one read timeout and a probe."""

from __future__ import annotations

import time

from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures, assert_consistent

READ_TIMEOUT = 3.0


def online_metric(station) -> float | None:
    return station.metrics.registry.get_sample_value("fieldstation_upload_online")


def held_by(station, endpoint: str) -> int:
    return len(station.held()[endpoint])


def test_a_blackholed_primary_is_left_within_one_read_timeout(new_station, links):
    # breaker_failures = 3 and a 30 s cool-down as shipped: today that took 3 timeouts and more
    station = new_station(
        primary="aws",
        endpoint_read_timeout_s=READ_TIMEOUT,
        breaker_failures=3,
        breaker_cooldown_s=30.0,
        breaker_cooldown_max_s=60.0,
    )
    add_captures(station.store, 8, kinds=["animal"])
    links["aws"].proxy.set("blackhole")
    nxt = station.uploader.chooser.ranking[1]
    started = time.monotonic()
    station.start()
    wait_for(lambda: held_by(station, nxt) > 0, 30, f"the first capture held by {nxt}")
    took = time.monotonic() - started
    assert took < READ_TIMEOUT + 4.0, f"{took:.1f} s to fail over (read timeout {READ_TIMEOUT} s)"
    wait_for(lambda: station.pending_or_doubt() == 0, 60, "drained via failover")
    station.stop()
    links["aws"].proxy.set("pass")
    assert_consistent(station, links)


def test_status_and_metric_agree_on_online(new_station, links):
    station = new_station(primary="gcp", endpoint_read_timeout_s=1.0)
    status = station.uploader.status
    # before anything was sent: one answer, whichever it is
    assert online_metric(station) == (1.0 if status()["online"] else 0.0)
    add_captures(station.store, 4, kinds=["animal"])
    for cloud in links.values():
        cloud.proxy.set("blackhole")
    station.start()
    wait_for(lambda: not status()["online"], 30, "offline")
    assert online_metric(station) == 0.0
    for cloud in links.values():
        cloud.proxy.set("pass")
    wait_for(lambda: status()["online"], 30, "online again")
    assert online_metric(station) == 1.0
    wait_for(lambda: station.pending_or_doubt() == 0, 60, "drained")
    station.stop()
