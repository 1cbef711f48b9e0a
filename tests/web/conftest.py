"""A real station with virtual units on ptys, a virtual board to flash, and Debian's Chromium."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from agent.daemon import Station
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import PtySerialLink, VirtualUnit
from agent.esp32.virtual_board import VirtualBoard, write_virtual_build
from agent.scenes import scene_jpeg
from agent.web.auth import write_password_file
from tests.conftest import station_config
from tests.helpers import wait_for

PASSWORD = "ridge-station-pw"
UNITS = ("cam-north", "cam-ridge", "cam-water")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


class UnitThread:
    """A virtual unit that stays awake: it applies the station's commands and sends captures."""

    def __init__(self, unit: VirtualUnit) -> None:
        self.unit = unit
        self.commands: list[p.Message] = []
        self._captures: queue.Queue[bytes] = queue.Queue()
        self._stop = threading.Event()
        self._seed = 100
        self.thread = threading.Thread(target=self._run, name=f"unit-{unit.unit_id}", daemon=True)

    def start(self) -> UnitThread:
        self.unit.hello()
        self.unit.telemetry(battery_mv=3950, rssi_dbm=-58)
        self.thread.start()
        return self

    def capture(self, jpeg: bytes | None = None) -> None:
        self._seed += 1
        self._captures.put(jpeg or scene_jpeg(self._seed))

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                jpeg = self._captures.get_nowait()
            except queue.Empty:
                for msg in self.unit.poll_commands(0.1):
                    self.commands.append(msg)
                    if isinstance(msg, p.CaptureNow):
                        self.capture()  # the firmware answers CAPTURE_NOW with a capture
                continue
            self.unit.send_capture(jpeg)

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(10)
        self.unit.close()


@dataclass
class Field:
    """The station, its units by id and the board on the bench."""

    station: Station
    url: str
    units: dict[str, UnitThread]
    board: VirtualBoard
    board_link: PtySerialLink
    extra: list[Any] = field(default_factory=list)

    def captures_of(self, unit_id: str) -> int:
        return self.station.store.queue_summary()["per_unit"].get(unit_id, {}).get("count", 0)


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
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's 'chromium' package (.ci/setup.d/web.sh)"
        )
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def log_in(browser: Any, url: str, *, width: int = 1280, height: int = 860) -> Any:
    """A new browser context logged in to the station page; returns its page."""
    context = browser.new_context(viewport={"width": width, "height": height})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{url}/")
    assert page.url.startswith(f"{url}/login")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
    return page
