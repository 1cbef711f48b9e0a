"""The power readings and state in /metrics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.power.worker import PowerState, PowerWorker


class PowerMetrics:
    def __init__(self, registry: Any, worker: PowerWorker) -> None:
        self.state = Gauge(
            "fieldstation_power_state",
            "1 for the power state in effect",
            ["state"],
            registry=registry,
        )
        self.measured = Gauge(
            "fieldstation_power_measured_state",
            "1 for the state the battery alone says",
            ["state"],
            registry=registry,
        )
        self.charging = Gauge(
            "fieldstation_power_charging", "1 while the battery charges", registry=registry
        )
        self.held = Gauge(
            "fieldstation_power_hold_seconds",
            "seconds left on a technician's hold",
            registry=registry,
        )
        self.soc = Gauge(
            "fieldstation_battery_charge_percent", "battery state of charge", registry=registry
        )
        self.volts = Gauge("fieldstation_battery_volts", "battery voltage", registry=registry)
        self.amps = Gauge(
            "fieldstation_battery_amperes",
            "battery current, positive while charging",
            registry=registry,
        )
        self.watts = Gauge("fieldstation_battery_watts", "battery power", registry=registry)
        self.solar = Gauge("fieldstation_solar_watts", "panel power", registry=registry)
        self.transitions = Counter(
            "fieldstation_power_transitions_total", "state transitions", ["to"], registry=registry
        )
        registry.register(_SourceCollector(worker))

    def update(self, st: PowerState, now: float) -> None:
        for s in ("normal", "eco", "critical"):
            self.state.labels(s).set(1 if st.state.value == s else 0)
            self.measured.labels(s).set(1 if st.measured.value == s else 0)
        self.charging.set(1 if st.charging else 0)
        self.held.set(max(0.0, st.hold_until - now) if st.hold_until else 0)
        r = st.reading
        for gauge, value in (
            (self.soc, r.soc if r else None),
            (self.volts, r.voltage_v if r else None),
            (self.amps, r.current_a if r else None),
            (self.watts, r.power_w if r else None),
            (self.solar, r.solar_w if r else None),
        ):
            gauge.set(float("nan") if value is None else value)


class _SourceCollector(Collector):
    """Per-source trust, errors and rejected readings, VE.Direct block counts; read at scrape."""

    def __init__(self, worker: PowerWorker) -> None:
        self.worker = worker

    def collect(self) -> Iterator[Any]:
        trusted = GaugeMetricFamily(
            "fieldstation_power_source_trusted",
            "1 when the source's reading is believed",
            labels=["source"],
        )
        errors = CounterMetricFamily(
            "fieldstation_power_source_errors",
            "reads that gave nothing (gone, garbage)",
            labels=["source"],
        )
        rejected = CounterMetricFamily(
            "fieldstation_power_source_rejected",
            "readings not trusted (out of range, jump, stuck, flapping)",
            labels=["source"],
        )
        blocks = CounterMetricFamily(
            "fieldstation_vedirect_blocks", "VE.Direct blocks by outcome", labels=["outcome"]
        )
        now = self.worker.clock()
        for src, h in zip(self.worker.sources, self.worker.health, strict=True):
            trusted.add_metric([h.name], 1 if h.usable(now) else 0)
            errors.add_metric([h.name], h.errors)
            rejected.add_metric([h.name], h.rejected)
            parser = getattr(src, "parser", None)
            if parser is not None:
                c = parser.counts
                blocks.add_metric(["ok"], c.blocks)
                blocks.add_metric(["bad_checksum"], c.bad_checksum)
                blocks.add_metric(["malformed"], c.malformed)
        yield from (trusted, errors, rejected, blocks)
