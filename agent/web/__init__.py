"""The station's local HTTP and the technician's page.

- `app`: the listeners, /healthz, /readyz, /metrics, /api/*, and the unit intake routes;
- `settings`: the `[web]` config section; `auth`: password, sessions, CSRF, login limits;
- `page`: the page's routes (overview, units, captures, flash, config); `views`: what they show;
  `forms`: reading form fields and query strings; `flashing`: the Flash page's job; `thumbs`:
  thumbnails; `cli`: `fieldstation web passwd`; `templates/`, `static/`: what is served.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.web.app import HttpListener, intake_app, main_app, split_listen

# loaded on first use: the config composition imports agent.web.settings without uvicorn
_APP_NAMES = {"HttpListener", "intake_app", "main_app", "split_listen"}


def __getattr__(name: str) -> object:
    if name in _APP_NAMES:
        from agent.web import app

        return getattr(app, name)
    raise AttributeError(f"module 'agent.web' has no attribute {name!r}")


__all__ = ["HttpListener", "intake_app", "main_app", "split_listen"]
