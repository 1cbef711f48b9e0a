"""The upload wire schema shared by the station and the cloud: the batch manifest and its variants.

Plain Python (no pydantic, no station runtime imports), so `cloud.schema` builds its validating
models on these names and the station builds its manifest items from the same definition.
"""

from __future__ import annotations

from typing import Any, Literal, TypedDict

Variant = Literal["full", "thumbnail", "blurred", "none"]
# Higher replaces lower at the cloud on a duplicate upload ("none" is metadata only); a station
# counts a capture uploaded once its final variant (or better) is held.
VARIANT_RANK: dict[str, int] = {"none": 0, "thumbnail": 1, "blurred": 2, "full": 3}

CAPTURE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
PART_NAME_PATTERN = r"^[A-Za-z0-9._-]{1,64}$"
MANIFEST_PART = "manifest"  # the multipart part holding the JSON manifest; images follow


class ManifestItem(TypedDict):
    """One capture in a batch manifest; `image_part` names the multipart part holding its bytes."""

    capture_id: str
    unit_id: str
    path: Literal["serial", "mqtt", "http"]
    sha256: str  # hex sha256 of the original JPEG
    size: int  # bytes of the original JPEG
    received_at: float  # unix seconds, station clock
    captured_at: float | None
    unit_time: int | None
    unit_time_kind: Literal["boot_ms", "epoch_ms", "epoch_s"] | None
    trigger: str | None
    variant: Variant
    image_part: str | None
    image_sha256: str | None
    empty: bool | None
    detections: list[dict[str, Any]]  # JSON objects with the cloud's Detection fields
    meta: dict[str, Any]  # free-form JSON the unit or station attached


class BatchManifest(TypedDict):
    """The `manifest` part of one batch request."""

    station_id: str
    items: list[ManifestItem]


def rank(variant: str | None) -> int:
    """The variant's rank; -1 for nothing held or a name this version does not know."""
    return VARIANT_RANK.get(variant or "", -1)
