"""Where the station learns its battery and solar state: one small module per kind of sensor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.power.settings import SourceConfig


class SourceError(RuntimeError):
    """A source gave no usable reading now (file gone, garbage, no block yet); says which and why."""


@dataclass(frozen=True)
class Reading:
    """One look at the battery: what a source saw and when. Current is positive while charging."""

    source: str
    at: float
    soc: float | None = None  # state of charge, %
    voltage_v: float | None = None
    current_a: float | None = None
    power_w: float | None = None
    charging: bool | None = None
    solar_w: float | None = None
    detail: dict[str, str | float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "source": self.source,
            "at": self.at,
            "soc": self.soc,
            "voltage_v": self.voltage_v,
            "current_a": self.current_a,
            "power_w": self.power_w,
            "charging": self.charging,
            "solar_w": self.solar_w,
            "detail": dict(self.detail),
        }


class Source(Protocol):
    """A battery sensor. `read` raises SourceError when it has nothing trustworthy to say."""

    name: str
    config: SourceConfig

    def read(self) -> Reading: ...

    def close(self) -> None: ...


def open_source(cfg: SourceConfig, sysfs_root: Path, clock: Callable[[], float]) -> Source:
    """The source a [[power.sources]] table describes (VE.Direct starts its reader thread)."""
    if cfg.kind == "sysfs":
        from agent.power.sources.sysfs import PowerSupplySource

        return PowerSupplySource(cfg, sysfs_root, clock)
    if cfg.kind == "hwmon":
        from agent.power.sources.hwmon import HwmonSource

        return HwmonSource(cfg, sysfs_root, clock)
    if cfg.kind == "vedirect":
        from agent.power.sources.vedirect import VeDirectSource

        return VeDirectSource(cfg, clock)
    if cfg.kind == "psutil":
        from agent.power.sources.psutil_battery import PsutilSource

        return PsutilSource(cfg, clock)
    raise ValueError(f"power source kind {cfg.kind!r} is not sysfs, hwmon, vedirect or psutil")


def read_number(path: Path) -> float:
    """A sysfs attribute as a number; SourceError naming the file when it is gone or garbage."""
    try:
        text = path.read_bytes().decode("ascii", "replace").strip()
    except FileNotFoundError:
        raise SourceError(f"{path} is gone") from None
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from None
    try:
        return float(text)
    except ValueError:
        raise SourceError(f"{path} holds {text[:40]!r}, not a number") from None
