"""Flash, configure, capture, ACK, sleep, reconfigure: the whole unit life against a real Station.

Runs on a virtual board by default; `--hil-port /dev/ttyUSB0 --hil-firmware build/` runs the same
tests on a real unit.
"""

from __future__ import annotations

from tests.helpers import wait_for
from tests.hil.rig import UNIT_ID


def test_flashed_and_configured_unit_announces_itself(rig):
    rig.flash()
    rig.configure(capture_interval_s=300)
    rig.boot()
    row = wait_for(
        lambda: (r := rig.unit_record()) and r["chip"] and r["config"] and r,
        rig.timeout,
        "the unit's HELLO and CONFIG_REPORT",
    )
    assert row["firmware_version"] and row["mac"].count(":") == 5
    if rig.kind == "virtual":
        assert row["firmware_version"] == "virtual-1.0.0" and row["chip"] == "esp32s3"
    assert rig.unit_config()["capture_interval_s"] in (300, 20)


def test_triggered_capture_is_stored_acked_and_the_unit_sleeps(rig):
    rig.flash()
    rig.configure(capture_interval_s=300)
    rig.boot()
    wait_for(rig.unit_record, rig.timeout, "the unit's HELLO")
    rig.wait_asleep_after(0)  # after its power-on announce, the unit sleeps until the PIR fires
    cycles = rig.cycles()
    rig.trigger()
    rows = wait_for(rig.stored, rig.timeout, "the capture in the station's buffer")
    data = rig.station.store.read_image(rows[0]["id"])
    assert data[:2] == b"\xff\xd8" and b"\xff\xd9" in data[-16:]
    if rig.sent_jpegs() is not None:
        assert data in rig.sent_jpegs()
    slept_for = rig.wait_asleep_after(cycles)
    assert rig.pending() == 0  # the unit deleted its copy: the station ACKed it
    assert slept_for == (300 if rig.kind == "virtual" else 20)
    assert rows[0]["unit_id"] == UNIT_ID


def test_new_config_from_the_station_is_applied_and_kept_across_a_reboot(rig):
    rig.flash()
    rig.configure(capture_interval_s=300)
    rig.boot()
    wait_for(rig.unit_record, rig.timeout, "the unit's HELLO")
    rig.wait_asleep_after(0)
    rig.wait_awake()
    rig.station.send_command(
        UNIT_ID,
        {
            "command": "config",
            "capture_interval_s": 600,
            "frame_size": 5,
            "jpeg_quality": 20,
            "pir_enabled": 1,
            "sleep_start_min": 1200,
            "sleep_end_min": 360,
        },
    )
    wait_for(
        lambda: rig.unit_config().get("capture_interval_s") == 600,
        rig.timeout,
        "the unit's CONFIG_REPORT with the new interval",
    )
    assert rig.unit_config()["jpeg_quality"] == 20 and rig.unit_config()["sleep_start_min"] == 1200
    rig.reboot()
    wait_for(
        lambda: rig.unit_config().get("capture_interval_s") == 600,
        rig.timeout,
        "the rebooted unit reporting the config it kept in NVS",
    )
