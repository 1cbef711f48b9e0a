"""Heartbeat contributors: what other components add reaches the cloud; a broken one does not."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from agent.store import Store
from agent.upload.heartbeat import Heartbeat
from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures


def _last_heartbeat(links, name: str, station_id: str) -> dict[str, Any] | None:
    info = requests.get(
        links[name].direct_url + "/v1/stations",
        headers={"Authorization": f"Bearer {links[name].admin}"},
        timeout=10,
    ).json()["stations"]
    me = next((s for s in info if s["station_id"] == station_id), None)
    return None if me is None else me["last_heartbeat"]


def test_a_contributor_s_fields_reach_the_cloud_with_the_queue(new_station, links):
    station = new_station(primary="aws")
    add_captures(station.store, 2, kinds=["animal"])
    station.uploader.pause("night")  # heartbeats go on while captures wait
    station.uploader.heartbeat.add(
        "power", lambda: {"power_state": "night", "battery": {"level": 0.62, "charging": False}}
    )
    station.start()
    wait_for(
        lambda: _last_heartbeat(links, "aws", station.station_id) is not None, what="a heartbeat"
    )
    station.stop()
    beat = _last_heartbeat(links, "aws", station.station_id)
    assert beat["power_state"] == "night"
    assert beat["battery"] == {"level": 0.62, "charging": False}
    assert beat["queue"]["depth"] == 2


def test_a_failing_contributor_is_left_out_and_the_heartbeat_still_goes(new_station, caplog):
    station = new_station(primary="gcp")

    def broken() -> dict[str, Any]:
        raise OSError("no such battery")

    station.uploader.heartbeat.add("power", broken)
    station.uploader.heartbeat.add("models", lambda: {"models": {"scene-animal": "1.0.0"}})
    payload = station.uploader.heartbeat.payload()
    assert payload["power_state"] is None and payload["battery"] is None
    assert payload["models"] == {"scene-animal": "1.0.0"}
    assert payload["station_id"] == station.station_id
    assert "heartbeat contributor power failed: no such battery" in caplog.text


def test_a_name_is_registered_once(tmp_path):
    heartbeat = Heartbeat(Store(tmp_path / "b.db"), "st-1")
    heartbeat.add("power", dict)
    with pytest.raises(ValueError, match="'power' is already registered"):
        heartbeat.add("power", dict)
