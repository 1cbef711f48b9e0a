"""NORMAL, ECO, CRITICAL with separate enter and leave levels and a minimum dwell (no flapping).

The Witty Pi / PiJuice habit: a battery that crossed a threshold on the way down must recover
past a higher level, and stay a while, before the station relaxes again.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from agent.power.settings import PowerSection
from agent.power.sources import Reading


class State(StrEnum):
    NORMAL = "normal"
    ECO = "eco"
    CRITICAL = "critical"


RANK = {State.NORMAL: 0, State.ECO: 1, State.CRITICAL: 2}


@dataclass(frozen=True)
class Transition:
    at: float
    old: State
    new: State
    reason: str
    reading: Reading | None


class PowerStates:
    """The measured state: what the battery says, with hysteresis and dwell (holds come later)."""

    def __init__(
        self,
        settings: PowerSection,
        now: float,
        initial: State = State.NORMAL,
        reason: str = "starting",
    ) -> None:
        self.s = settings
        self.state = initial
        self.since = now
        self.reason = reason
        self.charging: bool | None = None
        self._charging_candidate: tuple[bool | None, float] | None = None
        self._first = True  # the first reading after a start sets the state without a dwell

    def target(self, soc: float) -> tuple[State, str]:
        """Where the charge alone would take us from the current state, and why."""
        s = self.s
        if self.state == State.NORMAL:
            if soc <= s.critical_enter_soc:
                return State.CRITICAL, f"charge {soc:.0f}% at or below {s.critical_enter_soc:g}%"
            if soc <= s.eco_enter_soc:
                return State.ECO, f"charge {soc:.0f}% at or below {s.eco_enter_soc:g}%"
        elif self.state == State.ECO:
            if soc <= s.critical_enter_soc:
                return State.CRITICAL, f"charge {soc:.0f}% at or below {s.critical_enter_soc:g}%"
            if soc >= s.eco_leave_soc:
                return State.NORMAL, f"charge {soc:.0f}% recovered to {s.eco_leave_soc:g}%"
        else:
            if soc >= s.eco_leave_soc:
                return State.NORMAL, f"charge {soc:.0f}% recovered to {s.eco_leave_soc:g}%"
            if soc >= s.critical_leave_soc:
                return State.ECO, f"charge {soc:.0f}% recovered to {s.critical_leave_soc:g}%"
        return self.state, self.reason

    def update(self, reading: Reading | None, now: float) -> Transition | None:
        """Feed the chosen reading (None: no trusted source); return a transition if one happened."""
        self._update_charging(reading, now)
        if reading is None or reading.soc is None:
            return None
        first, self._first = self._first, False
        new, why = self.target(reading.soc)
        if new == self.state:
            if first and self.reason == "starting":
                self.reason = f"charge {reading.soc:.0f}% ({reading.source})"
            return None
        if not first and now - self.since < self.s.min_dwell_s:
            return None  # the dwell keeps a hovering battery from flapping
        t = Transition(now, self.state, new, f"{why} ({reading.source})", reading)
        self.state, self.since, self.reason = new, now, t.reason
        return t

    def _update_charging(self, reading: Reading | None, now: float) -> None:
        value = reading.charging if reading is not None else None
        if value is None or value == self.charging:
            self._charging_candidate = None
            return
        if self.charging is None:
            self.charging = value
            return
        if self._charging_candidate is None or self._charging_candidate[0] != value:
            self._charging_candidate = (value, now)
        if now - self._charging_candidate[1] >= self.s.charging_dwell_s:
            self.charging = value
            self._charging_candidate = None
