"""The metadata database interface, written once in portable SQL; backends supply connections.

A backend module subclasses `Database` and provides `connect()`, `schema()` and, where its driver
differs, `placeholder`. Every method runs in a worker thread (the API calls them via a thread pool),
so each thread gets its own connection.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cloud.errors import NotFound

if TYPE_CHECKING:
    from cloud.ratelimit import RateBuckets

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class TokenRow:
    token_id: str
    station_id: str | None  # None for admin tokens
    role: str  # "station" | "admin"
    salt: bytes
    digest: bytes
    revoked: bool


@dataclass
class CaptureRow:
    """A capture as the database holds it; `item` is the manifest item as uploaded."""

    station_id: str
    capture_id: str
    unit_id: str
    path: str
    sha256: str
    size: int
    received_at: float
    captured_at: float | None
    uploaded_at: float
    trigger: str | None
    unit_time: int | None
    unit_time_kind: str | None
    variant: str
    image_key: str | None
    image_sha256: str | None
    image_size: int | None
    empty: bool | None
    detections: list[dict[str, Any]]
    meta: dict[str, Any]

    @property
    def time(self) -> float:
        """Best capture time: the unit's capture time when known, else when the station got it."""
        return self.captured_at if self.captured_at is not None else self.received_at


CAPTURE_COLUMNS = (
    "station_id, capture_id, unit_id, path, sha256, size, received_at, captured_at, time, "
    "uploaded_at, trigger_name, variant, image_key, image_sha256, image_size, empty, meta, "
    "unit_time, unit_time_kind"
)


# Rows per INSERT statement: 19 parameters each stays far below every driver's limit. One
# statement, not one per row: SQLite's driver hands the GIL back and forth at every step.
_ROWS_PER_INSERT = 100
_CAPTURE_MARKS = "(" + ", ".join(["?"] * 19) + ")"
_DETECTION_MARKS = "(" + ", ".join(["?"] * 12) + ")"


def _capture_values(row: CaptureRow) -> tuple[Any, ...]:
    """The CAPTURE_COLUMNS values of a row, in order."""
    return (
        row.station_id,
        row.capture_id,
        row.unit_id,
        row.path,
        row.sha256,
        row.size,
        row.received_at,
        row.captured_at,
        row.time,
        row.uploaded_at,
        row.trigger,
        row.variant,
        row.image_key,
        row.image_sha256,
        row.image_size,
        None if row.empty is None else int(row.empty),
        json.dumps(row.meta, separators=(",", ":")),
        row.unit_time,
        row.unit_time_kind,
    )


