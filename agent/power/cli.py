"""`fieldstation power [--json]` and `fieldstation power hold 30m`.

Asks the running daemon; when it is down, reads the configured sources itself and says so, so a
technician can check a station that will not start.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from agent.bufferlock import BufferInUse, BufferLock
from agent.config import Config, load_config
from agent.install import station_data_dir
from agent.power.history import Hold, PowerHistory
from agent.power.settings import parse_duration
from agent.store import BUFFER_FILE, Store, StoreError

VEDIRECT_WAIT_S = 3.0  # a Victron device sends a block every second


def add_subcommands(subparsers: Any) -> None:
    """Add `power` and `power hold` to the fieldstation command."""
    power = subparsers.add_parser(
        "power", help="battery, solar, power state, runway; hold the station awake"
    )
    _common(power, None)
    psub = power.add_subparsers(dest="power_command")
    hold = psub.add_parser("hold", help="keep NORMAL behaviour for a while, e.g. `power hold 30m`")
    hold.add_argument("duration", help='how long: "30m", "2h", "900" (seconds); 0 ends a hold')
    hold.add_argument("--reason", default="technician", help="shown with the hold")
    _common(hold, argparse.SUPPRESS)
    power.set_defaults(func=cmd_power)
    hold.set_defaults(func=cmd_hold)


def _common(sp: argparse.ArgumentParser, default: Any) -> None:
    # the subcommand's copies must not overwrite what was given before `hold`
    sp.add_argument("--config", type=Path, default=default, help="station TOML")
    sp.add_argument("--data-dir", type=Path, default=default, help="override station.data_dir")
    sp.add_argument("--http", metavar="HOST:PORT", default=default, help="where the daemon listens")
    sp.add_argument("--json", action="store_true", default=default or False, help="print JSON")


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if args.http:
        config = config.replace("http", listen=args.http)
    return config


def _base_url(config: Config) -> str:
    host, _, port = config.http.listen.rpartition(":")
    host = host.strip("[]")
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _ask_daemon(config: Config) -> dict[str, Any] | None:
    import requests  # here, not at the top: `fieldstation --help` builds this parser

    try:
        r = requests.get(_base_url(config) + "/api/power", timeout=2)
    except requests.RequestException:
        return None
    if r.status_code != 200:
        return None
    try:
        return r.json()
    except ValueError:
        return None


def read_directly(config: Config, data_dir: Path) -> dict[str, Any]:
    """The power status without the daemon: read every source once, next to the stored history."""
    from agent.power.worker import PowerWorker  # prometheus-client: only when reading directly

    buffer = data_dir / BUFFER_FILE
    tmp: tempfile.TemporaryDirectory[str] | None = None
    store: Store | None = None
    try:
        if buffer.exists():
            store = Store(buffer, readonly=True)
            if not PowerHistory.present(store):
                store.close()
                store = None
        if store is None:  # no buffer (yet) or one without power tables: an empty history
            tmp = tempfile.TemporaryDirectory(prefix="fieldstation-power-")
            store = Store(Path(tmp.name) / BUFFER_FILE, check_on_start=False)
        worker = PowerWorker(config.power, store, observe_only=True)
        try:
            for src in worker.sources:
                wait = getattr(src, "wait", None)
                if wait is not None:
                    wait(VEDIRECT_WAIT_S)
            worker.tick()
            doc = worker.status()
        finally:
            worker.close()
    finally:
        if store is not None:
            store.close()
        if tmp is not None:
            tmp.cleanup()
    doc["note"] = "daemon not running: read the sources directly"
    return doc


def cmd_power(args: argparse.Namespace) -> int:
    config = _config(args)
    doc = _ask_daemon(config)
    if doc is None:
        data_dir, _ = station_data_dir(config.station.data_dir, args.data_dir)
        doc = read_directly(config, data_dir)
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(render(doc, time.time()))
    return 0


def cmd_hold(args: argparse.Namespace) -> int:
    import requests

    config = _config(args)
    try:
        seconds = parse_duration(args.duration)
    except ValueError as exc:
        raise SystemExit(f"fieldstation: {exc}") from None
    url = _base_url(config) + "/api/power/hold"
    try:
        if seconds == 0:
            r = requests.delete(url, timeout=5)
        else:
            r = requests.post(url, json={"duration": seconds, "reason": args.reason}, timeout=5)
    except requests.RequestException:
        r = None
    if r is not None and r.status_code == 200:
        doc = r.json()
    elif r is not None and r.status_code != 404:
        raise SystemExit(f"fieldstation: the daemon refused the hold: {r.text.strip()}")
    else:
        # daemon down: store the hold where the daemon finds it when it starts
        data_dir, found_by = station_data_dir(config.station.data_dir, args.data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        lock = BufferLock(data_dir)
        try:
            lock.acquire()  # a daemon that runs but does not answer keeps its buffer to itself
        except BufferInUse as exc:
            raise SystemExit(
                f"fieldstation: {exc}; it does not answer on {config.http.listen} (--http?)"
            ) from None
        try:
            store = Store(data_dir / BUFFER_FILE)
        except StoreError as exc:
            lock.release()
            raise SystemExit(f"fieldstation: {exc} (folder from {found_by})") from None
        try:
            now = time.time()
            PowerHistory(store).set_hold(Hold(now + seconds, now, args.reason) if seconds else None)
        finally:
            store.close()
            lock.release()
        doc = read_directly(config, data_dir)
        doc["note"] = "daemon not running: the hold is stored and applies when it starts"
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
    else:
        print(render(doc, time.time()))
    return 0


# --- text ----------------------------------------------------------------------------------------


def status_lines(doc: dict[str, Any]) -> list[str]:
    """The power part of `fieldstation status`: state, charge, and units not yet confirmed."""
    r = doc.get("reading") or {}
    charge = f"{r['soc']:.0f}% ({r['source']})" if r.get("soc") is not None else "no reading"
    state = doc["state"].upper()
    if doc["measured"] != doc["state"]:
        state += f" (held; the battery says {doc['measured'].upper()})"
    charging = {True: "charging", False: "not charging", None: "charging unknown"}[doc["charging"]]
    lines = [f"power     {state}, {charging}, {charge}"]
    waiting = [u["unit_id"] for u in doc.get("units", []) if u["confirmed"] is False]
    if waiting:
        lines.append(
            f"  units that have not confirmed the {doc['state'].upper()} config: "
            + ", ".join(waiting)
        )
    return lines


def render(doc: dict[str, Any], now: float) -> str:
    """The power status as a technician reads it."""
    lines = []
    state = doc["state"].upper()
    measured = doc["measured"].upper()
    charging = {True: "charging", False: "not charging", None: "charging unknown"}[doc["charging"]]
    label = state if state == measured else f"{state} (held; the battery says {measured})"
    lines.append(f"power     {label}, {charging}")
    if doc.get("note"):
        lines.append(f"          {doc['note']}")
    lines.append(f"reason    {doc['reason']}")
    if doc["time_in_state_s"] is None:
        lines.append("in state  unknown (no power history here yet)")
    else:
        lines.append(f"in state  {_duration(doc['time_in_state_s'])}")
    if doc.get("hold_until"):
        left = doc["hold_until"] - now
        lines.append(f"hold      NORMAL held for {_duration(max(0.0, left))} more")
        if doc.get("hold_note"):
            lines.append(f"          {doc['hold_note']}")
    else:
        lines.append("hold      none")
    if not doc["sources"]:
        lines.append("sources   none configured ([[power.sources]])")
    for i, src in enumerate(doc["sources"]):
        head = "sources   " if i == 0 else "          "
        lines.append(head + _source_line(src))
    lines.append("runway    " + _runway_line(doc["runway"], doc["energy"]))
    pol = doc["policy"]
    uploads = ("allowed" if pol["uploads_allowed"] else "held back") + f": {pol['uploads']}"
    downloads = "allowed" if pol["downloads_allowed"] else "not now (NORMAL and charging only)"
    lines.append(f"policy    inference {pol['inference']}; uploads {uploads}")
    lines.append(f"          model downloads {downloads}")
    uc = pol["unit_config"]
    quiet = (
        "no quiet period"
        if uc["sleep_start_min"] == 0xFFFF
        else f"quiet {_hhmm(uc['sleep_start_min'])}-{_hhmm(uc['sleep_end_min'])}"
    )
    lines.append(
        f"          units every {uc['capture_interval_s']} s, frame size {uc['frame_size']}, "
        f"quality {uc['jpeg_quality']}, PIR {'on' if uc['pir_enabled'] else 'off'}, {quiet}"
    )
    for u in doc["units"]:
        battery = f"{u['battery_v']:.2f} V" if u["battery_v"] else "no battery reading"
        if u["confirmed"] is None:
            conf = ""
        elif u["confirmed"]:
            conf = ", config confirmed"
        else:
            conf = ", has NOT confirmed the config" + (f" ({u['note']})" if u["note"] else "")
        if u.get("technician"):
            conf += ", the technician's settings until the state changes"
        lines.append(f"unit      {u['unit_id']}: {battery}{conf}")
    if doc.get("critical"):
        lines.append(f"critical  {doc['critical']}")
    return "\n".join(lines)


def _source_line(src: dict[str, Any]) -> str:
    r = src.get("reading")
    parts = [f"{src['name']:<18}"]
    if r:
        for key, fmt in (
            ("soc", "{:.0f}%"),
            ("voltage_v", "{:.2f} V"),
            ("current_a", "{:+.2f} A"),
            ("power_w", "{:+.1f} W"),
            ("solar_w", "panel {:.0f} W"),
        ):
            if r.get(key) is not None:
                parts.append(fmt.format(r[key]))
        parts.append(f"{_duration(src['age_s'])} old")
    parts.append("trusted" if src["trusted"] else f"NOT trusted ({src['flag']})")
    if src.get("error") and not src["trusted"]:
        parts.append(f"- {src['error']}")
    return "  ".join(parts)


def _runway_line(runway: dict[str, Any], energy: dict[str, Any]) -> str:
    if runway["hours_to_empty"] is not None:
        text = f"at this rate the battery lasts {runway['hours_to_empty']:.0f} h"
    elif runway["hours_to_full"] is not None:
        text = f"full in about {runway['hours_to_full']:.1f} h"
    else:
        text = "not enough history for an estimate yet"
    if runway.get("rate_pct_per_h") is not None:
        text += f" (trend {runway['rate_pct_per_h']:+.1f} %/h)"
    if energy.get("joules_per_capture") is not None:
        text += f"; each capture costs about {energy['joules_per_capture']:.2g} J"
    return text


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _hhmm(minutes: int) -> str:
    return f"{minutes // 60:02d}:{minutes % 60:02d}"
