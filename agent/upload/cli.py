"""`fieldstation upload status|check`: what the uploader recorded, and whether endpoints answer."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from agent.config import Config, load_config
from agent.install import station_data_dir
from agent.store import BUFFER_FILE, PENDING_STATES, Store, StoreError
from agent.upload import ledger
from agent.upload.routing import rendezvous_rank

RANK_NAMES = {0: "person/animal", 1: "other detections", 2: "not analysed", 3: "empty"}


def add_subcommands(subparsers: Any) -> None:
    """Add `upload status` and `upload check` to the fieldstation command."""
    upload = subparsers.add_parser("upload", help="uploads to the sync endpoints")
    usub = upload.add_subparsers(dest="upload_command", required=True)
    for name, func, text in (
        ("status", cmd_status, "endpoints, primary, in-doubt, bytes per endpoint per day, backlog"),
        ("check", cmd_check, "probe every endpoint (ping, then the station's token)"),
    ):
        sp = usub.add_parser(name, help=text)
        sp.add_argument("--config", type=Path, default=None, help="station TOML")
        sp.add_argument("--data-dir", type=Path, default=None, help="override station.data_dir")
        sp.add_argument("--json", action="store_true", help="print JSON")
        sp.set_defaults(func=func)


def _config(args: argparse.Namespace) -> Config:
    config = load_config(args.config)
    # the buffer is found as `status` finds it (a systemd station's folder with no flags)
    data_dir, _found_by = station_data_dir(config.station.data_dir, args.data_dir)
    return config.replace("station", data_dir=str(data_dir))


def upload_report(store: Store, config: Config, days: int = 7) -> dict[str, Any]:
    """The uploader's records in the buffer, readable without the daemon."""
    eps = config.upload.endpoints
    ranking = rendezvous_rank(config.station_id, [(e.name, e.weight) for e in eps])
    since = time.strftime("%Y-%m-%d", time.localtime(time.time() - days * 86400))
    with store.read() as conn:
        held = ledger.held_counts(conn)
        doubt = ledger.doubt_counts(conn)
        traffic = ledger.traffic_since(conn, since)
    backlog = {
        RANK_NAMES[rank]: {"captures": n, "bytes": b}
        for rank, (n, b) in store.backlog_by_value(PENDING_STATES).items()
    }
    return {
        "station_id": config.station_id,
        "primary": ranking[0] if ranking else None,
        "ranking": ranking,
        "endpoints": [
            {
                "name": name,
                "held": held.get(name, 0),
                "in_doubt": doubt.get(name, 0),
                "bytes_by_day": traffic.get(name, {}),
            }
            for name in ranking
        ],
        "backlog": backlog,
    }


def cmd_status(args: argparse.Namespace) -> int:
    config = _config(args)
    try:
        store = Store(config.data_dir / BUFFER_FILE, readonly=True)
    except StoreError as exc:
        raise SystemExit(f"fieldstation: {exc} (is --data-dir right?)") from None
    report = upload_report(store, config)
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(f"station   {report['station_id']}  primary {report['primary'] or 'none configured'}")
    today = time.strftime("%Y-%m-%d")
    for ep in report["endpoints"]:
        print(
            f"  {ep['name']:<10} holds {ep['held']:>7}  in doubt {ep['in_doubt']:>5}  "
            f"today {ep['bytes_by_day'].get(today, 0):>12} B  "
            f"7 days {sum(ep['bytes_by_day'].values()):>12} B"
        )
    for rank, b in report["backlog"].items():
        print(f"  backlog {rank:<17} {b['captures']:>7} captures {b['bytes']:>12} B")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from agent.config import ComponentConfigError
    from agent.upload.client import EndpointError, SyncEndpoint

    config = _config(args)
    results = []
    for i, ep in enumerate(config.upload.endpoints):
        row: dict[str, Any] = {"name": ep.name, "url": ep.url}
        try:
            client = SyncEndpoint(ep, ep.bearer_token(f"upload.endpoints[{i}]"))
        except ComponentConfigError as exc:  # a token file gone since the config was checked
            row.update(ok=False, error=str(exc))
            results.append(row)
            continue
        row["ping"] = client.ping()
        try:
            client.lookup([])
            row.update(ok=row["ping"], error=None)
        except EndpointError as exc:
            row.update(ok=False, error=str(exc))
        results.append(row)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        if not results:
            print("no [[upload.endpoints]] configured")
        for r in results:
            verdict = "ok" if r["ok"] else f"FAILED: {r['error'] or 'no answer to ping'}"
            print(f"{r['name']:<10} {r['url']:<40} {verdict}")
    return 0 if results and all(r["ok"] for r in results) else 1
