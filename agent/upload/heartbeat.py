"""The station's heartbeat: what it tells its sync endpoints every few minutes.

The base payload is the station's id, time, queue, disk, units seen and software version.
Other components add their part by registering a named contributor once, at wiring time:

    heartbeat.add("power", lambda: {"power_state": "night", "battery": {"level": 0.62}})

A contributor returns a JSON-able dict of top-level fields merged over the base payload (the
base keeps `power_state`, `battery` and `models` empty until someone fills them). Contributors
run in the uploader's thread at each beat, in the order added; one that raises is logged and
left out of that beat, and the heartbeat still goes.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import time
from collections.abc import Callable
from typing import Any

from agent.store import Store
from agent.upload.client import EndpointError
from agent.upload.delivery import overhead, result_label
from agent.upload.endpoints import EndpointChooser
from agent.upload.metrics import UploadMetrics

log = logging.getLogger(__name__)

Contributor = Callable[[], dict[str, Any]]


class Heartbeat:
    """The heartbeat payload and the contributors that add to it."""

    def __init__(
        self, store: Store, station_id: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self.store = store
        self.station_id = station_id
        self.clock = clock
        self.contributors: dict[str, Contributor] = {}
        self.software = software_version()

    def add(self, name: str, contributor: Contributor) -> None:
        """Register `contributor` under `name` (once per name: a second one is a wiring bug)."""
        if name in self.contributors:
            raise ValueError(f"heartbeat contributor {name!r} is already registered")
        self.contributors[name] = contributor

    def payload(self) -> dict[str, Any]:
        """The heartbeat as it goes now: the base fields, then each contributor's."""
        summary = self.store.queue_summary()
        by_state = {k: v["count"] for k, v in summary["by_state"].items()}
        try:
            disk = shutil.disk_usage(self.store.path.parent)
            disk_info: dict[str, int] | None = {"free_bytes": disk.free, "total_bytes": disk.total}
        except OSError:
            disk_info = None
        payload: dict[str, Any] = {
            "station_id": self.station_id,
            "time": self.clock(),
            "power_state": None,
            "battery": None,
            "queue": {
                "depth": summary["pending"],
                "bytes": summary["pending_bytes"],
                "by_state": by_state,
            },
            "disk": disk_info,
            "models": {},
            "units_seen": [u["unit_id"] for u in self.store.units()],
            "software_version": self.software,
        }
        for name, contributor in self.contributors.items():
            try:
                payload.update(contributor())
            except Exception as exc:  # the heartbeat goes without this part
                log.warning("heartbeat contributor %s failed: %s", name, exc)
        return payload

    def send(
        self, chooser: EndpointChooser, metrics: UploadMetrics, count: Callable[[str, int], None]
    ) -> str | None:
        """Send one beat to the best-ranked endpoint that takes it; return its name, or None.

        Small and unthrottled: it goes on a starved link, outside windows and over budget.
        `count(endpoint, nbytes)` records the request bytes.
        """
        payload = self.payload()
        for name in chooser.ranking:
            if not chooser.available(name):
                continue
            endpoint = chooser.endpoints[name]
            try:
                sent = endpoint.heartbeat(payload)
            except EndpointError as exc:
                metrics.requests.labels(name, "heartbeat", result_label(exc)).inc()
                chooser.failed(name, exc)
                continue
            metrics.requests.labels(name, "heartbeat", "ok").inc()
            count(name, sent + overhead(endpoint.url, "application/json", sent, endpoint.token_len))
            return name
        return None


def software_version() -> str:
    try:
        return importlib.metadata.version("wildcam-fieldstation")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
