"""Model routes: the manifest (ETag / If-None-Match), artifacts (HTTP Range), rollouts."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, Field, model_validator
from starlette.concurrency import run_in_threadpool

from cloud import rollout
from cloud.api.captures import ERRORS
from cloud.api.deps import Admin, AnyToken, ServiceDep, StationId
from cloud.errors import NotFound, Refused
from cloud.models import NAME_PATTERN
from cloud.schema import STATION_ID_PATTERN, ErrorBody, ModelManifest, bounded

router = APIRouter(prefix="/v1")

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def etag_matches(header: str | None, etag: str) -> bool:
    """If-None-Match: a list of (possibly weak) tags, or '*'."""
    if not header:
        return False
    tags = [t.strip() for t in header.split(",")]
    return "*" in tags or etag in tags or f"W/{etag}" in tags


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single `bytes=` range; None to serve the whole object.

    Raises ValueError for a syntactically valid but unsatisfiable range (416).
    """
    match = _RANGE.match(header.strip())
    if not match or match.groups() == ("", ""):
        return None  # multiple or malformed ranges: RFC 9110 lets us ignore Range
    first, last = match.groups()
    if first == "":
        length = int(last)
        if length == 0:
            raise ValueError("empty suffix range")
        return max(0, size - length), size - 1
    start = int(first)
    end = size - 1 if last == "" else min(int(last), size - 1)
    if start >= size or (last != "" and int(last) < start):
        raise ValueError(f"range {header!r} outside 0..{size - 1}")
    return start, end


@router.get(
    "/models/manifest",
    response_model=ModelManifest,
    responses={**ERRORS, 304: {"description": "unchanged since the If-None-Match ETag"}},
    summary="Published models (ETag; If-None-Match answers 304)",
)
async def manifest(
    request: Request,
    who: AnyToken,
    service: ServiceDep,
) -> Response:
    models = await run_in_threadpool(service.db.list_models)
    targets: list[dict[str, Any]] = []
    if who.role == "station" and who.station_id is not None:
        # what this station should run, computed from the rollouts' state for it
        targets = await run_in_threadpool(rollout.station_manifest, service.db, who.station_id)
    body: dict[str, Any] = {
        "targets": targets,
        "models": [
            {
                "name": m["name"],
                "version": m["version"],
                "sha256": m["sha256"],
                "size": int(m["size"]),
                "url": f"/v1/models/{m['name']}/{m['version']}/artifact",
                "published_at": m["published_at"],
            }
            for m in models
        ],
    }
    payload = json.dumps(body, separators=(",", ":"), sort_keys=True).encode()
    etag = f'"{hashlib.sha256(payload).hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "no-cache"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    return Response(payload, media_type="application/json", headers=headers)


@router.get(
    "/models/{name}/{version}/artifact",
    responses={
        **ERRORS,
        200: {"content": {"application/octet-stream": {}}},
        206: {"description": "the requested byte range"},
        404: {"model": ErrorBody, "description": "unknown model version"},
        416: {"model": ErrorBody, "description": "range not satisfiable"},
    },
    response_class=Response,
    summary="A published model artifact (supports Range, ETag)",
)
async def artifact(
    name: str,
    version: str,
    request: Request,
    _: AnyToken,
    service: ServiceDep,
) -> Response:
    model = await run_in_threadpool(service.db.get_model, name, version)
    if model is None:
        raise Refused(404, "unknown_model", f"no model {name!r} version {version!r}")
    size = int(model["size"])
    etag = f'"{model["sha256"]}"'
    headers = {"ETag": etag, "Accept-Ranges": "bytes"}
    if etag_matches(request.headers.get("if-none-match"), etag):
        return Response(status_code=304, headers=headers)
    range_header = request.headers.get("range")
    if_range = request.headers.get("if-range")
    span = None
    if range_header and (if_range is None or if_range.strip() == etag):
        try:
            span = parse_range(range_header, size)
        except ValueError as exc:
            raise Refused(
                416, "bad_range", str(exc), headers={**headers, "Content-Range": f"bytes */{size}"}
            ) from None
    try:
        if span is None:
            data = await run_in_threadpool(service.store.get, model["object_key"])
            return Response(data, media_type="application/octet-stream", headers=headers)
        start, end = span
        data = await run_in_threadpool(service.store.read_range, model["object_key"], start, end)
    except NotFound as exc:
        raise Refused(404, "artifact_missing", "artifact object missing from the store") from exc
    return Response(
        data,
        status_code=206,
        media_type="application/octet-stream",
        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
    )


# --- rollouts ------------------------------------------------------------------------------------


