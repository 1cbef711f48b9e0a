"""The uploader worker: drains the buffer to the sync endpoints, most valuable first, exactly once.

One loop, one thread. Each step: heartbeat when due; respect pause, windows and the daily budget;
pick the best available endpoint (rendezvous ranking, breakers); settle what is in doubt there
(lookup); send one batch (retried with tenacity); record what the endpoint acknowledged in the
same transaction that marks the captures uploaded.
"""

from __future__ import annotations

import importlib.metadata
import logging
import shutil
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agent.config import ComponentConfigError
from agent.store import Store, StoreError
from agent.upload import ledger
from agent.upload.batch import (
    ImageReader,
    Item,
    MissingImage,
    build_item,
    encode,
    final_variant,
)
from agent.upload.budget import (
    ThrottledBody,
    TokenBucket,
    UploadWindows,
    local_day,
    seconds_to_next_day,
)
from agent.upload.client import EndpointError, NotDelivered, SyncEndpoint
from agent.upload.routing import CircuitBreaker, rendezvous_rank
from agent.upload.settings import UploadSection

log = logging.getLogger(__name__)

PENDING = ("received", "analysed")
WINDOW_BATCHES = 8  # candidates ranked per scan of the backlog, in batches
WINDOW_TTL_S = 2.0
_BREAKER_VALUE = {CircuitBreaker.CLOSED: 0, CircuitBreaker.HALF_OPEN: 1, CircuitBreaker.OPEN: 2}


class UploadConfigError(ComponentConfigError):
    """The [upload] section cannot run as written (names the endpoint and the problem)."""


class _Stopping(Exception):
    """The station is stopping while the uploader waits to retry."""


class UploadMetrics:
    def __init__(self, registry: Any) -> None:
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
        self.failed = Counter(
            "fieldstation_upload_failed_captures",
            "Captures marked failed by the uploader (rejected, conflict, image missing)",
            registry=registry,
        )


