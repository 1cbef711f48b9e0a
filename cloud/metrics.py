"""Prometheus metrics of one service instance (own registry, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class ServiceMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fieldstation_cloud_requests_total",
            "HTTP requests by route and status code",
            ["route", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fieldstation_cloud_request_seconds",
            "HTTP request latency by route",
            ["route"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
            registry=self.registry,
        )
        self.captures = Counter(
            "fieldstation_cloud_captures_total",
            "Capture items by result status",
            ["status"],
            registry=self.registry,
        )
        self.rejections = Counter(
            "fieldstation_cloud_rejections_total",
            "Rejected items and refused requests by reason",
            ["reason"],
            registry=self.registry,
        )
        self.image_bytes = Counter(
            "fieldstation_cloud_image_bytes_total",
            "Image bytes written to the object store",
            registry=self.registry,
        )
        self.heartbeats = Counter(
            "fieldstation_cloud_heartbeats_total",
            "Heartbeats received",
            registry=self.registry,
        )
