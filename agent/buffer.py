"""`fieldstation buffer tables|export`: the SQLite buffer seen from the command line, read-only.

(`fieldstation buffer salvage FILE`, which writes through the store, lives in agent/salvage.py.)

Built on sqlite-utils (table listing, counts, column types, row iteration). The file is opened with
SQLite's `mode=ro`, so an operator can look while the daemon runs and can change nothing: every
table keeps its one owner module as its only writer.
"""

from __future__ import annotations

import argparse
import base64
import csv
import json
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from agent.config import load_config
from agent.install import station_data_dir
from agent.store import BUFFER_FILE

if TYPE_CHECKING:
    import sqlite_utils  # imported where a buffer is opened: `fieldstation --help` stays quick

FORMATS = ("jsonl", "json", "csv")


class BufferError(RuntimeError):
    """The buffer cannot be read as asked (no file, no such table); says what to do."""


@dataclass(frozen=True)
class TableInfo:
    name: str
    rows: int
    columns: list[tuple[str, str]]  # (name, declared type)


def open_buffer(path: Path) -> sqlite_utils.Database:
    """The buffer at `path`, opened read-only (no WAL checkpoint, no schema change, no write)."""
    import sqlite_utils

    if not path.is_file():
        raise BufferError(f"no buffer at {path} (--data-dir DIR, or --config FILE)")
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    conn.execute("PRAGMA busy_timeout = 30000")  # the daemon may be mid-commit
    return sqlite_utils.Database(conn)


def tables(db: sqlite_utils.Database) -> list[TableInfo]:
    """Every table with its row count and columns, in name order."""
    out = []
    for name in sorted(db.table_names()):
        table = db.table(name)
        out.append(TableInfo(name, table.count, [(c.name, c.type) for c in table.columns]))
    return out


def rows(
    db: sqlite_utils.Database, table: str, *, blobs: bool = False, limit: int | None = None
) -> tuple[list[str], Iterator[dict[str, Any]]]:
    """The table's column names and its rows in rowid order; BLOB columns only with `blobs`.

    A BLOB value is written the way sqlite-utils writes one: {"$base64": true, "encoded": ...}.
    """
    if table not in db.table_names():
        known = ", ".join(sorted(db.table_names()))
        raise BufferError(f"no table {table!r} in the buffer (tables: {known})")
    columns = db.table(table).columns
    names = [c.name for c in columns if blobs or c.type.upper() != "BLOB"]
    select = ", ".join('"' + n.replace('"', '""') + '"' for n in names)

    def generate() -> Iterator[dict[str, Any]]:
        for row in db.table(table).rows_where(select=select, order_by="rowid", limit=limit):
            yield {
                k: {"$base64": True, "encoded": base64.b64encode(v).decode("ascii")}
                if isinstance(v, bytes)
                else v
                for k, v in row.items()
            }

    return names, generate()


def write_rows(names: list[str], source: Iterator[dict[str, Any]], fmt: str, out: IO[str]) -> int:
    """Write rows as JSON lines, one JSON array, or CSV with a header; return the count."""
    count = 0
    if fmt == "csv":
        writer = csv.DictWriter(out, fieldnames=names, lineterminator="\n")
        writer.writeheader()
        for row in source:
            writer.writerow(
                {k: json.dumps(v) if isinstance(v, dict) else v for k, v in row.items()}
            )
            count += 1
    elif fmt == "json":
        out.write("[")
        for row in source:
            out.write(("," if count else "") + "\n  " + json.dumps(row, default=str))
            count += 1
        out.write("\n]\n" if count else "]\n")
    else:
        for row in source:
            out.write(json.dumps(row, default=str) + "\n")
            count += 1
    return count


def _open(args: argparse.Namespace) -> tuple[sqlite_utils.Database, Path]:
    config = load_config(args.config)
    data_dir, found_by = station_data_dir(config.station.data_dir, args.data_dir)
    path = data_dir / BUFFER_FILE
    try:
        return open_buffer(path), path
    except BufferError as exc:
        raise SystemExit(f"fieldstation: {exc}; folder from {found_by}") from None


def cmd_tables(args: argparse.Namespace) -> int:
    db, path = _open(args)
    infos = tables(db)
    if args.json:
        doc = [{"name": t.name, "rows": t.rows, "columns": dict(t.columns)} for t in infos]
        print(json.dumps(doc, indent=2))
        return 0
    print(f"buffer {path} (read-only)")
    print(f"{'table':<22} {'rows':>8}  columns")
    for t in infos:
        print(f"{t.name:<22} {t.rows:>8}  {', '.join(name for name, _ in t.columns)}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    db, _path = _open(args)
    try:
        names, source = rows(db, args.table, blobs=args.blobs, limit=args.limit)
    except BufferError as exc:
        raise SystemExit(f"fieldstation: {exc}") from None
    if args.output:
        with open(args.output, "w", newline="", encoding="utf-8") as out:
            n = write_rows(names, source, args.format, out)
        print(f"{n} rows of {args.table} written to {args.output}", file=sys.stderr)
    else:
        write_rows(names, source, args.format, sys.stdout)
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Add `buffer tables` and `buffer export` to the fieldstation command."""
    buffer = subparsers.add_parser("buffer", help="look into the SQLite buffer, read-only")
    bsub = buffer.add_subparsers(dest="buffer_command", required=True)

    def common(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--config", type=Path, default=None, help="station TOML")
        sp.add_argument("--data-dir", type=Path, default=None, help="override station.data_dir")

    listing = bsub.add_parser("tables", help="tables with row counts and columns")
    common(listing)
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(func=cmd_tables)

    export = bsub.add_parser("export", help="one table's rows as JSON lines, JSON or CSV")
    common(export)
    export.add_argument("table", help="table name (see `fieldstation buffer tables`)")
    export.add_argument("--format", choices=FORMATS, default="jsonl", help="default jsonl")
    export.add_argument("--limit", type=int, default=None, help="at most this many rows")
    export.add_argument(
        "--blobs", action="store_true", help="include BLOB columns (JPEG bytes), base64-encoded"
    )
    export.add_argument("-o", "--output", type=Path, default=None, help="file instead of stdout")
    export.set_defaults(func=cmd_export)

    # the one buffer command that writes, through the store: it lives with the salvage code
    from agent.salvage import add_salvage_command

    add_salvage_command(bsub, common)
