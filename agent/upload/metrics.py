"""The uploader's Prometheus metrics: items, bytes, requests, breakers, link state, doubt."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from agent.store import Store
from agent.upload import ledger


class UploadMetrics:
    """Every upload metric, registered on the station's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.items = Counter(
            "fieldstation_upload_items",
            "Capture items answered by sync endpoints, by endpoint and status",
            ["endpoint", "status"],
            registry=registry,
        )
        self.bytes = Counter(
            "fieldstation_upload_bytes",
            "Request bytes sent, by endpoint",
            ["endpoint"],
            registry=registry,
        )
        self.requests = Counter(
            "fieldstation_upload_requests",
            "Requests to sync endpoints by endpoint, kind and result",
            ["endpoint", "kind", "result"],
            registry=registry,
        )
        self.breaker = Gauge(
            "fieldstation_upload_breaker_state",
            "Circuit breaker per endpoint: 0 closed, 1 half-open, 2 open",
            ["endpoint"],
            registry=registry,
        )
        self.online = Gauge(
            "fieldstation_upload_online",
            "1 while some sync endpoint is reachable",
            registry=registry,
        )
        self.rotted = Counter(
            "fieldstation_upload_rotted_images",
            "Captures whose stored original no longer matches its sha256, found before upload",
            registry=registry,
        )
        self.failed = Counter(
            "fieldstation_upload_failed_captures",
            "Captures marked failed by the uploader (rejected, conflict, image missing)",
            registry=registry,
        )


class DoubtCollector(Collector):
    """Captures in doubt per endpoint, read from the buffer at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            "fieldstation_upload_in_doubt",
            "Captures sent to an endpoint with no answer yet (settled by lookup)",
            labels=["endpoint"],
        )
        with self.store.read() as conn:
            for endpoint, n in ledger.doubt_counts(conn).items():
                family.add_metric([endpoint], n)
        yield family