class Database:
    """Portable SQL over a DB-API connection per thread."""

    placeholder = "?"
    # A file on this machine: a short read costs less than a worker-thread hop, so the API may
    # make it on the event loop. False for a database across the network.
    local_file = False
    # Exceptions of the driver that mean "cannot reach the database now" (mapped to 503).
    unavailable_errors: tuple[type[BaseException], ...] = ()

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list[Any] = []
        self._lock = threading.Lock()
        with self.transaction() as cur:
            for statement in self.schema():
                cur.execute(statement)

    # -- backend hooks ---------------------------------------------------------------------------

    def connect(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def schema(self) -> list[str]:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- plumbing --------------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _connection(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._wrap_errors(self.connect)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def _wrap_errors(self, fn: Any, *args: Any) -> Any:
        from cloud.errors import BackendUnavailable

        try:
            return fn(*args)
        except self.unavailable_errors as exc:
            self._local.conn = None
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    @contextmanager
    def transaction(self, write: bool = True) -> Iterator[Any]:
        """A cursor inside one transaction: committed on success, rolled back on error.

        `write=False` marks read-only work, which need not queue behind writers.
        """
        from cloud.errors import BackendUnavailable

        conn = self._connection()
        try:
            with self.serialized() if write else nullcontext():
                cur = conn.cursor()
                try:
                    yield _Cursor(cur, self._sql)
                    conn.commit()
                except BaseException:
                    conn.rollback()
                    raise
                finally:
                    cur.close()
        except self.unavailable_errors as exc:
            # Drop the broken connection so the next call reconnects.
            self._local.conn = None
            raise BackendUnavailable(f"{self.describe()}: {exc}") from exc

    def serialized(self) -> AbstractContextManager[Any]:
        """Held around each transaction; backends whose writers block each other serialize here."""
        return nullcontext()

    def close(self) -> None:
        with self._lock:
            for conn in self._connections:
                try:
                    conn.close()
                except Exception:  # noqa: BLE001 - closing is best effort at shutdown
                    pass
            self._connections.clear()
        self._local = threading.local()

    def rate_buckets(self) -> RateBuckets | None:
        """The per-station rate buckets, where replicas share this database; None: keep them in memory."""
        return None

    def ping(self) -> None:
        """Raise BackendUnavailable unless a trivial query succeeds."""
        with self.transaction(write=False) as cur:
            cur.execute("SELECT 1")
            cur.fetchone()

    # -- stations and tokens ---------------------------------------------------------------------

    def add_station(
        self, station_id: str, latitude: float | None = None, longitude: float | None = None
    ) -> bool:
        """Create a station (or un-revoke it); return False when it already existed."""
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO stations (station_id, created_at, revoked, latitude, longitude) "
                "VALUES (?, ?, 0, ?, ?) ON CONFLICT (station_id) DO NOTHING",
                (station_id, time.time(), latitude, longitude),
            )
            created = cur.rowcount == 1
            if not created:
                cur.execute("UPDATE stations SET revoked = 0 WHERE station_id = ?", (station_id,))
                if latitude is not None and longitude is not None:
                    cur.execute(
                        "UPDATE stations SET latitude = ?, longitude = ? WHERE station_id = ?",
                        (latitude, longitude, station_id),
                    )
            return created

    def set_station_location(self, station_id: str, latitude: float, longitude: float) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE stations SET latitude = ?, longitude = ? WHERE station_id = ?",
                (latitude, longitude, station_id),
            )
            if cur.rowcount != 1:
                raise NotFound(station_id)

    def revoke_station(self, station_id: str) -> None:
        """Mark the station revoked and revoke all its tokens (its captures are kept)."""
        with self.transaction() as cur:
            cur.execute("UPDATE stations SET revoked = 1 WHERE station_id = ?", (station_id,))
            if cur.rowcount != 1:
                raise NotFound(station_id)
            cur.execute(
                "UPDATE tokens SET revoked_at = ? WHERE station_id = ? AND revoked_at IS NULL",
                (time.time(), station_id),
            )

    def add_token(
        self, token_id: str, station_id: str | None, role: str, salt: bytes, digest: bytes
    ) -> None:
        with self.transaction() as cur:
            cur.execute(
                "INSERT INTO tokens (token_id, station_id, role, salt, digest, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (token_id, station_id, role, salt.hex(), digest.hex(), time.time()),
            )

    def revoke_tokens(self, role: str) -> None:
        with self.transaction() as cur:
            cur.execute(
                "UPDATE tokens SET revoked_at = ? WHERE role = ? AND revoked_at IS NULL",
                (time.time(), role),
            )

    def get_token(self, token_id: str) -> TokenRow | None:
        with self.transaction(write=False) as cur:
            cur.execute(
                "SELECT t.token_id, t.station_id, t.role, t.salt, t.digest, "
                "t.revoked_at IS NOT NULL OR COALESCE(s.revoked, 0) = 1 "
                "FROM tokens t LEFT JOIN stations s ON s.station_id = t.station_id "
                "WHERE t.token_id = ?",
                (token_id,),
            )
            row = cur.fetchone()
        if row is None:
            return None
        return TokenRow(
            row[0], row[1], row[2], bytes.fromhex(row[3]), bytes.fromhex(row[4]), bool(row[5])
        )

    def list_stations(self) -> list[dict[str, Any]]:
        with self.transaction(write=False) as cur:
            cur.execute(
                "SELECT s.station_id, s.created_at, s.revoked, s.latitude, s.longitude, "
                "s.last_heartbeat_at, s.last_heartbeat, "
                "(SELECT COUNT(*) FROM captures c WHERE c.station_id = s.station_id) "
                "FROM stations s ORDER BY s.station_id"
            )
            rows = cur.fetchall()
        return [
            {
                "station_id": r[0],
                "created_at": r[1],
                "revoked": bool(r[2]),
                "latitude": r[3],
                "longitude": r[4],
                "last_heartbeat_at": r[5],
                "last_heartbeat": json.loads(r[6]) if r[6] else None,
                "captures": int(r[7]),
            }
            for r in rows
        ]

    def record_heartbeat(self, station_id: str, body: dict[str, Any], at: float) -> None:
        text = json.dumps(body, separators=(",", ":"))
        with self.transaction() as cur:
            cur.execute(
                "UPDATE stations SET last_heartbeat_at = ?, last_heartbeat = ? WHERE station_id = ?",
                (at, text, station_id),
            )
            cur.execute(
                "INSERT INTO heartbeats (station_id, received_at, body) VALUES (?, ?, ?)",
                (station_id, at, text),
            )

    # -- captures --------------------------------------------------------------------------------

    def held(
        self, station_id: str, capture_ids: Iterable[str]
    ) -> dict[str, tuple[str, str, str | None]]:
        """capture_id -> (sha256, variant, image_key) for the ids this station's captures hold."""
        ids = list(dict.fromkeys(capture_ids))
        found: dict[str, tuple[str, str, str | None]] = {}
        with self.transaction(write=False) as cur:
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                cur.execute(
                    "SELECT capture_id, sha256, variant, image_key FROM captures "
                    f"WHERE station_id = ? AND capture_id IN ({marks})",
                    (station_id, *chunk),
                )
                for capture_id, sha, variant, key in cur.fetchall():
                    found[capture_id] = (sha, variant, key)
        return found

    def insert_captures(
        self, rows: list[CaptureRow], also: Callable[[Any], None] | None = None
    ) -> list[bool]:
        """Insert in one transaction; per row True if inserted, False if (station, id) existed.

        One multi-row INSERT ... RETURNING per chunk and one for the detections: a batch costs a
        few statements, not two per capture. `also` runs on the same transaction's cursor (the
        pack store names the batch's images there), so both commit in one sync.
        """
        inserted = [False] * len(rows)
        with self.transaction() as cur:
            for first in range(0, len(rows), _ROWS_PER_INSERT):
                chunk = rows[first : first + _ROWS_PER_INSERT]
                marks = ", ".join([_CAPTURE_MARKS] * len(chunk))
                cur.execute(
                    f"INSERT INTO captures ({CAPTURE_COLUMNS}) VALUES {marks} "
                    "ON CONFLICT (station_id, capture_id) DO NOTHING "
                    "RETURNING station_id, capture_id",
                    tuple(value for row in chunk for value in _capture_values(row)),
                )
                new = {(r[0], r[1]) for r in cur.fetchall()}
                for offset, row in enumerate(chunk):
                    key = (row.station_id, row.capture_id)
                    if key in new:
                        new.discard(key)  # the same id twice in one call: the first one won
                        inserted[first + offset] = True
            detections = [
                (
                    row.station_id,
                    row.capture_id,
                    idx,
                    d["label"],
                    d["group"],
                    d["score"],
                    *(d["box"] if d.get("box") else (None, None, None, None)),
                    d.get("model", ""),
                    d.get("model_version", ""),
                )
                for row, ok in zip(rows, inserted, strict=True)
                if ok
                for idx, d in enumerate(row.detections)
            ]
            for first in range(0, len(detections), _ROWS_PER_INSERT):
                some = detections[first : first + _ROWS_PER_INSERT]
                cur.execute(
                    "INSERT INTO detections (station_id, capture_id, idx, label, grp, score, "
                    "box_x, box_y, box_w, box_h, model, model_version) VALUES "
                    + ", ".join([_DETECTION_MARKS] * len(some)),
                    tuple(value for detection in some for value in detection),
                )
            if also is not None:
                also(cur)
        return inserted

    def upgrade_image(
        self,
        station_id: str,
        capture_id: str,
        from_variant: str,
        variant: str,
        image_key: str,
        image_sha256: str,
        image_size: int,
        also: Callable[[Any], None] | None = None,
    ) -> bool:
        """Point a capture at a better image variant; False if another upload changed it first.

        `also` runs on the transaction's cursor, as in insert_captures.
        """
        with self.transaction() as cur:
            cur.execute(
                "UPDATE captures SET variant = ?, image_key = ?, image_sha256 = ?, image_size = ? "
                "WHERE station_id = ? AND capture_id = ? AND variant = ?",
                (
                    variant,
                    image_key,
                    image_sha256,
                    image_size,
                    station_id,
                    capture_id,
                    from_variant,
                ),
            )
            upgraded = cur.rowcount == 1
            if also is not None:
                also(cur)
            return upgraded

    def get_capture(self, station_id: str, capture_id: str) -> CaptureRow | None:
        rows = self.query_captures(station_id=station_id, capture_id=capture_id, limit=1)
        return rows[0] if rows else None

    def query_captures(
        self,
        station_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        label: str | None = None,
        limit: int | None = None,
        capture_id: str | None = None,
    ) -> list[CaptureRow]:
        """Captures in time order (capture time, else station receive time), with detections."""
        where, args = [], []
        for clause, value in (
            ("c.station_id = ?", station_id),
            ("c.capture_id = ?", capture_id),
            ("c.time >= ?", since),
            ("c.time < ?", until),
        ):
            if value is not None:
                where.append(clause)
                args.append(value)
        if label is not None:
            where.append(
                "EXISTS (SELECT 1 FROM detections d WHERE d.station_id = c.station_id "
                "AND d.capture_id = c.capture_id AND d.label = ?)"
            )
            args.append(label)
        sql = f"SELECT {CAPTURE_COLUMNS} FROM captures c"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY c.time, c.station_id, c.capture_id"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self.transaction(write=False) as cur:
            cur.execute(sql, tuple(args))
            rows = cur.fetchall()
            detections = self._detections_for(cur, [(r[0], r[1]) for r in rows])
        return [
            CaptureRow(
                station_id=r[0],
                capture_id=r[1],
                unit_id=r[2],
                path=r[3],
                sha256=r[4],
                size=int(r[5]),
                received_at=r[6],
                captured_at=r[7],
                uploaded_at=r[9],
                trigger=r[10],
                unit_time=r[17],
                unit_time_kind=r[18],
                variant=r[11],
                image_key=r[12],
                image_sha256=r[13],
                image_size=r[14],
                empty=None if r[15] is None else bool(r[15]),
                detections=detections.get((r[0], r[1]), []),
                meta=json.loads(r[16]) if r[16] else {},
            )
            for r in rows
        ]

    def _detections_for(
        self, cur: _Cursor, keys: list[tuple[str, str]]
    ) -> dict[tuple[str, str], list[dict[str, Any]]]:
        out: dict[tuple[str, str], list[dict[str, Any]]] = {}
        by_station: dict[str, list[str]] = {}
        for station, capture in keys:
            by_station.setdefault(station, []).append(capture)
        for station, captures in by_station.items():
            for start in range(0, len(captures), 500):
                chunk = captures[start : start + 500]
                marks = ", ".join("?" * len(chunk))
                cur.execute(
                    "SELECT capture_id, label, grp, score, box_x, box_y, box_w, box_h, model, "
                    f"model_version FROM detections WHERE station_id = ? AND capture_id IN ({marks}) "
                    "ORDER BY capture_id, idx",
                    (station, *chunk),
                )
                for r in cur.fetchall():
                    out.setdefault((station, r[0]), []).append(
                        {
                            "label": r[1],
                            "group": r[2],
                            "score": r[3],
                            "box": None if r[4] is None else [r[4], r[5], r[6], r[7]],
                            "model": r[8],
                            "model_version": r[9],
                        }
                    )
        return out

    # -- models ----------------------------------------------------------------------------------

    def publish_model(
        self, name: str, version: str, sha256: str, size: int, object_key: str
    ) -> float:
        """Record a published model artifact; re-publishing the same name+version replaces it."""
        at = time.time()
        with self.transaction() as cur:
            cur.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, version))
            cur.execute(
                "INSERT INTO models (name, version, sha256, size, object_key, published_at) "
                "VALUES (?, ?, ?, ?, ?, ?)",
                (name, version, sha256, size, object_key, at),
            )
        return at

    def list_models(self) -> list[dict[str, Any]]:
        with self.transaction(write=False) as cur:
            cur.execute(
                "SELECT name, version, sha256, size, object_key, published_at FROM models "
                "ORDER BY name, published_at, version"
            )
            rows = cur.fetchall()
        keys = ("name", "version", "sha256", "size", "object_key", "published_at")
        return [dict(zip(keys, r, strict=True)) for r in rows]

    def get_model(self, name: str, version: str) -> dict[str, Any] | None:
        for model in self.list_models():
            if model["name"] == name and model["version"] == version:
                return model
        return None


