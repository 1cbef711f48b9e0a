"""Fixtures shared by every test folder: real services on loopback, real stations."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.broker import PrivateBroker, free_port
from agent.config import Config, parse_config
from agent.daemon import Station


def pytest_addoption(parser: pytest.Parser) -> None:
    """--hil-port / --hil-firmware: tests/hil against a real board (see esp32/README.md);
    --chaos-minutes / --chaos-seed / --e2e-report: tests/e2e (README: End-to-end and chaos)."""
    from tests.e2e.options import add_e2e_options
    from tests.hil.rig import add_hil_options

    add_hil_options(parser)
    add_e2e_options(parser)


@pytest.fixture(scope="session")
def mosquitto() -> Iterator[PrivateBroker]:
    """A real Mosquitto broker on a free loopback port (Debian package 'mosquitto')."""
    with PrivateBroker() as broker:
        yield broker


@pytest.fixture
def pty_pair() -> Iterator[tuple[int, str]]:
    """(master fd, slave path): the unit's end and the station's 'serial port'."""
    import tty

    master, slave = os.openpty()
    tty.setraw(slave)
    path = os.ttyname(slave)
    yield master, path
    for fd in (master, slave):
        try:
            os.close(fd)
        except OSError:
            pass


def station_config(tmp_path: Path, extra: str = "", **sections: str) -> Config:
    """A station config on a free port in a temp data dir; `extra` is more TOML."""
    return parse_config(
        f"""
[station]
id = "test-station"
data_dir = "{tmp_path / "station"}"

[http]
listen = "127.0.0.1:{free_port()}"

[storage]
check_on_start = true
{extra}
{"" if "[inference]" in extra else "[inference]" + chr(10) + "enabled = false"}
""",
        "<test>",
    )


@pytest.fixture
def make_station(tmp_path: Path) -> Iterator:
    """Start stations with given extra TOML; all are stopped at the end of the test."""
    started: list[Station] = []

    def make(extra: str = "", path: Path | None = None, **changes: dict) -> Station:
        config = station_config(path or tmp_path, extra)
        for section, values in changes.items():
            config = config.replace(section, **values)
        station = Station(config)
        station.start()
        started.append(station)
        return station

    yield make
    for station in started:
        try:
            station.stop()
        except Exception:
            pass
