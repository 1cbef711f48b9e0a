"""What the page tests drive: virtual units that stay awake, the station around them, a login."""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent import protocol as p
from agent.daemon import Station
from agent.esp32.virtual import PtySerialLink, VirtualUnit
from agent.esp32.virtual_board import VirtualBoard
from agent.scenes import scene_jpeg

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
