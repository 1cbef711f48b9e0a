"""The station's local HTTP: health, readiness, metrics, status, and the unit intake routes.

The main listener (loopback by default) serves everything; the optional LAN listener serves only
the intake routes, so units on Wi-Fi never reach the operator endpoints (plus the station page,
behind its login, when web.lan says so).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from agent.ingest.http import Intake
from agent.metrics import Metrics

log = logging.getLogger(__name__)


def main_app(
    intake: Intake,
    metrics: Metrics,
    status: Callable[[], dict[str, Any]],
    ready: Callable[[], tuple[bool, str]],
    command: Callable[[str, dict[str, Any]], dict[str, Any]] | None = None,
    extra_routes: Sequence[BaseRoute] = (),
) -> Starlette:
    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok\n")

    async def readyz(request: Request) -> Response:
        ok, why = ready()
        return PlainTextResponse(
            ("ready\n" if ok else f"not ready: {why}\n"), status_code=200 if ok else 503
        )

    async def metrics_route(request: Request) -> Response:
        body = await asyncio.to_thread(metrics.render)
        return Response(body, media_type="text/plain; version=0.0.4; charset=utf-8")

    async def api_status(request: Request) -> Response:
        return JSONResponse(await asyncio.to_thread(status))

    async def unit_command(request: Request) -> Response:
        if command is None:
            return JSONResponse({"error": "commands are not available"}, status_code=404)
        try:
            body = await request.json()
        except (ValueError, RecursionError):  # RecursionError: [[[[...]]]] nested too deeply
            return JSONResponse({"error": "body is not JSON"}, status_code=400)
        if not isinstance(body, dict):
            return JSONResponse({"error": "body must be a JSON object"}, status_code=400)
        try:
            result = await asyncio.to_thread(command, request.path_params["unit_id"], body)
        except LookupError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        except ConnectionError as exc:
            return JSONResponse({"error": str(exc)}, status_code=503)
        return JSONResponse(result)

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_route),
        Route("/api/status", api_status),
        Route("/api/units/{unit_id}/commands", unit_command, methods=["POST"]),
        *extra_routes,  # components' own routes (power)
        *intake.routes(),
    ]
    return Starlette(routes=routes)


def intake_app(intake: Intake, extra_routes: Sequence[BaseRoute] = ()) -> Starlette:
    """The LAN listener: the intake routes, plus the page when web.lan says so."""
    return Starlette(routes=[*intake.routes(), *extra_routes])


def split_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


class QuietServer(uvicorn.Server):
    """uvicorn's server ticking once a second, not ten times, and stopped at once from a thread.

    Its tick refreshes the Date header (one-second resolution anyway) and looks for should_exit:
    with uvicorn's own 0.1 s tick an idle station woke 600 times a minute per listener for it.
    """

    _loop: asyncio.AbstractEventLoop | None = None
    _exit: asyncio.Event | None = None

    async def main_loop(self) -> None:
        self._exit = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        counter = 0
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000  # on_tick renews the Date header at multiples of 10
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)

    def exit_soon(self) -> None:
        """Ask the server to stop, waking its loop now rather than at the next tick."""
        self.should_exit = True
        loop, event = self._loop, self._exit
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):  # the loop has closed already
                loop.call_soon_threadsafe(event.set)


class HttpListener:
    """A uvicorn server in a worker thread (no signal handlers: the daemon owns signals)."""

    def __init__(self, name: str, app: Starlette, listen: str) -> None:
        self.name = name
        self.app = app
        self.host, self.port = split_listen(listen)
        self._server: QuietServer | None = None

    def run(self, stop: threading.Event) -> None:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
        )
        server = QuietServer(config)
        self._server = server

        def watch() -> None:
            stop.wait()
            server.exit_soon()

        watcher = threading.Thread(
            target=watch,
            name=f"{self.name}-stop",
            daemon=True,
        )
        watcher.start()
        try:
            server.run()  # in a worker thread uvicorn installs no signal handlers
        except SystemExit:  # uvicorn exits this way when it cannot bind
            raise RuntimeError(f"HTTP listener cannot listen on {self.host}:{self.port}") from None
        if not stop.is_set():
            raise RuntimeError(f"HTTP listener on {self.host}:{self.port} stopped unexpectedly")

    def wait_started(self, timeout: float = 10.0) -> bool:
        """True once the socket is bound (tests and the demo wait on it)."""
        pause = threading.Event()
        for _ in range(int(timeout / 0.05)):
            if self._server is not None and self._server.started:
                return True
            pause.wait(0.05)
        return False
