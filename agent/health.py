"""What is wrong with the station right now, in words: the alarms `status`, `/api/status`,
`/metrics`, `/readyz` and the station page all show.

Each part that can be unwell (a serial port, the broker, the models, an upload endpoint, a worker)
is a source: a function returning its alarms now. Nothing is cached: the answer is the truth at
the moment it is asked.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Alarm:
    """One thing that keeps the station from doing its job, e.g. ("serial", "/dev/ttyUSB0", ...)."""

    kind: str  # serial, mqtt, inference, upload, worker
    subject: str  # the port, broker, model role or endpoint it is about
    message: str  # what is wrong and what the station does meanwhile, for a person

    def as_dict(self) -> dict[str, str]:
        return asdict(self)

    def line(self) -> str:
        return f"{self.kind} {self.subject}: {self.message}"


AlarmSource = Callable[[], Iterable[Alarm]]


class Health:
    """The station's alarm sources, asked afresh each time."""

    def __init__(self) -> None:
        self._sources: list[tuple[str, AlarmSource]] = []

    def add(self, name: str, source: AlarmSource) -> None:
        self._sources.append((name, source))

    def alarms(self) -> list[Alarm]:
        out: list[Alarm] = []
        for name, source in self._sources:
            try:
                out.extend(source())
            except Exception as exc:  # a source that breaks is itself something to show
                log.debug("health source %s failed", name, exc_info=True)
                out.append(Alarm("health", name, f"cannot tell: {type(exc).__name__}: {exc}"))
        return out

    def ready(self) -> tuple[bool, str]:
        """(ready, what is not ready) for /readyz."""
        alarms = self.alarms()
        return (not alarms, "; ".join(a.line() for a in alarms))

    def collector(self) -> Collector:
        """`fieldstation_health_alarm{kind, subject}` = 1 per alarm, read at scrape time."""
        return _AlarmCollector(self)


class _AlarmCollector(Collector):
    def __init__(self, health: Health) -> None:
        self.health = health

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "fieldstation_health_alarm",
            "1 for each part of the station that is unwell (status shows the words)",
            labels=["kind", "subject"],
        )
        for alarm in self.health.alarms():
            family.add_metric([alarm.kind, alarm.subject], 1)
        yield family
