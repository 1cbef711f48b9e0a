"""Model routes: the manifest (ETag / If-None-Match) and artifacts (HTTP Range)."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from starlette.concurrency import run_in_threadpool

from cloud.api.captures import ERRORS
from cloud.api.deps import AnyToken, ServiceDep
from cloud.errors import NotFound
from cloud.schema import ErrorBody, ModelManifest

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
    _: AnyToken,
    service: ServiceDep,
) -> Response:
    models = await run_in_threadpool(service.db.list_models)
    body: dict[str, Any] = {
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
        ]
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
        404: {"model": ErrorBody},
        416: {"description": "range not satisfiable"},
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
        raise HTTPException(404, f"no model {name!r} version {version!r}")
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
        except ValueError:
            return Response(
                status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"}
            )
    try:
        if span is None:
            data = await run_in_threadpool(service.store.get, model["object_key"])
            return Response(data, media_type="application/octet-stream", headers=headers)
        start, end = span
        data = await run_in_threadpool(service.store.read_range, model["object_key"], start, end)
    except NotFound as exc:
        raise HTTPException(404, "artifact object missing from the store") from exc
    return Response(
        data,
        status_code=206,
        media_type="application/octet-stream",
        headers={**headers, "Content-Range": f"bytes {start}-{end}/{size}"},
    )
