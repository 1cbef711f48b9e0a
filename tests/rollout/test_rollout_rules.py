"""Rollout rules on the cloud's real database: waves, thresholds, timeouts, supersede, rollback."""

from __future__ import annotations

import threading

import pytest

from cloud import rollout as ro
from cloud.db import open_database
from tests.cloud.cloud_services import postgres_server

STATIONS = [f"st-{i:02d}" for i in range(1, 21)]


@pytest.fixture(scope="module")
def pg():
    with postgres_server() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path):
    if request.param == "sqlite":
        database = open_database(f"sqlite:///{tmp_path / 'cloud.sqlite3'}")
    else:  # the same SQL on PostgreSQL from Debian's packages, in a temp dir
        database = open_database(request.getfixturevalue("pg").create_database())
    for s in STATIONS:
        database.add_station(s)
    for v in ("1.0.0", "2.0.0", "3.0.0"):
        ro.record_release(
            database, "det", v, "ab" * 32, 10, f"k/{v}", {"name": "det"}, "kid", "sig"
        )
    yield database
    database.close()


def report(db, station, active=None, job=None, bad=None, undone=None, now=None, previous=()):
    info = {"active": active, "job": job, "bad": bad or {}, "rolled_back": undone or {}}
    info["previous"] = list(previous)
    ro.apply_report(db, station, {"models": {"det": info}}, now)


def states(db, now, name="det"):
    return {s["station_id"]: s["state"] for s in ro.status(db, name, now)["stations"]}


def test_percent_waves_pick_the_same_stations_by_a_stable_hash(db):
    spec = ro.RolloutSpec(waves=(ro.Wave(percent=25), ro.Wave(percent=50)))
    made = ro.create(db, "det", "2.0.0", spec, now=0)
    expected = {s for s in STATIONS if ro.bucket("det@2.0.0", s) < 50}
    assert set(made.targets) == expected
    first = {s for s, t in made.targets.items() if t.wave == 0}
    assert first == {s for s in STATIONS if ro.bucket("det@2.0.0", s) < 25}
    again = ro.create(db, "det", "2.0.0", spec, now=1)  # a new rollout of the same version
    assert {s for s, t in again.targets.items() if t.wave == 0} == first


def test_the_next_wave_starts_at_the_success_threshold(db):
    spec = ro.RolloutSpec(
        waves=(ro.Wave(stations=("st-01", "st-02")), ro.Wave(stations=("st-03",))),
        success_threshold=0.5,
    )
    ro.create(db, "det", "2.0.0", spec, now=0)
    assert states(db, 100) == {"st-01": "pending", "st-02": "pending", "st-03": "waiting"}
    assert [t["version"] for t in ro.station_manifest(db, "st-03")] == []
    report(db, "st-01", active="2.0.0", now=1)
    assert states(db, 100)["st-03"] == "pending"
    assert [t["version"] for t in ro.station_manifest(db, "st-03", now=2)] == ["2.0.0"]


def test_a_wave_at_its_error_threshold_pauses_the_rollout(db):
    spec = ro.RolloutSpec(
        waves=(ro.Wave(stations=("st-01", "st-02")), ro.Wave(percent=100)), error_threshold=0.5
    )
    ro.create(db, "det", "3.0.0", spec, now=0)
    report(db, "st-01", active="1.0.0", job={"version": "3.0.0", "state": "failed",
           "reason": "selftest: no"}, bad={"3.0.0": "selftest: no"}, now=1)  # fmt: skip
    status = ro.status(db, "det", now=2)
    assert status["state"] == "paused" and "1 of 2 failed" in status["reason"]
    assert status["stations"][0]["reason"] == "selftest: no"
    assert status["waves"][1]["started"] is False
    ro.resume(db, "det", now=3)
    assert ro.status(db, "det", now=4)["state"] == "paused"  # still at the threshold


def test_a_silent_station_times_out_then_is_picked_up_again(db):
    spec = ro.RolloutSpec(waves=(ro.Wave(stations=("st-01",)),), timeout_s=60)
    ro.create(db, "det", "2.0.0", spec, now=0)
    assert states(db, 10) == {"st-01": "pending"}
    ro.evaluate(db, now=61)
    status = ro.status(db, "det", now=61)
    assert status["stations"][0]["state"] == "timed_out"
    assert status["waves"][0]["timed_out"] == 1
    report(db, "st-01", active="1.0.0", job={"version": "2.0.0", "state": "downloading"}, now=70)
    assert states(db, 100) == {"st-01": "downloading"}
    report(db, "st-01", active="2.0.0", now=80)
    assert ro.status(db, "det", now=81)["state"] == "finished"


