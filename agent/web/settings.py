"""The `[web]` config section: the technician's page, its login and the Flash page's sources."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.config.machinery import opt


@dataclass(frozen=True)
class WebSection:
    enabled: bool = opt(True, help="serve the technician's page at / on the main listener")
    lan: bool = opt(False, help="also serve the page on http.lan_listen (needs web.password_file)")
    password_file: str = opt(
        "",
        help="station password hash written by `fieldstation web passwd`; "
        "empty: no login, the page answers loopback clients only",
    )
    session_hours: float = opt(12.0, help="a login lasts this long", min=0.1, max=720)
    login_attempts: int = opt(
        5, help="failed logins a client may make per login_window_s", min=1, max=1000
    )
    login_window_s: float = opt(
        300.0, help="window for login_attempts; then the client waits", min=1, max=86400
    )
    firmware: str = opt(
        "", help="ESP-IDF build folder or merged .bin the Flash page writes to units"
    )
    virtual_boards_dir: str = opt(
        "", help="folder of virtual boards (*.flash) the Flash page lists beside serial ports"
    )
    refresh_s: float = opt(3.0, help="how often an open page asks for news", min=0.5, max=300)

    def check(self) -> Iterator[tuple[str, str]]:
        if self.lan and not self.password_file:
            yield "lan", "the page on the LAN listener needs web.password_file (a login)"
