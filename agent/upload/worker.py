"""The uploader worker: drains the buffer to the sync endpoints, most valuable first, exactly once.

One loop, one thread. Each step: heartbeat when due; respect pause, windows and the daily budget;
pick the best available endpoint (agent/upload/endpoints.py); settle what is in doubt there
(lookup); send batches (agent/upload/window.py builds them, agent/upload/delivery.py sends them
with retries); record what the endpoint acknowledged in the same transaction that marks the
captures uploaded (the apply step, here).
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config import Config
from agent.doorbell import Doorbell
from agent.metrics import Metrics
from agent.store import Store
from agent.upload import ledger, manifest
from agent.upload.budget import TokenBucket, UploadWindows, local_day, seconds_to_next_day
from agent.upload.client import EndpointError, ItemResult, SyncEndpoint
from agent.upload.delivery import Batch, Delivery, LinkHeld, Outcome, Stopping, result_label
from agent.upload.endpoints import EndpointChooser
from agent.upload.heartbeat import Heartbeat
from agent.upload.metrics import DoubtCollector, UploadMetrics
from agent.upload.settings import UploadSection
from agent.upload.settle import Settler
from agent.upload.window import BatchWindow, pending_states

log = logging.getLogger(__name__)

# states in which a capture made ready is worth a look at once (not paused, offline, outside the
# windows or over today's budget: those end by time or by resume(), not by a new capture)
LOOKING = frozenset({"starting", "idle", "uploading"})
BACKLOG_LOG_S = 10.0  # during a long drain, a batch's log line says the backlog this often


class Uploader:
    """The station's upload worker (supervised). Constructed once; `run` may be restarted."""

    name = "uploader"

    def __init__(
        self,
        store: Store,
        config: Config,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        heartbeat: Heartbeat | None = None,
    ) -> None:
        self.store = store
        self.settings: UploadSection = config.upload
        self.station_id: str = config.station_id
        self.clock = clock
        self.monotonic = monotonic
        self.heartbeat = heartbeat or Heartbeat(store, self.station_id, clock=clock)
        self.states = pending_states(config)
        s = self.settings
        # names, urls and tokens were checked by the config pass; a token file may vanish since
        self.endpoints: dict[str, SyncEndpoint] = {
            ep.name: SyncEndpoint(ep, ep.bearer_token(f"upload.endpoints[{i}]"))
            for i, ep in enumerate(s.endpoints)
        }
        self.metrics = UploadMetrics(metrics.registry)
        metrics.registry.register(DoubtCollector(store))
        self.chooser = EndpointChooser(
            self.station_id, self.endpoints, s, self.metrics, self._backlog, monotonic
        )
        self.batches = BatchWindow(
            store,
            s,
            self.station_id,
            self.endpoints,
            self.states,
            self._fail_capture,
            monotonic,
            rotted=self.metrics.rotted.inc,
            clock=clock,
        )
        self.bucket = TokenBucket(s.bandwidth_bytes_per_s, monotonic)
        self.delivery = Delivery(
            self.chooser, self.bucket, self._count, self.batches.refused, self._nap, self._hold
        )
        self.settler = Settler(store, self.chooser, s.empty_policy, self._fail_capture, clock)
        self.windows = UploadWindows(s.windows)
        self._stop = threading.Event()
        # rung by resume() and when captures become ready, so they go at once, not at idle_poll_s
        self.doorbell = Doorbell()
        self._ready = 0  # captures made ready since the last look (see captures_ready)
        self._backlog_logged = float("-inf")  # monotonic time a batch's log line last said it
        self._paused: str | None = None
        self._heartbeats_paused = False
        self._next_heartbeat = 0.0
        self.state = "starting"
        self.last_batch_at: float | None = None

    def _backlog(self) -> tuple[int, int]:
        return self.store.backlog(self.states)

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
        self.doorbell.ring()

    def captures_ready(self, count: int = 1) -> None:
        """Captures became ready to upload (stored, or analysed): look at once. While a small
        batch lingers the bell rings only once the batch could be full, so a trickle costs one
        look per linger, not one per capture."""
        if self.state not in LOOKING:  # paused, offline, over budget: its own wait decides
            return
        self._ready += count
        room = self.batches.lingering_room
        if room is None or self._ready >= room:
            self.doorbell.ring()

    def status(self) -> dict[str, Any]:
        """What `fieldstation status` and /api/status show about uploads."""
        now = self.clock()
        day = local_day(now)
        with self.store.read() as conn:
            records = ledger.endpoint_day(conn, day)
        n, b = self.store.backlog(self.states)
        sent_today = sum(r["bytes_today"] for r in records.values())
        budget = self.settings.daily_budget_bytes
        endpoints = self.chooser.status()
        for ep in endpoints:
            ep.update(records.get(ep["name"], ledger.NO_RECORDS))
        return {
            "enabled": self.settings.enabled and bool(self.endpoints),
            "state": self.state,
            "paused": self._paused,
            "online": self.chooser.online,
            "primary": self.chooser.primary,
            "current": self.chooser.current,
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
            "last_error": self.chooser.last_error,
        }

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = self.delivery.stop = self.settler.stop = stop
        self.batches.forget()  # after a crash and restart, rank afresh
        if not self.settings.enabled or not self.endpoints:
            self.state = "disabled"
            log.info("uploads off: %s", "disabled" if not self.settings.enabled else "no endpoints")
            stop.wait()
            return
        log.info(
            "uploading to %s (primary %s by rendezvous of station %s)",
            ", ".join(self.chooser.ranking),
            self.chooser.primary,
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
                self._next_heartbeat = self.monotonic() + s.heartbeat_interval_s
                self.heartbeat.send(self.chooser, self.metrics, self._count)
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
        budget_left = self._budget_left(now)
        if budget_left is not None and budget_left <= 0:
            self.state = "budget_exhausted"
            return min(hb_wait, seconds_to_next_day(now))
        name = self.chooser.choose()
        if name is None:
            self.state = "offline"
            self.chooser.went_offline()
            return min(hb_wait, max(0.05, self.chooser.retry_in()))
        self._settled(self.settler.elsewhere(name))
        self.batches.budget_blocked = False
        self._ready = 0  # what is ready now, this look sees
        if self._work_at(name, budget_left):
            return 0.0
        if self.batches.budget_blocked:  # the next capture in value order does not fit today
            self.state = "budget_exhausted"
            return min(hb_wait, seconds_to_next_day(now))
        if self.state == "uploading":
            self.state = "idle"
        if self.batches.lingering is not None:  # a small batch waits to grow a little
            # the doorbell ends the wait early once enough captures are ready to fill it
            return min(hb_wait, self.batches.lingering)
        return min(hb_wait, s.idle_poll_s)

    def _budget_left(self, now: float) -> int | None:
        """Bytes today's budget still allows (None: no budget)."""
        budget = self.settings.daily_budget_bytes
        if not budget:
            return None
        with self.store.read() as conn:
            return budget - ledger.bytes_on(conn, local_day(now))

    def _hold(self, nbytes: int) -> None:
        """Raise LinkHeld when a try of `nbytes` would pass today's budget or the window closed."""
        now = self.clock()
        if not self.windows.is_open(now):
            raise LinkHeld("outside the upload windows", budget=False)
        left = self._budget_left(now)
        if left is not None and nbytes > left:
            raise LinkHeld(f"daily budget: {nbytes} bytes needed, {max(0, left)} left", budget=True)

    def _sleep(self, seconds: float) -> None:
        self.doorbell.wait(self._stop, seconds)

    def _nap(self, seconds: float) -> None:
        if self._stop.wait(seconds):
            raise Stopping()

    # --- one unit of work at one endpoint ------------------------------------------------------

    def _work_at(self, name: str, budget_left: int | None) -> bool:
        """Settle doubts at `name`, then send batches there while nothing asks for a pause.

        One batch is in flight (a sender thread) while the station records the answer to the one
        before, reads and encodes the next and marks it in doubt, so none of the station's own
        work (two commits, the image reads) sits between one batch's answer and the next send.
        """
        try:
            settled = self._settled(self.settler.at(name))
        except EndpointError as exc:
            self.metrics.requests.labels(name, "lookup", result_label(exc)).inc()
            self.chooser.failed(name, exc)
            return True
        batch = self.batches.prepare(name, budget_left, frozenset())
        if batch is None:
            return settled
        self.state = "uploading"
        self._mark_in_doubt(batch)
        answered: tuple[Batch, list[ItemResult]] | None = None  # answer not yet recorded
        while batch is not None:
            outcome = Outcome()
            sender = threading.Thread(
                target=self.delivery.send, args=(batch, outcome), name="uploader-send", daemon=True
            )
            sender.start()
            upcoming = None
            try:
                if answered is not None:
                    self._apply(*answered)
                    answered = None
                if self._may_continue(name, budget_left):
                    upcoming = self.batches.prepare(name, None, frozenset(batch.ids))
                    if upcoming is not None:
                        self._mark_in_doubt(upcoming)
            finally:
                sender.join()  # never leave a send running behind an error of ours
            if outcome.results is None:
                if upcoming is not None:  # marked, never sent: no doubt about it
                    self._undo_doubt(upcoming)
                self._given_up(batch, outcome)
                if isinstance(outcome.error, LinkHeld):  # the batch waits; no busy loop meanwhile
                    self.batches.budget_blocked = outcome.error.budget
                    return False
                return True
            # before the next send starts, so what it meets (a failure, a 413) counts after this
            self.chooser.succeeded(name)
            self.chooser.last_error = None
            self.batches.grow()
            answered = (batch, outcome.results)
            batch = upcoming
        if answered is not None:
            self._apply(*answered, last=True)
        return True

    def _mark_in_doubt(self, batch: Batch) -> None:
        with self.store.transaction() as conn:  # durable before the batch's first byte leaves
            ledger.mark_in_doubt(conn, batch.endpoint, batch.sent, batch.batch_id, self.clock())

    def _undo_doubt(self, batch: Batch) -> None:
        with self.store.transaction() as conn:
            ledger.undo_doubt(conn, batch.endpoint, batch.ids, batch.batch_id, self.clock())

    def _may_continue(self, name: str, budget_left: int | None) -> bool:
        """Keep sending to `name` without a full step (heartbeat, pause, window, primary back)?"""
        if self._stop.is_set() or self._paused is not None or budget_left is not None:
            return False
        if self.settings.heartbeat_interval_s and self.monotonic() >= self._next_heartbeat:
            return False
        if not self.windows.is_open(self.clock()):
            return False
        return name == self.chooser.primary or not self.chooser.primary_available()

    def _settled(self, n: int) -> bool:
        if n:
            self.batches.forget()  # what was in doubt may be sendable again (or done)
        return n > 0

    def _given_up(self, batch: Batch, outcome: Outcome) -> None:
        self.batches.forget()
        if not isinstance(outcome.error, (EndpointError, Stopping, LinkHeld)):
            raise outcome.error or RuntimeError("sender ended without an outcome")
        if isinstance(outcome.error, LinkHeld):
            log.info(
                "batch %s of %d captures to %s waits: %s",
                batch.batch_id,
                len(batch.ids),
                batch.endpoint,
                outcome.error,
            )
        if not outcome.in_doubt:
            self._undo_doubt(batch)
        elif isinstance(outcome.error, EndpointError):
            log.warning(
                "batch %s of %d captures is in doubt at %s; will ask it before resending",
                batch.batch_id,
                len(batch.ids),
                batch.endpoint,
            )

    # --- the apply step ------------------------------------------------------------------------

    def _apply(self, batch: Batch, results: list[ItemResult], *, last: bool = False) -> None:
        """Record the answer: held items uploaded, refused ones failed, the day's traffic.
        `last`: no batch follows it now, so its log line says the backlog left."""
        name, wire = batch.endpoint, batch.wire
        by_id = {r.capture_id: r for r in results}
        now = self.clock()
        # not fsynced: every item is durably in doubt since before the send, so a power cut that
        # takes this answer leaves doubts the settler resolves by lookup (the day's traffic of
        # this one batch goes uncounted then)
        with self.store.transaction(durable=False) as conn:
            held = []
            for item in batch.items:
                r = by_id.get(item.capture_id)
                if r is None:
                    continue  # no answer for it: stays in doubt, settled by lookup
                self.metrics.items.labels(name, r.status).inc()
                if r.status in ("stored", "duplicate"):
                    held.append(item)
                elif r.status in ("conflict", "rejected"):
                    ledger.clear_doubt(conn, name, item.capture_id, now)
                    self._fail_capture(
                        conn, item.capture_id, f"{name}: {r.status}: {r.reason or 'no reason'}"
                    )
            acked = len(held)
            best = ledger.record_held_many(
                conn, name, [(i.capture_id, i.variant) for i in held], now
            )
            self.store.finish_uploads(
                conn,
                [i.capture_id for i in held if _rank(best[i.capture_id]) >= _rank(i.final_variant)],
            )
            ledger.add_traffic(conn, name, local_day(now), wire, items=acked)
        self.metrics.bytes.labels(name).inc(wire)
        self.last_batch_at = now
        line = f"uploaded {acked} of {len(batch.items)} captures ({wire} bytes) to {name}"
        # counting the backlog reads every waiting capture's row (2.5 ms at 10,000): once per
        # batch it slowed a long drain, so the log says it after a run and every BACKLOG_LOG_S
        mono = self.monotonic()
        if last or mono - self._backlog_logged >= BACKLOG_LOG_S:
            self._backlog_logged = mono
            left, left_bytes = self._backlog()
            line += f"; backlog {left} captures ({left_bytes} bytes)"
        log.info("%s", line)

    def _fail_capture(self, conn: sqlite3.Connection, capture_id: str, reason: str) -> None:
        if self.store.fail_pending(conn, capture_id, reason):
            self.metrics.failed.inc()
            log.error("capture %s not uploaded: %s", capture_id, reason)

    def _count(self, name: str, nbytes: int, *, requests: int = 1) -> None:
        with self.store.transaction() as conn:
            ledger.add_traffic(conn, name, local_day(self.clock()), nbytes, requests=requests)
        if nbytes:
            self.metrics.bytes.labels(name).inc(nbytes)


def _rank(variant: str | None) -> int:
    return manifest.rank(variant)
