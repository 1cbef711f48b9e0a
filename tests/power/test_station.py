"""The power worker inside a running station: its hooks, API, metrics, heartbeat and command."""

from __future__ import annotations

import json
from pathlib import Path

import requests

from agent.cli import main
from tests.helpers import free_port, metric, wait_for


def power_toml(sys_root: Path) -> str:
    return f"""
[upload]
heartbeat_interval_s = 0
[[upload.endpoints]]
name = "aws"
url = "http://127.0.0.1:{free_port()}"
token = "t"

[inference]
enabled = true

[modelsync]
enabled = true
model = "wildcam-det"
trusted_keys = ["J0sC7FIhW0vvkfbtP5IaPTJXHlHeMvSAnVR99vJhAEM="]
poll_interval_s = 3600

[power]
sysfs_root = "{sys_root}"
read_interval_s = 1
low_read_factor = 1
min_dwell_s = 0
charging_dwell_s = 0
max_soc_rate_per_h = 1000000  # the test moves the battery faster than any battery
wake_command = []
[[power.sources]]
kind = "sysfs"
"""


def test_uploads_inference_and_model_downloads_follow_the_state(make_station, sysfs, sys_root):
    sysfs.set(90, amps=1.2)  # NORMAL and charging
    station = make_station(power_toml(sys_root))
    wait_for(lambda: station.power.current.charging, what="the first reading")
    assert station.uploader.status()["paused"] is None
    assert station.inference.power_mode == "all"
    assert station.modelsync.may_download() and station.modelsync.may_activate()
    sysfs.set(85, amps=-0.5)  # the sun sets: still NORMAL, not charging
    wait_for(lambda: station.power.current.charging is False, timeout=20, what="discharging")
    # model downloads and activations want NORMAL and charging
    assert not station.modelsync.may_download() and not station.modelsync.may_activate()
    sysfs.set(35, amps=-0.5)
    wait_for(lambda: station.power.current.state == "eco", timeout=20, what="ECO")
    assert "not charging" in station.uploader.status()["paused"]
    assert station.inference.power_mode == "detector_only"
    sysfs.set(35, amps=0.8)  # charging again: ECO allows uploads while charging
    wait_for(lambda: station.uploader.status()["paused"] is None, timeout=20, what="resumed")
    sysfs.set(10, amps=-0.5)
    wait_for(lambda: station.power.current.state == "critical", timeout=20, what="CRITICAL")
    assert station.inference.power_mode == "paused"
    assert station.uploader.status()["paused"].startswith("power CRITICAL")


def test_hold_api_metrics_heartbeat_and_status(make_station, sysfs, sys_root):
    sysfs.set(30)
    station = make_station(power_toml(sys_root))
    base = f"http://{station.config.http.listen}"
    wait_for(lambda: station.power.current.state == "eco", what="ECO")
    r = requests.post(f"{base}/api/power/hold", json={"duration": "30m"}, timeout=5)
    assert r.status_code == 200 and r.json()["state"] == "normal"
    assert station.inference.power_mode == "all"
    assert 1700 < metric(station, "fieldstation_power_hold_seconds") <= 1800
    assert metric(station, "fieldstation_power_state", state="normal") == 1
    assert metric(station, "fieldstation_power_measured_state", state="eco") == 1
    assert metric(station, "fieldstation_battery_charge_percent") == 30
    beat = station.heartbeat.payload()
    assert beat["power_state"] == "normal" and beat["battery"]["soc"] == 30
    assert beat["battery"]["held"] is True
    assert (
        requests.post(f"{base}/api/power/hold", json={"duration": "soon"}, timeout=5).status_code
        == 400
    )
    r = requests.delete(f"{base}/api/power/hold", timeout=5)
    assert r.json()["state"] == "eco" and r.json()["hold_until"] is None
    status = requests.get(f"{base}/api/status", timeout=5).json()
    assert status["power"]["measured"] == "eco"


def fieldstation(capsys, *args: str) -> str:
    """Run the fieldstation command in this process; its standard output."""
    capsys.readouterr()
    assert main(list(args)) == 0
    return capsys.readouterr().out


def test_fieldstation_power_talks_to_the_daemon(make_station, sysfs, sys_root, tmp_path, capsys):
    sysfs.set(30)
    station = make_station(power_toml(sys_root))
    wait_for(lambda: station.power.current.state == "eco", what="ECO")
    conf = tmp_path / "station.toml"
    conf.write_text(f'[http]\nlisten = "{station.config.http.listen}"\n')
    out = fieldstation(capsys, "power", "--config", str(conf), "hold", "30m")
    assert "NORMAL (held; the battery says ECO)" in out
    assert "NORMAL held for 30 min more" in out
    doc = json.loads(fieldstation(capsys, "power", "--config", str(conf), "--json"))
    assert doc["daemon"] is True and doc["state"] == "normal"


def test_fieldstation_power_reads_the_sources_while_the_daemon_is_down(
    sysfs, sys_root, tmp_path, capsys
):
    sysfs.set(12, volts=12.1, amps=-0.3)
    conf = tmp_path / "station.toml"
    conf.write_text(
        f'[station]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[power]\nsysfs_root = "{sys_root}"\n[[power.sources]]\nkind = "sysfs"\n'
    )
    out = fieldstation(capsys, "power", "--config", str(conf))
    assert "daemon not running: read the sources directly" in out
    assert "power     CRITICAL, not charging" in out
    assert "sysfs:BAT0" in out and "12%" in out and "12.10 V" in out
    # a hold given while the daemon is down is kept for it
    out = fieldstation(capsys, "power", "--config", str(conf), "hold", "2h")
    assert "the hold is stored and applies when it starts" in out
    doc = json.loads(fieldstation(capsys, "power", "--config", str(conf), "--json"))
    assert doc["daemon"] is False and doc["hold_until"] is not None
    # 12 % is above the hard floor (8 %), so the hold keeps NORMAL
    assert doc["state"] == "normal" and doc["measured"] == "critical"


def test_a_hold_ends_on_time_between_two_readings(make_station, sysfs, sys_root):
    sysfs.set(30)
    station = make_station(
        power_toml(sys_root).replace("read_interval_s = 1", "read_interval_s = 600")
    )
    wait_for(lambda: station.power.current.state == "eco", what="ECO")
    base = f"http://{station.config.http.listen}"
    assert requests.post(f"{base}/api/power/hold", json={"duration": "2s"}, timeout=5).ok
    assert station.inference.power_mode == "all"
    wait_for(lambda: station.power.current.state == "eco", timeout=10, what="the hold to end")
    assert station.inference.power_mode == "detector_only"
