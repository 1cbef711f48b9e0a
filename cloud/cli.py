"""`fieldstation-cloud`: serve the API, manage stations and models, export captures.

`--data-dir` and `--config` work before or after the subcommand.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from collections.abc import Callable
from pathlib import Path

from agent.config.machinery import Problem
from cloud.config import ConfigError, load_config
from cloud.schema import STATION_ID_PATTERN

EXIT_USAGE = 2


def _time(text: str) -> float:
    """Unix seconds, or an ISO 8601 date/datetime (UTC when it has no offset)."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected unix seconds or ISO 8601") from exc
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _location(text: str) -> tuple[float, float]:
    try:
        lat, lon = (float(v) for v in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: expected LAT,LON") from exc
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise argparse.ArgumentTypeError(f"{text!r}: latitude -90..90, longitude -180..180")
    return lat, lon


def _common(parser: argparse.ArgumentParser, top: bool) -> None:
    # SUPPRESS below the top level so a flag given before the subcommand is not reset after it.
    default = None if top else argparse.SUPPRESS
    parser.add_argument("--data-dir", default=default, help="data directory (SQLite + images)")
    parser.add_argument("--config", default=default, help="TOML config file")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fieldstation-cloud", description="WildCAM cloud sync endpoints service"
    )
    _common(parser, top=True)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(
        name: str, help_text: str, parent: argparse._SubParsersAction = sub
    ) -> argparse.ArgumentParser:
        p = parent.add_parser(name, help=help_text, description=help_text)
        _common(p, top=False)
        return p

    serve = command("serve", "run the HTTP API")
    serve.add_argument("--listen", default=None, help="HOST:PORT (default 127.0.0.1:8780)")
    serve.set_defaults(func=cmd_serve)

    stations = sub.add_parser("stations", help="add, list, locate and revoke stations")
    st = stations.add_subparsers(dest="action", required=True)
    add = command("add", "add a station and print its new bearer token (shown once)", st)
    add.add_argument("station_id")
    add.add_argument("--location", type=_location, help="LAT,LON of the station (for exports)")
    add.add_argument("--quiet", "-q", action="store_true", help="print only the token")
    add.set_defaults(func=cmd_stations_add)
    ls = command("list", "list stations with their last heartbeat", st)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=cmd_stations_list)
    revoke = command("revoke", "revoke a station and all its tokens (captures are kept)", st)
    revoke.add_argument("station_id")
    revoke.set_defaults(func=cmd_stations_revoke)
    locate = command("locate", "set a station's latitude and longitude", st)
    locate.add_argument("station_id")
    locate.add_argument("latitude", type=float)
    locate.add_argument("longitude", type=float)
    locate.set_defaults(func=cmd_stations_locate)

    admin = command("admin-token", "issue a new operator token (revokes earlier ones)")
    admin.add_argument("--quiet", "-q", action="store_true", help="print only the token")
    admin.set_defaults(func=cmd_admin_token)

    label = command("label", "set a station's cohort labels (replaces them)", st)
    label.add_argument("station_id")
    label.add_argument("labels", nargs="*")
    label.set_defaults(func=cmd_stations_label)

    models = sub.add_parser("models", help="publish models and roll them out to stations")
    md = models.add_subparsers(dest="action", required=True)
    keygen = command("keygen", "make an ed25519 signing key pair (KEY and KEY.pub)", md)
    keygen.add_argument("key_path", type=Path)
    keygen.set_defaults(func=cmd_models_keygen)
    publish = command("publish", "check, sign and publish a model package (folder or tar)", md)
    publish.add_argument("package_path", type=Path)
    publish.add_argument("--sign-key", type=Path, help="private key from `models keygen`")
    publish.add_argument(
        "--max-bytes", type=int, default=512 << 20, help="refuse packages larger than this"
    )
    publish.add_argument("--out", type=Path, help="also write the tar and its .sig here")
    publish.add_argument("--name", help="unsigned raw artifact only (without --sign-key)")
    publish.add_argument("--version", help="unsigned raw artifact only (without --sign-key)")
    publish.set_defaults(func=cmd_models_publish)
    mls = command("list", "list published models", md)
    mls.add_argument("--json", action="store_true")
    mls.set_defaults(func=cmd_models_list)
    ro = command("rollout", "roll NAME VERSION out in waves (supersedes a running rollout)", md)
    ro.add_argument("name")
    ro.add_argument("version")
    ro.add_argument(
        "--wave", action="append", default=[], type=_wave,
        help="who a wave adds: 10%%, cohort:LABEL, station:ID[,ID], joined with + "
        "(repeat for more waves; default one wave of 100%%)",
    )  # fmt: skip
    ro.add_argument("--success", type=float, default=1.0, help="share active to start next wave")
    ro.add_argument("--errors", type=float, default=0.5, help="share failed that pauses it")
    ro.add_argument("--timeout", type=float, default=3600.0, help="seconds without a report")
    ro.add_argument("--min-agreement", type=float, help="shadow-run agreement stations require")
    ro.set_defaults(func=cmd_models_rollout)
    for action, text in (
        ("promote", "start the next wave now"),
        ("pause", "stop starting waves"),
        ("resume", "resume a paused rollout"),
        ("cancel", "stop offering the version (stations that run it keep it)"),
        ("rollback", "every targeted station goes back to the version it had"),
        ("status", "per wave counts and per station state"),
    ):
        p = command(action, text, md)
        p.add_argument("name")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_models_rollout_action, rollout_action=action)

    export = sub.add_parser("export", help="export captures for analysis tools")
    ex = export.add_subparsers(dest="format", required=True)
    camtrap = command("camtrap-dp", "write a Camtrap DP 1.0 data package into a directory", ex)
    camtrap.add_argument("out", type=Path)
    camtrap.add_argument("--project-title", default="WildCAM field stations")
    camtrap.add_argument("--contributor", default="WildCAM field station network")
    megadetector = command("megadetector", "write MegaDetector batch-output JSON (Timelapse)", ex)
    megadetector.add_argument("out", type=Path)
    for p, func in ((camtrap, cmd_export_camtrap), (megadetector, cmd_export_megadetector)):
        p.add_argument("--since", type=_time, help="capture time >= (unix seconds or ISO 8601)")
        p.add_argument("--until", type=_time, help="capture time < (unix seconds or ISO 8601)")
        p.add_argument("--images", action="store_true", help="also copy the images")
        p.set_defaults(func=func)

    config = sub.add_parser("config", help="check the configuration")
    csub = config.add_subparsers(dest="config_command", required=True)
    check = command(
        "check", "validate the config (file + environment) and print it, secrets masked", csub
    )
    check.add_argument(
        "file", nargs="?", help="TOML config file (as --config; FILE as on the station)"
    )
    check.set_defaults(func=cmd_check_config)
    return parser


