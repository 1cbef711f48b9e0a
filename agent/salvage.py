"""Bring captures back from a damaged buffer file, row by row, into the live buffer, once each.

A file `quick_check` rejects (or a WAL SQLite would cut short) usually still holds most of its
captures: a B-tree page or two is bad, the rest reads. Each capture row is read on its own, by
rowid, so one bad page costs the rows on it and not the file; each image is checked against the
sha256 recorded with it before it goes back; the live buffer's own duplicate check (unit,
capture id, bytes) makes a second salvage of the same file a no-op.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.capture import Capture
from agent.config import load_config
from agent.install import station_data_dir
from agent.pagescan import PageFile, Value
from agent.store import BUFFER_FILE, STATES, Store
from agent.walcheck import WalFormatError, check_wal, rebuild

log = logging.getLogger(__name__)

# States whose captures are settled: the cloud holds them, or their bytes were dropped on purpose.
SETTLED = ("uploaded", "evicted")
# The captures table's first columns, for leaf cells read when its schema row does not read.
CAPTURE_COLUMNS = (
    "id",
    "unit_id",
    "unit_ref",
    "path",
    "sha256",
    "size",
    "received_at",
    "unit_time",
    "unit_time_kind",
    "captured_at",
    "trigger",
    "meta",
    "state",
    "state_changed_at",
    "empty",
    "upload_variant",
    "analysis",
    "error",
)
# Probing past the last readable rowid stops after this many rowids in a row read nothing.
_PROBE_GAP = 1000


@dataclass
class SalvageReport:
    """What came back from one damaged file, and what could not."""

    source: str
    rows: int = 0  # capture rows read
    restored: int = 0  # new in the live buffer
    already: int = 0  # the live buffer held them already
    settled: int = 0  # uploaded or evicted before the damage: nothing to bring back
    unreadable: int = 0  # rows, or their images, on pages that no longer read
    bad_image: int = 0  # image bytes whose sha256 is not the one recorded
    refused: int = 0  # the live buffer refused them (full disk): the file is kept, run again
    problems: list[str] = field(default_factory=list)  # the first few, for the log

    @property
    def lost(self) -> int:
        return self.unreadable + self.bad_image

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()} | {"lost": self.lost}

    def summary(self) -> str:
        return (
            f"{self.restored} captures restored, {self.already} already in the buffer, "
            f"{self.settled} uploaded or evicted before, {self.lost} could not be read back "
            f"({self.unreadable} unreadable, {self.bad_image} with a wrong sha256)"
            + (f", {self.refused} refused by the buffer" if self.refused else "")
        )


def salvage(source: Path, store: Store) -> SalvageReport:
    """Read every readable capture of the database file `source` (and its `-wal`, replayed
    frame by frame past any damage) into `store`; never changes `source`."""
    report = SalvageReport(str(source))
    with tempfile.TemporaryDirectory(prefix="fieldstation-salvage-") as tmp:
        readable = _readable_copy(source, Path(tmp))
        conn = sqlite3.connect(f"file:{readable}?mode=ro&immutable=1", uri=True)
        conn.row_factory = sqlite3.Row
        try:
            found = _Found(readable, conn)
            for row in found.captures():
                report.rows += 1
                _bring_back(row, found, store, report)
            report.unreadable += found.unreached_rows()
            report.problems[:0] = found.problems[:5]
        finally:
            conn.close()
    log.info("salvage of %s: %s", source, report.summary())
    return report


def recover_set_aside(store: Store) -> SalvageReport | None:
    """At start: read the captures of the file the store set aside back into it, and put the
    counts into its database_recovered alarm. A failed salvage leaves the file for the CLI."""
    source = store.set_aside
    if source is None:
        return None
    try:
        report = salvage(source, store)
    except Exception as exc:
        log.exception("salvage of %s failed", source)
        store.raise_alarm(
            "database_recovered",
            f"{store.recovery_note}; salvage failed ({exc}): run "
            f"`fieldstation buffer salvage {source}`",
        )
        return None
    store.raise_alarm("database_recovered", f"{store.recovery_note}; {report.summary()}")
    return report


def _readable_copy(source: Path, tmp: Path) -> Path:
    """The file to read: `source` with every whole committed WAL frame applied, or a plain copy."""
    wal = source.with_name(source.name + "-wal")
    out = tmp / "salvage.db"
    if wal.exists() and check_wal(wal) is not None:
        try:
            rebuild(source, wal, out)
            return out
        except WalFormatError as exc:
            log.warning(
                "salvage: %s has an unreadable WAL header (%s); reading the file alone", source, exc
            )
    shutil.copyfile(source, out)
    return out


class _Found:
    """The captures and original images of a damaged file: through SQLite's B-trees where they
    read, and from the file's leaf pages (agent/pagescan.py) for what a damaged page hides."""

    def __init__(self, path: Path, conn: sqlite3.Connection) -> None:
        self.path = path
        self.conn = conn
        self.problems: list[str] = []
        self.failed_rowids: set[int] = set()  # capture rowids SQLite could not read
        self._columns = self._capture_columns()
        self._pages: PageFile | None = None
        self._scanned_images: dict[str, bytes] | None = None
        self._scanned_rowids: set[int] = set()
        self._top: int | None = None

    def _capture_columns(self) -> list[str]:
        try:
            names = [r[1] for r in self.conn.execute("PRAGMA table_info(captures)")]
        except sqlite3.DatabaseError:
            names = []
        return names if names[:1] == ["id"] else list(CAPTURE_COLUMNS)

    def _page_file(self) -> PageFile:
        if self._pages is None:
            self._pages = PageFile.open(self.path)
        return self._pages

    def captures(self) -> Iterator[Mapping[str, Any]]:
        """Every capture row that reads, once each: by rowid through SQLite, then the rest."""
        seen: set[str] = set()
        for row in self._by_rowid():
            seen.add(row["id"])
            yield dict(row)
        if not self.failed_rowids and not self.problems:
            return  # the tree read whole: nothing is hidden from it
        for rowid, values in self._page_file().rows():
            cell = self._as_capture(values)
            if cell is None:
                continue
            self._scanned_rowids.add(rowid)
            if cell["id"] not in seen:
                seen.add(cell["id"])
                yield cell

    def unreached_rows(self) -> int:
        """Capture rowids SQLite could not read and the page scan did not find either."""
        # without a readable highest rowid, probing past the end fails too: not rows
        top = self._top if self._top is not None else max(self._scanned_rowids, default=0)
        return len({r for r in self.failed_rowids if r <= top} - self._scanned_rowids)

    def _by_rowid(self) -> Iterator[sqlite3.Row]:
        try:
            top = self.conn.execute("SELECT max(rowid) FROM captures").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self.problems.append(f"captures: highest rowid unreadable ({exc})")
            top = None
        self._top = top
        rowid, misses = 0, 0
        while (top is not None and rowid < top) or (top is None and misses < _PROBE_GAP):
            rowid += 1
            try:
                row = self.conn.execute(
                    "SELECT * FROM captures WHERE rowid = ?", (rowid,)
                ).fetchone()
            except sqlite3.DatabaseError as exc:
                self.failed_rowids.add(rowid)
                if len(self.problems) < 5:
                    self.problems.append(f"captures rowid {rowid}: {exc}")
                misses += 1
                continue
            if row is None:
                misses += 1
                continue
            misses = 0
            yield row

    def _as_capture(self, values: list[Value]) -> dict[str, Any] | None:
        """A leaf cell's values as a capture row, if that is what they are."""
        cols = self._columns
        if not len(CAPTURE_COLUMNS) <= len(values) <= len(cols):
            return None
        row = dict(zip(cols, values + [None] * (len(cols) - len(values)), strict=True))
        sha = row.get("sha256")
        if not isinstance(row.get("id"), str) or not isinstance(sha, str) or len(sha) != 64:
            return None
        if row.get("state") not in STATES or row.get("path") not in ("serial", "mqtt", "http"):
            return None
        return row

    def original(self, capture_id: str) -> bytes | None:
        """The capture's original JPEG: through the index, else from the leaf pages."""
        try:
            row = self.conn.execute(
                "SELECT jpeg FROM images WHERE capture_id = ? AND variant = 'original'",
                (capture_id,),
            ).fetchone()
            if row is not None:
                return bytes(row[0])
        except sqlite3.DatabaseError:
            pass
        return self._images().get(capture_id)

    def _images(self) -> dict[str, bytes]:
        if self._scanned_images is None:
            self._scanned_images = {}
            for _rowid, values in self._page_file().rows():
                # images: id (the rowid, stored as NULL), capture_id, variant, bytes, jpeg
                if (
                    len(values) == 5
                    and values[0] is None
                    and isinstance(values[1], str)
                    and values[2] == "original"
                    and isinstance(values[4], bytes)
                ):
                    self._scanned_images.setdefault(values[1], values[4])
        return self._scanned_images


