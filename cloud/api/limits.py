"""Bounds on what a request may carry, and one place that counts every refusal by its reason."""

from __future__ import annotations

import logging

from fastapi import Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloud.errors import BackendUnavailable, Refused

log = logging.getLogger("fieldstation.cloud")

# Read past the limit at most this far, so the client gets its 413 instead of a reset.
_DRAIN_LIMIT = 16 * 1024 * 1024
# Routes that read and bound their own body stream (the multipart batch upload).
OWN_LIMIT = frozenset({"/v1/captures/batch"})
# A refusal's reason when the code raising it did not name one.
REASON_BY_STATUS = {
    400: "bad_request",
    401: "unauthorised",
    403: "forbidden",
    413: "too_large",
    415: "bad_request",
    429: "rate_limited",
}


def count_refusal(request: Request, reason: str) -> None:
    request.app.state.service.metrics.rejections.labels(reason).inc()


async def refused(request: Request, exc: Exception) -> Response:
    """The HTTPException handler: count the refusal, then answer as FastAPI would."""
    assert isinstance(exc, HTTPException)
    reason = exc.reason if isinstance(exc, Refused) else REASON_BY_STATUS.get(exc.status_code)
    if reason is not None:
        count_refusal(request, reason)
    return await http_exception_handler(request, exc)


def unavailable(path: str, exc: BackendUnavailable) -> JSONResponse:
    """The 503 answer while the database or object store is down: the client retries later."""
    log.warning("backend unavailable on %s: %s", path, exc)
    return JSONResponse(
        {"detail": "storage backend unavailable, retry later"},
        status_code=503,
        headers={"Retry-After": "5"},
    )


class BodyLimit:
    """Reads each request body whole, up to `limit` bytes, before any route sees it: over the
    limit is 413 (counted as too_large). Plain ASGI, so the body is never copied twice."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OWN_LIMIT:
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length", b"")
        too_large = declared.isdigit() and int(declared) > self.limit
        body = bytearray()
        size = 0
        more = True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                too_large = True
                if size > self.limit + _DRAIN_LIMIT:
                    break
            elif not too_large:
                body += chunk
            more = message.get("more_body", False)
        if too_large:
            scope["app"].state.service.metrics.rejections.labels("too_large").inc()
            detail = f"body is over the limit of {self.limit} bytes"
            response = JSONResponse({"detail": detail}, status_code=413)
            await response(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)
