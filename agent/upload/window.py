"""The batch window: the next captures in value order, read a few batches at a time, encoded.

Ranking every pending capture costs a scan of the backlog; one scan serves several batches.
The window lives WINDOW_TTL_S at most, so a new high-value capture waits that long at worst.
"""

from __future__ import annotations

import logging
import sqlite3
import time
import uuid
from collections.abc import Callable, Mapping, Sequence

from agent.config import Config
from agent.store import PENDING_STATES, Store
from agent.upload import ledger
from agent.upload.batch import (
    ImageReader,
    Item,
    MissingImage,
    RottedImage,
    build_item,
    encode,
)
from agent.upload.client import EndpointError, SyncEndpoint
from agent.upload.delivery import Batch, overhead
from agent.upload.settings import UploadSection

log = logging.getLogger(__name__)

WINDOW_BATCHES = 8  # candidates ranked per scan of the backlog, in batches
PART_OVERHEAD = 1024  # an item's manifest entry and part headers, roughly, in bytes
WINDOW_TTL_S = 2.0

# fail(conn, capture_id, reason): mark a pending capture failed inside the caller's transaction
FailCapture = Callable[[sqlite3.Connection, str, str], None]


class BatchWindow:
    """Builds each endpoint's next batch; sizes batches down after a refusal, back up after."""

    def __init__(
        self,
        store: Store,
        settings: UploadSection,
        station_id: str,
        endpoints: Mapping[str, SyncEndpoint],
        states: Sequence[str],
        fail: FailCapture,
        monotonic: Callable[[], float] = time.monotonic,
        rotted: Callable[[], None] = lambda: None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.settings = settings
        self.station_id = station_id
        self.endpoints = endpoints
        self.states = tuple(states)
        self.fail = fail
        self.rotted = rotted  # counts captures whose original no longer matches its sha256
        self.monotonic = monotonic
        self.clock = clock  # the wall clock captures' state_changed_at is on
        self.max_items = settings.batch_max_items  # halved after a 400/413, grows back on success
        self.budget_blocked = False  # the last batch stopped at a capture the budget cannot fit
        self._window: tuple[str, float, list[sqlite3.Row]] | None = None
        self._last_batch: float | None = None  # monotonic time the last batch was prepared
        self.lingering: float | None = None  # seconds until a lingering batch goes anyway
        self.lingering_room: int | None = None  # captures that would fill the lingering batch

    def forget(self) -> None:
        """Rank afresh next time (after a restart, a failed batch or settled doubts)."""
        self._window = None

    def prepare(self, name: str, budget_left: int | None, exclude: frozenset[str]) -> Batch | None:
        """The next batch for `name`, encoded; None when nothing (that fits) is waiting."""
        self.lingering = self.lingering_room = None
        items = self._next_items(name, budget_left, exclude)
        if not items:
            return None
        self._last_batch = self.monotonic()
        body, content_type = encode(self.station_id, items)
        ep = self.endpoints[name]
        wire = len(body) + overhead(ep.url, content_type, len(body), ep.token_len)
        return Batch(name, items, body, content_type, wire, uuid.uuid4().hex[:16])

    def refused(self, items: list[Item], exc: EndpointError) -> None:
        """A 400/413: halve the batch size; a single capture refused as bad is failed."""
        if len(items) > 1:
            self.max_items = max(1, len(items) // 2)
            log.warning("batch refused (%s); sending at most %d per batch", exc, self.max_items)
        elif exc.status == 400:
            with self.store.transaction() as conn:
                self.fail(conn, items[0].capture_id, str(exc))

    def grow(self) -> None:
        self.max_items = min(self.settings.batch_max_items, self.max_items * 2)

    def _next_items(
        self, name: str, budget_left: int | None, exclude: frozenset[str]
    ) -> list[Item]:
        s = self.settings
        cap = int(s.batch_max_bytes)
        if s.bandwidth_bytes_per_s:
            # on a slow link keep each request short so heartbeats and pauses are not held up
            cap = min(cap, max(1024, int(s.bandwidth_bytes_per_s * 30)))
        if budget_left is not None:
            cap = min(cap, budget_left)
        rows = self._candidates(name, exclude)
        if self._lingers(rows, cap):
            return []
        detections = ledger.detections_for(
            self.store, [r["id"] for r in rows if r["state"] != "received"]
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
                if isinstance(exc, RottedImage):
                    self.rotted()
                with self.store.transaction() as conn:
                    self.fail(conn, row["id"], str(exc))
                failed.add(row["id"])
                continue
            size = item.nbytes + PART_OVERHEAD
            if total + size > cap and (items or budget_left is not None):
                # in value order: the next item waits for the next batch (or the next day)
                self.budget_blocked = not items
                break
            items.append(item)
            total += size
        taken = {i.capture_id for i in items} | failed
        if self._window is not None:
            self._window = (*self._window[:2], [r for r in self._window[2] if r["id"] not in taken])
        return items

    def _lingers(self, rows: list[sqlite3.Row], cap: int) -> bool:
        """Nagle's rule for batches: a batch that could still grow (fewer items than a batch
        holds, fewer bytes than the cap) waits while the last batch left less than linger_s ago
        and its first capture became ready (stored, or analysed) less than that ago. The first
        capture after a quiet spell and a backlog (old captures, full batches) go at once; a
        trickle goes once per linger_s."""
        linger = self.settings.linger_s
        if not linger or not rows or self._last_batch is None or len(rows) >= self.max_items:
            return False
        if sum(int(r["size"]) + PART_OVERHEAD for r in rows) >= cap:
            return False
        since_last = self.monotonic() - self._last_batch
        age = self.clock() - min(float(r["state_changed_at"]) for r in rows)
        if since_last >= linger or age >= linger:
            return False
        self.lingering = min(linger - since_last, linger - age)
        self.lingering_room = self.max_items - len(rows)
        return True

    def _candidates(self, name: str, exclude: frozenset[str]) -> list[sqlite3.Row]:
        """The next candidates in value order, from a short-lived window of several batches."""
        s = self.settings
        now = self.monotonic()
        w = self._window
        if w is None or w[0] != name or now - w[1] > WINDOW_TTL_S or len(w[2]) < self.max_items:
            with self.store.read() as conn:
                rows = ledger.candidates(
                    conn,
                    name,
                    list(self.endpoints),
                    self.states,
                    thumbnails_first=s.thumbnails_first,
                    empty_full=s.empty_policy == "full",
                    limit=self.max_items * WINDOW_BATCHES + len(exclude),
                )
            # the batch in flight is still pending in the buffer: never keep it in the window
            w = self._window = (name, now, [r for r in rows if r["id"] not in exclude])
        return [r for r in w[2] if r["id"] not in exclude][: self.max_items]


def pending_states(config: Config) -> tuple[str, ...]:
    """'received' captures go too when inference is off (or `unanalysed = "always"`)."""
    unanalysed = config.upload.unanalysed
    if unanalysed == "always" or (unanalysed == "auto" and not config.inference.enabled):
        return PENDING_STATES
    return ("analysed",)
