"""The power routes of the station's local API: the state, and a technician's hold."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent.power.settings import parse_duration
from agent.power.worker import PowerWorker


def power_routes(get_worker: Callable[[], PowerWorker | None]) -> list[Route]:
    """Routes over the station's power worker (looked up per request: it is built after HTTP)."""

    async def power(request: Request) -> Response:
        worker = get_worker()
        if worker is None:
            return JSONResponse({"error": "the power manager is off ([power] enabled)"}, 404)
        return JSONResponse(await asyncio.to_thread(worker.status))

    async def hold(request: Request) -> Response:
        worker = get_worker()
        if worker is None:
            return JSONResponse({"error": "the power manager is off ([power] enabled)"}, 404)
        if request.method == "DELETE":
            await asyncio.to_thread(worker.hold, 0, "api")
            return JSONResponse(await asyncio.to_thread(worker.status))
        try:
            body = await request.json()
        except (ValueError, RecursionError):
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict) or "duration" not in body:
            return JSONResponse(
                {"error": 'body must be a JSON object with "duration", e.g. "30m"'},
                status_code=400,
            )
        try:
            seconds = parse_duration(body["duration"])
        except ValueError as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        reason = str(body.get("reason") or "api")[:80]
        await asyncio.to_thread(worker.hold, seconds, reason)
        return JSONResponse(await asyncio.to_thread(worker.status))

    return [
        Route("/api/power", power),
        Route("/api/power/hold", hold, methods=["POST", "DELETE"]),
    ]
