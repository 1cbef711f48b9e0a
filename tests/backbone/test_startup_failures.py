"""`config check` catches what `run` would fail on; `run` says what stopped it in one line, exit 2."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.broker import free_port

REPO = Path(__file__).resolve().parents[2]


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=timeout
    )


def _station_toml(tmp_path: Path, extra: str = "", listen: str | None = None) -> Path:
    f = tmp_path / "station.toml"
    f.write_text(
        f'[station]\nid = "ridge-01"\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "{listen or f"127.0.0.1:{free_port()}"}"\n{extra}'
    )
    return f


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A loopback port some other program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def _one_clear_line(r: subprocess.CompletedProcess[str], key: str) -> str:
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert key in lines[0]
    return lines[0]


def test_run_with_a_missing_token_file_says_so_in_one_line(tmp_path: Path):
    f = _station_toml(tmp_path, f'token_file = "{tmp_path / "token"}"\n')
    line = _one_clear_line(_cli("run", "--config", str(f)), "http.token_file")
    assert f"{f}:6:" in line and "No such file" in line


def test_run_with_a_missing_mqtt_password_file_says_so_in_one_line(tmp_path: Path):
    f = _station_toml(tmp_path, f'[mqtt]\nenabled = true\npassword_file = "{tmp_path / "pw"}"\n')
    _one_clear_line(_cli("run", "--config", str(f)), "mqtt.password_file")


def test_run_on_a_port_in_use_says_so_in_one_line(tmp_path: Path, taken_port: int):
    f = _station_toml(tmp_path, listen=f"127.0.0.1:{taken_port}")
    line = _one_clear_line(_cli("run", "--config", str(f)), "http.listen")
    assert f"127.0.0.1:{taken_port} is already in use" in line


def test_run_on_a_taken_lan_port_names_lan_listen(tmp_path: Path, taken_port: int):
    f = _station_toml(tmp_path, f'lan_listen = "127.0.0.1:{taken_port}"\n')
    _one_clear_line(_cli("run", "--config", str(f)), "http.lan_listen")


def test_run_when_another_station_holds_the_buffer_says_so_in_one_line(tmp_path: Path):
    from agent.bufferlock import BufferLock

    (tmp_path / "data").mkdir()
    lock = BufferLock(tmp_path / "data")
    lock.acquire()
    try:
        f = _station_toml(tmp_path)
        line = _one_clear_line(_cli("run", "--config", str(f)), "another station")
    finally:
        lock.release()
    assert "already running" in line


def test_config_check_finds_a_port_in_use(tmp_path: Path, taken_port: int):
    f = _station_toml(tmp_path, listen=f"127.0.0.1:{taken_port}")
    r = _cli("config", "check", str(f))
    assert r.returncode == 2
    assert f"{f}:5: http.listen: 127.0.0.1:{taken_port} is already in use" in r.stderr


def test_config_check_finds_an_address_this_machine_does_not_have(tmp_path: Path):
    f = _station_toml(tmp_path, listen="192.0.2.7:8080")  # TEST-NET-1: never local
    r = _cli("config", "check", str(f))
    assert r.returncode == 2
    assert "no network interface here has the address 192.0.2.7" in r.stderr


def test_config_check_finds_a_missing_token_file(tmp_path: Path):
    f = _station_toml(tmp_path, f'token_file = "{tmp_path / "token"}"\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 2 and "http.token_file: cannot read" in r.stderr


def test_config_check_finds_a_missing_mqtt_ca_bundle(tmp_path: Path):
    f = _station_toml(tmp_path, f'[mqtt]\nenabled = true\ntls_ca_file = "{tmp_path / "ca.pem"}"\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 2 and f"{f}:8: mqtt.tls_ca_file:" in r.stderr


def test_config_check_finds_a_detector_that_is_not_installed(tmp_path: Path):
    f = _station_toml(tmp_path, '[inference]\ndetector = "megadetector-v6"\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 2
    assert f"{f}:7: inference.detector: 'megadetector-v6': no package at" in r.stderr


def test_config_check_finds_a_detector_that_does_not_load(tmp_path: Path):
    package = tmp_path / "blob-ssd"
    shutil.copytree(REPO / "models" / "fixtures" / "blob-ssd", package)
    (package / "model.tflite").write_bytes(b"not a model" * 100)
    f = _station_toml(tmp_path, f'[inference]\ndetector = "{package}"\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 2 and "inference.detector:" in r.stderr
    assert "Traceback" not in r.stderr


def test_config_check_accepts_a_detector_that_loads(tmp_path: Path):
    package = REPO / "models" / "fixtures" / "blob-ssd"
    f = _station_toml(tmp_path, f'[inference]\ndetector = "{package}"\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 0, r.stderr


def test_config_check_of_the_running_station_is_ok(tmp_path: Path):
    """The running station holds its own port; checking its config must not call that a fault."""
    port = free_port()
    f = _station_toml(tmp_path, "[inference]\nenabled = false\n", listen=f"127.0.0.1:{port}")
    daemon = subprocess.Popen(
        [sys.executable, "-m", "agent", "run", "--config", str(f)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        from tests.helpers import wait_for

        def up() -> bool:
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(up, 30, "the daemon's listener")
        r = _cli("config", "check", str(f))
        assert r.returncode == 0, r.stderr
    finally:
        daemon.terminate()
        daemon.wait(30)


def test_config_check_notes_a_serial_port_that_is_absent_now(tmp_path: Path):
    port = tmp_path / "ttyUSB-unplugged"
    f = _station_toml(tmp_path, f'[serial]\nports = ["{port}"]\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 0, r.stderr  # a unit may be unplugged: run retries, status alarms
    assert f"note        serial.ports[0]: {port} does not exist now" in r.stdout


def test_run_with_a_data_dir_that_is_a_file_says_so_in_one_line(tmp_path: Path):
    (tmp_path / "data").write_text("not a folder")
    line = _one_clear_line(
        _cli("run", "--config", str(_station_toml(tmp_path))), "station.data_dir"
    )
    assert "is a file, not a folder" in line
