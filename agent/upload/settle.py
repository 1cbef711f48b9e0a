"""Settling batches in doubt: ask the endpoint which captures it holds, record the answer.

A batch whose answer never came (a timeout, a dropped connection) may or may not have been
stored. Before anything is resent there, the endpoint is asked (lookup) and its answer is
recorded like an acknowledgement, so no capture is ever uploaded twice or counted once too few.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from collections.abc import Callable

from agent.store import Store
from agent.upload import ledger, manifest
from agent.upload.batch import final_variant
from agent.upload.budget import local_day
from agent.upload.client import EndpointError
from agent.upload.delivery import result_label
from agent.upload.endpoints import EndpointChooser

log = logging.getLogger(__name__)

# (conn, capture_id, reason) inside the caller's transaction
FailCapture = Callable[[sqlite3.Connection, str, str], None]


class Settler:
    """Lookups at endpoints with captures in doubt; `settled` says whether any were answered."""

    def __init__(
        self,
        store: Store,
        chooser: EndpointChooser,
        empty_policy: str,
        fail: FailCapture,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.endpoints = chooser.endpoints
        self.chooser = chooser
        self.metrics = chooser.metrics
        self.empty_policy = empty_policy
        self.fail = fail
        self.clock = clock
        self.stop = threading.Event()  # the worker's, set on each run

    def at(self, name: str) -> int:
        """Ask `name` which of the captures in doubt there it holds; return how many settled.

        Raises EndpointError when the endpoint does not answer.
        """
        settled = held_n = 0
        while not self.stop.is_set():
            with self.store.read() as conn:
                doubts = [r["capture_id"] for r in ledger.in_doubt(conn, name, 1000)]
            if not doubts:
                break
            captures = self.store.captures_by_id(doubts)
            held = self.endpoints[name].lookup(doubts)
            self.metrics.requests.labels(name, "lookup", "ok").inc()
            now = self.clock()
            with self.store.transaction() as conn:
                for cid in doubts:
                    h = held.get(cid)
                    if h is None or cid not in captures:  # not held, or the capture is gone
                        ledger.clear_doubt(conn, name, cid, now)
                    elif h["sha256"] != captures[cid]["sha256"]:
                        ledger.clear_doubt(conn, name, cid, now)
                        self.fail(conn, cid, f"{name}: holds other bytes under this id")
                    else:
                        held_n += 1
                        best = ledger.record_held(
                            conn, name, cid, h["variant"], now, via_lookup=True
                        )
                        final = final_variant(captures[cid], self.empty_policy)
                        if manifest.rank(best) >= manifest.rank(final):
                            self.store.finish_upload(conn, cid)
                ledger.add_traffic(conn, name, local_day(now), 0, requests=1)
            settled += len(doubts)
        if settled:
            self.chooser.succeeded(name)
            log.info(
                "settled %d in-doubt captures at %s: %d held there, %d not",
                settled,
                name,
                held_n,
                settled - held_n,
            )
        return settled

    def elsewhere(self, current: str) -> int:
        """Settle doubts at endpoints other than the current one, when they answer."""
        with self.store.read() as conn:
            doubts = ledger.doubt_counts(conn)
        settled = 0
        for name in doubts:
            if name == current or name not in self.endpoints or not self.chooser.may_settle(name):
                continue
            try:
                settled += self.at(name)
            except EndpointError as exc:
                self.metrics.requests.labels(name, "lookup", result_label(exc)).inc()
                self.chooser.failed(name, exc)
        return settled
