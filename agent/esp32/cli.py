"""`fieldstation esp32 flash|configure|inventory|monitor|simulate` (wired in by agent/cli.py)."""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from agent.esp32.flash import FlashError


def _err(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def cmd_flash(args: argparse.Namespace) -> int:
    from agent.esp32.flash import flash

    try:
        if not args.port and not args.dry_run:
            return _err("--port is needed (or --dry-run to only check the firmware)")
        flash(args.port or "", Path(args.firmware), args.chip, baud=args.baud, dry_run=args.dry_run)
    except FlashError as exc:
        return _err(str(exc))
    return 0


def _quiet(text: str | None) -> tuple[int, int] | None:
    if not text:
        return None
    m = re.fullmatch(r"(\d{1,2}):(\d{2})-(\d{1,2}):(\d{2})", text)
    if not m:
        raise ValueError(f"--quiet {text!r} must look like 20:00-06:00")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise ValueError(f"--quiet {text!r} is not two times of day")
    return h1 * 60 + m1, h2 * 60 + m2


def cmd_configure(args: argparse.Namespace) -> int:
    from agent.esp32.configure import ConfigureError, UnitSettings, configure

    try:
        password = ""
        if args.wifi_password_file:
            try:
                # one line, as `echo secret > file` writes it; the newline is not part of it
                password = Path(args.wifi_password_file).read_text().rstrip("\r\n")
            except OSError as exc:
                return _err(f"cannot read --wifi-password-file: {exc}")
        transport = args.transport or ("mqtt" if args.mqtt_uri else "serial")
        settings = UnitSettings(
            unit_id=args.unit_id,
            transport=transport,
            station_id=args.station or "",
            wifi_ssid=args.wifi_ssid or "",
            wifi_password=password,
            mqtt_uri=args.mqtt_uri or "",
            capture_interval_s=args.interval,
            frame_size=args.frame_size,
            jpeg_quality=args.jpeg_quality,
            pir_enabled=not args.no_pir,
            quiet=_quiet(args.quiet),
            tz_offset_min=args.tz_offset,
            chunk_size=args.chunk_size,
        )
        configure(
            settings,
            args.port,
            dry_run_dir=Path(args.out) if args.dry_run else None,
            partitions=Path(args.partitions) if args.partitions else None,
            chip=args.chip,
        )
    except (ConfigureError, FlashError, ValueError) as exc:
        return _err(str(exc))
    return 0


def cmd_inventory(args: argparse.Namespace) -> int:
    from agent.esp32.flash import EsptoolTarget, inventory_ports

    rows: list[dict[str, Any]] = inventory_ports(include_all=args.all)
    for row in rows:
        row["chip"] = row["mac"] = ""
        if args.probe:
            try:
                target = EsptoolTarget(str(row["port"]), connect_attempts=1)
                row["chip"], row["mac"] = target.chip, target.mac
                target.reset()  # back to the firmware: probing puts it in the bootloader
                target.close()
            except FlashError as exc:
                row["chip"] = f"? ({str(exc).split(':')[0]})"
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(
            "no ESP32 units found (USB serial bridges CP210x, CH34x, FTDI or Espressif native USB)"
        )
        print("plug one in, or use --all to list every serial port")
        return 0
    print(f"{'port':<14} {'chip':<9} {'mac':<18} {'usb':<14} by-id")
    for row in rows:
        print(
            f"{row['port']:<14} {row['chip'] or '-':<9} {row['mac'] or '-':<18} {row['usb']:<14} {row['by_id'] or '-'}"
        )
    return 0


def cmd_monitor(args: argparse.Namespace) -> int:
    from agent.esp32.monitor import monitor

    try:
        return monitor(args.port, args.baud, args.duration)
    except FlashError as exc:
        return _err(str(exc))


def cmd_simulate(args: argparse.Namespace) -> int:
    import logging

    from agent.esp32.simulate import simulate

    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    try:
        return simulate(
            serial=args.serial,
            mqtt=args.mqtt,
            images_dir=Path(args.images),
            rate=args.rate,
            units=args.units,
            station=args.station,
            count=args.count,
            duration=args.duration,
            prefix=args.prefix,
            unit_id=args.unit_id,
        )
    except (ValueError, FileNotFoundError, FileExistsError, ConnectionError) as exc:
        return _err(str(exc))


PORT_HELP = (
    "serial port, e.g. /dev/ttyUSB0 or a /dev/serial/by-id path; virtual:PATH is a virtual "
    "unit's flash image file (tests, rehearsals)"
)
CHIP_HELP = "esp32 or esp32s3; auto (default) reads it from the unit"


def add_subcommands(subparsers: Any) -> None:
    """Add `esp32` and its subcommands to the fieldstation parser."""
    esp = subparsers.add_parser(
        "esp32", help="flash, configure, list, watch and simulate ESP32 units"
    )
    sub = esp.add_subparsers(dest="esp32_command", required=True)

    f = sub.add_parser(
        "flash", help="write firmware to a unit over USB (detects the chip, verifies)"
    )
    f.add_argument("--port", help=PORT_HELP)
    f.add_argument("--chip", default="auto", choices=["auto", "esp32", "esp32s3"], help=CHIP_HELP)
    f.add_argument("--baud", type=int, default=460800, help="flashing speed (default 460800)")
    f.add_argument(
        "--dry-run",
        action="store_true",
        help="show what would be written; with --port also check the unit's chip; write nothing",
    )
    f.add_argument(
        "firmware", help="ESP-IDF build folder (with flasher_args.json) or a merged .bin"
    )
    f.set_defaults(func=cmd_flash)

    c = sub.add_parser("configure", help="write a unit's settings (NVS partition)")
    c.add_argument("--port", help=PORT_HELP + " (not needed with --dry-run)")
    c.add_argument("--chip", default="auto", choices=["auto", "esp32", "esp32s3"], help=CHIP_HELP)
    c.add_argument("--unit-id", required=True, help="lowercase id, e.g. cam-north-01")
    c.add_argument(
        "--transport", choices=["serial", "mqtt"], help="default: mqtt when --mqtt-uri is given"
    )
    c.add_argument("--wifi-ssid", help="Wi-Fi network the unit joins (MQTT transport)")
    c.add_argument("--wifi-password-file", help="file whose first line is the Wi-Fi password")
    c.add_argument("--mqtt-uri", help="e.g. mqtt://192.168.4.1:1883")
    c.add_argument("--station", help="station id (MQTT topic level)")
    c.add_argument(
        "--interval", type=int, default=300, help="timer capture interval, s (0 = PIR only)"
    )
    c.add_argument("--frame-size", type=int, default=8, help="esp32-camera framesize_t (8 = VGA)")
    c.add_argument("--jpeg-quality", type=int, default=12, help="0-63, lower is better")
    c.add_argument("--no-pir", action="store_true", help="do not wake on the PIR sensor")
    c.add_argument("--quiet", help="quiet period in local time, e.g. 20:00-06:00")
    c.add_argument("--tz-offset", type=int, default=0, help="local time minus UTC, minutes")
    c.add_argument(
        "--chunk-size", type=int, default=4096, help="JPEG bytes per protocol chunk (default 4096)"
    )
    c.add_argument(
        "--partitions", help="partition table (.csv or .bin) instead of reading the unit's"
    )
    c.add_argument(
        "--dry-run", action="store_true", help="write the NVS image to --out, flash nothing"
    )
    c.add_argument("--out", default=".", help="folder for --dry-run images (default: .)")
    c.set_defaults(func=cmd_configure)

    i = sub.add_parser("inventory", help="connected units: port, by-id path, chip, MAC")
    i.add_argument(
        "--no-probe", dest="probe", action="store_false", help="do not connect to read chip and MAC"
    )
    i.add_argument(
        "--all", action="store_true", help="list every serial port, not only USB-UART bridges"
    )
    i.add_argument("--json", action="store_true", help="print the units as JSON")
    i.set_defaults(func=cmd_inventory)

    m = sub.add_parser("monitor", help="print a unit's log lines and protocol frames")
    m.add_argument("--port", required=True, help=PORT_HELP)
    m.add_argument(
        "--baud",
        type=int,
        default=921600,
        help="UART speed (default 921600, the station's serial.baudrate; USB CDC ignores it)",
    )
    m.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    m.set_defaults(func=cmd_monitor)

    s = sub.add_parser("simulate", help="virtual units (the firmware's C core) sending JPEGs")
    link = s.add_mutually_exclusive_group(required=True)
    link.add_argument(
        "--serial", metavar="PTY", help="symlink to create for the unit's pty, or 'auto'"
    )
    link.add_argument("--mqtt", metavar="URL", help="broker, e.g. mqtt://127.0.0.1:1883")
    s.add_argument("--images", required=True, help="folder of .jpg files the cameras 'see'")
    s.add_argument("--rate", type=float, default=6.0, help="captures per minute per unit")
    s.add_argument("--units", type=int, default=1, help="how many virtual units (default 1)")
    s.add_argument(
        "--prefix",
        help="unit ids are PREFIX-01, PREFIX-02, ... (default sim-<4 random hex digits>, so two "
        "simulators never share ids or MACs)",
    )
    s.add_argument("--unit-id", help="the id of the one simulated unit (with --units 1)")
    s.add_argument("--station", default="station", help="station id for MQTT topics")
    s.add_argument("--count", type=int, default=0, help="stop after this many captures per unit")
    s.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds")
    s.set_defaults(func=cmd_simulate)
