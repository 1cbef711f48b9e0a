"""The Linux power_supply class: UPS HATs, laptop batteries and many charge controllers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from agent.power.settings import SourceConfig
from agent.power.sources import Reading, SourceError, read_number

CHARGER_TYPES = ("Mains", "USB", "Solar", "Wireless")
# supplies whose power_now is the charge input (on a field station: the panel, or its controller)
INPUT_TYPES = ("Solar", "Mains", "USB")


class PowerSupplySource:
    """Reads `/sys/class/power_supply/<name>`: capacity, voltage_now, current_now, power_now, status."""

    def __init__(self, config: SourceConfig, sysfs_root: Path, clock: Callable[[], float]) -> None:
        self.config = config
        self.base = sysfs_root / "class" / "power_supply"
        self.clock = clock
        self.name = f"sysfs:{config.name or 'battery'}"
        self._found = ""

    def _battery_dir(self) -> Path:
        # once found, the same supply: a battery that disappears is a fault, not a new search
        name = self.config.name or self._found
        if name:
            d = self.base / name
            if not d.is_dir():
                raise SourceError(f"{d} is gone")
            return d
        try:
            supplies = sorted(self.base.iterdir())
        except OSError:
            raise SourceError(f"{self.base} is gone") from None
        for d in supplies:
            if _text(d / "type") == "Battery":
                self._found = d.name
                return d
        raise SourceError(f"no supply of type Battery under {self.base}")

    def read(self) -> Reading:
        d = self._battery_dir()
        soc = _optional(d / "capacity")
        volts = _optional(d / "voltage_now")
        amps = _optional(d / "current_now")
        watts = _optional(d / "power_now")
        if soc is None and volts is None:
            raise SourceError(f"{d} has neither capacity nor voltage_now")
        status = _text(d / "status") or "Unknown"
        charging: bool | None = None
        if status == "Charging":
            charging = True
        elif status in ("Discharging", "Not charging"):
            charging = False
        elif status == "Full":
            charging = self._charger_online()
        else:
            charging = self._charger_online()
        current_a = amps / 1e6 if amps is not None else None
        if current_a is not None and status == "Discharging" and current_a > 0:
            current_a = -current_a  # some drivers report the magnitude only
        power_w = watts / 1e6 if watts is not None else None
        if power_w is None and current_a is not None and volts is not None:
            power_w = current_a * volts / 1e6
        self.name = f"sysfs:{d.name}"
        return Reading(
            self.name,
            self.clock(),
            soc=soc,
            voltage_v=volts / 1e6 if volts is not None else None,
            current_a=current_a,
            power_w=power_w,
            charging=charging,
            solar_w=self._input_watts(),
            detail={"status": status},
        )

    def _input_watts(self) -> float | None:
        """Summed power_now of the input supplies; an offline one gives 0. None when none says."""
        total: float | None = None
        try:
            supplies = sorted(self.base.iterdir())
        except OSError:
            return None
        for d in supplies:
            if _text(d / "type") not in INPUT_TYPES:
                continue
            try:
                watts = _optional(d / "power_now")
                if watts is None:
                    volts, amps = _optional(d / "voltage_now"), _optional(d / "current_now")
                    watts = volts * amps / 1e6 if volts is not None and amps is not None else None
            except SourceError:
                continue  # a garbled input supply must not cost the battery reading
            if watts is None:
                continue
            online = _text(d / "online") != "0"
            total = (total or 0.0) + (abs(watts) / 1e6 if online else 0.0)
        return total

    def _charger_online(self) -> bool | None:
        found = None
        try:
            supplies = list(self.base.iterdir())
        except OSError:
            return None
        for d in supplies:
            if _text(d / "type") in CHARGER_TYPES:
                online = _text(d / "online")
                if online == "1":
                    return True
                if online == "0":
                    found = False
        return found

    def close(self) -> None:
        pass


def _optional(path: Path) -> float | None:
    """A number from an attribute a driver may not provide; garbage in one it does is an error."""
    if not path.exists():
        return None
    return read_number(path)


def _text(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("ascii", "replace").strip()
    except OSError:
        return None
