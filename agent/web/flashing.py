"""The Flash page's job: flash the bundled firmware, write the unit's NVS settings, then wait for
its HELLO. It drives the same functions as `fieldstation esp32 flash` and `esp32 configure`."""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.esp32.configure import ConfigureError, UnitSettings, configure
from agent.esp32.flash import VIRTUAL_PREFIX, FlashError, flash, inventory_ports
from agent.store import Store
from agent.web.settings import WebSection

log = logging.getLogger(__name__)

STEPS = ("flash firmware", "write settings", "wait for HELLO")


@dataclass
class FlashJob:
    id: str
    port: str
    unit_id: str
    started: float
    step: int = 0  # index into STEPS of the step running now; len(STEPS) when done
    state: str = "running"  # running | done | failed
    lines: list[str] = field(default_factory=list)
    error: str | None = None
    hello: dict[str, Any] | None = None

    def say(self, line: str) -> None:
        self.lines.append(line)

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "port": self.port,
            "unit_id": self.unit_id,
            "state": self.state,
            "step": self.step,
            "steps": list(STEPS),
            "percent": round(100 * self.step / len(STEPS)),
            "lines": self.lines[-40:],
            "error": self.error,
            "hello": self.hello,
        }


class Flasher:
    """One flash job at a time; the page polls `job()` for its progress."""

    def __init__(
        self,
        settings: WebSection,
        store: Store,
        *,
        hello_timeout_s: float = 300.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.hello_timeout_s = hello_timeout_s
        self.clock = clock
        self._job: FlashJob | None = None
        self._lock = threading.Lock()

    @property
    def firmware(self) -> Path | None:
        return Path(self.settings.firmware) if self.settings.firmware else None

    def ports(self) -> list[dict[str, str]]:
        """USB serial ports that look like ESP32 units, then the virtual boards."""
        out = [
            {
                "port": str(r["port"]),
                "label": f"{r['port']}  {r['usb']}  {r['by_id'] or ''}".strip(),
            }
            for r in inventory_ports()
        ]
        if self.settings.virtual_boards_dir:
            folder = Path(self.settings.virtual_boards_dir)
            for f in sorted(folder.glob("*.flash")) if folder.is_dir() else []:
                if f.with_suffix(".json").is_file():
                    out.append({"port": f"{VIRTUAL_PREFIX}{f}", "label": f"virtual board {f.stem}"})
        return out

    def job(self) -> FlashJob | None:
        return self._job

    def start(self, port: str, settings: UnitSettings) -> FlashJob:
        """Check the request, then run the job in a thread; ValueError says what is wrong."""
        if self.firmware is None:
            raise ValueError("no firmware bundled: set web.firmware to an ESP-IDF build folder")
        if port not in {p["port"] for p in self.ports()}:
            raise ValueError(f"port {port!r} is not a connected unit; refresh the list")
        settings.nvs_values()  # bad settings are refused before anything is written
        with self._lock:
            if self._job is not None and self._job.state == "running":
                raise ValueError(f"a unit is being flashed on {self._job.port}; wait for it")
            job = FlashJob(secrets.token_hex(6), port, settings.unit_id, self.clock())
            self._job = job
        threading.Thread(
            target=self._run, args=(job, settings), name="web-flash", daemon=True
        ).start()
        return job

    def _run(self, job: FlashJob, settings: UnitSettings) -> None:
        assert self.firmware is not None
        try:
            flash(job.port, self.firmware, say=job.say)
            job.step = 1
            configure(settings, job.port, say=job.say)
            job.step = 2
            job.say(f"waiting for HELLO from {settings.unit_id} (serial.ports or MQTT)")
            deadline = time.monotonic() + self.hello_timeout_s
            while time.monotonic() < deadline:
                row = next((u for u in self.store.units() if u["unit_id"] == job.unit_id), None)
                if row is not None and row["last_seen"] >= job.started and row["firmware_version"]:
                    job.hello = {
                        "firmware": row["firmware_version"],
                        "chip": row["chip"],
                        "mac": row["mac"],
                        "path": row["last_path"],
                    }
                    job.say(f"HELLO from {job.unit_id}: firmware {row['firmware_version']}")
                    job.step = len(STEPS)
                    job.state = "done"
                    return
                time.sleep(0.3)
            raise FlashError(
                f"no HELLO from {job.unit_id} within {self.hello_timeout_s:.0f} s: is its port in "
                "serial.ports, or its Wi-Fi and MQTT settings right?"
            )
        except (FlashError, ConfigureError, ValueError, OSError) as exc:
            job.error = str(exc)
            job.say(f"error: {exc}")
            job.state = "failed"
        except Exception as exc:  # the job's boundary: the page must never wait on a dead thread
            log.exception("flash job on %s failed", job.port)
            job.error = f"{type(exc).__name__}: {exc}"
            job.say(f"error: {job.error}")
            job.state = "failed"
