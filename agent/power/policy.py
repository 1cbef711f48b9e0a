"""What each state allows: inference mode, uploads, model downloads, and the units' CONFIG.

Who decides a unit's CONFIG: the power state's policy sets every key in UNIT_FIELDS. A technician's
CONFIG for one unit (the page, `POST /api/units/{id}/commands`, `fieldstation units command`)
overrides just the keys it names, and wins until the power state changes or, when given under a
hold, until that hold ends; then the unit gets the policy's CONFIG again at its next wake. So a
technician aiming a camera is not undone by the next wake, and the night still slows every unit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from agent import protocol as p
from agent.power.settings import PowerSection, StatePolicy, policy_for
from agent.upload.settings import Window

# CONFIG fields a unit echoes in CONFIG_REPORT; station_time_ms is the clock, not a setting
UNIT_FIELDS = (
    "capture_interval_s",
    "frame_size",
    "jpeg_quality",
    "pir_enabled",
    "sleep_start_min",
    "sleep_end_min",
)


@dataclass(frozen=True)
class Decisions:
    inference: str  # all | detector_only | paused
    uploads_allowed: bool
    uploads_reason: str
    downloads_allowed: bool
    unit_config: dict[str, int]


def unit_config(policy: StatePolicy) -> dict[str, int]:
    """The CONFIG fields a state asks of every unit."""
    start = end = p.NO_QUIET_PERIOD
    if policy.quiet:
        start, end = Window(policy.quiet).minutes
        end %= 1440  # "…-24:00" ends at midnight
    return {
        "capture_interval_s": policy.capture_interval_s,
        "frame_size": policy.frame_size,
        "jpeg_quality": policy.jpeg_quality,
        "pir_enabled": int(policy.pir_enabled),
        "sleep_start_min": start,
        "sleep_end_min": end,
    }


def with_technician(state_config: dict[str, int], technician: dict[str, int]) -> dict[str, int]:
    """The CONFIG a unit is asked for: its state's, with the technician's keys over it."""
    return {**state_config, **{k: v for k, v in technician.items() if k in UNIT_FIELDS}}


def technician_keys(body: dict[str, object]) -> dict[str, int]:
    """The unit settings a technician's CONFIG names; ValueError for one that is not a number."""
    out: dict[str, int] = {}
    for key in UNIT_FIELDS:
        if key not in body:
            continue
        value = body[key]
        if not isinstance(value, int):  # JSON true/false is an int here too (pir_enabled)
            raise ValueError(f"{key} must be a whole number, not {value!r}")
        out[key] = int(value)
    return out


def decide(settings: PowerSection, state: str, charging: bool | None, now: float) -> Decisions:
    pol = policy_for(settings, state)
    if pol.uploads == "any":
        up, why = True, "any time"
    elif pol.uploads == "paused":
        up, why = False, f"paused in {state.upper()}"
    elif pol.uploads == "charging":
        up = bool(charging)
        why = "only while charging" + ("" if up else "; not charging now")
    else:
        up = any(_in_window(w, now) for w in settings.upload_windows)
        why = "only in " + ", ".join(settings.upload_windows) + ("" if up else "; closed now")
    return Decisions(
        inference=pol.inference,
        uploads_allowed=up,
        uploads_reason=why,
        # a model download and self-test is a burst of work: only with energy to spare
        downloads_allowed=state == "normal" and bool(charging),
        unit_config=unit_config(pol),
    )


def _in_window(window: str, now: float) -> bool:
    start, end = Window(window).minutes
    lt = time.localtime(now)
    minute = lt.tm_hour * 60 + lt.tm_min
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


def confirmed(report: dict[str, object] | None, wanted: dict[str, int]) -> bool:
    """True when a unit's last CONFIG_REPORT shows every field the station asked for."""
    if not report:
        return False
    return all(report.get(k) == v for k, v in wanted.items())
