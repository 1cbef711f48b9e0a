"""Station routes: heartbeat (stations) and the station list (operators)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from cloud import rollout
from cloud.api.captures import ERRORS
from cloud.api.deps import Admin, ServiceDep, StationId, forbid_other_station
from cloud.schema import Heartbeat, HeartbeatResponse, StationList

router = APIRouter(prefix="/v1")


@router.post(
    "/heartbeat",
    response_model=HeartbeatResponse,
    responses=ERRORS,
    summary="Station state: power, battery, queue, disk, models, units seen",
)
async def heartbeat(
    body: Heartbeat,
    station_id: StationId,
    service: ServiceDep,
) -> dict[str, Any]:
    forbid_other_station(station_id, body.station_id)
    now = time.time()
    await run_in_threadpool(service.db.record_heartbeat, station_id, body.model_dump(), now)
    report = (body.model_extra or {}).get("modelsync")
    if isinstance(report, dict):  # model sync's report rides along
        await run_in_threadpool(rollout.apply_report, service.db, station_id, report, now)
    service.metrics.heartbeats.inc()
    return {"ok": True, "server_time": now}


@router.get(
    "/stations",
    response_model=StationList,
    responses=ERRORS,
    summary="Operators: stations with their last heartbeat",
)
async def list_stations(_: Admin, service: ServiceDep) -> dict[str, Any]:
    return {"stations": await run_in_threadpool(service.db.list_stations)}