# Names as `models publish` accepts them: anything else can never match a published model.
ModelName = Annotated[str, Field(pattern=NAME_PATTERN.pattern, max_length=64)]
StationName = Annotated[str, Field(pattern=STATION_ID_PATTERN, max_length=64)]
# A station that has not reported for a month is timed out whatever the operator asked.
MAX_TIMEOUT_S = 30 * 24 * 3600.0


class WaveBody(BaseModel):
    stations: list[StationName] = Field(default_factory=list, max_length=1000)
    cohort: str | None = Field(default=None, min_length=1, max_length=200)
    percent: float | None = Field(default=None, ge=0, le=100)


class RolloutBody(BaseModel):
    name: ModelName
    version: ModelName
    waves: list[WaveBody] = Field(min_length=1, max_length=20)
    success_threshold: float = Field(default=1.0, gt=0, le=1)
    error_threshold: float = Field(default=0.5, gt=0, le=1)
    timeout_s: float = Field(default=3600.0, gt=0, le=MAX_TIMEOUT_S)
    min_agreement: float | None = Field(default=None, ge=0, le=1)


class ModelReport(BaseModel):
    """What model sync reports; its per-model blocks are free-form, so they are bounded."""

    models: dict[Annotated[str, Field(max_length=200)], dict[str, Any]] = Field(
        default_factory=dict, max_length=100
    )

    @model_validator(mode="after")
    def _bounded_free_form(self) -> ModelReport:
        bounded(self.models, "models")
        return self


def spec_of(body: RolloutBody) -> rollout.RolloutSpec:
    return rollout.RolloutSpec(
        waves=tuple(rollout.Wave(tuple(w.stations), w.cohort, w.percent) for w in body.waves),
        success_threshold=body.success_threshold,
        error_threshold=body.error_threshold,
        timeout_s=body.timeout_s,
        min_agreement=body.min_agreement,
    )


@router.post(
    "/models/report",
    responses=ERRORS,
    summary="Stations: what model sync is doing (also accepted inside the heartbeat)",
)
async def report(body: ModelReport, station_id: StationId, service: ServiceDep) -> dict[str, Any]:
    await run_in_threadpool(rollout.apply_report, service.db, station_id, body.model_dump())
    return {"ok": True}


# The operator routes' own refusals, on top of the shared ones.
NOT_PUBLISHED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "the version is not published"}
}
UNKNOWN: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no rollout of this model"}
}
CONFLICT: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "no rollout of this model, or an unknown action"},
    409: {"model": ErrorBody, "description": "the rollout's state does not allow the action"},
}


@router.post(
    "/rollouts",
    responses={**ERRORS, **NOT_PUBLISHED},
    summary="Operators: start a rollout (supersedes)",
)
async def create_rollout(body: RolloutBody, _: Admin, service: ServiceDep) -> dict[str, Any]:
    try:
        await run_in_threadpool(rollout.create, service.db, body.name, body.version, spec_of(body))
    except rollout.RolloutError as exc:
        published = await run_in_threadpool(
            rollout.get_release, service.db, body.name, body.version
        )
        raise Refused(409, "rollout_conflict" if published else "not_published", str(exc)) from None
    return await run_in_threadpool(rollout.status, service.db, body.name)


@router.get(
    "/rollouts/{name}",
    responses={**ERRORS, **UNKNOWN},
    summary="Operators: a model's rollout status",
)
async def rollout_status(name: str, _: Admin, service: ServiceDep) -> dict[str, Any]:
    try:
        return await run_in_threadpool(rollout.status, service.db, name)
    except rollout.RolloutError as exc:
        raise Refused(404, "unknown_rollout", str(exc)) from None


ACTIONS = {
    "promote": rollout.promote,
    "pause": rollout.pause,
    "resume": rollout.resume,
    "cancel": rollout.cancel,
    "rollback": rollout.rollback,
}


@router.post(
    "/rollouts/{name}/{action}",
    responses={**ERRORS, **CONFLICT},
    summary="Operators: promote, pause, resume, cancel or rollback a model's rollout",
)
async def rollout_action(name: str, action: str, _: Admin, service: ServiceDep) -> dict[str, Any]:
    do = ACTIONS.get(action)
    if do is None:
        raise Refused(404, "unknown_action", f"unknown action {action!r}: {', '.join(ACTIONS)}")
    try:
        await run_in_threadpool(do, service.db, name)
    except rollout.RolloutError as exc:
        if not await run_in_threadpool(rollout.rollouts_of, service.db, name):
            raise Refused(404, "unknown_rollout", str(exc)) from None
        raise Refused(409, "rollout_conflict", str(exc)) from None
    return await run_in_threadpool(rollout.status, service.db, name)