def _bring_back(row: Mapping[str, Any], found: _Found, store: Store, report: SalvageReport) -> None:
    capture_id = str(row["id"])
    if row["state"] in SETTLED:
        report.settled += 1
        return
    try:
        jpeg = found.original(capture_id)
    except sqlite3.DatabaseError as exc:
        jpeg = None
        _note(report, f"image of {capture_id}: {exc}")
    if jpeg is None:
        report.unreadable += 1
        _note(report, f"image of {capture_id}: not readable")
        return
    if hashlib.sha256(jpeg).hexdigest() != row["sha256"]:
        report.bad_image += 1
        _note(report, f"image of {capture_id}: sha256 does not match the capture's")
        return
    try:
        meta = json.loads(row["meta"] or "{}")
    except ValueError:
        meta = {}
    captured_at = row["captured_at"]
    capture = Capture(
        unit_id=row["unit_id"],
        unit_ref=row["unit_ref"],
        path=row["path"],
        jpeg=jpeg,
        received_at=row["received_at"],
        unit_time=row["unit_time"],
        unit_time_kind=row["unit_time_kind"],
        trigger=row["trigger"],
        meta=meta if isinstance(meta, dict) else {},
        estimated_at=captured_at if row["unit_time_kind"] in (None, "boot_ms") else None,
    )
    try:
        result = store.add_capture(capture)
    except Exception as exc:  # a full disk, most likely: the source file stays for a re-run
        report.refused += 1
        _note(report, f"{capture_id}: the live buffer refused it ({exc})")
        return
    if result.duplicate:
        report.already += 1
    else:
        report.restored += 1


