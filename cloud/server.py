"""Running the service under uvicorn (SIGTERM/SIGINT: stop accepting, finish requests, close)."""

from __future__ import annotations

import logging

import uvicorn

from cloud.app import create_app
from cloud.config import CloudConfig, parse_listen


def serve(config: CloudConfig) -> None:
    """Serve until SIGTERM or SIGINT; uvicorn drains open requests, then the lifespan closes backends."""
    host, port = parse_listen(config.server.listen)
    logging.basicConfig(
        level=config.server.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
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
    server.run()
