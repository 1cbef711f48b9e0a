"""Making a virtual unit: the firmware's C core when it builds here, else the Python fallback."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable

from agent import protocol as p
from agent.esp32 import core
from agent.esp32.host_unit import CoreVirtualUnit
from agent.esp32.virtual import UnitLink, VirtualUnit

log = logging.getLogger(__name__)

_fallback_logged = False


def core_engine_available() -> bool:
    """True when the C core builds and loads here and WILDCAM_VIRTUAL_UNIT does not ask for Python."""
    return os.environ.get("WILDCAM_VIRTUAL_UNIT") != "python" and core.core_available()


def virtual_unit(
    unit_id: str,
    link: UnitLink,
    *,
    chunk_size: int = 4096,
    firmware_version: str = "virtual-1.0.0",
    chip: str = "esp32s3",
    mac: str | None = None,
    ack_timeout_s: float = 10.0,
    max_attempts: int = 4,
    first_capture_id: int = 1,
    boot_time: float | None = None,
    images: Iterable[bytes] | None = None,
    nvs: dict[str, int | str] | None = None,
    battery_mv: int = 3900,
    max_chunk: int | None = p.MAX_CHUNK,
) -> VirtualUnit:
    """A unit speaking over `link`; `images`, `nvs` and `battery_mv` are the C core's own inputs
    (the Python fallback has no camera roll, NVS or battery and is told so in the log)."""
    global _fallback_logged
    if core_engine_available():
        return CoreVirtualUnit(
            unit_id,
            link,
            images=images,
            nvs=nvs,
            battery_mv=battery_mv,
            chunk_size=chunk_size,
            firmware_version=firmware_version,
            chip=chip,
            mac=mac,
            ack_timeout_s=ack_timeout_s,
            max_attempts=max_attempts,
            first_capture_id=first_capture_id,
            boot_time=boot_time,
            max_chunk=max_chunk,
        )
    if not _fallback_logged:
        _fallback_logged = True
        log.warning(
            "virtual unit: the firmware's C core is not available here (no C compiler, or "
            "WILDCAM_VIRTUAL_UNIT=python); using the pure-Python fallback"
        )
    return VirtualUnit(
        unit_id,
        link,
        chunk_size=chunk_size,
        firmware_version=firmware_version,
        chip=chip,
        mac=mac,
        ack_timeout_s=ack_timeout_s,
        max_attempts=max_attempts,
        first_capture_id=first_capture_id,
        boot_time=boot_time,
        max_chunk=max_chunk,
    )
