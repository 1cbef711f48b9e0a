"""A worker's doorbell: rung when work arrives, so the worker looks at once instead of polling.

The inference worker and the uploader wait on one between looks at the buffer. They still look
at their poll interval, because work also arrives by ways that ring nothing (a restart, model
sync, a settled doubt); the bell only makes the common case prompt, and lets that interval be
long, so an idle station wakes rarely.
"""

from __future__ import annotations

import threading
import time

# a wait sees its stop event at least this often: a worker run outside the supervisor (tests,
# one-shot commands) has nobody to ring its bell at stop
STOP_LOOK_S = 1.0


class Doorbell:
    def __init__(self) -> None:
        self._event = threading.Event()

    def ring(self) -> None:
        self._event.set()

    def wait(self, stop: threading.Event, seconds: float) -> bool:
        """Until the bell rings, `stop` is set, or `seconds` pass; True if it rang. A ring
        while nobody waits is kept for the next wait, so work that arrives during a look is
        never slept through."""
        deadline = time.monotonic() + seconds
        rang = False
        while not stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if self._event.wait(min(left, STOP_LOOK_S)):
                rang = True
                break
        self._event.clear()
        return rang
