"""Config: defaults, one-pass validation naming key, line and reason, env overrides."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config import ConfigError, example_config, load_config, parse_config


def test_runs_with_no_file_at_all(tmp_path, monkeypatch):
    monkeypatch.delenv("STATE_DIRECTORY", raising=False)
    config = load_config(None, env={})
    assert config.mqtt.port == 1883
    assert config.ingest.max_capture_bytes == 4 << 20
    assert config.http.listen == "127.0.0.1:8080"
    assert str(config.data_dir) == "fieldstation-data"


def test_data_dir_comes_from_state_directory(monkeypatch):
    monkeypatch.setenv("STATE_DIRECTORY", "/var/lib/fieldstation:/var/lib/other")
    assert str(load_config(None, env={}).data_dir) == "/var/lib/fieldstation"


def test_unknown_key_is_reported_with_its_line():
    with pytest.raises(ConfigError) as err:
        parse_config("[mqtt]\nenabled = true\nprot = 1884\n", "station.toml")
    assert "station.toml:3: mqtt.prot: unknown key" in str(err.value)


def test_wrong_type_is_reported_with_its_line():
    with pytest.raises(ConfigError) as err:
        parse_config('[serial]\n\nbaudrate = "fast"\n', "station.toml")
    assert "station.toml:3: serial.baudrate: must be an integer, got a string" in str(err.value)


def test_out_of_range_is_reported():
    with pytest.raises(ConfigError) as err:
        parse_config("[mqtt]\nport = 70000\n", "s.toml")
    assert "s.toml:2: mqtt.port: 70000 is above the maximum 65535" in str(err.value)


def test_every_problem_is_reported_in_one_pass():
    with pytest.raises(ConfigError) as err:
        parse_config('[mqtt]\nport = 0\n[nope]\nx = 1\n[log]\nlevel = "loud"\n', "s.toml")
    text = str(err.value)
    assert "mqtt.port" in text and "unknown section [nope]" in text and "log.level" in text
    assert len(err.value.problems) == 3


def test_syntax_error_names_the_line():
    with pytest.raises(ConfigError) as err:
        parse_config("[mqtt]\nport = = 3\n", "s.toml")
    assert err.value.problems[0].line == 2


def test_sizes_accept_units():
    config = parse_config(
        '[storage]\nquota_bytes = "2 GiB"\n[ingest]\nmax_capture_bytes = "512 KiB"\n'
    )
    assert config.storage.quota_bytes == 2 << 30
    assert config.ingest.max_capture_bytes == 512 << 10


def test_environment_overrides_file_and_is_checked():
    config = parse_config(
        "[mqtt]\nport = 1883\n",
        "s",
        {"FIELDSTATION_MQTT_PORT": "1999", "FIELDSTATION_MQTT_ENABLED": "yes"},
    )
    assert config.mqtt.port == 1999 and config.mqtt.enabled is True
    with pytest.raises(ConfigError, match=r"FIELDSTATION_SERIAL_BAUDRATE"):
        parse_config("", "s", {"FIELDSTATION_SERIAL_BAUDRATE": "nine"})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_config("", "s", {"FIELDSTATION_MQTT_PORTT": "1"})


def test_example_config_is_itself_valid():
    config = parse_config(example_config(), "example")
    assert config.storage.quota_bytes == 8 << 30


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


def test_config_check_command_accepts_a_good_file(tmp_path: Path):
    f = tmp_path / "station.toml"
    f.write_text('[station]\nid = "ridge-01"\n[mqtt]\nenabled = true\n')
    r = _cli("config", "check", str(f))
    assert r.returncode == 0, r.stderr
    assert "ok" in r.stdout and "ridge-01" in r.stdout


def test_config_check_command_rejects_a_bad_file(tmp_path: Path):
    f = tmp_path / "station.toml"
    f.write_text("[mqtt]\nport = -1\n")
    r = _cli("config", "check", str(f))
    assert r.returncode == 2
    assert f"{f}:2: mqtt.port: -1 is below the minimum 1" in r.stderr


def test_daemon_refuses_to_start_on_a_bad_file(tmp_path: Path):
    f = tmp_path / "station.toml"
    f.write_text("[storage]\nquota_bytes = true\n")
    r = _cli("run", "--config", str(f))
    assert r.returncode == 2
    assert "storage.quota_bytes" in r.stderr
