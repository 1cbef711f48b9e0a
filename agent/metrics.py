"""Prometheus metrics for one station (its own registry, so tests can run several stations)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Metrics:
    """Every counter the backbone keeps; other components register theirs on `registry`."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.captures = Counter(
            "fieldstation_captures",
            "Captures by ingest path and outcome (stored, duplicate, rejected, timeout, nak)",
            ["path", "outcome"],
            registry=r,
        )
        self.capture_bytes = Counter(
            "fieldstation_capture_bytes", "JPEG bytes stored, by ingest path", ["path"], registry=r
        )
        self.naks = Counter(
            "fieldstation_naks",
            "NAKs sent to units, by path and reason",
            ["path", "reason"],
            registry=r,
        )
        self.rejected = Counter(
            "fieldstation_rejected",
            "Bad input from units that was refused (frames, messages, HTTP requests), by reason",
            ["path", "reason"],
            registry=r,
        )
        self.noise_bytes = Counter(
            "fieldstation_serial_noise_bytes",
            "Bytes skipped while resynchronising serial links",
            ["port"],
            registry=r,
        )
        self.id_reuse = Counter(
            "fieldstation_capture_id_reuse",
            "Captures whose unit and capture id were already used with other bytes",
            registry=r,
        )
        self.telemetry = Counter(
            "fieldstation_telemetry",
            "Telemetry and hello messages, by path",
            ["path", "kind"],
            registry=r,
        )
        self.worker_restarts = Counter(
            "fieldstation_worker_restarts",
            "Worker crashes followed by a restart",
            ["worker"],
            registry=r,
        )
        self.worker_up = Gauge(
            "fieldstation_worker_up",
            "1 while a worker runs, 0 while it waits to restart",
            ["worker"],
            registry=r,
        )
        self.link_up = Gauge(
            "fieldstation_link_up",
            "1 while an ingest link (port, broker) is connected",
            ["link"],
            registry=r,
        )
        self.commit_seconds = Gauge(
            "fieldstation_last_commit_seconds", "Duration of the last capture commit", registry=r
        )

    def watch_store(self, store: object) -> None:
        """Export queue depth and bytes by state, read from the buffer at scrape time."""
        self.registry.register(_QueueCollector(store))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _QueueCollector(Collector):
    def __init__(self, store: object) -> None:
        self.store = store

    def describe(self):  # type: ignore[no-untyped-def]
        return []

    def collect(self):  # type: ignore[no-untyped-def]
        summary = self.store.queue_summary()  # type: ignore[attr-defined]
        depth = GaugeMetricFamily(
            "fieldstation_queue_captures", "Captures in the buffer by state", labels=["state"]
        )
        size = GaugeMetricFamily(
            "fieldstation_queue_bytes", "Capture bytes in the buffer by state", labels=["state"]
        )
        for state, v in summary["by_state"].items():
            depth.add_metric([state], v["count"])
            size.add_metric([state], v["bytes"])
        yield depth
        yield size
        alarms = GaugeMetricFamily("fieldstation_alarm", "1 for each active alarm", labels=["kind"])
        for alarm in self.store.alarms():  # type: ignore[attr-defined]
            alarms.add_metric([alarm["kind"]], 1)
        yield alarms
