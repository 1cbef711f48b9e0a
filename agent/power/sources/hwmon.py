"""hwmon current/voltage sensors (INA219, INA3221, …): charge from a per-chemistry voltage curve."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable
from pathlib import Path

from agent.power.settings import SourceConfig
from agent.power.sources import Reading, SourceError, read_number

# Rest (open-circuit) voltage of one cell -> state of charge %, ascending. Typical published
# figures at 25 °C; a battery under load reads lower, hence the rest-voltage correction.
CURVES: dict[str, list[tuple[float, float]]] = {
    "lifepo4": [
        (2.50, 0),
        (3.00, 9),
        (3.13, 14),
        (3.20, 20),
        (3.22, 30),
        (3.25, 40),
        (3.26, 50),
        (3.27, 60),
        (3.30, 70),
        (3.32, 80),
        (3.35, 90),
        (3.40, 100),
    ],
    "li-ion": [
        (3.00, 0),
        (3.30, 5),
        (3.61, 10),
        (3.67, 20),
        (3.71, 30),
        (3.75, 40),
        (3.79, 50),
        (3.85, 60),
        (3.92, 70),
        (4.00, 80),
        (4.10, 90),
        (4.20, 100),
    ],
    "lead-acid": [  # a 12 V battery's table divided by its 6 cells
        (11.31 / 6, 0),
        (11.51 / 6, 10),
        (11.66 / 6, 20),
        (11.81 / 6, 30),
        (11.96 / 6, 40),
        (12.10 / 6, 50),
        (12.24 / 6, 60),
        (12.37 / 6, 70),
        (12.50 / 6, 80),
        (12.62 / 6, 90),
        (12.73 / 6, 100),
    ],
}


def soc_from_voltage(chemistry: str, cell_volts: float) -> float:
    """State of charge (%) of a cell at rest, interpolated on the chemistry's curve."""
    curve = CURVES[chemistry]
    volts = [v for v, _ in curve]
    if cell_volts <= volts[0]:
        return 0.0
    if cell_volts >= volts[-1]:
        return 100.0
    i = bisect_left(volts, cell_volts)
    (v0, s0), (v1, s1) = curve[i - 1], curve[i]
    return s0 + (s1 - s0) * (cell_volts - v0) / (v1 - v0)


class HwmonSource:
    """Reads one hwmon chip's bus voltage and current; charge comes from the voltage curve."""

    def __init__(self, config: SourceConfig, sysfs_root: Path, clock: Callable[[], float]) -> None:
        self.config = config
        self.base = sysfs_root / "class" / "hwmon"
        self.clock = clock
        self.name = f"hwmon:{config.name or 'first'}"

    def _chip_dir(self) -> Path:
        try:
            chips = sorted(self.base.iterdir())
        except OSError:
            raise SourceError(f"{self.base} is gone") from None
        for d in chips:
            try:
                name = (d / "name").read_bytes().decode("ascii", "replace").strip()
            except OSError:
                continue
            if not self.config.name or name == self.config.name:
                return d
        raise SourceError(f"no hwmon chip named {self.config.name or '(any)'} under {self.base}")

    def read(self) -> Reading:
        c = self.config
        d = self._chip_dir()
        volts = read_number(d / c.voltage_input) / 1000.0
        amps = None
        if c.current_input:
            current_file = d / c.current_input
            if current_file.exists():
                amps = c.current_sign * read_number(current_file) / 1000.0
        if volts <= 0:
            raise SourceError(f"{d / c.voltage_input} reads {volts} V: no battery on the sensor")
        # under load the terminal voltage sags by I*R; at rest it would read this much higher
        rest = volts - (amps or 0.0) * c.internal_resistance_ohm
        soc = soc_from_voltage(c.chemistry, rest / c.cells)
        power = volts * amps if amps is not None else None
        detail: dict[str, str | float] = {
            "rest_voltage_v": round(rest, 3),
            "chemistry": c.chemistry,
        }
        try:
            solar = self._solar_watts(d)
        except SourceError as exc:  # the panel's sensor gone must not cost the battery reading
            solar, detail["solar_error"] = None, str(exc)
        return Reading(
            self.name,
            self.clock(),
            soc=round(soc, 1),
            voltage_v=volts,
            current_a=amps,
            power_w=power,
            charging=(amps > 0.05) if amps is not None else None,
            solar_w=solar,
            detail=detail,
        )

    def _solar_watts(self, d: Path) -> float | None:
        """The panel side's power: power<N>_input (µW), else in<N> (mV) × curr<N> (mA)."""
        n = self.config.solar_channel
        if not n:
            return None
        power = d / f"power{n}_input"
        if power.exists():
            return abs(read_number(power)) / 1e6
        return abs(read_number(d / f"in{n}_input") * read_number(d / f"curr{n}_input")) / 1e6

    def close(self) -> None:
        pass
