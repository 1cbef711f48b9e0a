"""The one record every ingest path produces: a `Capture` from a `Unit`."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

IngestPath = Literal["serial", "mqtt", "http"]
TimeKindName = Literal["boot_ms", "epoch_ms", "epoch_s"]
# Where a capture's `captured_at` came from; exports carry it next to the timestamp.
TimeSource = Literal["unit_clock", "unit_uptime", "file_name", "received"]

# A file name date such as 20251016_143052 or 2025-10-16T14-30-52 (WildCAM SD-card names).
_FILE_DATE = re.compile(r"(?<!\d)(20\d\d)-?(\d\d)-?(\d\d)[_T -]?(\d\d)[-:]?(\d\d)[-:]?(\d\d)(?!\d)")
# A re-uploaded file may be old, but not older than this: an older date is a clock never set.
_FILE_DATE_MAX_AGE_S = 366 * 86400


def classify_unit_time(value: int, received_at: float, skew_s: float) -> TimeKindName:
    """Tell a unit's timestamp's kind: wall-clock (s or ms) only when it is within `skew_s` of
    the station's receive time; anything else is time since boot (WildCAM sends `millis()`)."""
    if abs(value - received_at) <= skew_s:
        return "epoch_s"
    if abs(value / 1000 - received_at) <= skew_s:
        return "epoch_ms"
    return "boot_ms"


def wall_time(value: int | None, kind: TimeKindName | None) -> float | None:
    """The unit's time as Unix seconds, or None when the unit only knows time since boot."""
    if value is None or kind is None or kind == "boot_ms":
        return None
    return value / 1000 if kind == "epoch_ms" else float(value)


def date_in_file_name(name: str, received_at: float, skew_s: float) -> float | None:
    """The UTC date a file name carries (20251016_143052_deer.jpg), if it is a plausible past."""
    for match in _FILE_DATE.finditer(name):
        try:
            year, month, day, hour, minute, second = (int(g) for g in match.groups())
            at = dt.datetime(year, month, day, hour, minute, second, tzinfo=dt.UTC).timestamp()
        except ValueError:  # 20251399_...: digits, not a date
            continue
        if received_at - _FILE_DATE_MAX_AGE_S <= at <= received_at + skew_s:
            return at
    return None


def capture_time(
    unit_time: int,
    kind: TimeKindName,
    received_at: float,
    *,
    uptime_ms: int | None = None,
    file_name: str | None = None,
    skew_s: float,
) -> tuple[float, TimeSource]:
    """When a capture was taken, and how we know: the unit's clock if plausible, else the
    receive time corrected by the unit's uptime, else a date in the re-uploaded file's name,
    else the receive time itself. Never a boot-relative number read as a date."""
    wall = wall_time(unit_time, kind)
    if wall is not None:
        return wall, "unit_clock"
    if file_name:
        named = date_in_file_name(file_name, received_at, skew_s)
        if named is not None:
            return named, "file_name"
    if uptime_ms is not None and 0 <= unit_time <= uptime_ms:
        return received_at - (uptime_ms - unit_time) / 1000, "unit_uptime"
    return received_at, "received"


@dataclass(frozen=True)
class Capture:
    """One JPEG from one unit, as received, before it is stored."""

    unit_id: str
    unit_ref: str  # the unit's own name for it: its capture counter, or "t<timestamp>" over HTTP
    path: IngestPath
    jpeg: bytes
    received_at: float  # station clock, Unix seconds
    unit_time: int | None = None
    unit_time_kind: TimeKindName | None = None
    trigger: str | None = None
    meta: dict[str, object] = field(default_factory=dict)
    # Worked out at intake when the unit's own time is not a date (see capture_time).
    estimated_at: float | None = None

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()

    @property
    def id(self) -> str:
        """Stable across retransmits and restarts, so it is also the cloud's idempotency key."""
        return f"{self.unit_id}-{self.unit_ref}-{self.sha256[:12]}"

    @property
    def captured_at(self) -> float | None:
        wall = wall_time(self.unit_time, self.unit_time_kind)
        return wall if wall is not None else self.estimated_at
