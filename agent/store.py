"""The offline-first SQLite buffer: the station's spine and its only queue.

Every component reads the rows in the state it handles and moves them on:
received -> analysed -> uploaded, or failed, or evicted (image bytes gone, the row kept).

Each table has one owner. This module owns captures, images, detections, units, telemetry and
alarms; other modules call its methods, never their SQL. Other owners (the upload ledger, power
history, model sync) register their schema with `Store.register_migration` when imported, and
keep their SQL in their own module.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from agent.capture import Capture
from agent.diskreserve import DiskReserve
from agent.walcheck import WalCheck, set_aside_if_damaged

log = logging.getLogger(__name__)

BUFFER_FILE = "buffer.db"  # the buffer's file name inside the station's data dir
STATES = ("received", "analysed", "uploaded", "evicted", "failed")
PENDING_STATES = ("received", "analysed")  # not yet uploaded, failed or evicted

# The store's own tables (captures, images, detections, units, telemetry, alarms), version 1.
_BACKBONE_SQL = """
    CREATE TABLE captures (
        id TEXT PRIMARY KEY,
        unit_id TEXT NOT NULL,
        unit_ref TEXT NOT NULL,
        path TEXT NOT NULL CHECK (path IN ('serial', 'mqtt', 'http')),
        sha256 TEXT NOT NULL,
        size INTEGER NOT NULL,
        received_at REAL NOT NULL,
        unit_time INTEGER,
        unit_time_kind TEXT,
        captured_at REAL,
        trigger TEXT,
        meta TEXT NOT NULL DEFAULT '{}',
        state TEXT NOT NULL DEFAULT 'received'
            CHECK (state IN ('received', 'analysed', 'uploaded', 'evicted', 'failed')),
        state_changed_at REAL NOT NULL,
        empty INTEGER,                      -- NULL until analysed, 1 when no detection passed
        upload_variant TEXT NOT NULL DEFAULT 'original',  -- original | blurred | none (privacy)
        analysis TEXT,                      -- JSON: models, timings
        error TEXT
    );
    CREATE INDEX captures_unit_ref ON captures (unit_id, unit_ref);
    CREATE INDEX captures_state ON captures (state, received_at);

    CREATE TABLE images (
        id INTEGER PRIMARY KEY,
        capture_id TEXT NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
        variant TEXT NOT NULL,              -- original | blurred | thumbnail
        bytes INTEGER NOT NULL,
        jpeg BLOB NOT NULL,
        UNIQUE (capture_id, variant)
    );

    CREATE TABLE detections (
        id INTEGER PRIMARY KEY,
        capture_id TEXT NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
        label TEXT NOT NULL,
        grp TEXT NOT NULL CHECK (grp IN ('animal', 'person', 'vehicle', 'other')),
        score REAL NOT NULL,
        x REAL, y REAL, w REAL, h REAL,     -- normalised to the original image; NULL = whole frame
        model TEXT NOT NULL,
        model_version TEXT NOT NULL,
        parent_id INTEGER REFERENCES detections (id) ON DELETE CASCADE
    );
    CREATE INDEX detections_capture ON detections (capture_id);

    CREATE TABLE units (
        unit_id TEXT PRIMARY KEY,
        name TEXT,
        location_name TEXT,
        latitude REAL,
        longitude REAL,
        firmware_version TEXT,
        chip TEXT,
        mac TEXT,
        last_path TEXT,
        first_seen REAL NOT NULL,
        last_seen REAL NOT NULL,
        battery_mv INTEGER,
        battery_level REAL,
        temperature_c REAL,
        humidity REAL,
        rssi_dbm INTEGER,
        uptime_s INTEGER,
        pending_captures INTEGER,
        config TEXT                         -- the unit's last CONFIG_REPORT, JSON
    );

    CREATE TABLE telemetry (
        id INTEGER PRIMARY KEY,
        unit_id TEXT NOT NULL,
        at REAL NOT NULL,
        path TEXT NOT NULL,
        battery_mv INTEGER,
        battery_level REAL,
        temperature_c REAL,
        humidity REAL,
        rssi_dbm INTEGER
    );
    CREATE INDEX telemetry_unit_at ON telemetry (unit_id, at);

    CREATE TABLE alarms (
        kind TEXT PRIMARY KEY,
        active INTEGER NOT NULL,
        raised_at REAL NOT NULL,
        message TEXT NOT NULL
    );