class NoDatabase(Exception):
    """A command that reads the cloud's records was pointed at a folder that holds none."""


def _open(args: argparse.Namespace, *, create: bool = False):  # type: ignore[no-untyped-def]
    """The service over the configured database; only commands that create records (`serve`,
    `stations add`, `stations admin-token`, `models publish`) may create an empty one."""
    from cloud.service import Service

    config = _config(args)
    url = config.database_url()
    if not create and url.startswith("sqlite:///") and not Path(url[len("sqlite:///") :]).exists():
        raise NoDatabase(
            f"no cloud database in {config.data_path} ({url[len('sqlite:///') :]} does not exist); "
            "is --data-dir right? `fieldstation-cloud serve` or `stations add` creates one"
        )
    return Service.open(config)


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    if args.config is not None and not Path(args.config).is_file():  # a line, not a traceback
        raise ConfigError(str(args.config), [Problem("(file)", None, "file does not exist")])
    return load_config(args.config, data_dir=args.data_dir, listen=getattr(args, "listen", None))


def cmd_serve(args: argparse.Namespace) -> int:
    from cloud.server import serve

    config = _config(args)
    print(
        f"fieldstation-cloud: serving on http://{config.server.listen} "
        f"(data dir {config.data_path})",
        flush=True,
    )
    serve(config)
    return 0


def cmd_stations_add(args: argparse.Namespace) -> int:
    import re

    from cloud.auth import issue_token

    if not re.match(STATION_ID_PATTERN, args.station_id):
        print(
            f"error: station id {args.station_id!r}: 1-64 of letters, digits, '.', '_', '-'",
            file=sys.stderr,
        )
        return EXIT_USAGE
    service = _open(args, create=True)
    try:
        lat, lon = args.location or (None, None)
        created = service.db.add_station(args.station_id, lat, lon)
        token = issue_token(service.db, args.station_id)
    finally:
        service.close()
    if args.quiet:
        print(token)
    else:
        state = "added" if created else "exists; issued an additional token"
        print(f"station {args.station_id} {state}")
        print(f"token: {token}")
        print("(shown once; the cloud keeps only its hash)")
    return 0


