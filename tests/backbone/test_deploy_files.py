"""The deployment files the repo ships stay consistent with the daemon."""

from __future__ import annotations

from pathlib import Path

from agent.cli import build_parser
from agent.config import load_config

ROOT = Path(__file__).parents[2]


def test_k3s_station_config_is_valid():
    config = load_config(ROOT / "k3s" / "base" / "station.toml", env={})
    assert config.mqtt.enabled and config.http.listen == "0.0.0.0:8080"


def test_systemd_unit_is_notify_with_watchdog_and_a_real_command():
    unit = (ROOT / "systemd" / "fieldstation.service").read_text()
    assert "Type=notify" in unit and "WatchdogSec=" in unit
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    argv = exec_start.split()[1:]
    args = build_parser().parse_args(argv)
    assert args.command == "run" and str(args.config) == "/etc/fieldstation/station.toml"
