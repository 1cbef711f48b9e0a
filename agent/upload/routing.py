"""Which sync endpoint a station uses: weighted rendezvous ranking and a breaker per endpoint."""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Sequence


def rendezvous_rank(key: str, endpoints: Sequence[tuple[str, float]]) -> list[str]:
    """Endpoint names best first for `key` (the station id); the first is the primary.

    Weighted rendezvous hashing (score = -weight / ln(h)): stable for a given key and endpoint
    set, spreads keys in proportion to the weights, and removing one endpoint only moves the
    stations that had it as primary.
    """
    scored = []
    for name, weight in endpoints:
        digest = hashlib.sha256(f"{key}\x00{name}".encode()).digest()
        # 53 bits into (0, 1): never exactly 0 or 1, so the log is finite and negative
        h = (int.from_bytes(digest[:8], "big") >> 11) + 0.5
        h /= float(1 << 53)
        scored.append((-weight / math.log(h), name))
    scored.sort(key=lambda s: (-s[0], s[1]))
    return [name for _, name in scored]


class CircuitBreaker:
    """Closed, open after `failures` in a row, half-open (one probe) after a growing cool-down.

    Own code rather than pybreaker: the probe here is a separate cheap ping, not the next call,
    and the cool-down must also honour a server's Retry-After.
    """

    CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"

    def __init__(
        self,
        failures: int,
        cooldown_s: float,
        cooldown_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.threshold = failures
        self.cooldown_s = cooldown_s
        self.cooldown_max_s = max(cooldown_s, cooldown_max_s)
        self.clock = clock
        self.state = self.CLOSED
        self.failures = 0
        self.trips = 0  # consecutive openings without a success: the cool-down grows with them
        self.open_until = 0.0
        self.last_error: str | None = None

    def available(self) -> bool:
        """True when a request may go: closed, or open with its cool-down over (then half-open)."""
        if self.state == self.OPEN and self.clock() >= self.open_until:
            self.state = self.HALF_OPEN
        return self.state != self.OPEN

    def retry_in(self) -> float:
        """Seconds until a probe is allowed (0 when available now)."""
        if self.state != self.OPEN:
            return 0.0
        return max(0.0, self.open_until - self.clock())

    def success(self) -> None:
        self.state = self.CLOSED
        self.failures = 0
        self.trips = 0
        self.last_error = None

    def failure(self, error: str, *, hold_s: float | None = None, trip: bool = False) -> bool:
        """Count a failed request; return True when this one opened the breaker.

        `hold_s` (a Retry-After too long to wait in place) opens it at once for that long;
        `trip` (the endpoint failed its probe too) opens it at once for the usual cool-down.
        """
        self.failures += 1
        self.last_error = error
        if hold_s is not None:
            return self._open(hold_s)
        if trip or self.state == self.HALF_OPEN or self.failures >= self.threshold:
            return self._open(None)
        return False

    def _open(self, hold_s: float | None) -> bool:
        was_open = self.state == self.OPEN
        if hold_s is None:
            hold_s = min(self.cooldown_max_s, self.cooldown_s * 2**self.trips)
            self.trips += 1
        self.state = self.OPEN
        self.open_until = self.clock() + hold_s
        return not was_open
