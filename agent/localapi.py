"""The running daemon's local HTTP API as the commands reach it: its address, its status
document, and unit commands (`fieldstation status`, `fieldstation units command`)."""

from __future__ import annotations

from typing import Any

import requests

from agent.config import Config


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
    try:
        r = requests.get(f"{base_url(config)}/api/status", timeout=1.5)
        r.raise_for_status()
        data = r.json()
    except (requests.RequestException, ValueError):
        return None
    return data if isinstance(data, dict) else None


def send_command(config: Config, unit_id: str, body: dict[str, Any]) -> requests.Response:
    """POST a unit command to the daemon; DaemonUnreachable when nothing answers."""
    try:
        return requests.post(
            f"{base_url(config)}/api/units/{unit_id}/commands", json=body, timeout=15
        )
    except requests.ConnectionError as exc:
        raise DaemonUnreachable(f"no daemon answers on {config.http.listen}") from exc
