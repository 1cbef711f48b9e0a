"""The one record every ingest path produces: a `Capture` from a `Unit`."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

IngestPath = Literal["serial", "mqtt", "http"]
TimeKindName = Literal["boot_ms", "epoch_ms", "epoch_s"]

# A plausible epoch window (2001-09-09 .. 2100-01-01); outside it a number is time since boot.
_EPOCH_S_MIN = 1_000_000_000
_EPOCH_S_MAX = 4_102_444_800


def classify_unit_time(value: int) -> TimeKindName:
    """Tell a WildCAM HTTP timestamp's kind: seconds since the epoch, epoch ms, or ms since boot."""
    if _EPOCH_S_MIN <= value < _EPOCH_S_MAX:
        return "epoch_s"
    if _EPOCH_S_MIN * 1000 <= value < _EPOCH_S_MAX * 1000:
        return "epoch_ms"
    return "boot_ms"


def wall_time(value: int | None, kind: TimeKindName | None) -> float | None:
    """The unit's time as Unix seconds, or None when the unit only knows time since boot."""
    if value is None or kind is None or kind == "boot_ms":
        return None
    return value / 1000 if kind == "epoch_ms" else float(value)


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

    @cached_property
    def sha256(self) -> str:
        return hashlib.sha256(self.jpeg).hexdigest()

    @property
    def id(self) -> str:
        """Stable across retransmits and restarts, so it is also the cloud's idempotency key."""
        return f"{self.unit_id}-{self.unit_ref}-{self.sha256[:12]}"

    @property
    def captured_at(self) -> float | None:
        return wall_time(self.unit_time, self.unit_time_kind)
