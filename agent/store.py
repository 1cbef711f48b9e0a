"""The offline-first SQLite buffer: the station's spine and its only queue.

Every component reads the rows in the state it handles and moves them on:
received -> analysed -> uploaded, or failed, or evicted (image bytes gone, the row kept).
"""

from __future__ import annotations

import json
import logging
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from agent.capture import Capture

log = logging.getLogger(__name__)

BUFFER_FILE = "buffer.db"  # the buffer's file name inside the station's data dir
STATES = ("received", "analysed", "uploaded", "evicted", "failed")

# Each entry is one schema version; append only. PRAGMA user_version holds how many have run.
MIGRATIONS: list[str] = [
    # 1: the capture backbone
    """
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
    """,
    # 2: the uploader's records (agent/upload/ledger.py): which cloud holds or may hold what
    """
    CREATE TABLE upload_deliveries (
        capture_id TEXT NOT NULL REFERENCES captures (id) ON DELETE CASCADE,
        endpoint TEXT NOT NULL,
        held_variant TEXT,                  -- acknowledged: full | blurred | thumbnail | none
        doubt_variant TEXT,                 -- sent, outcome unknown: ask the endpoint (lookup)
        doubt_batch TEXT,
        via_lookup INTEGER NOT NULL DEFAULT 0,  -- held learnt by lookup after a batch in doubt
        updated_at REAL NOT NULL,
        PRIMARY KEY (capture_id, endpoint)
    );
    CREATE INDEX upload_deliveries_doubt ON upload_deliveries (endpoint)
        WHERE doubt_variant IS NOT NULL;

    CREATE TABLE upload_bytes (
        endpoint TEXT NOT NULL,
        day TEXT NOT NULL,                  -- local calendar day, YYYY-MM-DD
        bytes INTEGER NOT NULL DEFAULT 0,   -- request bytes sent (headers and body)
        requests INTEGER NOT NULL DEFAULT 0,
        items INTEGER NOT NULL DEFAULT 0,   -- items the endpoint acknowledged
        PRIMARY KEY (endpoint, day)
    );
    """,
]


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
    ) -> None:
        self.path = Path(path)
        self.quota_bytes = quota_bytes
        self.min_free_bytes = min_free_bytes
        self.clock = clock
        self.recovered_from: Path | None = None
        self._lock = threading.RLock()
        self._pending_lock = threading.Lock()
        self._pending: list[_PendingCapture] = []
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

    # --- opening -------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA foreign_keys = ON")
        return conn

    def _open_or_recover(self, check: bool) -> sqlite3.Connection:
        try:
            conn = self._connect()
            self._configure(conn)
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
            conn = self._connect()
            self._configure(conn)
            self._migrate(conn)
            self._raise_alarm(
                conn,
                "database_recovered",
                f"buffer database was corrupt ({exc}); moved to {self.recovered_from.name}, "
                "started a fresh one",
            )
            return conn
        self._migrate(conn)
        return conn

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
        conn.execute("PRAGMA journal_mode = WAL")
        # FULL, not NORMAL: in WAL mode NORMAL skips the fsync at commit, so a power cut can roll
        # back the last commits -- captures the units were already told to delete. FULL syncs the
        # WAL on every commit, which is what makes "ACK after commit" a promise.
        conn.execute("PRAGMA synchronous = FULL")

    @staticmethod
    def _migrate(conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StoreError(
                f"buffer schema version {version} is newer than this software ({len(MIGRATIONS)})"
            )
        for number in range(version, len(MIGRATIONS)):
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in _split_sql(MIGRATIONS[number]):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {number + 1}")
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            log.info("buffer schema migrated to version %d", number + 1)

    @property
    def schema_version(self) -> int:
        with self.read() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # --- transactions --------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; when the block returns, the commit is durable (synchronous=FULL)."""
        if self.readonly:
            raise StoreError("this buffer was opened read-only")
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

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
        self._ensure_room(len(capture.jpeg))
        slot = _PendingCapture(capture)
        with self._pending_lock:
            self._pending.append(slot)
        with self._lock:
            if not slot.done:
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                try:
                    with self.transaction() as conn:
                        for pending in batch:
                            pending.result = self._insert_capture(conn, pending.capture)
                except BaseException as exc:
                    for pending in batch:
                        pending.error = exc
                for pending in batch:
                    pending.done = True
        if slot.error is not None:
            raise slot.error
        assert slot.result is not None
        return slot.result

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
        row = conn.execute("SELECT state FROM captures WHERE id = ?", (capture_id,)).fetchone()
        if row is None:
            raise StoreError(f"no capture {capture_id!r}")
        if expect is not None and row["state"] not in expect:
            raise StoreError(
                f"capture {capture_id!r} is {row['state']!r}, expected one of {expect}"
            )
        conn.execute(
            "UPDATE captures SET state = ?, state_changed_at = ?, error = ? WHERE id = ?",
            (state, self.clock(), error, capture_id),
        )

    def mark_failed(self, capture_id: str, reason: str) -> None:
        """A capture no worker can handle: kept with its bytes, never retried automatically."""
        with self.transaction() as conn:
            self.set_state(conn, capture_id, "failed", error=reason)

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

    def _ensure_room(self, incoming: int) -> None:
        if self.disk_free() - incoming >= self.min_free_bytes:
            return
        self.evict(target_bytes=max(0, self.image_bytes() - incoming - self.min_free_bytes))
        if self.disk_free() - incoming < self.min_free_bytes:
            raise StorageFull(
                f"disk has {self.disk_free()} bytes free, below min_free_bytes "
                f"{self.min_free_bytes}, and nothing more may be evicted"
            )

    def evict(self, target_bytes: int | None = None) -> int:
        """Drop image bytes until the buffer fits; return how many captures were evicted.

        Order: already uploaded first, then frames the models marked empty, oldest first within
        each. Anything else (not yet analysed, not yet uploaded, with detections) is never evicted:
        if the buffer still does not fit, a storage alarm is raised instead.
        """
        target = self.quota_bytes if target_bytes is None else target_bytes
        evicted = 0
        with self.transaction() as conn:
            total = conn.execute("SELECT coalesce(sum(bytes), 0) FROM images").fetchone()[0]
            if total > target:
                candidates = conn.execute(
                    """SELECT c.id, (SELECT coalesce(sum(bytes), 0) FROM images i
                                     WHERE i.capture_id = c.id) AS b
                       FROM captures c
                       WHERE c.state = 'uploaded'
                          OR (c.state = 'analysed' AND c.empty = 1)
                       ORDER BY (c.state = 'uploaded') DESC, c.received_at, c.id"""
                )
                for row in candidates:
                    if total <= target:
                        break
                    conn.execute("DELETE FROM images WHERE capture_id = ?", (row["id"],))
                    conn.execute(
                        """UPDATE captures SET state = 'evicted', state_changed_at = ?
                           WHERE id = ?""",
                        (self.clock(), row["id"]),
                    )
                    total -= row["b"]
                    evicted += 1
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
        return [dict(r) for r in rows]

    # --- what operators see --------------------------------------------------------------------

    def queue_summary(self) -> dict[str, object]:
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
            per_unit = {}
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
