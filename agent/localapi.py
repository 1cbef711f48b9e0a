"""The running daemon's local HTTP API as the commands reach it: its address, its status
document, and unit commands (`fieldstation status`, `fieldstation units command`)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from agent.config import Config

if TYPE_CHECKING:
    import requests  # imported by send_command: `status` and `--help` stay quick without it


class DaemonUnreachable(ConnectionError):
    """No daemon answers on http.listen."""


def base_url(config: Config) -> str:
    """http://HOST:PORT of the main listener, a wildcard address read as loopback."""
    host, _, port = config.http.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def daemon_status(config: Config) -> dict[str, Any] | None:
    """The daemon's /api/status document, or None when it does not answer."""
    # one loopback GET with the standard library's client: no 0.1-0.3 s import of requests
    import http.client

    address = base_url(config).removeprefix("http://")
    conn = http.client.HTTPConnection(address, timeout=1.5)
    try:
        conn.request("GET", "/api/status")
        r = conn.getresponse()
        if r.status >= 400:
            return None
        data = json.loads(r.read())
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    return data if isinstance(data, dict) else None


def send_command(config: Config, unit_id: str, body: dict[str, Any]) -> requests.Response:
    """POST a unit command to the daemon; DaemonUnreachable when nothing answers."""
    import requests

    try:
        return requests.post(
            f"{base_url(config)}/api/units/{unit_id}/commands", json=body, timeout=15
        )
    except requests.ConnectionError as exc:
        raise DaemonUnreachable(f"no daemon answers on {config.http.listen}") from exc
