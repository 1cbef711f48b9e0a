"""Which sync endpoint the uploader talks to now: ranking, breakers, and the link's state.

The one place that decides where requests go and what a failure does to that choice. The
uploader asks `choose()` before each unit of work and reports every outcome back
(`failed`/`succeeded`); the online/offline log lines and gauges follow from those reports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from agent.health import Alarm
from agent.upload.client import EndpointError, SyncEndpoint
from agent.upload.metrics import UploadMetrics
from agent.upload.routing import CircuitBreaker, rendezvous_rank
from agent.upload.settings import UploadSection

log = logging.getLogger(__name__)

BREAKER_VALUE = {CircuitBreaker.CLOSED: 0, CircuitBreaker.HALF_OPEN: 1, CircuitBreaker.OPEN: 2}


class EndpointChooser:
    """Rendezvous ranking of the station's endpoints, a breaker each, and online/offline."""

    def __init__(
        self,
        station_id: str,
        endpoints: Mapping[str, SyncEndpoint],
        settings: UploadSection,
        metrics: UploadMetrics,
        backlog: Callable[[], tuple[int, int]],
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.endpoints = endpoints
        self.settings = settings
        self.metrics = metrics
        self.backlog = backlog  # (captures, bytes) waiting: said when the link goes or comes
        self.monotonic = monotonic
        self.ranking = rendezvous_rank(station_id, [(e.name, e.weight) for e in endpoints.values()])
        s = settings
        self.breakers = {
            n: CircuitBreaker(
                s.breaker_failures, s.breaker_cooldown_s, s.breaker_cooldown_max_s, monotonic
            )
            for n in endpoints
        }
        self.online = True
        # the gauge reads the same flag /api/status shows, so the two can never disagree
        metrics.online.set_function(lambda: 1.0 if self.online else 0.0)
        self.offline_since: float | None = None
        self.current: str | None = None
        self.last_error: str | None = None
        self.refused: dict[str, str] = {}  # endpoint -> why it refused our token (401/403)

    @property
    def primary(self) -> str | None:
        return self.ranking[0] if self.ranking else None

    def choose(self) -> str | None:
        """The best-ranked endpoint that may take a request now (probing half-open ones)."""
        for name in self.ranking:
            br = self.breakers[name]
            if not br.available():
                continue
            if br.state == CircuitBreaker.HALF_OPEN:
                ok = self.endpoints[name].ping()
                self.metrics.requests.labels(name, "ping", "ok" if ok else "error").inc()
                if not ok:
                    br.failure("ping failed")
                    self._breaker_metric(name)
                    continue
                br.success()
                self._breaker_metric(name)
                log.info("sync endpoint %s answers again", name)
                self._came_online(name)
            if name != self.current:
                role = "primary" if name == self.ranking[0] else "failover"
                if self.current is not None:
                    log.info("now uploading to %s (%s; was %s)", name, role, self.current)
                self.current = name
            return name
        return None

    def may_settle(self, name: str) -> bool:
        """May a lookup go to `name` now? A half-open endpoint must answer a ping first."""
        br = self.breakers[name]
        if not br.available():
            return False
        if br.state == CircuitBreaker.HALF_OPEN and not self.endpoints[name].ping():
            br.failure("ping failed")
            self._breaker_metric(name)
            return False
        return True

    def available(self, name: str) -> bool:
        return self.breakers[name].available()

    def is_open(self, name: str) -> bool:
        """Breaker open: the endpoint is cooling down, so retrying in place is pointless."""
        return self.breakers[name].state == CircuitBreaker.OPEN

    def primary_available(self) -> bool:
        return self.breakers[self.ranking[0]].available()

    def retry_in(self) -> float:
        """Seconds until some endpoint may be probed again."""
        return min(b.retry_in() for b in self.breakers.values())

    def succeeded(self, name: str) -> None:
        """`name` answered a batch or a lookup: its breaker closes and the link is up."""
        self.breakers[name].success()
        self.refused.pop(name, None)
        self._breaker_metric(name)
        self._came_online(name)

    def failed(self, name: str, exc: EndpointError) -> None:
        br = self.breakers[name]
        hold = None
        if exc.retry_after is not None and exc.retry_after > self.settings.retry_max_s:
            hold = exc.retry_after  # too long to wait in place: stay away that long, fail over
        elif exc.status in (401, 403):
            hold = self.settings.breaker_cooldown_max_s  # wrong token: probing soon is pointless
            self.refused[name] = str(exc)
        # a request that got no answer at all: ask the cheap probe at once rather than wait for
        # more timeouts; a dead endpoint is then given up after one read timeout and the probe
        dead = hold is None and exc.timed_out and not self._probe(name)
        opened = br.failure(str(exc), hold_s=hold, trip=dead)
        self.last_error = str(exc)
        self._breaker_metric(name)
        if opened and self.online:  # while offline the one "link down" line says it all
            log.warning(
                "sync endpoint %s unavailable (%s); breaker open for %.1f s",
                name,
                exc,
                br.retry_in(),
            )

    def _probe(self, name: str) -> bool:
        ok = self.endpoints[name].ping()
        self.metrics.requests.labels(name, "ping", "ok" if ok else "error").inc()
        return ok

    def went_offline(self) -> None:
        """No endpoint may take a request: say so once, with the backlog."""
        if not self.online:
            return
        self.online = False
        self.offline_since = self.monotonic()
        n, b = self.backlog()
        log.warning(
            "link down: no sync endpoint reachable (%s); backlog %d captures, %d bytes; "
            "probing with backoff",
            self.last_error or "no answer",
            n,
            b,
        )

    def _came_online(self, via: str) -> None:
        if self.online:
            return
        self.online = True
        gone = self.monotonic() - (self.offline_since or self.monotonic())
        n, b = self.backlog()
        log.warning(
            "link up via %s after %.0f s offline; backlog %d captures, %d bytes", via, gone, n, b
        )

    def alarms(self) -> list[Alarm]:
        """Each endpoint that refused the station's token: uploads there wait for a new one."""
        return [
            Alarm("upload", name, f"endpoint refused the station's token ({why}); check token_file")
            for name, why in sorted(self.refused.items())
        ]

    def _breaker_metric(self, name: str) -> None:
        self.metrics.breaker.labels(name).set(BREAKER_VALUE[self.breakers[name].state])

    def status(self) -> list[dict[str, Any]]:
        """Per endpoint, best first: rank, breaker and its last error."""
        out = []
        for rank, name in enumerate(self.ranking):
            br = self.breakers[name]
            br.available()  # an expired cool-down shows as half-open
            out.append(
                {
                    "name": name,
                    "url": self.endpoints[name].url,
                    "weight": self.endpoints[name].weight,
                    "rank": rank,
                    "breaker": br.state,
                    "retry_in_s": round(br.retry_in(), 1),
                    "last_error": br.last_error,
                }
            )
        return out
