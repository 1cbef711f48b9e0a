"""`psutil.sensors_battery()`: the fallback when nothing better is configured."""

from __future__ import annotations

from collections.abc import Callable

import psutil

from agent.power.settings import SourceConfig
from agent.power.sources import Reading, SourceError


class PsutilSource:
    name = "psutil"

    def __init__(self, config: SourceConfig, clock: Callable[[], float]) -> None:
        self.config = config
        self.clock = clock

    def read(self) -> Reading:
        battery = psutil.sensors_battery()
        if battery is None:
            raise SourceError("psutil sees no battery on this machine")
        return Reading(
            self.name,
            self.clock(),
            soc=float(battery.percent),
            charging=bool(battery.power_plugged),
        )

    def close(self) -> None:
        pass
