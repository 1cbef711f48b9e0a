"""Probes and metrics: /v1/ping (stations), /healthz, /readyz, /metrics."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.concurrency import run_in_threadpool

from cloud.api.deps import ServiceDep
from cloud.errors import BackendUnavailable
from cloud.schema import Ping

router = APIRouter()


@router.get("/v1/ping", response_model=Ping, summary="Cheap connectivity probe (no auth)")
async def ping() -> dict[str, Any]:
    return {"ok": True, "time": time.time()}


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, Any]:
    return {"ok": True}


@router.get("/readyz", summary="Readiness: database and object store answer")
async def readyz(service: ServiceDep) -> Response:
    problems = []
    for name, check in (("database", service.db.ping), ("storage", service.store.ping)):
        try:
            await run_in_threadpool(check)
        except BackendUnavailable as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        return JSONResponse(
            {"ok": False, "problems": problems}, status_code=503, headers={"Retry-After": "5"}
        )
    return JSONResponse({"ok": True})


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(service: ServiceDep) -> Response:
    return Response(generate_latest(service.metrics.registry), media_type=CONTENT_TYPE_LATEST)