def cmd_stations_list(args: argparse.Namespace) -> int:
    service = _open(args)
    try:
        stations = service.db.list_stations()
    finally:
        service.close()
    if args.json:
        print(json.dumps(stations, indent=2))
        return 0
    print(f"{'STATION':<24} {'STATE':<8} {'CAPTURES':>8}  LAST HEARTBEAT")
    for s in stations:
        when = (
            dt.datetime.fromtimestamp(s["last_heartbeat_at"], tz=dt.UTC).strftime(
                "%Y-%m-%d %H:%M:%SZ"
            )
            if s["last_heartbeat_at"]
            else "never"
        )
        state = "revoked" if s["revoked"] else "active"
        print(f"{s['station_id']:<24} {state:<8} {s['captures']:>8}  {when}")
    return 0


def cmd_stations_revoke(args: argparse.Namespace) -> int:
    from cloud.errors import NotFound

    service = _open(args)
    try:
        service.db.revoke_station(args.station_id)
    except NotFound:
        print(f"error: no station {args.station_id!r}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(f"station {args.station_id} revoked (its tokens no longer work)")
    return 0


def cmd_stations_locate(args: argparse.Namespace) -> int:
    from cloud.errors import NotFound

    if not (-90 <= args.latitude <= 90 and -180 <= args.longitude <= 180):
        print("error: latitude -90..90, longitude -180..180", file=sys.stderr)
        return EXIT_USAGE
    service = _open(args)
    try:
        service.db.set_station_location(args.station_id, args.latitude, args.longitude)
    except NotFound:
        print(f"error: no station {args.station_id!r}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(f"station {args.station_id} at {args.latitude}, {args.longitude}")
    return 0


def cmd_admin_token(args: argparse.Namespace) -> int:
    from cloud.auth import issue_token

    service = _open(args, create=True)
    try:
        service.db.revoke_tokens("admin")
        token = issue_token(service.db, None, role="admin")
    finally:
        service.close()
    if args.quiet:
        print(token)
    else:
        print(f"admin token: {token}")
        print("(shown once; earlier admin tokens are revoked)")
    return 0


def _wave(text: str):  # type: ignore[no-untyped-def]
    from cloud.rollout import Wave

    stations: list[str] = []
    cohort = None
    percent = None
    for part in text.split("+"):
        part = part.strip()
        try:
            if part.endswith("%"):
                percent = float(part[:-1])
                if not 0 <= percent <= 100:
                    raise ValueError
            elif part.startswith("cohort:") and part[7:]:
                cohort = part[7:]
            elif part.startswith("station:") and part[8:]:
                stations += [s for s in part[8:].split(",") if s]
            else:
                raise ValueError
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{part!r}: expected 10%, cohort:LABEL or station:ID[,ID]"
            ) from None
    return Wave(tuple(stations), cohort, percent)


def cmd_stations_label(args: argparse.Namespace) -> int:
    from cloud.rollout import set_labels

    service = _open(args)
    try:
        set_labels(service.db, args.station_id, args.labels)
    finally:
        service.close()
    print(f"station {args.station_id} labels: {' '.join(sorted(set(args.labels))) or '(none)'}")
    return 0


def cmd_models_keygen(args: argparse.Namespace) -> int:
    from agent.modelsync.artifact import ArtifactError, generate_key

    try:
        pub, text = generate_key(args.key_path)
    except ArtifactError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"private key: {args.key_path} (keep it secret)")
    print(f"public key:  {pub}")
    print(f'pin it on stations: [modelsync] trusted_keys = ["{text}"]')
    return 0


def cmd_models_rollout(args: argparse.Namespace) -> int:
    from cloud import rollout

    spec = rollout.RolloutSpec(
        waves=tuple(args.wave) or (rollout.Wave(percent=100.0),),
        success_threshold=args.success,
        error_threshold=args.errors,
        timeout_s=args.timeout,
        min_agreement=args.min_agreement,
    )
    service = _open(args)
    try:
        made = rollout.create(service.db, args.name, args.version, spec)
        doc = rollout.status(service.db, args.name)
    except rollout.RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(f"rollout {made.rollout_id} started: {len(spec.waves)} wave(s)")
    _print_rollout(doc)
    return 0


