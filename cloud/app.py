"""The ASGI application: routers, error mapping, request metrics, backend lifecycle."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import cloud
from cloud.api import captures, health, models, stations
from cloud.api.batch import BatchUpload
from cloud.api.limits import BodyLimit, count_refusal, refused, unavailable
from cloud.config import CloudConfig
from cloud.errors import BackendUnavailable
from cloud.service import Service

log = logging.getLogger("fieldstation.cloud")


def create_app(config: CloudConfig, service: Service | None = None) -> FastAPI:
    """Build the app; backends are opened at startup unless a ready `service` is passed in."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own = service is None
        app.state.service = service or await run_in_threadpool(Service.open, config)
        log.info(
            "serving with %s and %s",
            app.state.service.db.describe(),
            app.state.service.store.describe(),
        )
        try:
            yield
        finally:
            if own:
                await run_in_threadpool(app.state.service.close)

    app = FastAPI(
        title="WildCAM cloud sync endpoints",
        version=cloud.__version__,
        description="Stations upload captures, detections and heartbeats, and fetch models. "
        "See cloud/API.md.",
        lifespan=lifespan,
        # off unless asked: Swagger UI comes from a CDN, and a field laptop may have no internet
        docs_url="/docs" if config.server.docs else None,
        redoc_url=None,
    )
    if service is not None:
        app.state.service = service
    for router in (health.router, captures.router, stations.router, models.router):
        app.include_router(router)

    app.add_exception_handler(HTTPException, refused)

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # 400 with one readable reason, as the API contract says (FastAPI's default is 422).
        count_refusal(request, "schema")
        reasons = []
        for problem in exc.errors():
            where = ".".join(str(p) for p in problem.get("loc", ()))
            reasons.append(f"{where}: {problem.get('msg')}")
        return JSONResponse({"detail": "; ".join(reasons) or "invalid request"}, status_code=400)

    @app.exception_handler(BackendUnavailable)
    async def backend_unavailable(request: Request, exc: BackendUnavailable) -> JSONResponse:
        return unavailable(request.url.path, exc)

    # the batch upload ahead of FastAPI's routing (innermost of these: still timed and counted)
    app.add_middleware(BatchUpload)
    app.add_middleware(BodyLimit, limit=config.limits.max_json_bytes)
    app.add_middleware(RequestMetrics)
    return app


class RequestMetrics:
    """Counts requests by route template and status, and times them (plain ASGI middleware:
    Starlette's BaseHTTPMiddleware would re-wrap every body chunk of large uploads)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            # The route template, not the raw path, keeps label cardinality bounded.
            route = getattr(scope.get("route"), "path", "unmatched")
            metrics = scope["app"].state.service.metrics
            metrics.requests.labels(route, str(status)).inc()
            metrics.latency.labels(route).observe(time.perf_counter() - start)
