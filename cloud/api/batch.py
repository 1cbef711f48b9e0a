"""The batch upload answered as plain ASGI, ahead of FastAPI's routing.

The busiest route: FastAPI's router, request wrapper, dependency solving and exception middleware
cost more per batch than its checks do. The answers are those of the documented route in
cloud.api.captures (the same answer_batch); that route stays for the OpenAPI document.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cloud.api.captures import BATCH_PATH, answer_batch
from cloud.api.limits import unavailable
from cloud.errors import BackendUnavailable, Refused
from cloud.service import Service

WANTED = (b"authorization", b"content-type", b"content-length")


class BatchUpload:
    """Answers POST /v1/captures/batch itself; every other request goes on to the app."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # the route in Starlette's terms: RequestMetrics labels requests by its path
        self.route = Route(BATCH_PATH, self, methods=["POST"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != BATCH_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        scope["route"] = self.route
        headers: dict[bytes, str] = {}
        for name, value in scope["headers"]:
            if (
                name in WANTED and name not in headers
            ):  # the first of repeated headers, as Starlette
                headers[name] = value.decode("latin-1")
        service: Service = scope["app"].state.service
        response: Response
        try:
            answer = await answer_batch(
                service,
                headers.get(b"authorization"),
                headers.get(b"content-type", ""),
                headers.get(b"content-length"),
                _body(receive),
            )
            response = Response(answer, media_type="application/json")
        except Refused as exc:
            service.metrics.rejections.labels(exc.reason).inc()
            response = JSONResponse({"detail": exc.detail}, exc.status_code, exc.headers)
        except BackendUnavailable as exc:
            response = unavailable(scope["path"], exc)
        except ClientDisconnect:
            return  # nobody to answer; nothing was stored (the body was not complete)
        await response(scope, receive, send)


async def _body(receive: Receive) -> AsyncIterator[bytes]:
    """The request body's chunks as they arrive (Request.stream() without the Request)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        chunk = message.get("body", b"")
        if chunk:
            yield chunk
        if not message.get("more_body", False):
            return
