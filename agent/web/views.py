"""What the page shows, read through the same station calls as `/api/status` and the CLI.

Each function returns plain data for a template; nothing here writes.
"""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from agent import protocol as p
from agent.store import STATES

if TYPE_CHECKING:
    from agent.config import Config
    from agent.daemon import Station
    from agent.power.history import StoredReading

SECRET_KEY = re.compile(r"(token|password|passwd|secret|pass)$|^wifi_pass")
CONFIG_FIELDS = (
    "capture_interval_s",
    "frame_size",
    "jpeg_quality",
    "pir_enabled",
    "sleep_start_min",
    "sleep_end_min",
)


# --- words ----------------------------------------------------------------------------------------


def ago(at: float | None, now: float | None = None) -> str:
    """'12 s ago', '5 min ago', '3 h ago', '2 d ago' (or 'never')."""
    if not at:
        return "never"
    s = max(0.0, (now or time.time()) - at)
    if s < 90:
        return f"{s:.0f} s ago"
    if s < 5400:
        return f"{s / 60:.0f} min ago"
    if s < 2 * 86400:
        return f"{s / 3600:.0f} h ago"
    return f"{s / 86400:.0f} d ago"


def size(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def minute_of_day(m: int) -> str:
    return f"{m // 60:02d}:{m % 60:02d}"


def quiet_words(start: int, end: int) -> str:
    if start == p.NO_QUIET_PERIOD or end == p.NO_QUIET_PERIOD:
        return "none"
    return f"{minute_of_day(start)}-{minute_of_day(end)}"


# --- overview -------------------------------------------------------------------------------------


def overview(station: Station) -> dict[str, Any]:
    """Health, backlog, uploads, disk, power and models: the first screen."""
    st = station.status()
    ready, why = station.ready()
    now = time.time()
    q = st["queue"]
    oldest = q.get("oldest_pending")
    alarms = [f"{a['kind']} {a['subject']}: {a['message']}" for a in st["health"]]
    alarms += [str(a["message"]) for a in st["alarms"]]
    upload = st.get("upload")
    disk_free = station.store.disk_free()
    quota = q["quota_bytes"] or 1
    # the buffer's own alarms (storage_quota, storage_full, ...) do not fail /readyz: say them here
    notes = [f"{a['kind']}: {a['message']}" for a in st["alarms"]]
    notes += link_notes(upload, q["pending"])
    words = why if not ready else "every worker runs" if notes else ALL_WELL
    return {
        "station_id": st["station_id"],
        "version": st["version"],
        "uptime": ago(now - st["uptime_s"], now).replace(" ago", ""),
        "ready": ready,
        "ready_words": "; ".join([words, *notes]),
        "workers": st["workers"],
        "alarms": alarms,
        "pending": q["pending"],
        "pending_bytes": size(q["pending_bytes"]),
        "oldest": None
        if oldest is None
        else {
            "id": oldest["id"],
            "unit": oldest["unit_id"],
            "age": ago(oldest["received_at"], now),
        },
        "by_state": {s: q["by_state"][s]["count"] for s in STATES},
        "stored": size(q["stored_image_bytes"]),
        "quota": size(q["quota_bytes"]),
        "quota_pct": min(100, round(100 * q["stored_image_bytes"] / quota)),
        "disk_free": size(disk_free),
        "upload": _upload(upload) if upload else None,
        "power": _power(station, st.get("power"), now),
        "models": _models(st.get("inference"), st.get("modelsync")),
    }


ALL_WELL = "every worker runs and nothing is unwell"


def link_notes(upload: dict[str, Any] | None, pending: int) -> list[str]:
    """What is no alarm (a station without a link is normal) but must not read as all well."""
    if not upload or not upload.get("enabled") or upload.get("online") is not False:
        return []
    why = ", ".join(
        f"{e['name']}: {e.get('last_error') or e.get('breaker', '?')}"
        for e in upload.get("endpoints", [])
    )
    return [f"uploads offline: no sync endpoint answers ({why}); {pending} captures wait here"]


def _upload(u: dict[str, Any]) -> dict[str, Any]:
    budget = u.get("daily_budget_bytes")
    return {
        "state": u.get("state", "?"),
        "online": u.get("online"),
        "paused": u.get("paused"),
        "today": size(u.get("bytes_today")),
        "budget": size(budget) if budget else "no budget",
        "budget_pct": min(100, round(100 * u.get("bytes_today", 0) / budget)) if budget else 0,
        "window": ("open" if u.get("window_open") else "closed")
        + (f" ({', '.join(u['windows'])})" if u.get("windows") else " (any time)"),
        "last_error": u.get("last_error"),
        "endpoints": [
            {
                "name": e["name"],
                "breaker": e.get("breaker", "?"),
                "retry_in_s": e.get("retry_in_s", 0),
                "in_doubt": e.get("in_doubt", 0),
                "held": e.get("held", 0),
                "today": size(e.get("bytes_today", 0)),
                "last_error": e.get("last_error"),
            }
            for e in u.get("endpoints", [])
        ],
    }


def _power(station: Station, pw: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    if pw is None or station.power is None:
        return None
    reading = pw.get("reading") or {}
    points = station.power.history.readings(now - 86400)
    return {
        "state": str(pw.get("state", "?")).upper(),
        "reason": pw.get("reason", ""),
        "soc": reading.get("soc"),
        "voltage": reading.get("voltage_v"),
        "charging": pw.get("charging"),
        "hold_until": time.strftime("%H:%M", time.localtime(pw["hold_until"]))
        if pw.get("hold_until")
        else None,
        "runway": (pw.get("runway") or {}).get("hours_to_empty"),
        "chart": power_chart(points, now),
    }


def power_chart(points: Sequence[StoredReading], now: float) -> dict[str, Any]:
    """SVG polylines over the last 24 h in a 240x60 box: battery % and solar input (W).

    Where no source reports solar input, the second line is the battery's net power instead.
    """
    if not points:
        return {"soc": "", "solar": "", "watts": "", "zero_y": 30, "max_w": 0, "n": 0}
    start = now - 86400
    step = max(1, len(points) // 240)  # at most ~240 points: the chart stays a few hundred bytes
    pts = points[::step]

    def x(at: float) -> float:
        return round(240 * (at - start) / 86400, 1)

    soc = " ".join(f"{x(r.at)},{round(60 - 0.6 * r.soc, 1)}" for r in pts if r.soc is not None)
    sun = [r for r in pts if r.solar_w is not None]
    if sun:  # 0 W on the bottom edge, the day's peak at the top
        top = max([1.0, *(r.solar_w or 0.0 for r in sun)])
        solar = " ".join(f"{x(r.at)},{round(60 - 58 * (r.solar_w or 0.0) / top, 1)}" for r in sun)
        return {
            "soc": soc,
            "solar": solar,
            "watts": "",
            "zero_y": 60,
            "max_w": round(top, 1),
            "n": len(points),
        }
    watts = [r.power_w for r in pts if r.power_w is not None]
    top = max([1.0, *(abs(w) for w in watts)])
    pw = " ".join(
        f"{x(r.at)},{round(30 - 28 * r.power_w / top, 1)}" for r in pts if r.power_w is not None
    )
    return {
        "soc": soc,
        "solar": "",
        "watts": pw,
        "zero_y": 30,
        "max_w": round(top, 1),
        "n": len(points),
    }


def _models(inf: dict[str, Any] | None, ms: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {"running": inf["models"] if inf else [], "rollout": None}
    out["policy"] = inf["person_policy"] if inf else None
    if ms:
        job = ms.get("job")
        out["rollout"] = {
            "model": ms.get("model"),
            "active": ms.get("active"),
            "probation": ms.get("probation"),
            "job": _job_words(job) if isinstance(job, dict) else job,
        }
    return out


def _job_words(job: dict[str, Any]) -> str:
    """'2.1.0 downloading (40 of 120 KB), rollout r-7' from model sync's job record."""
    words = f"{job.get('version') or 'manifest'} {job.get('state', '?')}"
    if job.get("size"):
        words += f" ({size(job.get('bytes', 0))} of {size(job['size'])})"
    if job.get("reason"):
        words += f": {job['reason']}"
    if job.get("rollout_id"):
        words += f", rollout {job['rollout_id']}"
    return words


# --- units ----------------------------------------------------------------------------------------


@dataclass
class PushedConfig:
    """A config the page sent to a unit, until its CONFIG_REPORT says it runs it."""

    fields: dict[str, int]
    at: float


@dataclass
class PushedConfigs:
    by_unit: dict[str, PushedConfig] = field(default_factory=dict)

    def pushed(self, unit_id: str, fields: dict[str, int]) -> None:
        self.by_unit[unit_id] = PushedConfig(dict(fields), time.time())

    def state(self, unit_id: str, reported: dict[str, Any] | None) -> str | None:
        """None (nothing pushed), 'confirmed' or 'waiting'."""
        push = self.by_unit.get(unit_id)
        if push is None:
            return None
        if reported and all(reported.get(k) == v for k, v in push.fields.items()):
            return "confirmed"
        return "waiting"


def units(station: Station, pushed: PushedConfigs) -> list[dict[str, Any]]:
    """One card per unit, in unit id order."""
    now = time.time()
    last = station.store.last_capture_of_units()
    per_unit = station.store.queue_summary()["per_unit"]
    cards = []
    for row in station.store.units():
        uid = row["unit_id"]
        config = json.loads(row["config"]) if row["config"] else None
        states = per_unit.get(uid, {}).get("by_state", {})
        capture = last.get(uid)
        cards.append(
            {
                "id": uid,
                "name": row["name"] or "",
                "last_seen": ago(row["last_seen"], now),
                "stale": now - row["last_seen"] > 3 * 3600,
                "path": row["last_path"] or "-",
                "link": station.unit_link(uid),
                "battery": f"{row['battery_mv'] / 1000:.2f} V" if row["battery_mv"] else "-",
                "signal": f"{row['rssi_dbm']} dBm" if row["rssi_dbm"] is not None else "-",
                "firmware": row["firmware_version"] or "-",
                "chip": row["chip"] or "",
                "pending_unit": row["pending_captures"],
                "pending_station": states.get("received", 0) + states.get("analysed", 0),
                "config": config,
                "config_words": config_words(config),
                "push": pushed.state(uid, config),
                "last_capture": capture_card(station, capture, []) if capture else None,
            }
        )
    return cards


def config_words(c: dict[str, Any] | None) -> str:
    if not c:
        return "not reported yet"
    return (
        f"every {c['capture_interval_s']} s, frame {c['frame_size']}, quality {c['jpeg_quality']}, "
        f"PIR {'on' if c['pir_enabled'] else 'off'}, "
        f"quiet {quiet_words(c['sleep_start_min'], c['sleep_end_min'])}"
    )


# --- captures -------------------------------------------------------------------------------------


def shown_variant(station: Station, row: sqlite3.Row) -> tuple[str | None, str]:
    """Which stored image the page may show under the privacy policy, or None and why not."""
    variant = row["upload_variant"]
    if row["state"] == "evicted":
        return None, "evicted to keep the buffer under its quota"
    if variant == "none":
        return None, "withheld: people in view (privacy policy drop)"
    if variant == "blurred":
        return "blurred", ""
    c = station.config.inference
    if c.enabled and c.person_policy != "keep" and row["analysis"] is None:
        return None, "waiting for analysis (privacy policy)"
    return "original", ""


def capture_card(
    station: Station, row: sqlite3.Row, detections: list[sqlite3.Row] | list[dict[str, Any]]
) -> dict[str, Any]:
    variant, why = shown_variant(station, row)
    boxes = []
    for d in detections:
        if d["x"] is None:
            continue
        boxes.append(
            {
                "label": d["label"],
                "score": round(100 * d["score"]),
                "group": d["grp"],
                "left": round(100 * d["x"], 1),
                "top": round(100 * d["y"], 1),
                "width": round(100 * d["w"], 1),
                "height": round(100 * d["h"], 1),
            }
        )
    labels = sorted({str(d["label"]) for d in detections})
    # changes whenever the card would look different (the page's live update compares it)
    sig = hashlib.sha1(
        json.dumps([row["state"], variant, boxes], sort_keys=True).encode()
    ).hexdigest()[:10]
    return {
        "sig": sig,
        "id": row["id"],
        "unit": row["unit_id"],
        "state": row["state"],
        "received_at": row["received_at"],
        "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(row["received_at"])),
        "ago": ago(row["received_at"]),
        "size": size(row["size"]),
        "variant": variant,
        "hidden_why": why,
        "boxes": boxes,
        "labels": labels,
        "empty": row["empty"],
    }


@dataclass(frozen=True)
class CaptureFilter:
    unit: str = ""
    label: str = ""
    state: str = ""

    def query(self) -> str:
        return "&".join(f"{k}={v}" for k, v in vars(self).items() if v)


def captures(
    station: Station, f: CaptureFilter, *, after: float | None = None, limit: int = 24
) -> list[dict[str, Any]]:
    rows = station.store.latest_captures(
        unit_id=f.unit or None,
        label=f.label or None,
        state=f.state or None,
        after=after,
        limit=limit,
    )
    dets = station.store.detections_of([r["id"] for r in rows]) if rows else {}
    return [capture_card(station, r, dets.get(r["id"], [])) for r in rows]


def capture_detail(station: Station, capture_id: str) -> dict[str, Any] | None:
    """The capture page: image, detections, state history and where it was uploaded."""
    from agent.upload import ledger

    row = station.store.get_capture(capture_id)
    if row is None:
        return None
    dets = station.store.detections(capture_id)
    card = capture_card(station, row, [d for d in dets if d["parent_id"] is None])
    with station.store.read() as conn:
        deliveries = ledger.deliveries_of(conn, capture_id)
    analysis = json.loads(row["analysis"]) if row["analysis"] else None
    history = [("received", row["received_at"], f"over {row['path']}, {size(row['size'])}")]
    if row["captured_at"]:
        history.insert(0, ("captured", row["captured_at"], f"trigger {row['trigger'] or '-'}"))
    if analysis is not None:
        history.append(("analysed", None, "empty" if row["empty"] else "detections below"))
    for d in deliveries:
        if d["held_variant"]:
            history.append(
                ("uploaded", d["updated_at"], f"{d['held_variant']} held by {d['endpoint']}")
            )
        elif d["doubt_variant"]:
            history.append(
                ("in doubt", d["updated_at"], f"{d['doubt_variant']} sent to {d['endpoint']}")
            )
    history.append((f"now {row['state']}", row["state_changed_at"], row["error"] or ""))
    card.update(
        {
            "path": row["path"],
            "trigger": row["trigger"] or "-",
            "sha256": row["sha256"],
            "upload_variant": row["upload_variant"],
            "detections": [
                {
                    "label": d["label"],
                    "group": d["grp"],
                    "score": f"{d['score']:.2f}",
                    "box": "whole frame"
                    if d["x"] is None
                    else f"{d['x']:.2f}, {d['y']:.2f}, {d['w']:.2f} x {d['h']:.2f}",
                    "model": f"{d['model']}@{d['model_version']}",
                    "child": d["parent_id"] is not None,
                }
                for d in dets
            ],
            "history": [
                {
                    "what": what,
                    "when": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(at)) if at else "",
                    "detail": detail,
                }
                for what, at, detail in history
            ],
            "deliveries": deliveries,
            "analysis": json.dumps(analysis, indent=1, sort_keys=True) if analysis else None,
        }
    )
    return card


# --- config ---------------------------------------------------------------------------------------


def redacted(config: Config) -> dict[str, dict[str, Any]]:
    """The effective config with every secret value replaced (files holding secrets stay named)."""

    def clean(key: str, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(k, v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(key, v) for v in value]
        if SECRET_KEY.search(key) and value:
            return "(set, hidden)"
        return value

    return {name: clean(name, values) for name, values in config.as_dict().items()}
