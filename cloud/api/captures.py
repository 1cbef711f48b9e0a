"""Capture routes: batch upload and lookup (stations), listing and images (operators)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import (
    Admin,
    ServiceDep,
    StationId,
    admit_station,
    authenticate,
    bearer,
    bearer_token,
    get_service,
)
from cloud.errors import NotFound, Refused
from cloud.ingest import RequestError
from cloud.schema import (
    CAPTURE_ID_PATTERN,
    STATION_ID_PATTERN,
    BatchResponse,
    CaptureList,
    ErrorBody,
    LookupRequest,
    LookupResponse,
)
from cloud.service import Service

router = APIRouter(prefix="/v1")
BATCH_PATH = "/v1/captures/batch"

# Beyond this many bytes past the limit we stop draining and drop the connection.
_DRAIN_LIMIT = 64 * 1024 * 1024
# Batches up to this size are checked on the event loop (a few ms), bigger ones on a worker.
_CHECK_ON_LOOP_BYTES = 4 * 1024 * 1024

BATCH_BODY: dict[str, Any] = {
    "required": True,
    "content": {
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "required": ["manifest"],
                "properties": {
                    "manifest": {
                        "type": "string",
                        "description": 'JSON: {"station_id": "...", "items": [CaptureItem, ...]} '
                        "(see the CaptureItem schema)",
                    },
                },
                "additionalProperties": {"type": "string", "format": "binary"},
            },
            "encoding": {"manifest": {"contentType": "application/json"}},
        }
    },
}

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in (
        (400, "unparseable request (reason in detail)"),
        (401, "missing, unknown or revoked token"),
        (403, "token of another station, or not a station token"),
        (413, "body, item or item count over the limits"),
        (429, "station over its rate limit (Retry-After)"),
        (503, "database or object store unavailable (Retry-After)"),
    )
}


async def _read_body(declared: str | None, chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """The whole body, or 413 once it passes `limit` (drained so the client sees the answer)."""
    if declared is not None and declared.isdigit() and int(declared) > limit + _DRAIN_LIMIT:
        raise Refused(
            413, "too_large", f"body of {declared} bytes is over the limit of {limit} bytes"
        )
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size <= limit:
            parts.append(chunk)
        elif size > limit + _DRAIN_LIMIT:
            break
    if size > limit:
        raise Refused(413, "too_large", f"body is over the limit of {limit} bytes")
    return b"".join(parts)


async def answer_batch(
    service: Service,
    authorization: str | None,
    content_type: str,
    declared: str | None,
    chunks: AsyncIterator[bytes],
) -> bytes:
    """The JSON answer to one batch upload, given after its writes are durable; or Refused.

    The same checks as the StationId dependency, called directly; the batch is checked here and
    stored with the other batches waiting (group commit); the answer is serialised once by hand
    (the results are plain dicts of str/None).
    """
    who = await authenticate(service, bearer_token(authorization))
    station_id = admit_station(service, who)
    body = await _read_body(declared, chunks, service.config.limits.max_body_bytes)
    try:
        # Checking is CPU work under the GIL wherever it runs; on the event loop it costs no
        # thread hop. A big body goes to a worker so the loop keeps answering probes meanwhile.
        if len(body) <= _CHECK_ON_LOOP_BYTES:
            batch = service.ingest.check(station_id, content_type, body)
        else:
            batch = await run_in_threadpool(service.ingest.check, station_id, content_type, body)
    except RequestError as exc:
        reason = {403: "wrong_station", 413: "too_large"}.get(exc.status, "bad_manifest")
        raise Refused(exc.status, reason, exc.detail) from exc
    results = await service.ingest.group_commit(batch)
    return json.dumps({"results": results}, ensure_ascii=False, separators=(",", ":")).encode()


@router.post(
    BATCH_PATH.removeprefix("/v1"),
    response_model=BatchResponse,
    responses=ERRORS,
    # The route checks the token itself (see below), so the scheme is declared here.
    openapi_extra={"requestBody": BATCH_BODY, "security": [{bearer.scheme_name: []}]},
    summary="Upload a batch of captures (multipart: manifest + one binary part per image)",
)
async def upload_batch(request: Request) -> Response:
    # Documents the route in the OpenAPI; requests are answered by cloud.api.batch.BatchUpload,
    # ahead of FastAPI's routing, through the same answer_batch (this runs without it).
    headers = request.headers
    answer = await answer_batch(
        await get_service(request),
        headers.get("authorization"),
        headers.get("content-type", ""),
        headers.get("content-length"),
        request.stream(),
    )
    return Response(answer, media_type="application/json")


@router.post(
    "/captures/lookup",
    response_model=LookupResponse,
    responses=ERRORS,
    summary="Which of these capture ids the cloud holds for the calling station",
)
async def lookup(
    body: LookupRequest,
    station_id: StationId,
    service: ServiceDep,
) -> dict[str, Any]:
    held = await run_in_threadpool(service.db.held, station_id, body.capture_ids)
    return {
        "held": {
            cid: {"sha256": sha, "variant": variant} for cid, (sha, variant, _) in held.items()
        }
    }


@router.get(
    "/captures",
    response_model=CaptureList,
    responses=ERRORS,
    summary="Operators: captures by station, time (unix seconds) and detection label",
)
async def list_captures(
    _: Admin,
    service: ServiceDep,
    station_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[float | None, Query(description="capture time >= since")] = None,
    until: Annotated[float | None, Query(description="capture time < until")] = None,
    label: Annotated[str | None, Query(max_length=200)] = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
) -> dict[str, Any]:
    rows = await run_in_threadpool(
        service.db.query_captures, station_id, since, until, label, limit
    )
    captures = []
    for row in rows:
        record = {
            key: getattr(row, key)
            for key in (
                "station_id",
                "capture_id",
                "unit_id",
                "path",
                "sha256",
                "size",
                "received_at",
                "captured_at",
                "uploaded_at",
                "trigger",
                "variant",
                "image_sha256",
                "empty",
                "detections",
                "meta",
            )
        }
        record["image_url"] = (
            f"/v1/captures/{row.station_id}/{row.capture_id}/image" if row.image_key else None
        )
        captures.append(record)
    return {"captures": captures, "count": len(captures)}


@router.get(
    "/captures/{station_id}/{capture_id}/image",
    responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}, 404: {"model": ErrorBody}},
    response_class=Response,
    summary="Operators: the stored image of a capture",
)
async def capture_image(
    station_id: str,
    capture_id: str,
    _: Admin,
    service: ServiceDep,
) -> Response:
    if not re.match(STATION_ID_PATTERN, station_id) or not re.match(CAPTURE_ID_PATTERN, capture_id):
        raise HTTPException(404, "no such capture")
    row = await run_in_threadpool(service.db.get_capture, station_id, capture_id)
    if row is None or row.image_key is None:
        raise HTTPException(404, "no such capture image")
    try:
        data = await run_in_threadpool(service.store.get, row.image_key)
    except NotFound as exc:
        raise HTTPException(404, "image object missing from the store") from exc
    return Response(
        data,
        media_type="image/jpeg",
        headers={"ETag": f'"{row.image_sha256}"', "X-Capture-Variant": row.variant},
    )
