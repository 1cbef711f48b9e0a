"""`fieldstation units list|command`: the camera units this station has seen, and commands to
them through the running daemon (the same path as `POST /api/units/{unit_id}/commands`)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from agent.config import ConfigError, load_config
from agent.install import station_data_dir
from agent.localapi import DaemonUnreachable, send_command
from agent.store import BUFFER_FILE, Store, StoreError

EXIT_CODES = """exit status:
  0  done
  1  the daemon refused the command (unit not seen on serial or MQTT, a value out of range)
  2  bad usage, or the config or buffer cannot be read
  3  no daemon answers on http.listen"""


def add_subcommands(subparsers: Any) -> None:
    """Add `units list` and `units command` to the fieldstation command."""
    units = subparsers.add_parser("units", help="camera units seen here; send them commands")
    sub = units.add_subparsers(dest="units_command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config", type=Path, default=None,
            help="station TOML (default /etc/fieldstation/station.toml if present)",
        )  # fmt: skip
        sp.add_argument("--data-dir", type=Path, default=None, help="override station.data_dir")

    lst = sub.add_parser(
        "list",
        help="every unit the buffer knows: path, last seen, battery, firmware, its settings",
    )
    with_config(lst)
    lst.add_argument("--json", action="store_true", help="print the units as JSON")
    lst.set_defaults(func=cmd_units_list)

    cmd = sub.add_parser(
        "command",
        help="send CONFIG, CAPTURE_NOW or SLEEP_NOW to a unit through the running daemon",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(cmd)
    cmd.add_argument("unit_id", help="the unit, as `units list` shows it")
    cmd.add_argument(
        "what", choices=["config", "capture-now", "sleep-now"], help="the command to send"
    )
    cmd.add_argument("--interval", type=int, help="config: timer capture interval, s (0: PIR only)")
    cmd.add_argument("--frame-size", type=int, help="config: esp32-camera framesize_t (8 = VGA)")
    cmd.add_argument("--jpeg-quality", type=int, help="config: 0-63, lower is better")
    cmd.add_argument("--no-pir", action="store_true", help="config: do not wake on the PIR")
    cmd.add_argument("--duration", type=int, default=0, help="sleep-now: seconds (0: until PIR)")
    cmd.add_argument("--json", action="store_true", help="print the daemon's answer as JSON")
    cmd.set_defaults(func=cmd_units_command)


def cmd_units_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    data_dir, found_by = station_data_dir(config.station.data_dir, args.data_dir)
    try:
        store = Store(data_dir / BUFFER_FILE, readonly=True)
    except StoreError as exc:
        print(f"fieldstation: {exc} (folder from {found_by}; --data-dir DIR)", file=sys.stderr)
        return 2
    try:
        units = [dict(u) for u in store.units()]
    finally:
        store.close()
    if args.json:
        print(json.dumps(units, indent=2, default=str))
        return 0
    if not units:
        print(f"no units seen yet (buffer {data_dir / BUFFER_FILE}, from {found_by})")
        return 0
    now = time.time()
    print(f"{'UNIT':<18} {'PATH':<6} {'LAST SEEN':<12} {'BATTERY':<8} {'FIRMWARE':<16} MAC")
    for u in units:
        battery = f"{u['battery_mv']} mV" if u.get("battery_mv") else "-"
        seen = _ago(now - u["last_seen"]) if u.get("last_seen") else "-"
        print(
            f"{u['unit_id']:<18} {u.get('last_path') or '-':<6} {seen:<12} {battery:<8} "
            f"{u.get('firmware_version') or '-':<16} {u.get('mac') or '-'}"
        )
    return 0


def command_body(args: argparse.Namespace) -> dict[str, Any]:
    """The JSON body `POST /api/units/{unit_id}/commands` takes for the parsed arguments."""
    if args.what == "capture-now":
        return {"command": "capture_now"}
    if args.what == "sleep-now":
        return {"command": "sleep_now", "duration_s": args.duration}
    missing = [
        flag
        for flag, value in (
            ("--interval", args.interval),
            ("--frame-size", args.frame_size),
            ("--jpeg-quality", args.jpeg_quality),
        )
        if value is None
    ]
    if missing:
        raise ValueError(f"config needs {', '.join(missing)}")
    return {
        "command": "config",
        "capture_interval_s": args.interval,
        "frame_size": args.frame_size,
        "jpeg_quality": args.jpeg_quality,
        "pir_enabled": 0 if args.no_pir else 1,
    }


def cmd_units_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
        body = command_body(args)
        answer = send_command(config, args.unit_id, body)
    except ConfigError:  # a ValueError too: main() reports it with its line
        raise
    except ValueError as exc:
        print(f"fieldstation units command: {exc}", file=sys.stderr)
        return 2
    except DaemonUnreachable as exc:
        print(f"fieldstation units command: {exc} (is `fieldstation run` up?)", file=sys.stderr)
        return 3
    try:
        doc = answer.json()
    except ValueError:
        doc = {"error": answer.text.strip() or f"HTTP {answer.status_code}"}
    if args.json:
        print(json.dumps(doc, indent=2))
    elif answer.ok:
        print(f"sent {doc.get('sent', '?')} to {args.unit_id}")
    else:
        print(f"fieldstation units command: {doc.get('error', doc)}", file=sys.stderr)
    return 0 if answer.ok else 1


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"
