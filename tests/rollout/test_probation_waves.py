"""A wave succeeds on stations that passed probation, and a rollback in any wave reached so far
pauses the rollout, even one that had finished. Stations report through the real service's
`/v1/models/report`, as model sync does."""

from __future__ import annotations

import pytest
import requests

from . import fleet
from .conftest import NAME, make_version

FIRST, REST = "ridge", ["creek", "marsh"]


@pytest.fixture
def env(tmp_path, cloud, operator, keypair):
    key, _public = keypair
    for v in ("1.0.0", "2.0.0"):
        operator.publish(make_version(tmp_path / "pkgs", v), key)
    tokens = {sid: operator.station_token(sid) for sid in [FIRST, *REST]}
    admin = operator.admin_token()
    fleet.rollout(cloud, admin, "2.0.0", [{"stations": [FIRST]}, {"percent": 100}])
    return cloud, admin, tokens


def report(cloud, token: str, active: str, *, probation: bool = False, undone=None) -> None:
    """What model sync posts: the active version, whether it is still on probation, refusals."""
    info = {
        "active": active,
        "previous": ["1.0.0"] if active != "1.0.0" else [],
        "probation": probation,
        "job": None,
        "bad": {},
        "rolled_back": undone or {},
    }
    r = requests.post(
        f"{cloud.url}/v1/models/report",
        json={"models": {NAME: info}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    assert r.status_code == 200, r.text


def test_the_next_wave_waits_until_the_first_wave_passed_probation(env):
    cloud, admin, tokens = env
    report(cloud, tokens[FIRST], "2.0.0", probation=True)
    doc = fleet.status(cloud, admin)
    assert fleet.by_station(doc)[FIRST][0] == "probation"
    assert doc["state"] == "running" and doc["waves"][1]["started"] is False
    assert doc["waves"][0]["active"] == 0 and doc["waves"][0]["probation"] == 1
    report(cloud, tokens[FIRST], "2.0.0", probation=False)  # sent when probation ends
    doc = fleet.status(cloud, admin)
    assert fleet.by_station(doc)[FIRST] == ("active", None)
    assert doc["waves"][1]["started"] is True
    assert {fleet.by_station(doc)[s][0] for s in REST} == {"pending"}


def test_the_last_wave_finishes_only_when_its_stations_passed_probation(env):
    cloud, admin, tokens = env
    report(cloud, tokens[FIRST], "2.0.0")
    for sid in REST:
        report(cloud, tokens[sid], "2.0.0", probation=True)
    assert fleet.status(cloud, admin)["state"] == "running"
    for sid in REST:
        report(cloud, tokens[sid], "2.0.0")
    assert fleet.status(cloud, admin)["state"] == "finished"


def test_a_rollback_in_an_earlier_wave_after_the_rollout_finished_pauses_it(env):
    cloud, admin, tokens = env
    for sid in [FIRST, *REST]:
        report(cloud, tokens[sid], "2.0.0")
    assert fleet.status(cloud, admin)["state"] == "finished"
    # the first wave's station goes back on its own (e.g. a technician's rollback on site)
    report(cloud, tokens[FIRST], "1.0.0", undone={"2.0.0": "rolled back on site"})
    doc = fleet.status(cloud, admin)
    assert fleet.by_station(doc)[FIRST] == ("rolled_back", "rolled back on site")
    assert doc["state"] == "paused"
    assert doc["reason"].startswith("wave 1: 1 of 1 failed or rolled back")
    assert doc["waves"][0]["errors"] == 1


def test_a_rollback_in_an_earlier_wave_while_the_next_runs_pauses_it(env):
    cloud, admin, tokens = env
    report(cloud, tokens[FIRST], "2.0.0")
    report(cloud, tokens[REST[0]], "2.0.0", probation=True)
    report(cloud, tokens[FIRST], "1.0.0", undone={"2.0.0": "rolled back on site"})
    doc = fleet.status(cloud, admin)
    assert doc["state"] == "paused" and doc["reason"].startswith("wave 1: 1 of 1")
