"""Running the service under uvicorn (SIGTERM/SIGINT: stop accepting, finish requests, close)."""

from __future__ import annotations

import logging
import signal
from types import FrameType

import uvicorn

from cloud.app import create_app
from cloud.config import CloudConfig, parse_listen


def serve(config: CloudConfig) -> None:
    """Serve until SIGTERM or SIGINT; uvicorn drains open requests, then the lifespan closes backends."""
    host, port = parse_listen(config.server.listen)
    logging.basicConfig(
        level=config.server.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(config),
            host=host,
            port=port,
            log_level=config.server.log_level,
            lifespan="on",
            timeout_graceful_shutdown=config.server.shutdown_timeout,
            # Stations sit behind NATs and proxies; their address is not trusted for anything.
            proxy_headers=False,
            server_header=False,
        )
    )
    # uvicorn re-raises the stop signal after its graceful shutdown so the default action would
    # kill us with -SIGTERM; a no-op handler makes a requested stop an ordinary exit 0 instead.
    previous = {sig: signal.signal(sig, _stopped) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        server.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _stopped(signum: int, frame: FrameType | None) -> None:
    """Placeholder handler: the stop was already handled by uvicorn."""
