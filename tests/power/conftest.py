"""Power tests: a sysfs tree in a temp dir, an injected clock, a real buffer."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import agent.power.history  # noqa: F401 - registers the power tables before any store opens
from agent.config import parse_config
from agent.metrics import Metrics
from agent.power.settings import PowerSection
from agent.power.worker import PowerWorker
from agent.store import Store

DAY = 86400.0
START = 1_780_000_000.0  # a fixed wall-clock start, so runs are reproducible


class Clock:
    """The one clock a test moves by hand."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SysfsBattery:
    """`<root>/class/power_supply/BAT0` plus a mains supply, written as a kernel driver would."""

    def __init__(self, root: Path, name: str = "BAT0") -> None:
        self.root = root
        self.dir = root / "class" / "power_supply" / name
        self.ac = root / "class" / "power_supply" / "AC"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ac.mkdir(parents=True, exist_ok=True)
        (self.dir / "type").write_text("Battery\n")
        (self.ac / "type").write_text("Mains\n")
        self.set(80.0)

    def set(
        self, soc: float, volts: float | None = None, amps: float = -0.4, status: str | None = None
    ) -> None:
        volts = 12.0 + 1.3 * soc / 100 if volts is None else volts
        status = status or ("Charging" if amps > 0 else "Discharging")
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "type").write_text("Battery\n")
        (self.dir / "capacity").write_text(f"{round(soc)}\n")
        (self.dir / "voltage_now").write_text(f"{round(volts * 1e6)}\n")
        (self.dir / "current_now").write_text(f"{round(amps * 1e6)}\n")
        (self.dir / "status").write_text(status + "\n")
        (self.ac / "online").write_text("1\n" if amps > 0 else "0\n")

    def vanish(self) -> None:
        shutil.rmtree(self.dir)


class Hwmon:
    """`<root>/class/hwmon/hwmon0`, an INA219 on a 4-cell LiFePO4 pack."""

    def __init__(self, root: Path, name: str = "ina219") -> None:
        self.dir = root / "class" / "hwmon" / "hwmon0"
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "name").write_text(name + "\n")
        self.set(13.2, 0.0)

    def set(self, volts: float, amps: float) -> None:
        (self.dir / "in1_input").write_text(f"{round(volts * 1000)}\n")
        (self.dir / "curr1_input").write_text(f"{round(amps * 1000)}\n")


def power_config(root: Path, extra: str = "", **keys: object) -> PowerSection:
    """A [power] section through the real config loader (so its checks run too); `keys` override
    the test defaults, `extra` is more TOML (e.g. [[power.sources]] tables)."""
    values: dict[str, object] = {
        "sysfs_root": str(root),
        "min_dwell_s": 600,
        "charging_dwell_s": 0,
        "history_interval_s": 3600,
        "wake_command": [],
        **keys,
    }
    lines = "\n".join(f"{k} = {json.dumps(v)}" for k, v in values.items())
    return parse_config(f"[power]\n{lines}\n{extra}\n", "<test>").power


@pytest.fixture
def sys_root(tmp_path: Path) -> Iterator[Path]:
    """The fake /sys: in memory like the real one (tmpfs) when /dev/shm exists."""
    shm = Path("/dev/shm")
    if not shm.is_dir():
        yield tmp_path / "sys"
        return
    root = Path(tempfile.mkdtemp(prefix="power-sys-", dir=shm))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def sysfs(sys_root: Path) -> SysfsBattery:
    return SysfsBattery(sys_root)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "buffer.db", check_on_start=False)
    yield s
    s.close()


class Commands:
    """A stand-in for subprocess.run that records argv in order (and can fail)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.fail: set[str] = set()

    def __call__(self, argv: list[str], **kw: Any) -> subprocess.CompletedProcess[bytes]:
        self.calls.append(list(argv))
        rc = 1 if argv[0] in self.fail else 0
        return subprocess.CompletedProcess(argv, rc, b"", b"boom" if rc else b"")


@pytest.fixture
def make_worker(store: Store, clock: Clock) -> Iterator[Any]:
    made: list[PowerWorker] = []

    def make(settings: PowerSection, **kw: Any) -> PowerWorker:
        w = PowerWorker(settings, store, Metrics(), clock=clock, **kw)
        made.append(w)
        return w

    yield make
    for w in made:
        w.close()
