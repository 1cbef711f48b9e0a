"""What the link may carry: a token bucket (bytes/s), a daily byte budget and upload windows."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta

from agent.upload.settings import Window


class TokenBucket:
    """Bytes per second with a burst of one second's worth; 0 means unlimited.

    `take(n)` may drive the level negative (a batch larger than the burst); the caller then
    waits `wait_s()` before sending more, which keeps the average at the rate.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = float(rate)
        self.burst = max(self.rate, 1.0)
        self.clock = clock
        self.level = 0.0  # start empty: no burst right after a restart
        self.at = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self.clock()
        self.level = min(self.burst, self.level + (now - self.at) * self.rate)
        self.at = now

    def take(self, n: int) -> None:
        if not self.rate:
            return
        with self._lock:
            self._refill()
            self.level -= n

    def wait_s(self, n: int = 0) -> float:
        """Seconds until `n` more bytes may go without exceeding the rate."""
        if not self.rate:
            return 0.0
        with self._lock:
            self._refill()
            missing = n - self.level if n else -self.level
            return max(0.0, missing / self.rate)


class ThrottledBody:
    """A request body read in blocks, each waiting for the bucket: the cap holds within a batch."""

    block = 16384

    def __init__(self, data: bytes, bucket: TokenBucket, sleep: Callable[[float], object]) -> None:
        self.data = memoryview(data)
        self.len = len(data)  # requests sends Content-Length from this, not chunked encoding
        self.pos = 0
        self.bucket = bucket
        self.sleep = sleep

    def __len__(self) -> int:
        return self.len

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.len:
            return b""
        n = self.block if size is None or size < 0 else min(size, self.block)
        chunk = bytes(self.data[self.pos : self.pos + n])
        wait = self.bucket.wait_s(len(chunk))
        if wait > 0:
            self.sleep(wait)
        self.bucket.take(len(chunk))
        self.pos += len(chunk)
        return chunk


def local_day(at: float) -> str:
    """The local calendar day the budget is counted in, e.g. 2026-11-26."""
    return time.strftime("%Y-%m-%d", time.localtime(at))


def seconds_to_next_day(at: float) -> float:
    now = datetime.fromtimestamp(at)
    tomorrow = (now + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    return max(1.0, (tomorrow - now).total_seconds())


class UploadWindows:
    """Daily local-time windows; no windows means always open."""

    def __init__(self, windows: Sequence[Window]) -> None:
        self.windows = [Window(w) for w in windows]

    def is_open(self, at: float) -> bool:
        return self.seconds_until_open(at) == 0.0

    def seconds_until_open(self, at: float) -> float:
        if not self.windows:
            return 0.0
        now = datetime.fromtimestamp(at)
        minute = now.hour * 60 + now.minute + now.second / 60 + now.microsecond / 60e6
        best = None
        for w in self.windows:
            start, end = w.minutes
            if start < end:
                inside = start <= minute < end
            else:  # crosses midnight
                inside = minute >= start or minute < end
            if inside:
                return 0.0
            wait = (start - minute) % 1440
            best = wait if best is None else min(best, wait)
        assert best is not None
        return best * 60.0
