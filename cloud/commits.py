"""One thread that stores every batch upload waiting in shared writes (group commit).

Each request used to store its own batch on a worker thread: per batch one pack sync, one index
commit and one captures commit, and the GIL handed between the event loop and four threads at
every release. One thread that takes every batch waiting when it starts a write makes those syncs
once for all of them, and the event loop wakes once per write to answer them. The thread and its
queue are agent/groupcommit.py's, as for the station's MQTT captures (agent/ingest/commits.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from agent.groupcommit import GroupCommitter

if TYPE_CHECKING:
    from cloud.ingest import CheckedBatch

log = logging.getLogger("fieldstation.cloud")

Results = list[dict[str, Any]]
_Job = tuple["CheckedBatch", "asyncio.Future[Results]"]
_Answer = tuple["asyncio.Future[Results]", "Results | BaseException"]


class CommitQueue:
    """`store` a checked batch; a thread stores it with its neighbours and answers each one."""

    def __init__(
        self,
        commit: Callable[[list[CheckedBatch]], list[Results]],
        name: str = "batch-commit",
    ) -> None:
        self.commit = commit
        self.name = name
        self._group: GroupCommitter[_Job] = GroupCommitter(self._write, name, one_per_station)

    async def store(self, batch: CheckedBatch) -> Results:
        """The batch's results, once it and its rows are durable."""
        future: asyncio.Future[Results] = asyncio.get_running_loop().create_future()
        self._group.put((batch, future))
        return await future

    def waiting(self) -> int:
        """Batches queued for the next write."""
        return self._group.waiting()

    def shutdown(self, timeout: float = 60.0) -> None:
        """Store and answer what is queued, then end the thread."""
        self._group.shutdown(timeout)

    def _write(self, jobs: list[_Job]) -> None:
        try:
            outcomes: list[Results | BaseException] = list(self.commit([b for b, _ in jobs]))
        except Exception as exc:  # every batch of the write shares its fate (e.g. 503)
            outcomes = [exc] * len(jobs)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Answer]] = {}
        for (_, future), outcome in zip(jobs, outcomes, strict=True):
            by_loop.setdefault(future.get_loop(), []).append((future, outcome))
        for loop, answers in by_loop.items():  # one wake-up of the loop per write
            try:
                loop.call_soon_threadsafe(_settle, answers)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.warning("%s: a batch was stored after its server stopped", self.name)


def one_per_station(jobs: deque[_Job]) -> list[_Job]:
    """Every waiting batch, but one per station: a station's next batch waits its turn, so no
    two batches of one write hold the same capture (their answers stay those of uploads made
    one after the other)."""
    taken: list[_Job] = []
    stations: set[str] = set()
    later: list[_Job] = []
    while jobs:
        job = jobs.popleft()
        if job[0].station_id in stations:
            later.append(job)
        else:
            stations.add(job[0].station_id)
            taken.append(job)
    jobs.extend(later)
    return taken


def _settle(answers: list[_Answer]) -> None:
    for future, outcome in answers:
        if future.done():  # the request was cancelled meanwhile
            continue
        if isinstance(outcome, BaseException):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)
