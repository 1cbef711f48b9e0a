"""Health tells the truth: what keeps the station from its job is an alarm in words in `status`,
`/api/status` and `/metrics`, and `/readyz` says what is not ready."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from agent.broker import free_port
from tests.helpers import metric, wait_for

REPO = Path(__file__).resolve().parents[2]


def _health(station) -> list[dict[str, str]]:
    return requests.get(f"http://{station.config.http.listen}/api/status", timeout=5).json()[
        "health"
    ]


def _readyz(station) -> requests.Response:
    return requests.get(f"http://{station.config.http.listen}/readyz", timeout=5)


def _status(station, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "status",
            "--data-dir",
            str(station.data_dir),
            "--http",
            station.config.http.listen,
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_healthy_station_is_ready_with_no_alarms(make_station):
    station = make_station()
    r = _readyz(station)
    assert (r.status_code, r.text) == (200, "ready\n")
    shown = _status(station)
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "alarms    none" in shown.stdout


def test_an_unplugged_serial_unit_is_an_alarm_everywhere(make_station, tmp_path: Path):
    port = str(tmp_path / "ttyUSB-unplugged")
    station = make_station(f'[serial]\nports = ["{port}"]\nreopen_s = 0.2\n')
    alarm = wait_for(lambda: [a for a in _health(station) if a["kind"] == "serial"], 10, "alarm")
    assert alarm[0]["subject"] == port and "cannot open" in alarm[0]["message"]
    r = _readyz(station)
    assert r.status_code == 503 and f"serial {port}: cannot open" in r.text
    assert metric(station, "fieldstation_health_alarm", kind="serial", subject=port) == 1
    shown = _status(station)
    assert shown.returncode == 1
    assert f"alarms    serial {port}: cannot open" in shown.stdout
    assert "retrying every 0.2 s" in shown.stdout


def test_a_replugged_serial_unit_clears_its_alarm(make_station, pty_pair):
    _master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\nreopen_s = 0.2\n')
    wait_for(lambda: station.serial_links[0].is_open, 10, "port open")
    assert _health(station) == [] and _readyz(station).status_code == 200


def test_a_missing_detector_is_an_alarm_and_captures_wait(make_station, tmp_path: Path):
    missing = tmp_path / "models" / "megadetector"
    station = make_station(
        f'[inference]\nenabled = true\ndetector = "{missing}"\nreload_interval_s = 1\n'
    )
    alarm = wait_for(
        lambda: [
            a
            for a in _health(station)
            if a["kind"] == "inference" and "captures wait" in a["message"]
        ],
        10,
        "inference alarm",
    )
    assert str(missing) in alarm[0]["message"]
    assert "inference detector" in _readyz(station).text
    assert metric(station, "fieldstation_health_alarm", kind="inference", subject="detector") == 1


def test_a_broken_model_package_is_an_alarm(make_station, tmp_path: Path):
    package = tmp_path / "blob-ssd"
    shutil.copytree(REPO / "models" / "fixtures" / "blob-ssd", package)
    (package / "model.tflite").write_bytes(b"\0" * 4096)
    station = make_station(f'[inference]\nenabled = true\ndetector = "{package}"\n')
    alarm = wait_for(
        lambda: [a for a in _health(station) if a["kind"] == "inference"], 10, "inference alarm"
    )
    assert "captures wait" in alarm[0]["message"]
    assert _status(station).returncode == 1


@pytest.fixture
def strict_broker() -> Iterator[int]:
    """A real Mosquitto that refuses clients without a user name (allow_anonymous false)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not Path(binary).exists():
        pytest.fail("mosquitto is not installed: apt-get install mosquitto")
    folder = Path(tempfile.mkdtemp(prefix="strict-mosquitto-"))
    port = free_port()
    (folder / "m.conf").write_text(f"listener {port} 127.0.0.1\nallow_anonymous false\n")
    proc = subprocess.Popen(
        [binary, "-c", str(folder / "m.conf")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        import socket

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, 10, "mosquitto")
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)


def test_a_broker_that_refuses_the_station_is_an_alarm(make_station, strict_broker: int):
    station = make_station(f"[mqtt]\nenabled = true\nport = {strict_broker}\n")
    alarm = wait_for(lambda: [a for a in _health(station) if a["kind"] == "mqtt"], 15, "mqtt alarm")
    assert alarm[0]["subject"] == f"127.0.0.1:{strict_broker}"
    assert "refused the station" in alarm[0]["message"]
    assert "mqtt 127.0.0.1:" in _readyz(station).text


def test_status_exits_3_when_the_daemon_is_not_reachable(make_station):
    station = make_station()
    down = f"127.0.0.1:{free_port()}"
    cmd = [sys.executable, "-m", "agent", "status", "--data-dir", str(station.data_dir)]
    r = subprocess.run([*cmd, "--http", down], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and f"daemon    not reachable on {down}" in r.stdout
    r = subprocess.run([*cmd, "--http", down, "--json"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and json.loads(r.stdout)["daemon"] is None


def test_status_help_documents_its_exit_codes():
    r = subprocess.run(
        [sys.executable, "-m", "agent", "status", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "3  the daemon is not reachable" in r.stdout


def test_a_worker_that_crashes_is_an_alarm(make_station):
    station = make_station()

    class Broken:
        name = "broken"

        def run(self, stop) -> None:
            raise OSError("disk went away")

    # after start: the supervisor restarts it with backoff; meanwhile it is down
    station.supervisor.add(Broken())
    station.supervisor._start(station.supervisor._slots["broken"])
    alarm = wait_for(lambda: [a for a in _health(station) if a["kind"] == "worker"], 10, "alarm")
    assert "OSError: disk went away" in alarm[0]["message"]
    time.sleep(0)  # the alarm is read at request time; nothing to wait for after