class _DoubtCollector(Collector):
    """Captures in doubt per endpoint, read from the buffer at scrape time."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self):  # type: ignore[no-untyped-def]
        return []

    def collect(self):  # type: ignore[no-untyped-def]
        family = GaugeMetricFamily(
            "fieldstation_upload_in_doubt",
            "Captures sent to an endpoint with no answer yet (settled by lookup)",
            labels=["endpoint"],
        )
        with self.store.read() as conn:
            for endpoint, n in ledger.doubt_counts(conn).items():
                family.add_metric([endpoint], n)
        yield family


@dataclass
class _Batch:
    endpoint: str
    items: list[Item]
    body: bytes
    content_type: str
    wire: int  # request bytes including the request line and headers
    batch_id: str

    @property
    def ids(self) -> list[str]:
        return [i.capture_id for i in self.items]


@dataclass
class _Outcome:
    results: list | None = None
    in_doubt: bool = False  # some attempt may have reached the endpoint
    error: BaseException | None = None


class Uploader:
    """The station's upload worker (supervised). Constructed once; `run` may be restarted."""

    name = "uploader"

    def __init__(
        self,
        store: Store,
        config: Any,
        metrics: Any,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        heartbeat_extra: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.store = store
        self.settings: UploadSection = config.upload
        self.station_id: str = config.station_id
        self.clock = clock
        self.monotonic = monotonic
        self.heartbeat_extra = heartbeat_extra
        self.states = _pending_states(config, self.settings.unanalysed)
        s = self.settings
        self.endpoints: dict[str, SyncEndpoint] = {}
        for i, ep in enumerate(s.endpoints):
            where = f"upload.endpoints[{i}]"
            if not ep.name or not ep.url:
                raise UploadConfigError(f"{where}: needs both name and url")
            if ep.name in self.endpoints:
                raise UploadConfigError(f"{where}: endpoint name {ep.name!r} is used twice")
            self.endpoints[ep.name] = SyncEndpoint(ep, read_token(ep.token, ep.token_file, where))
        self.ranking = rendezvous_rank(
            self.station_id, [(e.name, e.weight) for e in self.endpoints.values()]
        )
        self.breakers = {
            n: CircuitBreaker(
                s.breaker_failures, s.breaker_cooldown_s, s.breaker_cooldown_max_s, monotonic
            )
            for n in self.endpoints
        }
        self.bucket = TokenBucket(s.bandwidth_bytes_per_s, monotonic)
        self.windows = UploadWindows(s.windows)
        self.metrics = UploadMetrics(metrics.registry)
        metrics.registry.register(_DoubtCollector(store))
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._paused: str | None = None
        self._heartbeats_paused = False
        self._next_heartbeat = 0.0
        self._max_items = s.batch_max_items  # halved after a 400/413, grows back on success
        self._budget_blocked = False
        self._window: tuple[str, float, list[sqlite3.Row]] | None = None
        self.state = "starting"
        self.online = True
        self._offline_since: float | None = None
        self.current: str | None = None
        self.last_batch_at: float | None = None
        self.last_error: str | None = None
        self._software = _software_version()

    # --- hooks for the power manager and status ------------------------------------------------

    def pause(self, reason: str, *, heartbeats: bool = True) -> None:
        """Stop sending captures (the batch in flight finishes); heartbeats go on unless told."""
        if self._paused != reason:
            log.info("uploads paused: %s", reason)
        self._paused = reason
        self._heartbeats_paused = not heartbeats

    def resume(self) -> None:
        if self._paused is not None:
            log.info("uploads resumed (were paused: %s)", self._paused)
        self._paused = None
        self._heartbeats_paused = False
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """What `fieldstation status` and /api/status show about uploads."""
        now = self.clock()
        day = local_day(now)
        marks = ",".join("?" * len(self.states))
        with self.store.read() as conn:
            traffic = ledger.traffic_on(conn, day)
            doubts = ledger.doubt_counts(conn)
            held = ledger.held_counts(conn)
            n, b = conn.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM captures WHERE state IN ({marks})",
                self.states,
            ).fetchone()
        sent_today = sum(t["bytes"] for t in traffic.values())
        budget = self.settings.daily_budget_bytes
        endpoints = []
        for rank, name in enumerate(self.ranking):
            br = self.breakers[name]
            br.available()  # an expired cool-down shows as half-open
            t = traffic.get(name, {"bytes": 0, "requests": 0, "items": 0})
            endpoints.append(
                {
                    "name": name,
                    "url": self.endpoints[name].url,
                    "weight": self.endpoints[name].weight,
                    "rank": rank,
                    "breaker": br.state,
                    "retry_in_s": round(br.retry_in(), 1),
                    "last_error": br.last_error,
                    "in_doubt": doubts.get(name, 0),
                    "held": held.get(name, 0),
                    "bytes_today": t["bytes"],
                    "requests_today": t["requests"],
                    "items_today": t["items"],
                }
            )
        return {
            "enabled": self.settings.enabled and bool(self.endpoints),
            "state": self.state,
            "paused": self._paused,
            "online": self.online,
            "primary": self.ranking[0] if self.ranking else None,
            "current": self.current,
            "endpoints": endpoints,
            "backlog": {"captures": n, "bytes": b, "states": list(self.states)},
            "day": day,
            "bytes_today": sent_today,
            "daily_budget_bytes": budget or None,
            "budget_left_bytes": max(0, budget - sent_today) if budget else None,
            "bandwidth_bytes_per_s": self.settings.bandwidth_bytes_per_s or None,
            "windows": list(self.settings.windows),
            "window_open": self.windows.is_open(now),
            "last_batch_at": self.last_batch_at,
            "last_error": self.last_error,
        }

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        self._window = None  # after a crash and restart, rank afresh
        if not self.settings.enabled or not self.endpoints:
            self.state = "disabled"
            log.info("uploads off: %s", "disabled" if not self.settings.enabled else "no endpoints")
            stop.wait()
            return
        log.info(
            "uploading to %s (primary %s by rendezvous of station %s)",
            ", ".join(self.ranking),
            self.ranking[0],
            self.station_id,
        )
        while not stop.is_set():
            delay = self.step()
            if delay > 0:
                self._sleep(delay)

    def step(self) -> float:
        """Do one unit of work; return how long to wait before the next."""
        s = self.settings
        now = self.clock()
        if s.heartbeat_interval_s and not self._heartbeats_paused:
            if self.monotonic() >= self._next_heartbeat:
                self._heartbeat()
            hb_wait = max(0.05, self._next_heartbeat - self.monotonic())
        else:
            hb_wait = 3600.0
        if self._paused is not None:
            self.state = "paused"
            return min(hb_wait, 60.0)
        wait = self.windows.seconds_until_open(now)
        if wait > 0:
            self.state = "outside_window"
            return min(hb_wait, wait)
        budget_left = None
        if s.daily_budget_bytes:
            with self.store.read() as conn:
                sent = sum(t["bytes"] for t in ledger.traffic_on(conn, local_day(now)).values())
            budget_left = s.daily_budget_bytes - sent
            if budget_left <= 0:
                self.state = "budget_exhausted"
                return min(hb_wait, seconds_to_next_day(now))
        name = self._choose()
        if name is None:
            self._went_offline()
            retry = min(b.retry_in() for b in self.breakers.values())
            return min(hb_wait, max(0.05, retry))
        self._settle_elsewhere(name)
        self._budget_blocked = False
        worked = self._work_at(name, budget_left)
        if worked:
            return 0.0
        if self._budget_blocked:  # the next capture in value order does not fit today's budget
            self.state = "budget_exhausted"
            return min(hb_wait, seconds_to_next_day(now))
        if self.state == "uploading":
            self.state = "idle"
        return min(hb_wait, s.idle_poll_s)

    def _sleep(self, seconds: float) -> None:
        # wake each second at most to notice resume(); idle cost stays negligible
        deadline = self.monotonic() + seconds
        while not self._stop.is_set() and not self._wake.is_set():
            left = deadline - self.monotonic()
            if left <= 0:
                break
            self._stop.wait(min(left, 1.0))
        self._wake.clear()

    def _nap(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise _Stopping()

    # --- endpoints, breakers, connectivity -----------------------------------------------------

    def _choose(self) -> str | None:
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

    def _breaker_metric(self, name: str) -> None:
        self.metrics.breaker.labels(name).set(_BREAKER_VALUE[self.breakers[name].state])

    def _failed(self, name: str, exc: EndpointError) -> None:
        br = self.breakers[name]
        hold = None
        if exc.retry_after is not None and exc.retry_after > self.settings.retry_max_s:
            hold = exc.retry_after  # too long to wait in place: stay away that long, fail over
        elif exc.status in (401, 403):
            hold = self.settings.breaker_cooldown_max_s  # wrong token: probing soon is pointless
        opened = br.failure(str(exc), hold_s=hold)
        self.last_error = str(exc)
        self._breaker_metric(name)
        if opened and self.online:  # while offline the one "link down" line says it all
            log.warning(
                "sync endpoint %s unavailable (%s); breaker open for %.1f s",
                name,
                exc,
                br.retry_in(),
            )

    def _went_offline(self) -> None:
        self.state = "offline"
        if not self.online:
            return
        self.online = False
        self._offline_since = self.monotonic()
        self.metrics.online.set(0)
        n, b = self._backlog()
        log.warning(
            "link down: no sync endpoint reachable (%s); backlog %d captures, %d bytes; "
            "probing with backoff",
            self.last_error or "no answer",
            n,
            b,
        )

    def _came_online(self, via: str) -> None:
        self.metrics.online.set(1)
        if self.online:
            return
        self.online = True
        gone = self.monotonic() - (self._offline_since or self.monotonic())
        n, b = self._backlog()
        log.warning(
            "link up via %s after %.0f s offline; backlog %d captures, %d bytes", via, gone, n, b
        )

    def _backlog(self) -> tuple[int, int]:
        marks = ",".join("?" * len(self.states))
        with self.store.read() as conn:
            row = conn.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM captures WHERE state IN ({marks})",
                self.states,
            ).fetchone()
        return row[0], row[1]

    # --- one unit of work at one endpoint ------------------------------------------------------

    def _work_at(self, name: str, budget_left: int | None) -> bool:
        """Settle doubts at `name`, then send batches there while nothing asks for a pause.

        One batch is in flight (a sender thread) while the next one is read and encoded, so the
        station's own work overlaps the endpoint's; the answer to one batch and the in-doubt marks
        of the next are committed together.
        """
        try:
            settled = self._reconcile(name)
        except EndpointError as exc:
            self.metrics.requests.labels(name, "lookup", _result(exc)).inc()
            self._failed(name, exc)
            return True
        batch = self._prepare(name, budget_left, frozenset())
        if batch is None:
            return settled
        self.state = "uploading"
        with self.store.transaction() as conn:  # durable before the first byte leaves
            self._mark(conn, batch)
        while batch is not None:
            outcome = _Outcome()
            sender = threading.Thread(
                target=self._deliver, args=(batch, outcome), name="uploader-send", daemon=True
            )
            sender.start()
            upcoming = None
            if self._may_continue(name, budget_left):
                upcoming = self._prepare(name, None, frozenset(batch.ids))
            sender.join()
            if outcome.results is None:
                self._given_up(batch, outcome)
                return True
            self._apply(batch, outcome.results, upcoming)
            batch = upcoming
        return True

    def _may_continue(self, name: str, budget_left: int | None) -> bool:
        """Keep sending to `name` without a full step (heartbeat, pause, window, primary back)?"""
        if self._stop.is_set() or self._paused is not None or budget_left is not None:
            return False
        if self.settings.heartbeat_interval_s and self.monotonic() >= self._next_heartbeat:
            return False
        if not self.windows.is_open(self.clock()):
            return False
        primary = self.ranking[0]
        return name == primary or not self.breakers[primary].available()

    def _reconcile(self, name: str) -> bool:
        """Ask `name` which of the captures in doubt there it holds; record the answer."""
        settled = held_n = 0
        while not self._stop.is_set():
            with self.store.read() as conn:
                rows = ledger.in_doubt(conn, name, 1000)
            if not rows:
                break
            held = self.endpoints[name].lookup([r["capture_id"] for r in rows])
            self.metrics.requests.labels(name, "lookup", "ok").inc()
            now = self.clock()
            with self.store.transaction() as conn:
                for r in rows:
                    cid = r["capture_id"]
                    h = held.get(cid)
                    if h is None:
                        ledger.clear_doubt(conn, name, cid, now)
                    elif h["sha256"] != r["sha256"]:
                        ledger.clear_doubt(conn, name, cid, now)
                        self._fail_capture(conn, cid, f"{name}: holds other bytes under this id")
                    else:
                        held_n += 1
                        best = ledger.record_held(
                            conn, name, cid, h["variant"], now, via_lookup=True
                        )
                        final = final_variant(r, self.settings.empty_policy)
                        if _rank(best) >= _rank(final):
                            self._mark_uploaded(conn, cid)
                ledger.add_traffic(conn, name, local_day(now), 0, requests=1)
            settled += len(rows)
        if settled:
            self._window = None
            self.breakers[name].success()
            self._breaker_metric(name)
            self._came_online(name)
            log.info(
                "settled %d in-doubt captures at %s: %d held there, %d not",
                settled,
                name,
                held_n,
                settled - held_n,
            )
        return settled > 0

    def _settle_elsewhere(self, current: str) -> None:
        """Settle batches in doubt at endpoints other than the current one, when they answer."""
        with self.store.read() as conn:
            doubts = ledger.doubt_counts(conn)
        for name in doubts:
            if name == current or name not in self.endpoints:
                continue
            br = self.breakers[name]
            if not br.available():
                continue
            if br.state == CircuitBreaker.HALF_OPEN and not self.endpoints[name].ping():
                br.failure("ping failed")
                self._breaker_metric(name)
                continue
            try:
                self._reconcile(name)
            except EndpointError as exc:
                self.metrics.requests.labels(name, "lookup", _result(exc)).inc()
                self._failed(name, exc)

    def _next_batch(
        self, name: str, budget_left: int | None, exclude: frozenset[str] = frozenset()
    ) -> list[Item]:
        s = self.settings
        cap = s.batch_max_bytes
        if s.bandwidth_bytes_per_s:
            # on a slow link keep each request short so heartbeats and pauses are not held up
            cap = min(cap, max(1024, int(s.bandwidth_bytes_per_s * 30)))
        if budget_left is not None:
            cap = min(cap, budget_left)
        rows = self._candidates(name, exclude)
        with self.store.read() as conn:
            detections = ledger.detections_for(
                conn, [r["id"] for r in rows if r["state"] != "received"]
            )
        items: list[Item] = []
        total = 0
        images = ImageReader(self.store, [r["id"] for r in rows])
        failed: set[str] = set()
        for row in rows:
            try:
                item = build_item(
                    row,
                    detections.get(row["id"], []),
                    images.get,
                    empty_policy=s.empty_policy,
                    thumbnails_first=s.thumbnails_first,
                    thumbnail_px=s.thumbnail_px,
                )
            except MissingImage as exc:
                with self.store.transaction() as conn:
                    self._fail_capture(conn, row["id"], str(exc))
                failed.add(row["id"])
                continue
            size = item.nbytes + 1024  # manifest and part headers, roughly
            if total + size > cap and (items or budget_left is not None):
                # in value order: the next item waits for the next batch (or the next day)
                self._budget_blocked = not items
                break
            items.append(item)
            total += size
        taken = {i.capture_id for i in items} | failed
        if self._window is not None:
            self._window = (*self._window[:2], [r for r in self._window[2] if r["id"] not in taken])
        return items

    def _candidates(self, name: str, exclude: frozenset[str]) -> list[sqlite3.Row]:
        """The next candidates in value order, from a short-lived window of several batches.

        Ranking every pending capture costs a scan of the backlog; one scan serves several batches.
        The window lives WINDOW_TTL_S at most, so a new high-value capture waits that long at worst.
        """
        s = self.settings
        now = self.monotonic()
        w = self._window
        if w is None or w[0] != name or now - w[1] > WINDOW_TTL_S or len(w[2]) < self._max_items:
            with self.store.read() as conn:
                rows = ledger.candidates(
                    conn,
                    name,
                    list(self.endpoints),
                    self.states,
                    thumbnails_first=s.thumbnails_first,
                    empty_full=s.empty_policy == "full",
                    limit=self._max_items * WINDOW_BATCHES + len(exclude),
                )
            # the batch in flight is still pending in the buffer: never keep it in the window
            w = self._window = (name, now, [r for r in rows if r["id"] not in exclude])
        return [r for r in w[2] if r["id"] not in exclude][: self._max_items]

    def _prepare(
        self, name: str, budget_left: int | None, exclude: frozenset[str]
    ) -> _Batch | None:
        items = self._next_batch(name, budget_left, exclude)
        if not items:
            return None
        body, content_type = encode(self.station_id, items)
        wire = len(body) + _overhead(self.endpoints[name].url, content_type, len(body))
        return _Batch(name, items, body, content_type, wire, uuid.uuid4().hex[:16])

    def _mark(self, conn: sqlite3.Connection, batch: _Batch) -> None:
        sent = [(i.capture_id, i.variant) for i in batch.items]
        ledger.mark_in_doubt(conn, batch.endpoint, sent, batch.batch_id, self.clock())

    def _deliver(self, batch: _Batch, outcome: _Outcome) -> None:
        """Send one batch with retries (runs in the sender thread); the outcome says how it went."""
        name = batch.endpoint
        ep = self.endpoints[name]
        s = self.settings
        # exponential from retry_initial_s, capped at retry_max_s, plus up to one initial of jitter
        backoff = wait_exponential(multiplier=s.retry_initial_s, max=s.retry_max_s) + wait_random(
            0, s.retry_initial_s
        )

        def wait(rs: Any) -> float:
            exc = rs.outcome.exception()
            if exc is not None and exc.retry_after is not None:
                return exc.retry_after  # 429/503: the server said when
            return backoff(rs)

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, EndpointError) or not exc.retryable or self._stop.is_set():
                return False
            if self.breakers[name].state == CircuitBreaker.OPEN:
                return False  # give the endpoint its cool-down; the next step fails over
            return exc.retry_after is None or exc.retry_after <= s.retry_max_s

        retrying = Retrying(
            stop=stop_after_attempt(s.attempts),
            wait=wait,
            retry=retry_if_exception(retryable),
            sleep=self._nap,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    data: Any = batch.body
                    if self.bucket.rate:
                        data = ThrottledBody(batch.body, self.bucket, self._nap)
                    try:
                        results, _ = ep.send_batch(data, batch.content_type, batch.ids)
                    except EndpointError as exc:
                        outcome.in_doubt = outcome.in_doubt or exc.in_doubt
                        self.metrics.requests.labels(name, "batch", _result(exc)).inc()
                        self._count(name, batch.wire if (exc.in_doubt or exc.status) else 0)
                        self._failed(name, exc)
                        if exc.status in (400, 413):
                            self._shrink(batch.items, exc)
                        raise
        except BaseException as exc:  # handed to the loop's thread
            outcome.error = exc
            return
        self.metrics.requests.labels(name, "batch", "ok").inc()
        outcome.results = results

    def _given_up(self, batch: _Batch, outcome: _Outcome) -> None:
        self._window = None
        if not isinstance(outcome.error, (EndpointError, _Stopping)):
            raise outcome.error or RuntimeError("sender ended without an outcome")
        if not outcome.in_doubt:
            self._undo_doubt(batch.endpoint, batch.ids, batch.batch_id)
        elif isinstance(outcome.error, EndpointError):
            log.warning(
                "batch %s of %d captures is in doubt at %s; will ask it before resending",
                batch.batch_id,
                len(batch.ids),
                batch.endpoint,
            )

    def _shrink(self, items: list[Item], exc: NotDelivered | EndpointError) -> None:
        if len(items) > 1:
            self._max_items = max(1, len(items) // 2)
            log.warning("batch refused (%s); sending at most %d per batch", exc, self._max_items)
        elif exc.status == 400:
            with self.store.transaction() as conn:
                self._fail_capture(conn, items[0].capture_id, str(exc))

    def _undo_doubt(self, name: str, ids: list[str], batch_id: str) -> None:
        now = self.clock()
        with self.store.transaction() as conn:
            for cid in ids:
                row = conn.execute(
                    "SELECT doubt_batch FROM upload_deliveries WHERE capture_id = ? AND endpoint = ?",
                    (cid, name),
                ).fetchone()
                if row is not None and row["doubt_batch"] == batch_id:
                    ledger.clear_doubt(conn, name, cid, now)

    def _apply(self, batch: _Batch, results: list, upcoming: _Batch | None) -> None:
        """Record the answer (held items uploaded, refused ones failed) and mark the next batch
        in doubt, in one commit."""
        name, wire = batch.endpoint, batch.wire
        by_id = {r.capture_id: r for r in results}
        now = self.clock()
        acked = 0
        with self.store.transaction() as conn:
            for item in batch.items:
                r = by_id.get(item.capture_id)
                if r is None:
                    continue  # no answer for it: stays in doubt, settled by lookup
                self.metrics.items.labels(name, r.status).inc()
                if r.status in ("stored", "duplicate"):
                    acked += 1
                    best = ledger.record_held(conn, name, item.capture_id, item.variant, now)
                    if _rank(best) >= _rank(item.final_variant):
                        self._mark_uploaded(conn, item.capture_id)
                elif r.status in ("conflict", "rejected"):
                    ledger.clear_doubt(conn, name, item.capture_id, now)
                    self._fail_capture(
                        conn, item.capture_id, f"{name}: {r.status}: {r.reason or 'no reason'}"
                    )
            ledger.add_traffic(conn, name, local_day(now), wire, items=acked)
            if upcoming is not None:
                self._mark(conn, upcoming)
        self.metrics.bytes.labels(name).inc(wire)
        self.breakers[name].success()
        self._breaker_metric(name)
        self._came_online(name)
        self._max_items = min(self.settings.batch_max_items, self._max_items * 2)
        self.last_batch_at = now
        self.last_error = None

    def _mark_uploaded(self, conn: sqlite3.Connection, capture_id: str) -> None:
        try:
            self.store.set_state(conn, capture_id, "uploaded", expect=PENDING)
        except StoreError:
            return  # no longer pending (failed or evicted meanwhile): the cloud's copy is recorded
        # privacy "blur": the unblurred original never leaves the station and is gone once the
        # blurred copy is safe in a cloud (same commit as the acknowledgement)
        conn.execute(
            """DELETE FROM images WHERE capture_id = ? AND variant = 'original'
               AND EXISTS (SELECT 1 FROM captures WHERE id = ? AND upload_variant = 'blurred')""",
            (capture_id, capture_id),
        )

    def _fail_capture(self, conn: sqlite3.Connection, capture_id: str, reason: str) -> None:
        row = conn.execute("SELECT state FROM captures WHERE id = ?", (capture_id,)).fetchone()
        if row is None or row["state"] not in PENDING:
            return
        try:
            self.store.set_state(conn, capture_id, "failed", expect=PENDING, error=reason)
        except StoreError:
            return
        self.metrics.failed.inc()
        log.error("capture %s not uploaded: %s", capture_id, reason)

    def _count(self, name: str, nbytes: int, *, requests: int = 1) -> None:
        with self.store.transaction() as conn:
            ledger.add_traffic(conn, name, local_day(self.clock()), nbytes, requests=requests)
        if nbytes:
            self.metrics.bytes.labels(name).inc(nbytes)

    # --- heartbeats ----------------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Small and unthrottled: goes on a starved link, outside windows and over budget."""
        self._next_heartbeat = self.monotonic() + self.settings.heartbeat_interval_s
        payload = self.heartbeat_payload()
        for name in self.ranking:
            if not self.breakers[name].available():
                continue
            try:
                sent = self.endpoints[name].heartbeat(payload)
            except EndpointError as exc:
                self.metrics.requests.labels(name, "heartbeat", _result(exc)).inc()
                self._failed(name, exc)
                continue
            self.metrics.requests.labels(name, "heartbeat", "ok").inc()
            self._count(name, sent + _overhead(self.endpoints[name].url, "application/json", sent))
            return

    def heartbeat_payload(self) -> dict[str, Any]:
        summary = self.store.queue_summary()
        by_state = {k: v["count"] for k, v in summary["by_state"].items()}
        try:
            disk = shutil.disk_usage(Path(self.store.path).parent)
            disk_info = {"free_bytes": disk.free, "total_bytes": disk.total}
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
            "software_version": self._software,
        }
        if self.heartbeat_extra is not None:
            try:
                payload.update(self.heartbeat_extra())
            except Exception as exc:  # the heartbeat goes without the extras
                log.warning("heartbeat extras failed: %s", exc)
        return payload


def _rank(variant: str | None) -> int:
    return ledger.VARIANT_RANK.get(variant or "", -1)


def _result(exc: EndpointError) -> str:
    if exc.in_doubt:
        return "in_doubt"
    if exc.status in (429, 503):
        return "throttled"
    return "not_delivered"


def _overhead(url: str, content_type: str, body_len: int) -> int:
    """Request line and headers as requests writes them (counted in the per-day bytes)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path}/v1/captures/batch HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: wildcam-fieldstation-uploader/1\r\nAccept-Encoding: gzip, deflate\r\n"
        "Accept: */*\r\nConnection: keep-alive\r\nAuthorization: Bearer "
        + "x" * 43
        + f"\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\r\n"
    )
    return len(head)


def _pending_states(config: Any, unanalysed: str) -> tuple[str, ...]:
    """'received' captures go too when inference is off (or `unanalysed = "always"`)."""
    if unanalysed == "always":
        return PENDING
    if unanalysed == "never":
        return ("analysed",)
    inference = getattr(config, "inference", None)
    if inference is None or not getattr(inference, "enabled", True):
        return PENDING
    return ("analysed",)


def read_token(token: str, token_file: str, where: str) -> str:
    if token_file:
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise UploadConfigError(
                f"{where}.token_file: cannot read {token_file}: {exc}"
            ) from None
    if not token:
        raise UploadConfigError(f"{where}: needs token or token_file")
    return token


def _software_version() -> str:
    try:
        return importlib.metadata.version("wildcam-fieldstation")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"
