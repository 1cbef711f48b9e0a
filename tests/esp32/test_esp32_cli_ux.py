"""`esp32 flash --dry-run`, the documented `virtual:` port and the monitor's default speed."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent.cli import build_parser
from agent.cli import main as fieldstation
from agent.esp32.virtual_board import VirtualBoard, write_virtual_build


@pytest.fixture
def build_s3(tmp_path) -> Path:
    return write_virtual_build(tmp_path / "build-s3", "esp32s3")


@pytest.fixture
def board(tmp_path) -> VirtualBoard:
    return VirtualBoard(tmp_path / "unit.flash", "esp32s3")


def test_flash_dry_run_checks_the_unit_and_writes_nothing(build_s3, board, capsys):
    before = board.path.read_bytes()
    assert fieldstation(["esp32", "flash", "--dry-run", "--port", board.port, str(build_s3)]) == 0
    out = capsys.readouterr().out
    assert "chip esp32s3" in out and "would write" in out and "nothing written" in out
    assert board.path.read_bytes() == before
    assert json.loads(board.path.with_suffix(".json").read_text())["resets"] == 1  # left running


def test_flash_dry_run_for_the_wrong_chip_is_refused(tmp_path, board, capsys):
    build_esp32 = write_virtual_build(tmp_path / "build-esp32", "esp32")
    assert (
        fieldstation(["esp32", "flash", "--dry-run", "--port", board.port, str(build_esp32)]) == 2
    )
    assert "built for esp32 but the unit" in capsys.readouterr().err


def test_flash_dry_run_without_a_port_lists_the_parts(build_s3, capsys):
    assert fieldstation(["esp32", "flash", "--dry-run", str(build_s3)]) == 0
    out = capsys.readouterr().out
    assert out.count("would write") >= 2 and "give --port" in out


def test_flash_without_a_port_says_what_is_needed(build_s3, capsys):
    assert fieldstation(["esp32", "flash", str(build_s3)]) == 2
    assert "--port is needed" in capsys.readouterr().err


def test_the_virtual_port_is_documented_in_help():
    r = subprocess.run(
        [sys.executable, "-m", "agent", "esp32", "flash", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "virtual:PATH" in r.stdout and "--dry-run" in r.stdout


def test_monitor_listens_at_the_station_serial_speed_by_default():
    from agent.config import SerialSection

    args = build_parser().parse_args(["esp32", "monitor", "--port", "/dev/ttyUSB0"])
    assert args.baud == SerialSection().baudrate
