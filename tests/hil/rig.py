"""What a HIL test drives: flash, configure, boot, trigger, observe. Virtual and real boards alike."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.esp32.configure import UnitSettings, configure
from agent.esp32.flash import flash
from agent.esp32.host_unit import UnitRunner
from agent.esp32.virtual import PtySerialLink
from agent.esp32.virtual_board import VirtualBoard, write_virtual_build
from agent.scenes import scene_jpeg
from tests.helpers import wait_for

UNIT_ID = "hil-unit-1"


def add_hil_options(parser: Any) -> None:
    """The suite's command-line options; tests/conftest.py calls this from its pytest_addoption."""
    group = parser.getgroup("hil", "hardware-in-loop (tests/hil)")
    group.addoption(
        "--hil-port",
        default=None,
        help="serial port of a real unit, e.g. /dev/ttyUSB0 (default: a virtual board)",
    )
    group.addoption(
        "--hil-firmware",
        default=None,
        help="ESP-IDF build folder (or merged .bin) to flash to the real unit",
    )
    group.addoption("--hil-chip", default="auto", help="expected chip of the real unit")
    group.addoption(
        "--hil-timeout",
        type=float,
        default=120.0,
        help="seconds to wait for a real unit's timer wake",
    )


class Rig:
    kind = "base"
    timeout = 30.0
    station: Any

    def unit_record(self) -> dict[str, Any] | None:
        for row in self.station.store.units():
            if row["unit_id"] == UNIT_ID:
                return dict(row)
        return None

    def unit_config(self) -> dict[str, Any]:
        row = self.unit_record()
        return json.loads(row["config"]) if row and row["config"] else {}

    def stored(self) -> list[Any]:
        return [
            r for r in self.station.store.captures_in_state("received") if r["unit_id"] == UNIT_ID
        ]


class VirtualRig(Rig):
    """A virtual board (flash file) running the firmware's C core, on a pty to a real Station."""

    kind = "virtual"

    def __init__(self, make_station: Callable[..., Any], tmp: Path) -> None:
        self.tmp = tmp
        self.board = VirtualBoard(tmp / "unit.flash", "esp32s3", "24:0a:c4:aa:bb:01")
        self.firmware = write_virtual_build(tmp / "build", "esp32s3")
        self.link = PtySerialLink()
        self.station = make_station(
            f'[serial]\nports = ["{self.link.slave_path}"]\nreopen_s = 0.2\n'
        )
        wait_for(lambda: self.station.serial_links[0]._serial is not None, 15, "the station's port")
        self.runner: UnitRunner | None = None
        self.images = [scene_jpeg(i) for i in range(3)]

    def flash(self) -> None:
        flash(self.board.port, self.firmware, say=lambda s: None)

    def configure(self, **settings: Any) -> None:
        configure(UnitSettings(UNIT_ID, **settings), self.board.port, say=lambda s: None)

    def boot(self) -> None:
        unit = self.board.boot(self.link, images=self.images)
        self.runner = UnitRunner(unit).start()  # type: ignore[arg-type]

    def reboot(self) -> None:
        assert self.runner
        self.runner.stop()
        self.boot()

    def trigger(self) -> None:
        """The PIR fires while the unit sleeps."""
        assert self.runner
        wait_for(lambda: not self.runner.awake.is_set(), self.timeout, "the unit to be asleep")
        self.runner.wake("pir")

    def sent_jpegs(self) -> list[bytes]:
        return self.images

    def wait_asleep_after(self, cycles: int) -> int:
        """Wait until the unit went back to deep sleep; return the sleep it asked for (s)."""
        assert self.runner
        wait_for(
            lambda: self.runner.cycles > cycles or self.runner.error, self.timeout, "deep sleep"
        )
        assert self.runner.error is None, self.runner.error
        return self.runner.unit.sleeps[-1].seconds

    def cycles(self) -> int:
        assert self.runner
        return self.runner.cycles

    def wait_awake(self) -> None:
        assert self.runner
        self.runner.wake("timer")
        wait_for(lambda: self.runner.awake.is_set(), self.timeout, "the unit to wake")

    def pending(self) -> int:
        assert self.runner
        return len(self.runner.unit.pending)

    def close(self) -> None:
        if self.runner:
            self.runner.stop()
            if self.runner.error:
                raise self.runner.error
        self.link.close()


class RealRig(Rig):
    """A real ESP32 on --hil-port, flashed with --hil-firmware; the station opens the same port.

    The PIR cannot be pressed from here, so the trigger is the unit's timer: it is configured to
    wake every `interval_s` seconds and each timer wake takes a capture.
    """

    kind = "real"

    def __init__(
        self,
        port: str,
        firmware: Path,
        chip: str,
        make_station: Callable[..., Any],
        tmp: Path,
        timeout: float,
    ) -> None:
        self.port, self.firmware, self.chip = port, firmware, chip
        self.make_station = make_station
        self.timeout = timeout
        self.station = None
        self._cycles = 0
        self._last_uptime: int | None = None

    def flash(self) -> None:
        flash(self.port, self.firmware, self.chip, say=print)

    def configure(self, **settings: Any) -> None:
        settings["capture_interval_s"] = 20  # on a real board the timer is the trigger
        configure(UnitSettings(UNIT_ID, **settings), self.port, chip=self.chip, say=print)

    def boot(self) -> None:
        # configure() ended with a hard reset: open the station on the port the unit now talks on
        self.station = self.make_station(f'[serial]\nports = ["{self.port}"]\nreopen_s = 0.5\n')

    def reboot(self) -> None:
        self.station.stop()
        from agent.esp32.flash import open_target

        target = open_target(self.port, self.chip)
        target.reset()
        target.close()
        self.boot()

    def trigger(self) -> None:
        pass  # the timer wake configured in configure() takes the capture

    def sent_jpegs(self) -> list[bytes] | None:
        return None  # a real camera: the test checks JPEG markers instead of exact bytes

    def _uptime(self) -> int | None:
        row = self.unit_record()
        return None if row is None else row["uptime_s"]

    def wait_asleep_after(self, cycles: int) -> int:
        """A real unit that slept wakes again with a fresh uptime: wait for that HELLO/TELEMETRY."""
        first = self._uptime()
        wait_for(
            lambda: (u := self._uptime()) is not None and first is not None and u < first,
            self.timeout,
            "the unit's next wake after deep sleep",
        )
        self._cycles += 1
        return int(self.unit_config().get("capture_interval_s", 0))

    def cycles(self) -> int:
        return self._cycles

    def wait_awake(self) -> None:
        before = self.unit_record()["last_seen"] if self.unit_record() else 0
        wait_for(
            lambda: (r := self.unit_record()) and r["last_seen"] > before, self.timeout, "a wake"
        )

    def pending(self) -> int:
        row = self.unit_record()
        return int(row["pending_captures"] or 0) if row else 0

    def close(self) -> None:
        pass
