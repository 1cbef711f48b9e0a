"""One thread that stores the captures of many units in shared commits (MQTT ingest), on
agent/groupcommit.py.

paho has one network thread for every unit, and a commit must not stall it. A pool of commit
threads used to take each capture on its own thread and meet in the store's group commit; one
thread that takes every capture waiting when it starts a commit gets the same shared fsync with
10-25% less CPU per capture in the ingest bench, as no threads hand the GIL and the store lock
around.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from agent import protocol as p
from agent.groupcommit import GroupCommitter
from agent.store import Store

if TYPE_CHECKING:
    from agent.ingest.assembler import Assembler

log = logging.getLogger(__name__)

_Job = tuple["Assembler", p.CaptureBegin, bytes]


class CommitQueue:
    """`put` a reassembled capture; a thread checks, stores and answers it with its neighbours."""

    def __init__(self, store: Store, name: str) -> None:
        self.store = store
        self.name = name
        self._group: GroupCommitter[_Job] = GroupCommitter(self._commit, name)

    def put(self, assembler: Assembler, begin: p.CaptureBegin, jpeg: bytes) -> None:
        self._group.put((assembler, begin, jpeg))

    def shutdown(self, timeout: float = 60.0) -> None:
        """Store and answer what is queued, then end the thread."""
        self._group.shutdown(timeout)

    def _commit(self, jobs: list[_Job]) -> None:
        checked = []
        for assembler, begin, jpeg in jobs:
            capture = assembler.checked_capture(begin, jpeg)
            if capture is not None:
                checked.append((assembler, begin, capture))
        if not checked:
            return
        started = time.perf_counter()
        try:
            outcomes = self.store.add_captures([capture for _, _, capture in checked])
        except Exception as exc:  # every capture of the commit shares its fate
            outcomes = [exc] * len(checked)
        for (assembler, begin, capture), outcome in zip(checked, outcomes, strict=True):
            try:  # one unit's lost link must not cost the others their ACK
                assembler.acknowledge(begin, capture, outcome, started)
            except Exception:
                log.exception(
                    "%s: capture %s/%d could not be answered",
                    assembler.link,
                    begin.unit_id,
                    begin.capture_id,
                )
