"""Wire schema of the `/v1/` API (pydantic models, also the source of the OpenAPI document)."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

# The manifest's names are shared with the station (one definition, no station runtime imports).
from agent.upload.manifest import CAPTURE_ID_PATTERN, PART_NAME_PATTERN, SHA256_PATTERN, Variant

# Station ids end up in object keys and file names: same alphabet as capture ids, no ':'.
STATION_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"

Unit01 = Annotated[float, Field(ge=0.0, le=1.0)]

# Free-form JSON a station may attach (capture meta, heartbeat extras) is kept, so it is bounded.
FREE_FORM_MAX_BYTES = 16 * 1024
FREE_FORM_MAX_DEPTH = 8


def bounded(value: Any, what: str) -> Any:
    """Return `value` if it nests at most FREE_FORM_MAX_DEPTH levels and serialises to at most
    FREE_FORM_MAX_BYTES, else raise ValueError saying which bound it broke."""
    if not value:  # {} (the usual meta) or None: within both bounds, no need to serialise it
        return value
    depth, level = 0, [(value, 1)]
    while level:  # iterative: a hostile document must not be able to exhaust the stack
        node, d = level.pop()
        depth = max(depth, d)
        if depth > FREE_FORM_MAX_DEPTH:
            raise ValueError(f"{what} nests deeper than {FREE_FORM_MAX_DEPTH} levels")
        if isinstance(node, dict):
            level.extend((v, d + 1) for v in node.values())
        elif isinstance(node, list):
            level.extend((v, d + 1) for v in node)
    size = len(json.dumps(value, separators=(",", ":")))
    if size > FREE_FORM_MAX_BYTES:
        raise ValueError(f"{what} is {size} bytes as JSON; the limit is {FREE_FORM_MAX_BYTES}")
    return value


class Detection(BaseModel):
    # Newer stations may add fields; an older cloud ignores them rather than refuse the capture.
    model_config = ConfigDict(extra="ignore")

    label: str = Field(min_length=1, max_length=200)
    group: Literal["animal", "person", "vehicle", "other"]
    score: Unit01
    box: list[Unit01] | None = Field(
        default=None,
        description="[x, y, w, h] normalised to 0..1 from the top-left; null = whole image",
    )
    model: str = Field(default="", max_length=200)
    model_version: str = Field(default="", max_length=100)

    @field_validator("box")
    @classmethod
    def _four_numbers(cls, box: list[float] | None) -> list[float] | None:
        if box is not None and len(box) != 4:
            raise ValueError("box must be [x, y, w, h]")
        return box


class CaptureItem(BaseModel):
    """One capture in a batch manifest; `image_part` names the multipart part holding its bytes."""

    # Fields this version does not know are kept in meta["_extra"] rather than refused or lost.
    model_config = ConfigDict(extra="allow")

    capture_id: str = Field(pattern=CAPTURE_ID_PATTERN)
    unit_id: str = Field(min_length=1, max_length=128)
    path: Literal["serial", "mqtt", "http"]
    sha256: str = Field(pattern=SHA256_PATTERN, description="hex sha256 of the original JPEG")
    size: int = Field(ge=0, description="bytes of the original JPEG")
    received_at: float = Field(description="unix seconds, station clock")
    captured_at: float | None = None
    unit_time: int | None = None
    unit_time_kind: Literal["boot_ms", "epoch_ms", "epoch_s"] | None = None
    trigger: str | None = Field(default=None, max_length=64)
    variant: Variant
    image_part: str | None = Field(default=None, pattern=PART_NAME_PATTERN)
    image_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)
    empty: bool | None = None
    detections: list[Detection] = Field(default_factory=list, max_length=500)
    meta: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _bounded_free_form(self) -> CaptureItem:
        bounded(self.meta, "meta")
        bounded(self.model_extra or {}, "fields this version does not know")
        return self


class BatchManifest(BaseModel):
    """The `manifest` part; items are validated one by one so one bad item rejects only itself."""

    station_id: str
    items: list[dict[str, Any]]


class ValidManifest(BaseModel):
    """A manifest whose items are all valid, validated from its JSON in one call (the usual case:
    a third of the cost of parsing it and then validating each item)."""

    station_id: str
    items: list[CaptureItem]


class ItemResult(BaseModel):
    capture_id: str | None
    status: Literal["stored", "duplicate", "conflict", "rejected"]
    reason: str | None = None


class BatchResponse(BaseModel):
    results: list[ItemResult]


class LookupRequest(BaseModel):
    capture_ids: list[Annotated[str, Field(max_length=128)]] = Field(max_length=1000)


class HeldCapture(BaseModel):
    sha256: str
    variant: str


class LookupResponse(BaseModel):
    held: dict[str, HeldCapture]


class QueueState(BaseModel):
    depth: int = Field(ge=0)
    bytes: int = Field(ge=0)
    by_state: dict[Annotated[str, Field(max_length=32)], int] = Field(
        default_factory=dict, max_length=16
    )


class DiskState(BaseModel):
    free_bytes: int = Field(ge=0)
    total_bytes: int = Field(ge=0)


class Heartbeat(BaseModel):
    # Stations may add fields in later versions; keep them rather than refuse the heartbeat.
    model_config = ConfigDict(extra="allow")

    station_id: str = Field(max_length=64)
    time: float
    power_state: str | None = Field(default=None, max_length=64)
    battery: dict[str, Any] | None = None
    queue: QueueState | None = None
    disk: DiskState | None = None
    models: dict[Annotated[str, Field(max_length=200)], Annotated[str, Field(max_length=200)]] = (
        Field(default_factory=dict, max_length=100)
    )
    units_seen: list[Annotated[str, Field(max_length=128)]] = Field(
        default_factory=list, max_length=1000
    )
    software_version: str | None = Field(default=None, max_length=100)

    @model_validator(mode="after")
    def _bounded_free_form(self) -> Heartbeat:
        bounded(self.battery or {}, "battery")
        bounded(self.model_extra or {}, "fields this version does not know")
        return self


class HeartbeatResponse(BaseModel):
    ok: bool
    server_time: float


class Ping(BaseModel):
    ok: bool
    time: float


class ModelEntry(BaseModel):
    name: str
    version: str
    sha256: str
    size: int
    url: str
    published_at: float


class ModelManifest(BaseModel):
    models: list[ModelEntry]


class StationInfo(BaseModel):
    station_id: str
    created_at: float
    revoked: bool
    latitude: float | None
    longitude: float | None
    last_heartbeat_at: float | None
    last_heartbeat: dict[str, Any] | None
    captures: int


class StationList(BaseModel):
    stations: list[StationInfo]


class CaptureRecord(BaseModel):
    station_id: str
    capture_id: str
    unit_id: str
    path: str
    sha256: str
    size: int
    received_at: float
    captured_at: float | None
    uploaded_at: float
    trigger: str | None
    variant: str
    image_sha256: str | None
    image_url: str | None
    empty: bool | None
    detections: list[Detection]
    meta: dict[str, Any]


class CaptureList(BaseModel):
    captures: list[CaptureRecord]
    count: int


class ErrorBody(BaseModel):
    detail: str


def reason_of(error: ValidationError) -> str:
    """One readable line per validation failure: `field.path: message`."""
    parts = []
    for problem in error.errors():
        where = ".".join(str(p) for p in problem["loc"]) or "item"
        parts.append(f"{where}: {problem['msg']}")
    return "; ".join(parts)
