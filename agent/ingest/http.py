"""HTTP intake compatible with the deployed WildCAM ESP32 firmware.

Units point their server URL at the station unchanged. The firmware counts only these as success:
200 or 201 for register and upload, exactly 200 for status -- so every route answers exactly that
on success and a 4xx with a JSON `error` reason otherwise.
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message

from agent import protocol as p
from agent.capture import Capture, capture_time, classify_unit_time
from agent.metrics import Metrics
from agent.store import Store, StoreError, disk_full

log = logging.getLogger(__name__)

DEVICE_ID_RE = re.compile(r"^[0-9a-f]{1,32}$")


class IntakeError(Exception):
    """A request the station refuses; `reason` is the metric label, `detail` goes to the unit."""

    def __init__(self, status: int, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.reason = reason
        self.detail = detail


class Intake:
    """The three WildCAM firmware routes, bound to one buffer."""

    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        token: str = "",
        max_body_bytes: int = 5 << 20,
        max_capture_bytes: int = 4 << 20,
        unit_clock_skew_s: float = 900.0,
        clock: Callable[[], float] = time.time,
        on_stored: Callable[[str, str, bool], None] | None = None,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_capture_bytes = max_capture_bytes
        self.unit_clock_skew_s = unit_clock_skew_s
        self.clock = clock
        self.on_stored = on_stored

    def routes(self) -> list[Route]:
        return [
            Route("/api/cameras/register", self._wrap(self.register), methods=["POST"]),
            Route("/api/detections", self._wrap(self.detections), methods=["POST"]),
            Route("/api/cameras/{device_id}/status", self._wrap(self.status), methods=["POST"]),
        ]

    def _wrap(
        self, handler: Callable[[Request], Awaitable[JSONResponse]]
    ) -> Callable[[Request], Awaitable[JSONResponse]]:
        async def endpoint(request: Request) -> JSONResponse:
            try:
                try:
                    self._authorise(request)
                    return await handler(await self._read_body(request))
                except (sqlite3.Error, StoreError) as exc:
                    raise _storage_refusal(exc) from exc
            except IntakeError as exc:
                self.metrics.rejected.labels("http", exc.reason).inc()
                if request.url.path == "/api/detections":
                    self.metrics.captures.labels("http", "rejected").inc()
                log.warning(
                    "http: %s %s refused (%s): %s",
                    request.method,
                    request.url.path,
                    exc.reason,
                    exc.detail,
                )
                return JSONResponse(
                    {"error": exc.detail, "reason": exc.reason}, status_code=exc.status
                )

        return endpoint

    def _authorise(self, request: Request) -> None:
        if not self.token:
            return
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            value.strip().encode(), self.token.encode()
        ):
            raise IntakeError(401, "unauthorised", "missing or wrong bearer token")

    async def _read_body(self, request: Request) -> Request:
        """Read the whole body under the size limit, so the parsers below never see more.

        Returns a request over the bytes already read (json() and form() replay them).
        """
        declared = request.headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.max_body_bytes:
                    raise IntakeError(
                        413, "too_large", f"body of {declared} bytes is above {self.max_body_bytes}"
                    )
            except ValueError:
                raise IntakeError(400, "bad_request", "Content-Length is not a number") from None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body_bytes:
                raise IntakeError(413, "too_large", f"body is above {self.max_body_bytes} bytes")
        data = bytes(body)
        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:  # a second read means the client went away, as starlette expects
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": data, "more_body": False}

        return Request(request.scope, replay)

    # --- routes ---------------------------------------------------------------------------------

    async def register(self, request: Request) -> JSONResponse:
        data = await _json_object(request)
        device_id = _device_id(data.get("device_id"))
        fields: dict[str, object] = {}
        for key, column in (
            ("name", "name"),
            ("location_name", "location_name"),
            ("firmware_version", "firmware_version"),
        ):
            value = data.get(key)
            if value is not None:
                if not isinstance(value, str) or len(value) > 200:
                    raise IntakeError(400, "bad_field", f"{key} must be a string of ≤200 chars")
                fields[column] = value
        for key in ("latitude", "longitude"):
            value = data.get(key)
            if value is not None:
                limit = 90 if key == "latitude" else 180
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not -limit <= value <= limit
                ):
                    raise IntakeError(400, "bad_field", f"{key} must be a number within ±{limit}")
                fields[key] = float(value)
        await run_in_threadpool(self.store.update_unit, device_id, "http", **fields)
        self.metrics.telemetry.labels("http", "register").inc()
        log.info("http: unit %s registered (%s)", device_id, fields.get("name", ""))
        return JSONResponse({"status": "registered", "device_id": device_id}, status_code=200)

    async def detections(self, request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise IntakeError(415, "bad_request", "expected multipart/form-data")
        try:
            form = await request.form(max_files=2, max_fields=8, max_part_size=64 * 1024)
        except HTTPException as exc:  # starlette's wrapping of a multipart parse error
            raise IntakeError(400, "bad_multipart", f"multipart body: {exc.detail}") from None
        except (MultiPartException, ValueError, KeyError, UnicodeDecodeError) as exc:
            raise IntakeError(
                400, "bad_multipart", f"multipart body does not parse: {exc}"
            ) from None
        try:
            meta_part = form.get("metadata")
            if meta_part is None:
                raise IntakeError(400, "missing_metadata", "no part named 'metadata'")
            if isinstance(meta_part, UploadFile):
                meta_raw = await meta_part.read(64 * 1024 + 1)
            else:
                meta_raw = meta_part.encode()
            meta = _parse_json_object(meta_raw, "metadata")
            image_part = form.get("image")
            if not isinstance(image_part, UploadFile):
                raise IntakeError(400, "missing_image", "no file part named 'image'")
            jpeg = await image_part.read(self.max_capture_bytes + 1)
        finally:
            await form.close()
        device_id = _device_id(meta.get("device_id"))
        timestamp = meta.get("timestamp")
        if isinstance(timestamp, bool) or not isinstance(timestamp, int):
            raise IntakeError(400, "bad_timestamp", "metadata.timestamp must be an integer")
        if not 0 <= timestamp < 2**63:
            raise IntakeError(400, "bad_timestamp", "metadata.timestamp is out of range")
        if len(jpeg) > self.max_capture_bytes:
            raise IntakeError(413, "too_large", f"image is above {self.max_capture_bytes} bytes")
        if not jpeg or not p.is_jpeg(jpeg):
            raise IntakeError(400, "not_jpeg", "image part is not a JPEG (no FF D8 … FF D9)")
        extra = _optional_meta(meta)
        received_at = self.clock()
        # WildCAM sends millis() since boot: a date only when it agrees with our own clock.
        kind = classify_unit_time(timestamp, received_at, self.unit_clock_skew_s)
        uptime_ms = extra.get("unit_uptime_ms")
        file_path = extra.get("unit_file_path")
        captured_at, source = capture_time(
            timestamp,
            kind,
            received_at,
            uptime_ms=uptime_ms if isinstance(uptime_ms, int) else None,
            file_name=file_path if isinstance(file_path, str) else None,
            skew_s=self.unit_clock_skew_s,
        )
        extra["time_source"] = source
        capture = Capture(
            unit_id=device_id,
            unit_ref=f"t{timestamp}",
            path="http",
            jpeg=jpeg,
            received_at=received_at,
            unit_time=timestamp,
            unit_time_kind=kind,
            trigger="unit",
            meta=extra,
            estimated_at=None if source == "unit_clock" else captured_at,
        )
        result = await run_in_threadpool(self.store.add_capture, capture)
        if result.duplicate:
            self.metrics.captures.labels("http", "duplicate").inc()
        else:
            self.metrics.captures.labels("http", "stored").inc()
            self.metrics.capture_bytes.labels("http").inc(len(jpeg))
        if self.on_stored:
            self.on_stored(device_id, result.capture_id, result.duplicate)
        # the commit is durable before this response is written
        return JSONResponse(
            {
                "status": "duplicate" if result.duplicate else "stored",
                "capture_id": result.capture_id,
            },
            status_code=200 if result.duplicate else 201,
        )

    async def status(self, request: Request) -> JSONResponse:
        device_id = _device_id(request.path_params["device_id"])
        data = await _json_object(request)
        values: dict[str, float | None] = {}
        for key, lo, hi in (
            ("battery_level", 0, 100),
            ("battery_voltage", 0, 30),
            ("temperature", -80, 100),
            ("humidity", 0, 100),
        ):
            value = data.get(key)
            if value is None:
                if key in ("battery_level", "battery_voltage"):
                    raise IntakeError(400, "bad_field", f"{key} is required")
                values[key] = None
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise IntakeError(400, "bad_field", f"{key} must be a number")
            if not lo <= value <= hi:
                raise IntakeError(400, "bad_field", f"{key} {value} is outside {lo}…{hi}")
            values[key] = float(value)
        voltage = values["battery_voltage"]
        await run_in_threadpool(
            self.store.add_telemetry,
            device_id,
            "http",
            battery_mv=None if voltage is None else round(voltage * 1000),
            battery_level=values["battery_level"],
            temperature_c=values["temperature"],
            humidity=values["humidity"],
        )
        self.metrics.telemetry.labels("http", "status").inc()
        return JSONResponse({"status": "ok"}, status_code=200)


async def _json_object(request: Request) -> dict[str, Any]:
    return _parse_json_object(await request.body(), "body")


def _parse_json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise IntakeError(400, "bad_json", f"{what} is not JSON: {exc}") from None
    except RecursionError:  # [[[[...]]]] a few KiB deep exhausts the parser's stack
        raise IntakeError(400, "bad_json", f"{what} nests too deeply") from None
    if not isinstance(data, dict):
        raise IntakeError(400, "bad_json", f"{what} must be a JSON object")
    return data


def _storage_refusal(exc: BaseException) -> IntakeError:
    """The buffer could not take it: 507 for a full disk, 503 for anything else; the unit keeps
    its copy and retries, and the daemon carries on."""
    if disk_full(exc):
        return IntakeError(507, "storage_full", f"the station's disk is full: {exc}")
    log.error("http: buffer error: %s", exc)
    return IntakeError(503, "storage_error", f"the station's buffer failed: {exc}")


def _device_id(value: object) -> str:
    if not isinstance(value, str) or not DEVICE_ID_RE.match(value):
        raise IntakeError(
            400, "bad_device_id", f"device_id {value!r} is not a lowercase hex string (1–32)"
        )
    return value


def _optional_meta(meta: dict[str, Any]) -> dict[str, object]:
    out: dict[str, object] = {}
    species = meta.get("species")
    if species is not None:
        if not isinstance(species, str) or len(species) > 100:
            raise IntakeError(400, "bad_field", "species must be a string of ≤100 chars")
        out["unit_species"] = species
    confidence = meta.get("confidence")
    if confidence is not None:
        if isinstance(confidence, bool) or not isinstance(confidence, (int, float)):
            raise IntakeError(400, "bad_field", "confidence must be a number")
        if not 0 <= confidence <= 1:
            raise IntakeError(400, "bad_field", "confidence must be within 0…1")
        out["unit_confidence"] = float(confidence)
    file_path = meta.get("file_path")
    if file_path is not None:
        if not isinstance(file_path, str) or len(file_path) > 255:
            raise IntakeError(400, "bad_field", "file_path must be a string of ≤255 chars")
        out["unit_file_path"] = file_path
    uptime = meta.get("uptime_ms")
    if uptime is not None:
        if isinstance(uptime, bool) or not isinstance(uptime, int) or not 0 <= uptime < 2**63:
            raise IntakeError(400, "bad_field", "uptime_ms must be a non-negative integer")
        out["unit_uptime_ms"] = uptime
    return out