class _Cursor:
    """A DB-API cursor that rewrites `?` placeholders for the backend's driver."""

    def __init__(self, cur: Any, sql: Any) -> None:
        self._cur = cur
        self._sql = sql

    def execute(self, sql: str, args: tuple[Any, ...] = ()) -> None:
        self._cur.execute(self._sql(sql), args)

    def executemany(self, sql: str, rows: list[tuple[Any, ...]]) -> None:
        self._cur.executemany(self._sql(sql), rows)

    def fetchone(self) -> Any:
        return self._cur.fetchone()

    def fetchall(self) -> list[Any]:
        return self._cur.fetchall()

    @property
    def rowcount(self) -> int:
        return self._cur.rowcount


def portable_schema(real: str, blob: str) -> list[str]:
    """CREATE statements shared by the backends; `real` and `blob` are their type names."""
    return [
        "CREATE TABLE IF NOT EXISTS stations ("
        " station_id TEXT PRIMARY KEY, created_at "
        + real
        + " NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,"
        f" latitude {real}, longitude {real}, last_heartbeat_at {real}, last_heartbeat TEXT)",
        "CREATE TABLE IF NOT EXISTS tokens ("
        " token_id TEXT PRIMARY KEY, station_id TEXT, role TEXT NOT NULL,"
        f" salt TEXT NOT NULL, digest TEXT NOT NULL, created_at {real} NOT NULL, revoked_at {real})",
        "CREATE TABLE IF NOT EXISTS captures ("
        " station_id TEXT NOT NULL, capture_id TEXT NOT NULL, unit_id TEXT NOT NULL,"
        f" path TEXT NOT NULL, sha256 TEXT NOT NULL, size {blob} NOT NULL,"
        f" received_at {real} NOT NULL, captured_at {real}, time {real} NOT NULL,"
        f" uploaded_at {real} NOT NULL, trigger_name TEXT, variant TEXT NOT NULL, image_key TEXT,"
        f" image_sha256 TEXT, image_size {blob}, empty INTEGER, meta TEXT NOT NULL,"
        f" unit_time {blob}, unit_time_kind TEXT,"
        " PRIMARY KEY (station_id, capture_id))",
        "CREATE INDEX IF NOT EXISTS captures_time ON captures (time)",
        "CREATE INDEX IF NOT EXISTS captures_station_time ON captures (station_id, time)",
        "CREATE TABLE IF NOT EXISTS detections ("
        " station_id TEXT NOT NULL, capture_id TEXT NOT NULL, idx INTEGER NOT NULL,"
        f" label TEXT NOT NULL, grp TEXT NOT NULL, score {real} NOT NULL,"
        f" box_x {real}, box_y {real}, box_w {real}, box_h {real},"
        " model TEXT NOT NULL, model_version TEXT NOT NULL,"
        " PRIMARY KEY (station_id, capture_id, idx))",
        "CREATE INDEX IF NOT EXISTS detections_label ON detections (label)",
        "CREATE TABLE IF NOT EXISTS heartbeats ("
        f" station_id TEXT NOT NULL, received_at {real} NOT NULL, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS heartbeats_station ON heartbeats (station_id, received_at)",
        "CREATE TABLE IF NOT EXISTS models ("
        f" name TEXT NOT NULL, version TEXT NOT NULL, sha256 TEXT NOT NULL, size {blob} NOT NULL,"
        f" object_key TEXT NOT NULL, published_at {real} NOT NULL, PRIMARY KEY (name, version))",
        # rollouts (owner: cloud/rollout.py): signed releases, rollouts, their targets, labels
        "CREATE TABLE IF NOT EXISTS model_releases ("
        " name TEXT NOT NULL, version TEXT NOT NULL, card TEXT NOT NULL, key_id TEXT NOT NULL,"
        " signature TEXT NOT NULL, PRIMARY KEY (name, version))",
        "CREATE TABLE IF NOT EXISTS rollouts ("
        " rollout_id TEXT PRIMARY KEY, name TEXT NOT NULL, version TEXT NOT NULL,"
        f" created_at {real} NOT NULL, updated_at {real} NOT NULL, state TEXT NOT NULL,"
        " wave INTEGER NOT NULL, spec TEXT NOT NULL, reason TEXT)",
        "CREATE TABLE IF NOT EXISTS rollout_targets ("
        " rollout_id TEXT NOT NULL, station_id TEXT NOT NULL, wave INTEGER NOT NULL,"
        f" state TEXT NOT NULL, reason TEXT, previous_version TEXT, updated_at {real} NOT NULL,"
        f" reported_at {real}, PRIMARY KEY (rollout_id, station_id))",
        "CREATE TABLE IF NOT EXISTS station_labels ("
        " station_id TEXT NOT NULL, label TEXT NOT NULL, PRIMARY KEY (station_id, label))",
    ]
