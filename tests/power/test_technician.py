"""A technician's CONFIG against the power policy's: the technician's keys win until the power
state changes (or the hold they were given under ends), then the policy applies again."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from agent import protocol as p
from agent.esp32 import core
from agent.esp32.host_unit import CoreVirtualUnit
from agent.esp32.virtual import PtySerialLink
from agent.power import worker as worker_module
from tests.helpers import wait_for
from tests.power.conftest import power_config
from tests.power.test_units import power_toml, report_of

SYSFS = '[[power.sources]]\nkind = "sysfs"\n'


class Sent:
    """The daemon's command path as the power worker sees it: records what went to each unit."""

    def __init__(self) -> None:
        self.bodies: list[tuple[str, dict[str, Any]]] = []

    def __call__(self, unit_id: str, body: dict[str, Any]) -> dict[str, Any]:
        self.bodies.append((unit_id, dict(body)))
        return {"sent": "CONFIG", "unit_id": unit_id}


def test_the_technicians_keys_win_over_the_policy_until_the_state_changes(
    sysfs, sys_root, clock, make_worker
):
    sent = Sent()
    # the test moves the battery faster than any battery
    worker = make_worker(power_config(sys_root, SYSFS, max_soc_rate_per_h=1e6), send_command=sent)
    worker.tick()
    worker.unit_seen("cam-1", "serial")
    worker.technician_config("cam-1", {"command": "config", "capture_interval_s": 60}, sent)
    # merged: the technician's interval, every other key from the NORMAL policy
    body = sent.bodies[-1][1]
    assert body["capture_interval_s"] == 60 and body["frame_size"] == 8
    assert body["jpeg_quality"] == 12 and body["sleep_start_min"] == p.NO_QUIET_PERIOD
    assert worker.unit_config("cam-1")["capture_interval_s"] == 60
    assert worker.push_units() == 0  # the unit's next wake does not undo it
    worker.technician_config("cam-1", {"command": "config", "jpeg_quality": 20}, sent)
    assert worker.unit_config("cam-1")["capture_interval_s"] == 60  # earlier keys stay
    assert worker.unit_config("cam-1")["jpeg_quality"] == 20
    sysfs.set(30)  # evening: ECO
    clock.advance(700)
    assert worker.tick().state == "eco"
    assert worker.unit_config("cam-1") == worker.current.decisions.unit_config
    assert worker.push_units() == 1
    assert sent.bodies[-1][1]["capture_interval_s"] == 900


def test_a_technicians_config_given_under_a_hold_ends_with_the_hold(
    sysfs, sys_root, clock, make_worker
):
    sent = Sent()
    worker = make_worker(power_config(sys_root, SYSFS), send_command=sent)
    worker.tick()
    worker.unit_seen("cam-1", "mqtt")
    worker.hold(3600)
    worker.technician_config(
        "cam-1", {"command": "config", "capture_interval_s": 30, "frame_size": 10}, sent
    )
    body = sent.bodies[-1][1]
    # MQTT: it replaces the policy's retained CONFIG, with no clock that would go stale there
    assert body["retain"] is True and body["station_time_ms"] == 0
    assert worker.unit_config("cam-1")["capture_interval_s"] == 30
    worker.hold(0)  # still NORMAL by the battery, but the hold it was given under is over
    assert worker.current.state == "normal"
    assert worker.unit_config("cam-1")["capture_interval_s"] == 300
    assert worker.push_units() == 1 and sent.bodies[-1][1]["frame_size"] == 8


def test_a_bad_technicians_value_is_refused_and_changes_nothing(sysfs, sys_root, make_worker):
    sent = Sent()
    worker = make_worker(power_config(sys_root, SYSFS), send_command=sent)
    worker.tick()
    with pytest.raises(ValueError, match="capture_interval_s must be a whole number"):
        worker.technician_config("cam-1", {"command": "config", "capture_interval_s": "1m"}, sent)

    def refused(unit_id: str, body: dict[str, Any]) -> dict[str, Any]:
        raise LookupError("not seen")

    with pytest.raises(LookupError):
        worker.technician_config("cam-1", {"command": "config", "capture_interval_s": 5}, refused)
    assert not sent.bodies and worker.unit_config("cam-1")["capture_interval_s"] == 300


@pytest.mark.skipif(
    not core.core_available(), reason="the firmware's C core needs a C compiler (gcc)"
)
def test_a_unit_keeps_the_technicians_config_at_its_next_wake(
    make_station, pty_pair, sysfs, sys_root, monkeypatch
):
    monkeypatch.setattr(worker_module, "WAKE_GAP_S", 1.0)  # a short deep sleep is a new wake
    master, path = pty_pair
    sysfs.set(30)  # ECO: units every 900 s
    station = make_station(f'[serial]\nports = ["{path}"]\n' + power_toml(sys_root))
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    wait_for(lambda: station.power.current.state == "eco", what="ECO")
    base = f"http://{station.config.http.listen}"
    unit = CoreVirtualUnit("cam-pty", PtySerialLink(master), ack_timeout_s=2)
    try:
        unit.run_cycle("power_on")
        assert unit.config.capture_interval_s == 900
        # the technician, aiming the camera, wants a frame a minute for now
        r = requests.post(
            f"{base}/api/units/cam-pty/commands",
            json={
                "command": "config",
                "capture_interval_s": 60,
                "frame_size": 10,
                "jpeg_quality": 10,
            },
            timeout=10,
        )
        assert r.status_code == 200, r.text
        unit.poll_commands(3)
        assert unit.config.capture_interval_s == 60
        wait_for(
            lambda: (report_of(station, "cam-pty") or {}).get("capture_interval_s") == 60,
            what="CONFIG_REPORT of the technician's config",
        )
        units = station.status()["power"]["units"]
        assert units[0]["technician"]["capture_interval_s"] == 60 and units[0]["confirmed"]
        time.sleep(1.5)  # the unit sleeps
        unit.run_cycle("timer")  # the next wake: HELLO, and the station leaves it alone
        unit.poll_commands(1.5)
        assert unit.config.capture_interval_s == 60 and unit.config.frame_size == 10
        # the sun comes out: NORMAL, and the policy's CONFIG applies again
        sysfs.set(90, amps=1.5)
        wait_for(lambda: station.power.current.state == "normal", what="NORMAL")
        time.sleep(1.5)
        unit.run_cycle("timer")
        unit.poll_commands(1.5)
        assert unit.config.capture_interval_s == 300 and unit.config.frame_size == 8
        assert station.status()["power"]["units"][0]["technician"] is None
    finally:
        unit.close()