def _note(report: SalvageReport, problem: str) -> None:
    if len(report.problems) < 20:
        report.problems.append(problem)


# --- `fieldstation buffer salvage FILE` ------------------------------------------------------------


def cmd_salvage(args: argparse.Namespace) -> int:
    """Salvage FILE into the station's live buffer and print what came back."""
    config = load_config(args.config)
    data_dir, found_by = station_data_dir(config.station.data_dir, args.data_dir)
    live = data_dir / BUFFER_FILE
    source = Path(args.file)
    if not source.is_file():
        raise SystemExit(f"fieldstation: no file {source}")
    if source.resolve() == live.resolve():
        raise SystemExit("fieldstation: FILE is the live buffer; name a damaged copy instead")
    store = Store(
        live,
        quota_bytes=config.storage.quota_bytes,
        min_free_bytes=config.storage.min_free_bytes,
        check_on_start=False,
    )
    try:
        report = salvage(source, store)
    finally:
        store.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
        return 0 if not report.refused else 1
    print(f"salvaged {source} into {live} (from {found_by})")
    print(f"  capture rows read     {report.rows}")
    print(f"  restored              {report.restored}")
    print(f"  already in buffer     {report.already}")
    print(f"  uploaded or evicted   {report.settled}")
    print(
        f"  could not be read     {report.lost} ({report.unreadable} unreadable, "
        f"{report.bad_image} with a wrong sha256)"
    )
    if report.refused:
        print(f"  refused by the buffer {report.refused} (disk full? run again when there is room)")
    return 0 if not report.refused else 1


def add_salvage_command(
    buffer_commands: Any, common: Callable[[argparse.ArgumentParser], None]
) -> None:
    """`fieldstation buffer salvage FILE`: the one buffer command that writes (through the store)."""
    sp = buffer_commands.add_parser(
        "salvage", help="read the captures of a damaged buffer file back into the live buffer"
    )
    common(sp)
    sp.add_argument("file", type=Path, help="a damaged buffer file, e.g. buffer.db.corrupt-…")
    sp.add_argument("--json", action="store_true", help="print JSON")
    sp.set_defaults(func=cmd_salvage)
