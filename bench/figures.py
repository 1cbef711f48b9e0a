"""The protocol every benchmark follows, so `python -m bench` can run them all and tabulate them.

A benchmark module `bench/bench_<name>.py` exposes `run(quick: bool) -> list[Figure]` (small
counts when `quick`, for a whole run under three minutes) and keeps its own `__main__` command
line. Each `Figure` carries its raw baseline measured in the same run and, where the project has
one, the goal it is judged by.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

# what a goal limits: value / baseline, the value itself, or value - baseline
Measure = Literal["ratio", "value", "excess"]


@dataclass(frozen=True)
class Goal:
    """A limit on one measure of a figure: at least `limit` (throughput) or at most (cost)."""

    limit: float
    at_least: bool
    on: Measure = "ratio"

    def __str__(self) -> str:
        sign = "≥" if self.at_least else "≤"
        what = {"ratio": "ratio", "value": "value", "excess": "above baseline"}[self.on]
        return f"{what} {sign} {self.limit:g}"


def at_least(limit: float, on: Measure = "ratio") -> Goal:
    return Goal(limit, True, on)


def at_most(limit: float, on: Measure = "ratio") -> Goal:
    return Goal(limit, False, on)


@dataclass(frozen=True)
class Figure:
    """One measured figure beside the raw baseline it is compared with (same run)."""

    name: str
    value: float
    unit: str
    baseline: float | None = None
    baseline_name: str = ""
    goal: Goal | None = None
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.baseline is None or self.baseline == 0:
            return None
        return self.value / self.baseline

    def measure(self, on: Measure) -> float | None:
        if on == "value":
            return self.value
        if on == "ratio":
            return self.ratio
        return None if self.baseline is None else self.value - self.baseline

    @property
    def met(self) -> bool | None:
        """Whether the goal is met; None when there is no goal or nothing to judge it by."""
        if self.goal is None:
            return None
        got = self.measure(self.goal.on)
        if got is None or math.isnan(got):
            return None
        return got >= self.goal.limit if self.goal.at_least else got <= self.goal.limit

    def to_json(self) -> dict[str, object]:
        return {
            "name": self.name,
            "value": self.value,
            "unit": self.unit,
            "baseline": self.baseline,
            "baseline_name": self.baseline_name,
            "ratio": self.ratio,
            "goal": str(self.goal) if self.goal else None,
            "goal_limit": self.goal.limit if self.goal else None,
            "goal_at_least": self.goal.at_least if self.goal else None,
            "goal_on": self.goal.on if self.goal else None,
            "met": self.met,
            "note": self.note,
        }

    @classmethod
    def from_json(cls, doc: dict[str, object]) -> Figure:
        goal = None
        if doc.get("goal_limit") is not None:
            goal = Goal(
                float(doc["goal_limit"]),  # type: ignore[arg-type]
                bool(doc["goal_at_least"]),
                doc.get("goal_on") or "ratio",  # type: ignore[arg-type]
            )
        baseline = doc.get("baseline")
        return cls(
            name=str(doc["name"]),
            value=float(doc["value"]),  # type: ignore[arg-type]
            unit=str(doc.get("unit") or ""),
            baseline=None if baseline is None else float(baseline),  # type: ignore[arg-type]
            baseline_name=str(doc.get("baseline_name") or ""),
            goal=goal,
            note=str(doc.get("note") or ""),
        )
