"""How long the battery lasts at this rate, how long until full, and what one capture costs."""

from __future__ import annotations

import os
import threading
from collections import deque
from dataclasses import dataclass

from agent.power.sources import Reading

TREND_WINDOW_S = 3 * 3600.0  # charge trend over the last three hours
MIN_SPAN_S = 600.0  # at least ten minutes of readings before a trend means anything
CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
# worker thread names -> the stage of a capture's life they spend CPU on
STAGES = (
    ("serial", "ingest"),
    ("mqtt", "ingest"),
    ("http", "ingest"),
    ("inference", "inference"),
    ("uploader", "upload"),
)


@dataclass(frozen=True)
class Runway:
    hours_to_empty: float | None
    hours_to_full: float | None
    rate_pct_per_h: float | None  # charge trend, negative while discharging
    basis: str  # "power" (battery_wh and measured W), "trend" (charge over time), or "none"

    def as_dict(self) -> dict[str, object]:
        return {
            "hours_to_empty": _r(self.hours_to_empty),
            "hours_to_full": _r(self.hours_to_full),
            "rate_pct_per_h": _r(self.rate_pct_per_h),
            "basis": self.basis,
        }


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 2)


class Trend:
    """Recent (time, charge, power) points; a least-squares slope of charge over time."""

    def __init__(self, window_s: float = TREND_WINDOW_S) -> None:
        self.window_s = window_s
        self.points: deque[tuple[float, float, float | None]] = deque()

    def add(self, at: float, soc: float | None, power_w: float | None) -> None:
        if soc is None:
            return
        if self.points and at <= self.points[-1][0]:
            return
        self.points.append((at, soc, power_w))
        while self.points and self.points[0][0] < at - self.window_s:
            self.points.popleft()

    def slope_pct_per_h(self) -> float | None:
        pts = list(self.points)
        if len(pts) < 3 or pts[-1][0] - pts[0][0] < MIN_SPAN_S:
            return None
        n = len(pts)
        mt = sum(p[0] for p in pts) / n
        ms = sum(p[1] for p in pts) / n
        var = sum((p[0] - mt) ** 2 for p in pts)
        if var == 0:
            return None
        cov = sum((p[0] - mt) * (p[1] - ms) for p in pts)
        return cov / var * 3600.0

    def runway(self, reading: Reading | None, battery_wh: float) -> Runway:
        """Time to empty (discharging) or to full (charging)."""
        soc = reading.soc if reading else None
        if soc is None:
            return Runway(None, None, None, "none")
        slope = self.slope_pct_per_h()
        watts = reading.power_w if reading else None
        if battery_wh > 0 and watts:
            stored = soc / 100.0 * battery_wh
            if watts < 0:
                return Runway(stored / -watts, None, slope, "power")
            return Runway(None, (battery_wh - stored) / watts, slope, "power")
        if slope is None or abs(slope) < 0.01:
            return Runway(None, None, slope, "trend")
        if slope < 0:
            return Runway(soc / -slope, None, slope, "trend")
        return Runway(None, (100.0 - soc) / slope, slope, "trend")


class EnergyMeter:
    """CPU seconds per stage (from each worker thread's own CPU time) per capture, in joules."""

    def __init__(self, board_watts: float) -> None:
        self.board_watts = board_watts
        self.captures = 0
        self._start = self._sample()
        self._lock = threading.Lock()

    def capture(self) -> None:
        with self._lock:
            self.captures += 1

    def _sample(self) -> dict[str, float]:
        names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
        out: dict[str, float] = {}
        try:
            tids = os.listdir("/proc/self/task")
        except OSError:
            return {"all": float(sum(os.times()[:2]))}
        for tid in tids:
            try:
                with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                    stat = f.read()
            except OSError:
                continue  # the thread ended meanwhile
            # fields after the ")" of the command name: utime and stime are the 12th and 13th
            rest = stat.rsplit(b")", 1)[1].split()
            seconds = (int(rest[11]) + int(rest[12])) / CLOCK_TICK
            stage = _stage(names.get(int(tid), ""))
            out[stage] = out.get(stage, 0.0) + seconds
        return out

    def per_capture(self) -> dict[str, object]:
        now = self._sample()
        cpu = {k: max(0.0, v - self._start.get(k, 0.0)) for k, v in now.items()}
        work = {k: v for k, v in cpu.items() if k in ("ingest", "inference", "upload")}
        n = self.captures
        per_stage = {k: round(v / n, 4) for k, v in work.items()} if n else {}
        joules = sum(work.values()) / n * self.board_watts if n else None
        return {
            "captures": n,
            "cpu_s_per_capture": per_stage,
            "joules_per_capture": None if joules is None else round(joules, 3),
            "cpu_s_total": {k: round(v, 2) for k, v in cpu.items()},
        }


def _stage(thread_name: str) -> str:
    for prefix, stage in STAGES:
        if thread_name.startswith(prefix):
            return stage
    return "other"