def cmd_models_rollout_action(args: argparse.Namespace) -> int:
    from cloud import rollout

    service = _open(args)
    try:
        if args.rollout_action != "status":
            getattr(rollout, args.rollout_action)(service.db, args.name)
        doc = rollout.status(service.db, args.name)
    except rollout.RolloutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        _print_rollout(doc)
    return 0


def _print_rollout(doc: dict) -> None:
    why = f" ({doc['reason']})" if doc["reason"] else ""
    print(f"{doc['rollout_id']}: {doc['state']}{why}, wave {doc['wave']} of {len(doc['waves'])}")
    for w in doc["waves"]:
        print(
            f"  wave {w['wave']} {w['who']:<24} {'started' if w['started'] else 'waiting':<8}"
            f" {w['active']}/{w['targets']} active (need {w['success_threshold']:.0%}),"
            f" {w['errors']} failed (pause at {w['error_threshold']:.0%}),"
            f" {w['timed_out']} timed out"
        )
    print(f"  {'STATION':<20} {'WAVE':>4}  {'STATE':<13} REASON")
    for s in doc["stations"]:
        line = f"  {s['station_id']:<20} {s['wave']:>4}  {s['state']:<13} {s['reason'] or ''}"
        print(line.rstrip())


def cmd_models_publish(args: argparse.Namespace) -> int:
    from cloud.models import publish_model

    if args.sign_key is not None:
        return _publish_signed(args)
    if not (args.name and args.version):
        print(
            "error: give --sign-key KEY (or --name and --version for a raw artifact)",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if not args.package_path.is_file():
        print(f"error: {args.package_path}: no such file", file=sys.stderr)
        return 1
    service = _open(args, create=True)
    try:
        entry = publish_model(service.db, service.store, args.package_path, args.name, args.version)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        service.close()
    print(
        f"published {entry['name']} {entry['version']} ({entry['size']} bytes, sha256 {entry['sha256']})"
    )
    return 0


def _publish_signed(args: argparse.Namespace) -> int:
    from agent.modelsync.artifact import ArtifactError
    from cloud.models import PublishError, publish_package

    service = _open(args, create=True)
    try:
        release = publish_package(
            service.db,
            service.store,
            args.package_path,
            args.sign_key,
            max_bytes=args.max_bytes,
            out_dir=args.out,
        )
    except (PublishError, ArtifactError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(
        f"published {release['name']} {release['version']} ({release['size']} bytes, "
        f"sha256 {release['sha256'][:16]}…, signed by key {release['key_id']})"
    )
    return 0


def cmd_models_list(args: argparse.Namespace) -> int:
    service = _open(args)
    try:
        models = service.db.list_models()
    finally:
        service.close()
    if args.json:
        print(json.dumps(models, indent=2))
        return 0
    print(f"{'NAME':<24} {'VERSION':<12} {'SIZE':>10}  SHA256")
    for m in models:
        print(f"{m['name']:<24} {m['version']:<12} {m['size']:>10}  {m['sha256'][:16]}")
    return 0


def cmd_export_camtrap(args: argparse.Namespace) -> int:
    from cloud.export import ExportError
    from cloud.export.camtrap import CamtrapOptions, export_camtrap_dp

    service = _open(args)
    try:
        counts = export_camtrap_dp(
            service.db,
            service.store,
            args.out,
            args.since,
            args.until,
            CamtrapOptions(
                project_title=args.project_title,
                contributor=args.contributor,
                include_images=args.images,
            ),
        )
    except ExportError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        service.close()
    print(
        f"wrote {args.out}/datapackage.json: {counts['deployments']} deployments, "
        f"{counts['media']} media, {counts['observations']} observations"
    )
    return 0


def cmd_export_megadetector(args: argparse.Namespace) -> int:
    from cloud.export.megadetector import export_megadetector

    service = _open(args)
    try:
        counts = export_megadetector(
            service.db, service.store, args.out, args.since, args.until, args.images
        )
    finally:
        service.close()
    print(f"wrote {args.out}: {counts['images']} images, {counts['detections']} detections")
    return 0


def cmd_check_config(args: argparse.Namespace) -> int:
    import dataclasses

    if args.file is not None:
        args.config = args.file
    config = _config(args)
    data = dataclasses.asdict(config)
    for section in data.values():
        for key in section:
            # Never echo secrets.
            if (
                any(word in key for word in ("secret", "key", "token", "connection"))
                and section[key]
            ):
                section[key] = "***"
    print(json.dumps(data, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except NoDatabase as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