"""

# Before per-owner migrations, PRAGMA user_version counted these, in this order.
_LEGACY_ORDER = (("store", 1), ("upload", 1))


@dataclass(frozen=True)
class Migration:
    """One schema step of one table owner; applied once, in registration order."""

    owner: str  # the module that owns the tables, e.g. "store", "upload"
    version: int  # 1, 2, ... within the owner
    sql: str


# Every registered migration, in the order they are applied (the store's own first).
MIGRATIONS: list[Migration] = []

# Value order of a capture `c`: 0 person/animal detections, 1 other detections, 2 not analysed
# (unknown value: usually empty PIR triggers, but it may hold anything, so above frames known to
# be empty), 3 frames the models found empty.
VALUE_RANK_SQL = """
    CASE
        WHEN c.state = 'received' THEN 2
        WHEN EXISTS (SELECT 1 FROM detections d WHERE d.capture_id = c.id
                     AND d.grp IN ('person', 'animal')) THEN 0
        WHEN EXISTS (SELECT 1 FROM detections d WHERE d.capture_id = c.id) THEN 1
        WHEN c.empty = 1 THEN 3
        ELSE 2
    END"""


def captures_by_value_sql(n_states: int) -> str:
    """A subquery: captures in `n_states` states (bound in order) with their value `rank`.

    For owners of tables keyed by capture id (the upload ledger) to join their own tables onto
    the captures in one read, while the SQL on the store's tables stays here.
    """
    marks = ",".join("?" * n_states)
    return f"SELECT c.*, {VALUE_RANK_SQL} AS rank FROM captures c WHERE c.state IN ({marks})"


class StoredDetection(Protocol):
    """What the store keeps of one detection (agent.inference.package.Detection has it)."""

    @property
    def label(self) -> str: ...
    @property
    def group(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def box(self) -> tuple[float, float, float, float] | None: ...
    @property
    def model(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def children(self) -> Sequence[StoredDetection]: ...


# Older buffers are vacuumed once at open to turn on incremental vacuum, when no larger than this.
_VACUUM_ON_OPEN_MAX = 256 << 20
# The WAL is folded into the database every 512 pages (2 MiB) and shrinks back to 2 MiB after,
# so un-checkpointed pages never take more of the disk than the reserve (4 MiB) can stand for.
_WAL_AUTOCHECKPOINT_PAGES = 512
_WAL_SIZE_LIMIT = 2 << 20
_EVICT_STEP_BYTES = 1 << 20  # image bytes deleted per eviction transaction
# Free space is looked at (statvfs, and a stat of the reserve) again after this long, or once the
# estimate since the last look comes within _ROOM_SLACK_BYTES of the limit. The estimate counts
# each capture three times over (its row, its WAL frames, the checkpoint's copy); a disk that fills
# faster than that between looks still ends in SQLITE_FULL, which becomes StorageFull (a NAK).
_ROOM_LOOK_S = 0.5
_ROOM_SLACK_BYTES = 64 << 20


class StoreError(RuntimeError):
    """The buffer could not do what was asked; the message says what and why."""


class _Corrupt(Exception):
    """quick_check found damage."""


class StorageFull(StoreError):
    """No room for a new capture even after eviction; the unit must keep its copy."""


@dataclass
class _PendingCapture:
    capture: Capture
    done: bool = False
    result: AddResult | None = None
    error: BaseException | None = None


@dataclass(frozen=True)
class AddResult:
    capture_id: str
    duplicate: bool  # the same unit, capture id and bytes were already stored
    id_reuse: bool = False  # same unit and capture id, different bytes: stored as a new capture


class Store:
    """The SQLite buffer. One writer at a time (a lock), readers in parallel (WAL)."""

    def __init__(
        self,
        path: Path,
        *,
        quota_bytes: int = 8 << 30,
        min_free_bytes: int = 256 << 20,
        check_on_start: bool = True,
        clock: Callable[[], float] = time.time,
        readonly: bool = False,
        reserve_bytes: int = 0,
    ) -> None:
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.clock = clock
        self.recovered_from: Path | None = None
        self.reserve = DiskReserve(self.path.parent, reserve_bytes)
        # (since, why) while the disk refuses captures; in memory first, as a full disk may also
        # refuse the alarm's row
        self._disk_full: tuple[float, str] | None = None
        self._recovery: tuple[Path, str] | None = None
        # a damaged buffer file set aside at open, whose captures salvage reads back
        self.set_aside: Path | None = None
        self.recovery_note = ""
        self._lock = threading.RLock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingCapture] = []
        self._room: tuple[float, int] | None = None  # (when, spare bytes) at the last look
        self._local = threading.local()
        self.readonly = readonly
        if readonly:
            # operator commands look without touching: no migration, no recovery, no writes
            if not self.path.exists():
                raise StoreError(f"no buffer database at {self.path}")
            self._conn = self._connect_readonly()
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = self._open_or_recover(check_on_start)
        self._finish_recovery()
        self._follow_disk()

    # --- opening -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_or_recover(self, check: bool) -> sqlite3.Connection:
        damaged = self._check_wal()
        try:
            conn = self._open()
            if check:
                result = conn.execute("PRAGMA quick_check").fetchone()[0]
                if result != "ok":
                    raise _Corrupt(f"quick_check: {result}")
            conn.execute("PRAGMA user_version").fetchone()
        except sqlite3.OperationalError:
            raise  # locked, I/O error, no permission: not corruption, so never move the file
        except (sqlite3.DatabaseError, _Corrupt) as exc:
            try:
                conn.close()
            except Exception:
                pass
            self.recovered_from = self._move_aside(exc)
            conn = self._open()
            self._migrate(conn)
            self._recovery = (
                self.recovered_from,
                f"buffer database was corrupt ({exc}); moved to {self.recovered_from.name}, "
                "started a fresh one",
            )
            return conn
        self._migrate(conn)
        self._enable_giving_space_back(conn)
        if damaged is not None:
            aside, found = damaged
            self._recovery = (
                aside,
                f"buffer WAL was damaged: {found.frames_lost} frames of committed work SQLite "
                f"would drop ({found.damaged_frames} frames unreadable); copies of the database "
                f"and its WAL kept as {aside.name}",
            )
        return conn

    def _open(self) -> sqlite3.Connection:
        """Connect and configure; on a full disk give up the reserve and try once more (SQLite
        needs room for its WAL index even to read)."""
        for attempt in (1, 2):
            conn = self._connect()
            try:
                self._configure(conn)
                return conn
            except sqlite3.OperationalError as exc:
                conn.close()
                if attempt == 2 or self.disk_free() >= 1 << 20 or not self.reserve.give_up():
                    raise
                self._note_disk_full(f"the disk was full when the buffer opened ({exc})")
        raise AssertionError("unreachable")

    def _check_wal(self) -> tuple[Path, WalCheck] | None:
        """Before SQLite replays the WAL (and then deletes it): would it drop committed frames?"""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        try:
            found = set_aside_if_damaged(self.path, stamp)
        except OSError as exc:  # no room for the copies: SQLite keeps what it can, we say so
            log.critical("buffer WAL is damaged and no copy could be kept: %s", exc)
            self._recovery = (self.path, f"buffer WAL was damaged; no copy could be kept ({exc})")
            return None
        if found is not None:
            aside, check = found
            log.critical(
                "buffer WAL %s-wal is damaged: SQLite would drop %d frames of committed work; "
                "kept copies as %s and will read the captures back from them",
                self.path,
                check.frames_lost,
                aside,
            )
        return found

    def _finish_recovery(self) -> None:
        """Raise the alarm for a file set aside at open; `set_aside` names it for salvage."""
        if self._recovery is None:
            return
        source, self.recovery_note = self._recovery
        self._recovery = None
        self.set_aside = source if source != self.path else None
        self.raise_alarm("database_recovered", self.recovery_note)

    def raise_alarm(self, kind: str, message: str) -> None:
        """Raise (or update the message of) an alarm; a full disk may refuse the row."""
        with contextlib.suppress(sqlite3.Error), self.transaction() as conn:
            self._raise_alarm(conn, kind, message)

    def _enable_giving_space_back(self, conn: sqlite3.Connection) -> None:
        """Buffers made before auto_vacuum: one VACUUM turns it on, when small and with room."""
        if conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
            return
        size = self.path.stat().st_size
        if size > _VACUUM_ON_OPEN_MAX or self.disk_free() < 3 * size + self.min_free_bytes:
            log.warning(
                "buffer %s predates incremental vacuum: eviction frees space inside it, not on "
                "the disk",
                self.path,
            )
            return
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("VACUUM")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        log.info("buffer %s now gives evicted space back to the disk", self.path)

    def _move_aside(self, exc: Exception) -> Path:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock()))
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
            n += 1
        shutil.move(self.path, target)
        for suffix in ("-wal", "-shm"):
            side = self.path.with_name(self.path.name + suffix)
            if side.exists():
                shutil.move(side, target.with_name(target.name + suffix))
        log.critical(
            "buffer database %s is corrupt (%s): moved it to %s and started a fresh one",
            self.path,
            exc,
            target,
        )
        return target

    def _connect_readonly(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            f"file:{self.path}?mode=ro", uri=True, timeout=30, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        return conn

    @staticmethod
    def _configure(conn: sqlite3.Connection) -> None:
        if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
            # a new buffer: freed pages can go back to the disk (eviction), set before any table
            conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
        conn.execute("PRAGMA journal_mode = WAL")
        # after a checkpoint the WAL file shrinks back to this, instead of keeping its peak size
        conn.execute(f"PRAGMA journal_size_limit = {_WAL_SIZE_LIMIT}")
        conn.execute(f"PRAGMA wal_autocheckpoint = {_WAL_AUTOCHECKPOINT_PAGES}")
        # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so a power cut can roll
        # back the last commits -- captures the units were already told to delete. FULL syncs the
        # WAL on every commit, which is what makes "ACK after commit" a promise.
        conn.execute("PRAGMA synchronous = FULL")

    @staticmethod
    def register_migration(owner: str, version: int, sql: str) -> None:
        """Add a table owner's schema step; call at import, before any Store opens.

        Versions count 1, 2, ... per owner. Opening a store applies every registered step it has
        not yet recorded, in registration order, each in its own transaction.
        """
        for m in MIGRATIONS:
            if (m.owner, m.version) == (owner, version):
                if m.sql != sql:
                    raise StoreError(
                        f"migration {owner} {version} is registered twice, differently"
                    )
                return  # the same module imported again (reload)
        newest = max((m.version for m in MIGRATIONS if m.owner == owner), default=0)
        if version != newest + 1:
            raise StoreError(f"migration {owner} {version} registered after {owner} {newest}")
        MIGRATIONS.append(Migration(owner, version, sql))

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        applied = _applied_migrations(conn)
        for owner in {m.owner for m in MIGRATIONS}:
            known = max(m.version for m in MIGRATIONS if m.owner == owner)
            have = max((v for o, v in applied if o == owner), default=0)
            if have > known:
                raise StoreError(
                    f"buffer schema of {owner} is at version {have}, newer than this software "
                    f"({known})"
                )
        for m in MIGRATIONS:
            if (m.owner, m.version) in applied:
                continue
            conn.execute("BEGIN IMMEDIATE")
            try:
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE owner = ? AND version = ?",
                    (m.owner, m.version),
                ).fetchone()
                if done is None:  # another process may have applied it while we waited
                    for statement in _split_sql(m.sql):
                        conn.execute(statement)
                    conn.execute(
                        "INSERT INTO schema_migrations (owner, version, applied_at) "
                        "VALUES (?, ?, ?)",
                        (m.owner, m.version, time.time()),
                    )
                    # user_version keeps counting steps, so software from before the
                    # registry refuses a buffer it does not know (it compares that count)
                    n = conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0]
                    conn.execute(f"PRAGMA user_version = {n}")
                conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            if done is None:
                log.info("buffer schema: %s migrated to version %d", m.owner, m.version)

    @property
    def schema_version(self) -> int:
        """How many schema steps this buffer has had (all owners together)."""
        with self.read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def checkpoint(self) -> None:
        """Fold the WAL into the database file (the power manager does it before a power-off)."""
        with self._lock:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def transaction(self, *, durable: bool = True) -> Iterator[sqlite3.Connection]:
        """A write transaction; when the block returns, the commit is durable (synchronous=FULL).

        `durable=False` is for what the station can redo or settle if a power cut takes it (an
        analysis is run again, an upload answer is settled by lookup from its durable doubt): the
        commit is atomic but not fsynced (WAL, synchronous=NORMAL). The next durable commit's
        fsync covers it, so it never outlives a later durable change nor lands after one.
        """
        if self.readonly:
            raise StoreError("this buffer was opened read-only")
        with self._lock:
            if not durable:
                self._conn.execute("PRAGMA synchronous = NORMAL")
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                try:
                    yield self._conn
                    self._conn.execute("COMMIT")
                except BaseException:
                    _rollback(self._conn)
                    raise
            finally:
                if not durable:
                    self._conn.execute("PRAGMA synchronous = FULL")

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection for this thread; sees the last committed state."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect_readonly() if self.readonly else self._connect()
            conn.execute("PRAGMA query_only = ON")
            self._local.conn = conn
        yield conn

    # --- captures ------------------------------------------------------------------------------

    def add_capture(self, capture: Capture) -> AddResult:
        """Store a capture durably, once; return only after the commit is on disk.

        Group commit: callers arriving while another commit is in flight are written together in
        the next transaction, so several links share one fsync instead of queueing for one each.
        """
        (outcome,) = self.add_captures([capture])
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def add_captures(self, captures: Sequence[Capture]) -> list[AddResult | BaseException]:
        """Store captures durably, each once, in one commit with whatever else is waiting; return
        each one's result, or the error that kept it out (StorageFull, a database error), in order.
        Returns only after the commit is on disk."""
        outcomes: list[AddResult | BaseException | None] = [None] * len(captures)
        slots: list[tuple[int, _PendingCapture]] = []
        for index, capture in enumerate(captures):
            try:
                self._ensure_room(len(capture.jpeg))
            except StorageFull as exc:
                outcomes[index] = exc
                continue
            slots.append((index, _PendingCapture(capture)))
        with self._pending_lock:
            self._pending.extend(slot for _, slot in slots)
        with self._lock:
            # whoever held the lock before us committed our slots or left them all pending
            if any(not slot.done for _, slot in slots):
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    with self.transaction() as conn:
                        for pending in batch:
                            pending.result = self._insert_capture(conn, pending.capture)
                except BaseException as exc:
                    error = self._storage_error(exc)
                    for pending in batch:
                        pending.error = error
                for pending in batch:
                    pending.done = True
        for index, slot in slots:
            outcomes[index] = slot.error if slot.error is not None else slot.result
        stored = any(slot.error is None for _, slot in slots)
        if stored and self._disk_full is not None:  # a commit went through: the disk has room
            self._follow_disk()
        done = [o for o in outcomes if o is not None]
        assert len(done) == len(captures), "every capture gets a result or an error"
        return done

    def _storage_error(self, exc: BaseException) -> BaseException:
        """A full disk becomes StorageFull: units keep their copy (NAK storage_full, HTTP 507)."""
        if isinstance(exc, StorageFull) or not disk_full(exc):
            return exc
        self._note_disk_full(f"SQLite: {exc}")
        full = StorageFull(f"the disk is full ({exc}); the unit keeps its copy")
        full.__cause__ = exc
        return full

    def _insert_capture(self, conn: sqlite3.Connection, capture: Capture) -> AddResult:
        rows = conn.execute(
            "SELECT id, sha256 FROM captures WHERE unit_id = ? AND unit_ref = ?",
            (capture.unit_id, capture.unit_ref),
        ).fetchall()
        for row in rows:
            if row["sha256"] == capture.sha256:
                return AddResult(row["id"], duplicate=True)
        conn.execute(
            """INSERT INTO captures (id, unit_id, unit_ref, path, sha256, size, received_at,
                   unit_time, unit_time_kind, captured_at, trigger, meta, state_changed_at)
               VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            (
                capture.id,
                capture.unit_id,
                capture.unit_ref,
                capture.path,
                capture.sha256,
                len(capture.jpeg),
                capture.received_at,
                capture.unit_time,
                capture.unit_time_kind,
                capture.captured_at,
                capture.trigger,
                json.dumps(capture.meta, sort_keys=True),
                self.clock(),
            ),
        )
        conn.execute(
            "INSERT INTO images (capture_id, variant, bytes, jpeg) VALUES (?, 'original', ?, ?)",
            (capture.id, len(capture.jpeg), capture.jpeg),
        )
        self._touch_unit(conn, capture.unit_id, capture.path, capture.received_at)
        return AddResult(capture.id, duplicate=False, id_reuse=bool(rows))

    def read_image(self, capture_id: str, variant: str = "original") -> bytes | None:
        with self.read() as conn:
            row = conn.execute(
                "SELECT jpeg FROM images WHERE capture_id = ? AND variant = ?",
                (capture_id, variant),
            ).fetchone()
        return None if row is None else bytes(row[0])

    def read_images(self, ids: Sequence[str]) -> dict[tuple[str, str], bytes]:
        """Every stored variant of these captures in one query, by (capture id, variant)."""
        marks = ",".join("?" * len(ids))
        with self.read() as conn:
            rows = conn.execute(
                f"SELECT capture_id, variant, jpeg FROM images WHERE capture_id IN ({marks})",
                list(ids),
            ).fetchall()
        return {(r[0], r[1]): bytes(r[2]) for r in rows}

    def get_capture(self, capture_id: str) -> sqlite3.Row | None:
        with self.read() as conn:
            return conn.execute("SELECT * FROM captures WHERE id = ?", (capture_id,)).fetchone()

    def captures_in_state(self, state: str, limit: int = 100) -> list[sqlite3.Row]:
        """Oldest first: the order every worker drains its state in."""
        if state not in STATES:
            raise StoreError(f"unknown capture state {state!r}")
        with self.read() as conn:
            return conn.execute(
                "SELECT * FROM captures WHERE state = ? ORDER BY received_at, id LIMIT ?",
                (state, limit),
            ).fetchall()

    def set_state(
        self,
        conn: sqlite3.Connection,
        capture_id: str,
        state: str,
        *,
        expect: tuple[str, ...] | None = None,
        error: str | None = None,
    ) -> None:
        """Move one capture on, inside the caller's transaction; refuse an illegal move."""
        if state not in STATES:
            raise StoreError(f"unknown capture state {state!r}")
        # one statement when the move is legal (every analysis and every uploaded item makes
        # one); the refusal reads the row again only to say why
        allowed = STATES if expect is None else expect
        marks = ",".join("?" * len(allowed))
        moved = conn.execute(
            f"""UPDATE captures SET state = ?, state_changed_at = ?, error = ?
                WHERE id = ? AND state IN ({marks}) RETURNING 1""",
            (state, self.clock(), error, capture_id, *allowed),
        ).fetchone()
        if moved is not None:
            return
        row = conn.execute("SELECT state FROM captures WHERE id = ?", (capture_id,)).fetchone()
        if row is None:
            raise StoreError(f"no capture {capture_id!r}")
        raise StoreError(f"capture {capture_id!r} is {row['state']!r}, expected one of {expect}")

    def mark_failed(self, capture_id: str, reason: str) -> None:
        """A capture no worker can handle: kept with its bytes, never retried automatically."""
        with self.transaction() as conn:
            self.set_state(conn, capture_id, "failed", error=reason)

    def import_captures(self, captures: Iterable[Capture]) -> list[AddResult]:
        """Store many captures in one transaction (bulk loads such as benches); no eviction."""
        with self.transaction() as conn:
            return [self._insert_capture(conn, c) for c in captures]

    def captures_by_id(self, ids: Sequence[str]) -> dict[str, sqlite3.Row]:
        """The capture rows with these ids (missing ids are left out)."""
        out: dict[str, sqlite3.Row] = {}
        with self.read() as conn:
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(f"SELECT * FROM captures WHERE id IN ({marks})", chunk):
                    out[r["id"]] = r
        return out

    def backlog(self, states: Sequence[str]) -> tuple[int, int]:
        """How many captures are in these states, and their original bytes."""
        marks = ",".join("?" * len(states))
        with self.read() as conn:
            row = conn.execute(
                f"SELECT count(*), coalesce(sum(size), 0) FROM captures WHERE state IN ({marks})",
                tuple(states),
            ).fetchone()
        return int(row[0]), int(row[1])

    def count_in_states(self, states: Sequence[str]) -> int:
        """How many captures are in these states (the state index alone answers it)."""
        marks = ",".join("?" * len(states))
        with self.read() as conn:
            return int(
                conn.execute(
                    f"SELECT count(*) FROM captures WHERE state IN ({marks})", tuple(states)
                ).fetchone()[0]
            )

    def backlog_by_value(self, states: Sequence[str]) -> dict[int, tuple[int, int]]:
        """Captures and bytes in these states per value rank (see VALUE_RANK_SQL), best first."""
        marks = ",".join("?" * len(states))
        with self.read() as conn:
            rows = conn.execute(
                f"""SELECT {VALUE_RANK_SQL} AS rank, count(*), coalesce(sum(size), 0)
                    FROM captures c WHERE state IN ({marks}) GROUP BY rank ORDER BY rank""",
                tuple(states),
            ).fetchall()
        return {int(r[0]): (int(r[1]), int(r[2])) for r in rows}

    def count_by_path(self) -> dict[str, int]:
        """Captures in the buffer per ingest path."""
        with self.read() as conn:
            rows = conn.execute("SELECT path, count(*) FROM captures GROUP BY path").fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def latest_captures(
        self,
        *,
        unit_id: str | None = None,
        label: str | None = None,
        state: str | None = None,
        after: float | None = None,
        limit: int = 24,
    ) -> list[sqlite3.Row]:
        """Newest first (the station page): optionally of one unit, with one label, in one state,
        or received after a time."""
        where: list[str] = ["1 = 1"]
        args: list[object] = []
        if unit_id:
            where.append("unit_id = ?")
            args.append(unit_id)
        if state:
            where.append("state = ?")
            args.append(state)
        if after is not None:
            where.append("received_at > ?")
            args.append(after)
        if label:
            where.append("id IN (SELECT capture_id FROM detections WHERE label = ?)")
            args.append(label)
        with self.read() as conn:
            return conn.execute(
                f"SELECT * FROM captures WHERE {' AND '.join(where)} "
                "ORDER BY received_at DESC, id DESC LIMIT ?",
                (*args, limit),
            ).fetchall()

    def last_capture_of_units(self) -> dict[str, sqlite3.Row]:
        """Each unit's newest capture (the station page's aim check), by unit id."""
        with self.read() as conn:
            rows = conn.execute(
                """SELECT c.* FROM captures c JOIN (
                       SELECT unit_id, max(received_at) AS at FROM captures GROUP BY unit_id
                   ) n ON c.unit_id = n.unit_id AND c.received_at = n.at
                   ORDER BY c.id"""
            ).fetchall()
        return {r["unit_id"]: r for r in rows}

    def count_by_label(self) -> dict[str, int]:
        """Detector results (not classifier children) per label, over the whole buffer."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT label, count(*) FROM detections WHERE parent_id IS NULL GROUP BY label"
            ).fetchall()
        return {r[0]: int(r[1]) for r in rows}

    def activity_since(self, since: float) -> dict[str, int]:
        """Captures received since `since`, and how many reached each state since then."""
        with self.read() as conn:
            received = conn.execute(
                "SELECT count(*) FROM captures WHERE received_at >= ?", (since,)
            ).fetchone()[0]
            moved = dict(
                conn.execute(
                    "SELECT state, count(*) FROM captures WHERE state_changed_at >= ? "
                    "GROUP BY state",
                    (since,),
                ).fetchall()
            )
        return {"received": received, **{s: moved.get(s, 0) for s in STATES if s != "received"}}

    def count_empty(self) -> int:
        """Captures the models found empty."""
        with self.read() as conn:
            return int(conn.execute("SELECT count(*) FROM captures WHERE empty = 1").fetchone()[0])

    def finish_upload(self, conn: sqlite3.Connection, capture_id: str) -> bool:
        """Mark a pending capture uploaded inside the caller's transaction; False if not pending.

        Privacy "blur": the unblurred original never leaves the station and is gone once the
        blurred copy is safe in a cloud (the same commit as the acknowledgement).
        """
        return bool(self.finish_uploads(conn, [capture_id]))

    def finish_uploads(self, conn: sqlite3.Connection, capture_ids: Sequence[str]) -> set[str]:
        """`finish_upload` for a whole batch's answer in two statements; returns the ids moved
        (one failed or evicted meanwhile is not: the cloud's copy is recorded anyway)."""
        if not capture_ids:
            return set()
        marks = ",".join("?" * len(capture_ids))
        pending = ",".join("?" * len(PENDING_STATES))
        moved = {
            r[0]
            for r in conn.execute(
                f"""UPDATE captures SET state = 'uploaded', state_changed_at = ?, error = NULL
                    WHERE id IN ({marks}) AND state IN ({pending}) RETURNING id""",
                (self.clock(), *capture_ids, *PENDING_STATES),
            )
        }
        if moved:
            marks = ",".join("?" * len(moved))
            conn.execute(
                f"""DELETE FROM images WHERE variant = 'original' AND capture_id IN (
                        SELECT id FROM captures WHERE id IN ({marks}) AND upload_variant = 'blurred')""",
                tuple(moved),
            )
        return moved

    def fail_pending(self, conn: sqlite3.Connection, capture_id: str, reason: str) -> bool:
        """Mark a pending capture failed inside the caller's transaction; False if not pending."""
        try:
            self.set_state(conn, capture_id, "failed", expect=PENDING_STATES, error=reason)
        except StoreError:
            return False
        return True

    # --- analyses ------------------------------------------------------------------------------

    def save_analysis(
        self,
        capture_id: str,
        detections: Sequence[StoredDetection],
        *,
        empty: bool,
        upload_variant: str,
        summary: dict[str, Any],
        blurred: bytes | None = None,
    ) -> None:
        """One transaction: detections in, capture marked analysed (and empty or not). Not
        fsynced: a power cut may take it, and the capture is analysed again (it stays received,
        so it is not uploaded meanwhile)."""
        with self.transaction(durable=False) as conn:
            conn.execute("DELETE FROM detections WHERE capture_id = ?", (capture_id,))
            for d in detections:
                parent = _insert_detection(conn, capture_id, d, None)
                for child in d.children:
                    _insert_detection(conn, capture_id, child, parent)
            if blurred is not None:
                conn.execute(
                    """INSERT INTO images (capture_id, variant, bytes, jpeg)
                       VALUES (?, 'blurred', ?, ?)
                       ON CONFLICT (capture_id, variant) DO UPDATE SET bytes = excluded.bytes,
                           jpeg = excluded.jpeg""",
                    (capture_id, len(blurred), blurred),
                )
            conn.execute(
                "UPDATE captures SET empty = ?, upload_variant = ?, analysis = ? WHERE id = ?",
                (int(empty), upload_variant, json.dumps(summary, sort_keys=True), capture_id),
            )
            self.set_state(conn, capture_id, "analysed", expect=("received",))

    def skip_analysis(self, capture_id: str, reason: str) -> None:
        """Move a capture on without models (inference disabled or none configured)."""
        with self.transaction() as conn:
            conn.execute(
                "UPDATE captures SET analysis = ? WHERE id = ?",
                (json.dumps({"models": [], "skipped": reason}), capture_id),
            )
            self.set_state(conn, capture_id, "analysed", expect=("received",))

    def detections(self, capture_id: str) -> list[dict[str, Any]]:
        """Stored detections of a capture, detector results first, as plain dicts."""
        with self.read() as conn:
            rows = conn.execute(
                "SELECT * FROM detections WHERE capture_id = ? ORDER BY id", (capture_id,)
            ).fetchall()
        return [dict(r) for r in rows]

    def detections_of(self, ids: Sequence[str]) -> dict[str, list[sqlite3.Row]]:
        """Stored detections of several captures, each in stored order (every id has a list)."""
        out: dict[str, list[sqlite3.Row]] = {i: [] for i in ids}
        with self.read() as conn:
            for chunk in _chunks(list(ids), 500):
                marks = ",".join("?" * len(chunk))
                for r in conn.execute(
                    f"""SELECT capture_id, label, grp, score, x, y, w, h, model, model_version
                        FROM detections WHERE capture_id IN ({marks}) ORDER BY capture_id, id""",
                    chunk,
                ):
                    out[r["capture_id"]].append(r)
        return out

    # --- units and telemetry -------------------------------------------------------------------

    def _touch_unit(self, conn: sqlite3.Connection, unit_id: str, path: str, at: float) -> None:
        conn.execute(
            """INSERT INTO units (unit_id, last_path, first_seen, last_seen) VALUES (?, ?, ?, ?)
               ON CONFLICT (unit_id) DO UPDATE SET last_path = excluded.last_path,
                   last_seen = max(units.last_seen, excluded.last_seen)""",
            (unit_id, path, at, at),
        )

    def update_unit(self, unit_id: str, path: str, **fields: object) -> None:
        """Record what a unit told us about itself (hello, registration, config report)."""
        allowed = {
            "name",
            "location_name",
            "latitude",
            "longitude",
            "firmware_version",
            "chip",
            "mac",
            "uptime_s",
            "pending_captures",
            "config",
        }
        unknown = set(fields) - allowed
        if unknown:
            raise StoreError(f"unknown unit fields {sorted(unknown)}")
        with self.transaction() as conn:
            self._touch_unit(conn, unit_id, path, self.clock())
            if fields:
                sets = ", ".join(f"{k} = ?" for k in fields)
                conn.execute(
                    f"UPDATE units SET {sets} WHERE unit_id = ?", (*fields.values(), unit_id)
                )

    def add_telemetry(
        self,
        unit_id: str,
        path: str,
        *,
        battery_mv: int | None = None,
        battery_level: float | None = None,
        temperature_c: float | None = None,
        humidity: float | None = None,
        rssi_dbm: int | None = None,
        uptime_s: int | None = None,
        pending_captures: int | None = None,
    ) -> None:
        now = self.clock()
        values = {
            "battery_mv": battery_mv,
            "battery_level": battery_level,
            "temperature_c": temperature_c,
            "humidity": humidity,
            "rssi_dbm": rssi_dbm,
        }
        with self.transaction() as conn:
            self._touch_unit(conn, unit_id, path, now)
            conn.execute(
                """INSERT INTO telemetry (unit_id, at, path, battery_mv, battery_level,
                       temperature_c, humidity, rssi_dbm) VALUES (?, ?, ?, ?, ?, ?, ?, ?)""",
                (unit_id, now, path, *values.values()),
            )
            latest = {k: v for k, v in values.items() if v is not None}
            latest.update(
                {
                    k: v
                    for k, v in (("uptime_s", uptime_s), ("pending_captures", pending_captures))
                    if v is not None
                }
            )
            if latest:
                sets = ", ".join(f"{k} = ?" for k in latest)
                conn.execute(
                    f"UPDATE units SET {sets} WHERE unit_id = ?", (*latest.values(), unit_id)
                )

    def units(self) -> list[sqlite3.Row]:
        with self.read() as conn:
            return conn.execute("SELECT * FROM units ORDER BY unit_id").fetchall()

    # --- quota, eviction, alarms ---------------------------------------------------------------

    def image_bytes(self) -> int:
        with self.read() as conn:
            return conn.execute("SELECT coalesce(sum(bytes), 0) FROM images").fetchone()[0]

    def disk_free(self) -> int:
        return shutil.disk_usage(self.path.parent).free

    def _room_needed(self) -> int:
        """Free space below which captures are refused: the reserve, if given up, counts."""
        return self.min_free_bytes + max(0, self.reserve.size - self.reserve.held)

    def _ensure_room(self, incoming: int) -> None:
        if self._room_by_estimate(incoming):
            return
        spare = self.disk_free() - incoming - self._room_needed()
        if spare >= 0:
            with self._pending_lock:
                self._room = (time.monotonic(), spare)
            return
        self.evict(target_bytes=max(0, self.image_bytes() - incoming - self.min_free_bytes))
        if self.disk_free() - incoming < self._room_needed():
            why = (
                f"disk has {self.disk_free()} bytes free, below min_free_bytes "
                f"{self.min_free_bytes}, and nothing more may be evicted"
            )
            self._note_disk_full(why)
            raise StorageFull(why)

    def _room_by_estimate(self, incoming: int) -> bool:
        """True when the last look at the disk, less what was added since, still leaves the slack:
        statvfs for every capture was a tenth of ingest's Python time."""
        with self._pending_lock:
            if self._room is None:
                return False
            at, spare = self._room
            spare -= 3 * incoming
            if time.monotonic() - at > _ROOM_LOOK_S or spare < _ROOM_SLACK_BYTES:
                return False
            self._room = (at, spare)
            return True

    def evict(self, target_bytes: int | None = None) -> int:
        """Drop image bytes until the buffer fits; return how many captures were evicted.

        Order: already uploaded first, then frames the models marked empty, oldest first within
        each. Anything else (not yet analysed, not yet uploaded, with detections) is never evicted:
        if the buffer still does not fit, a storage alarm is raised instead.
        """
        target = self.quota_bytes if target_bytes is None else target_bytes
        evicted = 0
        for attempt in (1, 2):
            try:
                evicted = self._evict_to(target)
                break
            except sqlite3.OperationalError as exc:
                if not disk_full(exc):
                    raise
                # a delete writes to the WAL too: on a full disk the reserve makes that room
                if attempt == 2 or not self.reserve.give_up():
                    self._note_disk_full(f"the disk is full and eviction could not run ({exc})")
                    return 0
        if evicted:
            self._give_space_back()
        self._follow_disk()
        return evicted

    def _evict_to(self, target: int) -> int:
        """Evict in steps of about _EVICT_STEP_BYTES, each committed and its WAL folded in and
        truncated: SQLite zeroes what it deletes (secure_delete) through the WAL, so one big
        delete would need as much free disk as it frees."""
        evicted = 0
        while True:
            step, total, more = self._evict_step(target)
            evicted += step
            if not (step and more):
                break
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        with self.transaction() as conn:
            if total > target:
                self._raise_alarm(
                    conn,
                    "storage_quota",
                    f"buffer holds {total} image bytes, over its limit {target}, and the rest "
                    "are not yet uploaded or hold detections; nothing more is evicted",
                )
            else:
                self._clear_alarm(conn, "storage_quota")
        if evicted:
            log.info("evicted %d captures to fit the buffer quota of %d bytes", evicted, target)
        return evicted

    def _evict_step(self, target: int) -> tuple[int, int, bool]:
        """One transaction of eviction: (captures evicted, image bytes left, more to do)."""
        evicted = freed = 0
        with self.transaction() as conn:
            total = conn.execute("SELECT coalesce(sum(bytes), 0) FROM images").fetchone()[0]
            if total <= target:
                return 0, total, False
            candidates = conn.execute(
                """SELECT c.id, (SELECT coalesce(sum(bytes), 0) FROM images i
                                 WHERE i.capture_id = c.id) AS b
                   FROM captures c
                   WHERE c.state = 'uploaded'
                      OR (c.state = 'analysed' AND c.empty = 1)
                   ORDER BY (c.state = 'uploaded') DESC, c.received_at, c.id"""
            ).fetchall()
            for row in candidates:
                if total <= target or freed >= _EVICT_STEP_BYTES:
                    break
                conn.execute("DELETE FROM images WHERE capture_id = ?", (row["id"],))
                conn.execute(
                    """UPDATE captures SET state = 'evicted', state_changed_at = ?
                       WHERE id = ?""",
                    (self.clock(), row["id"]),
                )
                total -= row["b"]
                freed += row["b"]
                evicted += 1
        return evicted, total, total > target and evicted < len(candidates)

    def _give_space_back(self) -> None:
        """Hand the pages eviction freed back to the filesystem: incremental vacuum in steps,
        each followed by a checkpoint that truncates the WAL, so neither file keeps them."""
        try:
            with self._lock:  # first the WAL: the steps below then never need much room
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                incremental = self._conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
            for _ in range(100_000 if incremental else 0):  # bounded; up to 1 MiB a step
                with self._lock:  # let captures in between steps
                    if not self._conn.execute("PRAGMA freelist_count").fetchone()[0]:
                        break
                    self._conn.execute("PRAGMA incremental_vacuum(256)").fetchall()
                    self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            with self._lock:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError as exc:  # busy or full: the next eviction tries again
            log.warning("could not give evicted space back to the disk yet: %s", exc)

    def _follow_disk(self) -> None:
        """Clear the storage_full alarm once the disk has room again, and hold the reserve."""
        if self.readonly or self.disk_free() < self._room_needed():
            return
        self.reserve.take(keep_free=self.min_free_bytes)
        was = self._disk_full
        self._disk_full = None
        if was is None and all(a["kind"] != "storage_full" for a in self.alarms()):
            return
        try:
            with self.transaction() as conn:
                self._clear_alarm(conn, "storage_full")
        except sqlite3.Error:
            return
        if was is not None:
            log.warning("the disk has room again: captures are taken again")

    def _note_disk_full(self, why: str) -> None:
        """Raise storage_full: in memory at once, in the alarms table when the disk allows."""
        self._room = None  # no estimate outlives a full disk: the next capture looks
        if self._disk_full is None:
            self._disk_full = (self.clock(), why)
            log.error("alarm storage_full: %s", why)
        if not hasattr(self, "_conn"):
            return  # still opening: the row is written the next time the disk refuses
        with contextlib.suppress(sqlite3.Error), self.transaction() as conn:
            self._raise_alarm(conn, "storage_full", why)

    def _raise_alarm(self, conn: sqlite3.Connection, kind: str, message: str) -> None:
        row = conn.execute("SELECT active FROM alarms WHERE kind = ?", (kind,)).fetchone()
        if row is None or not row["active"]:
            log.error("alarm %s: %s", kind, message)
        conn.execute(
            """INSERT INTO alarms (kind, active, raised_at, message) VALUES (?, 1, ?, ?)
               ON CONFLICT (kind) DO UPDATE SET message = excluded.message, active = 1,
                   raised_at = CASE WHEN alarms.active THEN alarms.raised_at
                                    ELSE excluded.raised_at END""",
            (kind, self.clock(), message),
        )

    def _clear_alarm(self, conn: sqlite3.Connection, kind: str) -> None:
        cur = conn.execute("UPDATE alarms SET active = 0 WHERE kind = ? AND active = 1", (kind,))
        if cur.rowcount:
            log.warning("alarm %s cleared", kind)

    def clear_alarm(self, kind: str) -> None:
        with self.transaction() as conn:
            self._clear_alarm(conn, kind)

    def alarms(self) -> list[dict[str, object]]:
        with self.read() as conn:
            rows = conn.execute("SELECT * FROM alarms WHERE active = 1 ORDER BY kind").fetchall()
        out = [dict(r) for r in rows]
        if self._disk_full is not None and all(a["kind"] != "storage_full" for a in out):
            since, why = self._disk_full
            out.append({"kind": "storage_full", "active": 1, "raised_at": since, "message": why})
            out.sort(key=lambda a: str(a["kind"]))
        return out

    # --- what operators see --------------------------------------------------------------------

    def queue_summary(self) -> dict[str, Any]:
        """Counts and bytes by state, the oldest capture not yet uploaded, and per unit."""
        with self.read() as conn:
            by_state = {s: {"count": 0, "bytes": 0} for s in STATES}
            for row in conn.execute(
                "SELECT state, count(*) AS n, coalesce(sum(size), 0) AS b FROM captures "
                "GROUP BY state"
            ):
                by_state[row["state"]] = {"count": row["n"], "bytes": row["b"]}
            oldest = conn.execute(
                """SELECT id, unit_id, received_at, state FROM captures
                   WHERE state IN ('received', 'analysed') ORDER BY received_at, id LIMIT 1"""
            ).fetchone()
            per_unit: dict[str, dict[str, Any]] = {}
            for row in conn.execute(
                """SELECT unit_id, state, count(*) AS n, coalesce(sum(size), 0) AS b
                   FROM captures GROUP BY unit_id, state ORDER BY unit_id"""
            ):
                unit = per_unit.setdefault(row["unit_id"], {"count": 0, "bytes": 0, "by_state": {}})
                unit["count"] += row["n"]
                unit["bytes"] += row["b"]
                unit["by_state"][row["state"]] = row["n"]
            stored = conn.execute("SELECT coalesce(sum(bytes), 0) FROM images").fetchone()[0]
        pending = by_state["received"]["count"] + by_state["analysed"]["count"]
        return {
            "by_state": by_state,
            "pending": pending,
            "pending_bytes": by_state["received"]["bytes"] + by_state["analysed"]["bytes"],
            "stored_image_bytes": stored,
            "quota_bytes": self.quota_bytes,
            "oldest_pending": dict(oldest) if oldest else None,
            "per_unit": per_unit,
        }


def _insert_detection(
    conn: sqlite3.Connection, capture_id: str, d: StoredDetection, parent: int | None
) -> int:
    x = y = w = h = None
    if d.box is not None:
        x, y, w, h = d.box
    cur = conn.execute(
        """INSERT INTO detections (capture_id, label, grp, score, x, y, w, h, model,
               model_version, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (capture_id, d.label, d.group, d.score, x, y, w, h, d.model, d.model_version, parent),
    )
    return int(cur.lastrowid or 0)


def _chunks(seq: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _applied_migrations(conn: sqlite3.Connection) -> set[tuple[str, int]]:
    """The (owner, version) steps this buffer has had; records older buffers' steps first."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   owner TEXT NOT NULL,
                   version INTEGER NOT NULL,
                   applied_at REAL NOT NULL,
                   PRIMARY KEY (owner, version))"""
        )
        rows = conn.execute("SELECT owner, version FROM schema_migrations").fetchall()
        if not rows:
            # a buffer from before the registry: user_version counted the steps in _LEGACY_ORDER
            legacy = conn.execute("PRAGMA user_version").fetchone()[0]
            if legacy > len(_LEGACY_ORDER):
                raise StoreError(
                    f"buffer schema version {legacy} is newer than this software "
                    f"({len(_LEGACY_ORDER)} steps before per-owner migrations)"
                )
            rows = list(_LEGACY_ORDER[:legacy])
            conn.executemany(
                "INSERT INTO schema_migrations (owner, version, applied_at) VALUES (?, ?, 0)",
                rows,
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return {(r[0], r[1]) for r in rows}


def _rollback(conn: sqlite3.Connection) -> None:
    """Roll back if a transaction is still open. SQLite rolls back by itself on some errors
    (a full disk among them); a ROLLBACK then fails and would hide the error that mattered."""
    if conn.in_transaction:
        with contextlib.suppress(sqlite3.Error):
            conn.execute("ROLLBACK")


def disk_full(exc: BaseException) -> bool:
    """Is a full disk behind this error (StorageFull, or SQLite's "database or disk is full"
    anywhere in its chain)?"""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if isinstance(seen, StorageFull):
            return True
        if isinstance(seen, sqlite3.Error) and (
            getattr(seen, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
            or "disk is full" in str(seen)
        ):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _split_sql(script: str) -> list[str]:
    """Split a migration into complete statements (comments may hold semicolons)."""
    statements, current = [], ""
    for line in script.splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    if current.strip():
        raise StoreError(f"migration ends inside a statement: {current.strip()[:60]!r}")
    return statements


Store.register_migration("store", 1, _BACKBONE_SQL)
