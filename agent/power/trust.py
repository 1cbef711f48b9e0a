"""Whether a source's reading may be believed: in range, no jump a battery cannot make, not stuck.

A source that fails any check is flagged and not trusted; the next source by priority takes over.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from agent.power.sources import Reading

SOC_SLACK = 3.0  # % a gauge may step between two readings (rounding, load changes)
CONFIRM_READINGS = 3  # readings that must agree on a new level after a jump to believe it
FLAP_JUMPS = 3  # this many jumps within FLAP_WINDOW readings: the sensor is flapping
FLAP_WINDOW = 12
RECOVER_READINGS = 6  # consistent readings in a row that clear a flapping flag


@dataclass
class SourceHealth:
    """What we believe about one source right now."""

    name: str
    stale_s: float
    trusted: bool = False
    flag: str | None = None  # error | out_of_range | jump | flapping | stuck
    error: str | None = None
    last_good: Reading | None = None  # the last trusted reading
    last_raw: Reading | None = None
    errors: int = 0
    rejected: int = 0
    _suspects: list[Reading] = field(default_factory=list)
    _recent_jumps: deque[bool] = field(default_factory=lambda: deque(maxlen=FLAP_WINDOW))
    _calm: int = 0
    _signature: tuple[float | None, float | None] | None = None
    _unchanged_since: float | None = None

    def usable(self, now: float) -> Reading | None:
        """The reading to act on, if this source is trusted and its reading is fresh."""
        if not self.trusted or self.last_good is None:
            return None
        if now - self.last_good.at > self.stale_s:
            return None
        return self.last_good

    def describe(self, now: float) -> dict[str, object]:
        shown = self.last_raw or self.last_good
        fresh = self.usable(now) is not None
        return {
            "name": self.name,
            "trusted": fresh,
            "flag": self.flag or (None if fresh or shown is None else "stale"),
            "error": self.error,
            "reading": shown.as_dict() if shown else None,
            "age_s": round(now - shown.at, 1) if shown else None,
            "errors": self.errors,
            "rejected": self.rejected,
        }


class Judge:
    """Applies the plausibility checks; one per power worker, shared by all sources."""

    def __init__(self, max_soc_rate_per_h: float, stuck_after_s: float) -> None:
        self.max_soc_rate_per_h = max_soc_rate_per_h
        self.stuck_after_s = stuck_after_s

    def failed(self, h: SourceHealth, error: str) -> None:
        """The source gave no reading (file gone, garbage, port closed)."""
        h.trusted = False
        h.flag = "error"
        h.error = error
        h.errors += 1

    def assess(self, h: SourceHealth, r: Reading) -> None:
        h.last_raw = r
        h.error = None
        problem = _out_of_range(r)
        if problem:
            self._reject(h, "out_of_range", problem)
            return
        if self._stuck(h, r):
            self._reject(
                h, "stuck", f"voltage and current unchanged for {self.stuck_after_s:.0f} s"
            )
            return
        jumped = self._jumped(h.last_good, r)
        h._recent_jumps.append(jumped)
        if jumped:
            h._calm = 0
            h._suspects.append(r)
            if len(h._suspects) >= CONFIRM_READINGS and self._agree(h._suspects):
                # readings that agree on a new level: a battery swapped, a gauge recalibrated
                h._suspects.clear()
                h._recent_jumps.clear()
                self._accept(h, r)
                return
            if sum(h._recent_jumps) >= FLAP_JUMPS:
                h._suspects.clear()
                self._reject(h, "flapping", f"{sum(h._recent_jumps)} impossible jumps lately")
                return
            last = h.last_good.soc if h.last_good else None
            self._reject(h, "jump", f"charge went from {last}% to {r.soc}%, faster than a battery")
            return
        h._suspects.clear()
        h._calm += 1
        if h.flag == "flapping" and h._calm < RECOVER_READINGS:
            h.rejected += 1
            h.trusted = False
            h.last_good = r  # follow the level so recovery compares with now, not the past
            return
        self._accept(h, r)

    def _accept(self, h: SourceHealth, r: Reading) -> None:
        h.last_good = r
        h.trusted = True
        h.flag = None

    def _reject(self, h: SourceHealth, flag: str, why: str) -> None:
        h.trusted = False
        h.flag = flag
        h.error = why
        h.rejected += 1

    def _jumped(self, last: Reading | None, r: Reading) -> bool:
        if last is None or last.soc is None or r.soc is None:
            return False
        hours = max(0.0, r.at - last.at) / 3600.0
        return abs(r.soc - last.soc) > self.max_soc_rate_per_h * hours + SOC_SLACK

    def _agree(self, readings: list[Reading]) -> bool:
        first = readings[-CONFIRM_READINGS]
        return all(not self._jumped(first, r) for r in readings[-CONFIRM_READINGS + 1 :])

    def _stuck(self, h: SourceHealth, r: Reading) -> bool:
        signature = (r.voltage_v, r.current_a)
        if signature == (None, None):
            return False  # a gauge that only says % may rightly hold 100 all day
        if signature != h._signature or h._unchanged_since is None:
            h._signature = signature
            h._unchanged_since = r.at
            return False
        return r.at - h._unchanged_since >= self.stuck_after_s


def _out_of_range(r: Reading) -> str | None:
    if r.soc is not None and not 0.0 <= r.soc <= 100.0:
        return f"charge {r.soc}% is outside 0-100"
    if r.voltage_v is not None and not 0.0 < r.voltage_v <= 100.0:
        return f"voltage {r.voltage_v} V is outside 0-100 V"
    if r.current_a is not None and abs(r.current_a) > 500.0:
        return f"current {r.current_a} A is beyond 500 A"
    return None


def pick(healths: list[SourceHealth], now: float) -> Reading | None:
    """The first trusted, fresh reading in priority order."""
    for h in healths:
        r = h.usable(now)
        if r is not None:
            return r
    return None
