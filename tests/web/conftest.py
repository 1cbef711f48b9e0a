"""A real station with virtual units on ptys, a virtual board to flash, and Debian's Chromium."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.daemon import Station
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import PtySerialLink
from agent.esp32.virtual_board import VirtualBoard, write_virtual_build
from agent.scenes import scene_jpeg
from agent.web.auth import write_password_file
from tests.conftest import station_config
from tests.helpers import wait_for
from tests.web.page_rig import CHROMIUM, CHROMIUM_ARGS, PASSWORD, UNITS, Field, UnitThread


@pytest.fixture(scope="module")
def field_station(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Field]:
    tmp = tmp_path_factory.mktemp("web")
    write_password_file(tmp / "web-password", PASSWORD)
    boards = tmp / "boards"
    boards.mkdir()
    board = VirtualBoard(boards / "bench-1.flash", "esp32s3", "24:0a:c4:be:ec:01")
    firmware = write_virtual_build(tmp / "build", "esp32s3", version="wildcam-2.4.0")
    links = {uid: PtySerialLink() for uid in UNITS}
    board_link = PtySerialLink()
    ports = ", ".join(f'"{link.slave_path}"' for link in [*links.values(), board_link])
    config = station_config(
        tmp,
        f"""
[serial]
ports = [{ports}]
reopen_s = 0.2

[power]
enabled = false

[web]
password_file = "{tmp / "web-password"}"
firmware = "{firmware}"
virtual_boards_dir = "{boards}"
refresh_s = 0.5
""",
    )
    station = Station(config)
    station.start()
    units: dict[str, UnitThread] = {}
    try:
        wait_for(
            lambda: all(link.is_open for link in station.serial_links), 15, "the station's ports"
        )
        for i, (uid, link) in enumerate(links.items()):
            unit = virtual_unit(uid, link, images=[scene_jpeg(i)], battery_mv=3900 + 20 * i)
            units[uid] = UnitThread(unit).start()
        wait_for(lambda: len(station.store.units()) == len(UNITS), 15, "every unit's HELLO")
        for uid, u in units.items():
            u.capture(scene_jpeg(UNITS.index(uid)))
        wait_for(
            lambda: all(station.store.units()[i]["config"] for i in range(len(UNITS))),
            15,
            "config reports",
        )
        wait_for(
            lambda: station.store.queue_summary()["pending"] >= len(UNITS), 30, "first captures"
        )
        yield Field(station, f"http://{config.http.listen}", units, board, board_link)
    finally:
        for u in units.values():
            u.stop()
        board_link.close()
        station.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's Chromium, headless, driven by Playwright (no browser download)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("the Python package 'playwright' is missing: pip install -e '.[test]'")
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's 'chromium' package (.ci/setup.d/web.sh)"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()
