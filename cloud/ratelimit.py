"""Per-station token buckets: in PostgreSQL when replicas share it, else in process memory."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from typing import Protocol


class Limiter(Protocol):
    def take(self, key: str) -> float:
        """Spend one token for `key`; return 0 when allowed, else the seconds until one is free."""
        ...


class RateBuckets(Protocol):
    """Token buckets every replica of the service sees (kept by the database)."""

    def take_rate_token(self, key: str, rate: float, burst: float) -> tuple[float, bool]:
        """Spend one token of `key`'s bucket if it has one; return (tokens left, allowed)."""
        ...


class RateLimiter:
    """One bucket set in this process: the limit holds per replica."""

    def __init__(
        self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Spend one token for `key`; return 0 when allowed, else the seconds until one is free."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens >= 1.0:
                self._buckets[key] = (tokens - 1.0, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / self.rate


class SharedRateLimiter:
    """The buckets live in the database, so replicas together let a station through once."""

    def __init__(self, buckets: RateBuckets, per_minute: float, burst: int) -> None:
        self.buckets = buckets
        self.rate = per_minute / 60.0
        self.burst = float(burst)

    def take(self, key: str) -> float:
        if self.rate <= 0:
            return 0.0
        tokens, allowed = self.buckets.take_rate_token(key, self.rate, self.burst)
        return 0.0 if allowed else (1.0 - tokens) / self.rate


def open_limiter(buckets: RateBuckets | None, per_minute: float, burst: int) -> Limiter:
    """Shared buckets when the database keeps them (PostgreSQL), else buckets in memory."""
    if buckets is None:
        return RateLimiter(per_minute, burst)
    return SharedRateLimiter(buckets, per_minute, burst)


def retry_after_header(seconds: float) -> str:
    """Retry-After takes whole seconds; round up so a client that obeys it is let in."""
    return str(max(1, math.ceil(seconds)))
