"""Reading the page's forms and query strings: each value checked, each refusal in words."""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from starlette.requests import Request

from agent import protocol as p
from agent.store import STATES
from agent.web import views

# one-line limits the config form checks before anything is sent (the unit checks again)
CONFIG_LIMITS = {
    "capture_interval_s": (0, 86400, "timer interval, s (0 = PIR only)"),
    "frame_size": (0, 30, "frame size (esp32-camera framesize_t)"),
    "jpeg_quality": (0, 63, "JPEG quality"),
}
SLEEP_LIMIT_S = 7 * 86400
HOLDS = {"30m": "30 min", "2h": "2 h", "6h": "6 h", "0": "end the hold"}  # the page's choices


def form_int(form: Mapping[str, object], key: str, lo: int, hi: int, what: str) -> int:
    """A whole number from lo to hi, or ValueError naming the field in the technician's words."""
    raw = str(form.get(key, "")).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"{what} must be a whole number, not {raw!r}") from None
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be between {lo} and {hi}, not {value}")
    return value


def quiet_minutes(text: str) -> tuple[int, int]:
    """'22:00-05:30' as minutes after midnight; empty means no quiet period."""
    text = text.strip()
    if not text:
        return p.NO_QUIET_PERIOD, p.NO_QUIET_PERIOD
    m = re.fullmatch(r"([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-3]):([0-5]\d)", text)
    if not m:
        raise ValueError(f"quiet period {text!r} must look like 22:00-05:00 (or be empty)")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    return h1 * 60 + m1, h2 * 60 + m2


def command_body(action: str, form: Mapping[str, object]) -> dict[str, Any]:
    """The body `POST /api/units/{id}/commands` takes, from the page's form (ValueError: why not)."""
    if action == "capture_now":
        return {"command": "capture_now", "request_id": secrets.randbelow(1 << 16)}
    if action == "sleep_now":
        return {
            "command": "sleep_now",
            "duration_s": form_int(form, "duration_s", 1, SLEEP_LIMIT_S, "sleep time"),
        }
    if action == "config":
        body: dict[str, Any] = {"command": "config"}
        for key, (lo, hi, what) in CONFIG_LIMITS.items():
            body[key] = form_int(form, key, lo, hi, what)
        body["pir_enabled"] = 1 if form.get("pir_enabled") == "1" else 0
        body["sleep_start_min"], body["sleep_end_min"] = quiet_minutes(str(form.get("quiet", "")))
        return body
    raise ValueError(f"action {action!r} is not capture_now, sleep_now or config")


def capture_filter(request: Request) -> views.CaptureFilter:
    q = request.query_params
    state = q.get("state", "")
    return views.CaptureFilter(
        unit=q.get("unit", "")[:64],
        label=q.get("label", "")[:64],
        state=state if state in STATES else "",
    )


def known_cards(text: str) -> dict[str, str]:
    """'id~sig,id~sig' (what the page shows now) as {id: sig}."""
    out: dict[str, str] = {}
    for item in text.split(",")[:200]:
        cid, _, sig = item.partition("~")
        if cid:
            out[cid] = sig
    return out


def thumb_url(card: dict[str, Any] | None) -> str | None:
    if not card or not card["variant"]:
        return None
    return f"/captures/{quote(card['id'])}/thumb.jpg?v={card['variant']}"


def safe_next(target: str) -> str:
    """Only our own paths: a login must never send the browser elsewhere."""
    return target if re.fullmatch(r"/[A-Za-z0-9/_.\-]*", target) and "//" not in target else "/"
