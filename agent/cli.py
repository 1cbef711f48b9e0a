"""fieldstation: run a WildCAM field station, check its configuration, and look into its
buffer, units, models and uploads."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

from agent import __version__
from agent.bufferlock import BufferInUse
from agent.config import ComponentConfigError, Config, ConfigError, example_config, load_config
from agent.install import station_data_dir
from agent.localapi import daemon_status
from agent.store import BUFFER_FILE, Store, StoreError


def _load(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    if getattr(args, "data_dir", None):
        config = config.replace("station", data_dir=str(args.data_dir))
    if getattr(args, "http", None):
        config = config.replace("http", listen=args.http)
    return config


def cmd_run(args: argparse.Namespace) -> int:
    from agent.preflight import as_config_error, startup_findings

    try:
        config = _load(args)
        findings = startup_findings(config)
        if findings:
            raise as_config_error(config, findings)
    except ConfigError as exc:
        # one line per problem, each naming the key: what a journal or a terminal shows at once
        for problem in exc.problems:
            print(f"fieldstation: cannot start: {exc.render(problem)}", file=sys.stderr)
        return 2
    from agent.daemon import StartupError, run_daemon  # the daemon's imports are only paid by `run`

    _setup_logging(config.log.level)
    try:
        return run_daemon(config)
    except StartupError as exc:
        print(f"fieldstation: cannot start: {exc}", file=sys.stderr)
        return 2


def cmd_config_check(args: argparse.Namespace) -> int:
    from agent.preflight import as_config_error, device_notes, package_findings, startup_findings

    try:
        config = load_config(args.file, required=True)
        findings = [*startup_findings(config, station_may_run=True), *package_findings(config)]
        if findings:
            raise as_config_error(config, findings)
    except ConfigError as exc:
        if not args.json:
            raise
        problems = [
            {"key": p.key, "line": p.line, "variable": p.var, "reason": p.reason}
            for p in exc.problems
        ]
        print(json.dumps({"file": str(args.file), "ok": False, "problems": problems}, indent=2))
        return 2
    notes = [{"key": n.key, "note": n.reason} for n in device_notes(config)]
    if args.json:
        doc = {
            "file": str(args.file),
            "ok": True,
            "problems": [],
            "notes": notes,
            "config": config.as_dict(),
        }
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"{args.file}: ok")
    print(f"  station id  {config.station_id}")
    print(f"  data dir    {config.data_dir}")
    print(f"  serial      {', '.join(config.serial.ports) or 'none'}")
    mqtt = f"{config.mqtt.host}:{config.mqtt.port} (MQTT {config.mqtt.protocol})"
    print(f"  mqtt        {mqtt if config.mqtt.enabled else 'off'}")
    lan = f", LAN intake {config.http.lan_listen}" if config.http.lan_listen else ""
    print(f"  http        {config.http.listen}{lan}")
    for note in notes:
        print(f"  note        {note['key']}: {note['note']}")
    return 0


def cmd_config_example(args: argparse.Namespace) -> int:
    sys.stdout.write(example_config())
    return 0


def _open_readonly(args: argparse.Namespace) -> tuple[Config, Store, str]:
    """The config, the buffer opened read-only, and how its folder was found."""
    config = _load(args)
    data_dir, found_by = station_data_dir(config.station.data_dir, args.data_dir)
    config = config.replace("station", data_dir=str(data_dir))
    try:
        return config, Store(data_dir / BUFFER_FILE, readonly=True), found_by
    except StoreError as exc:
        print(f"fieldstation: {exc} (folder from {found_by}; --data-dir DIR)", file=sys.stderr)
        raise SystemExit(2) from None  # 2, as --help says: 1 would read as "running, with alarms"


STATUS_ALARM = 1  # the daemon runs, but something is unwell (the alarms say what)
STATUS_DOWN = 3  # the daemon does not answer on http.listen
STATUS_EXIT_CODES = """exit status:
  0  the daemon runs and nothing is unwell
  1  the daemon runs with alarms (a port, the broker, a model, an endpoint, a worker, or a
     buffer that refuses captures or is over its quota)
  2  the config or the buffer cannot be read
  3  the daemon is not reachable (the buffer is still shown)"""
# buffer alarms that last while their cause does and clear with it (database_recovered is a
# record of what happened at a start, not a state: it is shown but leaves the exit code alone)
UNWELL_BUFFER_ALARMS = ("storage_full", "storage_quota")


def cmd_status(args: argparse.Namespace) -> int:
    config, store, found_by = _open_readonly(args)
    summary = store.queue_summary()
    units = [dict(u) for u in store.units()]
    daemon = daemon_status(config)
    # the daemon's view first: a full disk may refuse even the alarm's row, not its memory
    alarms = daemon["alarms"] if daemon and "alarms" in daemon else store.alarms()
    doc = {
        "station_id": config.station_id,
        "buffer": str(store.path),
        "buffer_found_by": found_by,
        "daemon": daemon,
        "queue": summary,
        "alarms": alarms,
        "units": units,
    }
    health = (daemon or {}).get("health", [])
    unwell = health or any(a["kind"] in UNWELL_BUFFER_ALARMS for a in alarms)
    code = STATUS_DOWN if daemon is None else STATUS_ALARM if unwell else 0
    if args.json:
        print(json.dumps(doc, indent=2, default=str))
        return code
    print(f"station   {config.station_id}")
    print(f"buffer    {store.path} (schema v{store.schema_version}, from {found_by})")
    if daemon:
        workers = daemon.get("workers", [])
        up = sum(1 for w in workers if w["running"])
        print(f"daemon    running {daemon['uptime_s']:.0f} s, {up}/{len(workers)} workers up")
        for w in workers:
            if not w["running"] or w["restarts"]:
                print(
                    f"  worker {w['name']}: restarts {w['restarts']}, last error {w['last_error']}"
                )
        _print_inference(daemon.get("inference"))
        _print_upload(daemon.get("upload"))
        if daemon.get("power"):
            from agent.power.cli import status_lines

            print("\n".join(status_lines(daemon["power"])))
    else:
        print(f"daemon    not reachable on {config.http.listen}")
    bs = summary["by_state"]
    print(
        f"captures  {summary['pending']} pending ({_size(summary['pending_bytes'])}), "
        f"{bs['uploaded']['count']} uploaded, {bs['evicted']['count']} evicted, "
        f"{bs['failed']['count']} failed"
    )
    print(f"storage   {_size(summary['stored_image_bytes'])} of {_size(summary['quota_bytes'])}")
    lines = [f"{a['kind']} {a['subject']}: {a['message']}" for a in health]
    lines += [f"{a['kind']}: {a['message']}" for a in alarms]
    print(f"alarms    {lines[0] if lines else 'none'}")
    for line in lines[1:]:
        print(f"          {line}")
    print(f"units     {len(units)}")
    now = time.time()
    for u in units:
        battery = f"{u['battery_mv']} mV" if u["battery_mv"] else "-"
        print(
            f"  {u['unit_id']:<16} {u['last_path'] or '-':<6} last seen "
            f"{_ago(now - u['last_seen'])}  battery {battery}  fw {u['firmware_version'] or '-'}"
        )
    return code


def _print_inference(inf: dict[str, Any] | None) -> None:
    if not inf:
        print("inference off")
        return
    models = ", ".join(inf["models"]) or "none (captures passed on unanalysed)"
    counts = ", ".join(f"{k} {v}" for k, v in inf["counts"].items() if v) or "nothing yet"
    print(f"inference {models}; {counts}; people: {inf['person_policy']}")
    if inf.get("error"):
        print(f"  error: {inf['error']}")


def _print_upload(up: dict[str, Any] | None) -> None:
    if not up:
        print("upload    off (no [[upload.endpoints]])")
        return
    via = f" via {up['current']}" if up.get("current") else ""
    budget = up.get("budget_left_bytes")
    left = f", budget left {_size(budget)}" if budget is not None else ""
    print(
        f"upload    {up['state']}{via} (primary {up['primary']}), backlog "
        f"{up['backlog']['captures']} ({_size(up['backlog']['bytes'])}), "
        f"sent today {_size(up['bytes_today'])}{left}"
    )
    for ep in up["endpoints"]:
        err = f"  last error: {ep['last_error']}" if ep.get("last_error") else ""
        print(
            f"  {ep['name']:<10} {ep['breaker']:<9} holds {ep['held']:>6}  in doubt "
            f"{ep['in_doubt']:>4}  today {_size(ep['bytes_today']):>10}{err}"
        )


def cmd_queue(args: argparse.Namespace) -> int:
    _config, store, found_by = _open_readonly(args)
    summary = store.queue_summary()
    if args.json:
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"buffer {store.path} (from {found_by})")
    print(f"{'state':<10} {'captures':>9} {'bytes':>10}")
    for state, v in summary["by_state"].items():
        print(f"{state:<10} {v['count']:>9} {_size(v['bytes']):>10}")
    oldest = summary["oldest_pending"]
    if oldest:
        age = _ago(time.time() - oldest["received_at"])
        print(f"oldest pending: {oldest['id']} from {oldest['unit_id']}, received {age}")
    else:
        print("oldest pending: none")
    if summary["per_unit"]:
        print(f"\n{'unit':<16} {'captures':>9} {'bytes':>10}  by state")
        for unit, v in summary["per_unit"].items():
            states = ", ".join(f"{k} {n}" for k, n in sorted(v["by_state"].items()))
            print(f"{unit:<16} {v['count']:>9} {_size(v['bytes']):>10}  {states}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from agent.demo import run_demo

    return run_demo(captures=args.captures, as_json=args.json, keep=args.keep)


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _ago(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# Commands defined here, whose parsers need none of the component modules below.
CORE_COMMANDS = frozenset({"run", "status", "queue", "config", "demo"})
# Modules that add the subcommands living beside their component (each has add_subcommands).
COMPONENT_COMMANDS = (
    "agent.esp32.cli",
    "agent.units",
    "agent.inference.cli",
    "agent.upload.cli",
    "agent.power.cli",
    "agent.web.cli",
    "agent.install",
    "agent.buffer",
)


def build_parser(*, core_only: bool = False) -> argparse.ArgumentParser:
    """The whole command line; `core_only` leaves out the components' subcommands (esp32,
    models, upload, ...), whose modules cost more to import than a `status` costs to run."""
    parser = argparse.ArgumentParser(
        prog="fieldstation",
        description=__doc__,
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"fieldstation {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def with_config(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--config",
            type=Path,
            default=None,
            help="station TOML (default /etc/fieldstation/station.toml if present)",
        )
        sp.add_argument("--data-dir", type=Path, default=None, help="override station.data_dir")

    run = sub.add_parser(
        "run",
        help="run the station daemon",
        description="Run the station daemon in the foreground (systemd Type=notify): ingest, "
        "inference, uploads, power, model sync and the local HTTP. A start-up failure is one "
        "line naming the key, exit 2.",
    )
    with_config(run)
    run.add_argument("--http", metavar="HOST:PORT", help="main HTTP listener (overrides config)")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser(
        "status",
        help="station, units, queue and alarms",
        description="Show the station: the daemon's workers and alarms, the buffer, the units.",
        epilog=STATUS_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    with_config(status)
    status.add_argument("--http", metavar="HOST:PORT", help="where the daemon listens")
    status.add_argument("--json", action="store_true", help="print the status as JSON")
    status.set_defaults(func=cmd_status)

    queue = sub.add_parser(
        "queue",
        help="captures by state, oldest pending, per unit",
        description="Show the buffer's captures by state, the oldest one waiting, and per unit.",
    )
    with_config(queue)
    queue.add_argument("--json", action="store_true", help="print the summary as JSON")
    queue.set_defaults(func=cmd_queue)

    config = sub.add_parser("config", help="check or print configuration")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = csub.add_parser(
        "check",
        help="validate a config file",
        description="Validate a station TOML as `run` would: every key, the files it names, the "
        "listen addresses (bindable now, or held by this station) and the model packages.",
    )
    check.add_argument("file", type=Path, help="the station TOML to check")
    check.add_argument("--json", action="store_true", help="print the verdict and problems as JSON")
    check.set_defaults(func=cmd_config_check)
    example = csub.add_parser("example", help="print every key with its default")
    example.set_defaults(func=cmd_config_example)

    demo = sub.add_parser("demo", help="the whole chain with virtual camera units, no hardware")
    demo.add_argument("--captures", type=int, default=12, help="captures to send (default 12)")
    demo.add_argument(
        "--json", action="store_true", help="print only a JSON summary on stdout (progress: stderr)"
    )
    demo.add_argument("--keep", action="store_true", help="keep the demo's data folder")
    demo.set_defaults(func=cmd_demo)

    if not core_only:
        for module in COMPONENT_COMMANDS:
            _add_optional(sub, module)
    _describe(parser)
    return parser


EXIT_CODES = """exit status (every command):
  0    done, nothing wrong
  1    done, and found something wrong (a bad image, a package that fails, alarms in status)
  2    bad usage, a configuration or buffer that cannot be used, a start-up failure
  3    status: the daemon is not reachable
  130  interrupted (Ctrl-C)
  141  the reader of the output went away (`fieldstation queue | head`)"""


def _describe(parser: argparse.ArgumentParser) -> None:
    """Each subcommand without a description shows its one-line help at the top of its --help."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for name, sp in action.choices.items():
                if sp.description is None and helps.get(name):
                    sp.description = str(helps[name])[0].upper() + str(helps[name])[1:] + "."
                _describe(sp)


def _add_optional(sub: Any, module: str) -> None:
    """Subcommands that live beside their component (esp32, models/infer, upload)."""
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name and module.startswith(exc.name):
            return
        raise
    mod.add_subcommands(sub)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # the command is the first word (the top level takes no option with a value): `status`
    # and `run` skip importing the other components; --help and a mistyped command see them all
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(core_only=command in CORE_COMMANDS)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as exc:
        print(f"fieldstation: configuration rejected:\n{exc}", file=sys.stderr)
        return 2
    except ComponentConfigError as exc:
        print(f"fieldstation: configuration rejected: {exc}", file=sys.stderr)
        return 2
    except BufferInUse as exc:
        print(f"fieldstation: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return _reader_went_away()


def _reader_went_away() -> int:
    """`fieldstation queue | head`: the reader closed the pipe; end quietly, as `cat` would."""
    # stdout's buffer still holds lines nobody will read: point it at /dev/null so the
    # interpreter's final flush does not raise again
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141  # 128 + SIGPIPE, what a shell reports for a command ended by a closed pipe