def test_a_new_rollout_supersedes_and_stations_left_out_keep_their_version(db):
    ro.create(db, "det", "1.0.0", ro.RolloutSpec(waves=(ro.Wave(percent=100),)), now=0)
    for s in STATIONS:
        report(db, s, active="1.0.0", now=1)
    ro.create(db, "det", "2.0.0", ro.RolloutSpec(waves=(ro.Wave(stations=("st-01",)),)), now=2)
    first = ro.rollouts_of(db, "det")[0]
    assert first.state == "superseded"
    assert [t["version"] for t in ro.station_manifest(db, "st-01", now=3)] == ["2.0.0"]
    assert [t["version"] for t in ro.station_manifest(db, "st-02", now=3)] == ["1.0.0"]


def test_operator_rollback_sends_each_station_back_to_what_it_had(db):
    ro.create(db, "det", "1.0.0", ro.RolloutSpec(waves=(ro.Wave(percent=100),)), now=0)
    for s in ("st-01", "st-02"):
        report(db, s, active="1.0.0", now=1)
    ro.create(
        db, "det", "2.0.0", ro.RolloutSpec(waves=(ro.Wave(stations=("st-01", "st-02")),)), now=2
    )
    report(db, "st-01", active="2.0.0", previous=["1.0.0"], now=3)
    ro.rollback(db, "det", now=4)
    assert [t["version"] for t in ro.station_manifest(db, "st-01", now=5)] == ["1.0.0"]
    assert states(db, 100)["st-01"] == "rolling_back"
    report(db, "st-01", active="1.0.0", now=6)
    assert states(db, 100)["st-01"] == "rolled_back"
    assert ro.status(db, "det", 100)["state"] == "rolled_back"


def test_cancel_stops_offering_the_version_to_stations_that_do_not_run_it(db):
    ro.create(
        db, "det", "2.0.0", ro.RolloutSpec(waves=(ro.Wave(stations=("st-01", "st-02")),)), now=0
    )
    report(db, "st-01", active="2.0.0", now=1)
    ro.cancel(db, "det", now=2)
    assert [t["version"] for t in ro.station_manifest(db, "st-02", now=3)] == []
    with pytest.raises(ro.RolloutError, match="cannot pause"):
        ro.pause(db, "det", now=4)


def test_cohorts_and_promote(db):
    ro.set_labels(db, "st-05", ["north"])
    ro.set_labels(db, "st-06", ["north", "solar"])
    spec = ro.RolloutSpec(waves=(ro.Wave(cohort="north"), ro.Wave(stations=("st-07",))))
    ro.create(db, "det", "2.0.0", spec, now=0)
    assert states(db, 100) == {"st-05": "pending", "st-06": "pending", "st-07": "waiting"}
    ro.promote(db, "det", now=1)
    assert states(db, 100)["st-07"] == "pending"
    with pytest.raises(ro.RolloutError, match="last wave"):
        ro.promote(db, "det", now=2)


def test_a_rollout_of_an_unpublished_version_is_refused(db):
    with pytest.raises(ro.RolloutError, match="not published"):
        ro.create(db, "det", "9.9.9", ro.RolloutSpec(waves=(ro.Wave(percent=10),)))


def test_concurrent_reports_and_an_operator_pause_lose_nothing(db):
    spec = ro.RolloutSpec(waves=(ro.Wave(percent=100), ro.Wave(stations=("st-99",))))
    ro.create(db, "det", "2.0.0", spec, now=0)
    start = threading.Barrier(len(STATIONS) + 1)

    def station(sid: str) -> None:
        start.wait()
        report(db, sid, active="2.0.0", previous=["1.0.0"], now=10)

    def operator() -> None:
        start.wait()
        ro.pause(db, "det", now=10)

    threads = [threading.Thread(target=station, args=(s,)) for s in STATIONS]
    threads.append(threading.Thread(target=operator))
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    doc = ro.status(db, "det", now=11)
    assert doc["state"] == "paused" and doc["reason"] == "paused by the operator"
    assert {s["state"] for s in doc["stations"] if s["station_id"] != "st-99"} == {"active"}
