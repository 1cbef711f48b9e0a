"""One thread that takes every job waiting when it starts a write and writes them together.

The group commit behind the station's MQTT captures (agent/ingest/commits.py) and the cloud's batch
uploads (cloud/commits.py): jobs that arrive while a write is under way share the next one, so
they share its fsyncs, and no pool of threads hands the GIL and the store's lock around.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)

J = TypeVar("J")


def take_all(jobs: deque[J]) -> list[J]:
    """Every job waiting, in arrival order."""
    taken = list(jobs)
    jobs.clear()
    return taken


class GroupCommitter(Generic[J]):
    """`put` a job; a thread hands `write` every job waiting (or what `take` picks of them)."""

    def __init__(
        self,
        write: Callable[[list[J]], None],
        name: str,
        take: Callable[[deque[J]], list[J]] = take_all,
    ) -> None:
        self.write = write  # answers its own jobs: an exception here only gets logged
        self.name = name
        self.take = take  # called with the lock held; leaves in the deque what waits its turn
        self._jobs: deque[J] = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, job: J) -> None:
        with self._ready:
            if self._closing:
                raise RuntimeError(f"{self.name} is shut down")
            self._jobs.append(job)
            self._ready.notify()

    def waiting(self) -> int:
        """Jobs queued for the next write."""
        with self._ready:
            return len(self._jobs)

    def shutdown(self, timeout: float = 60.0) -> None:
        """Write and answer what is queued, then end the thread."""
        with self._ready:
            self._closing = True
            self._ready.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._jobs and not self._closing:
                    self._ready.wait()
                if not self._jobs:
                    return
                jobs = self.take(self._jobs)
            try:
                self.write(jobs)
            except Exception:  # the thread must outlive a bad group: its jobs were answered or fail
                log.exception("%s: a group of %d could not be written", self.name, len(jobs))
