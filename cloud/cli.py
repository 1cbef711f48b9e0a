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

    models = sub.add_parser("models", help="publish and list model artifacts")
    md = models.add_subparsers(dest="action", required=True)
    publish = command("publish", "publish a model package file (.tar or a single file)", md)
    publish.add_argument("package_path", type=Path)
    publish.add_argument("--name", required=True)
    publish.add_argument("--version", required=True)
    publish.set_defaults(func=cmd_models_publish)
    mls = command("list", "list published models", md)
    mls.add_argument("--json", action="store_true")
    mls.set_defaults(func=cmd_models_list)

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

    check = command("check-config", "validate the config (file + environment) and print it")
    check.set_defaults(func=cmd_check_config)
    return parser


def _open(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from cloud.service import Service

    return Service.open(_config(args))


def _config(args: argparse.Namespace):  # type: ignore[no-untyped-def]
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
    service = _open(args)
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

    service = _open(args)
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


def cmd_models_publish(args: argparse.Namespace) -> int:
    from cloud.models import publish_model

    if not args.package_path.is_file():
        print(f"error: {args.package_path}: no such file", file=sys.stderr)
        return 1
    service = _open(args)
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
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
