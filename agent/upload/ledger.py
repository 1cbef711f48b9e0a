"""The uploader's records: which cloud holds or may hold what, and the bytes sent per day.

This module owns two tables and registers their schema with the store (migration "upload" 1):
- upload_deliveries: per (capture, endpoint) the variant the endpoint acknowledged (`held_variant`)
  and the variant sent in a batch whose outcome is unknown (`doubt_variant`);
- upload_bytes: request bytes, requests and acknowledged items per endpoint per local day.
Captures themselves are the store's: their SQL stays in agent/store.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any

from agent.store import Store, captures_by_value_sql
from agent.upload.manifest import VARIANT_RANK

SCHEMA_SQL = """
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
"""
Store.register_migration("upload", 1, SCHEMA_SQL)


def candidates(
    conn: sqlite3.Connection,
    endpoint: str,
    endpoints: Sequence[str],
    states: Sequence[str],
    *,
    thumbnails_first: bool,
    empty_full: bool,
    limit: int,
) -> list[sqlite3.Row]:
    """Captures to send to `endpoint` next, most valuable first.

    A capture another configured endpoint already holds a variant of (a thumbnail sent first)
    waits for that endpoint, so its full image never lands in a second cloud.
    With `thumbnails_first`, captures that will get a full image and are held nowhere come first
    (phase 0, sent as thumbnails), then the rest (phase 1).
    """
    others = [e for e in endpoints if e != endpoint]
    other_marks = ",".join("?" * len(others)) or "NULL"
    sql = f"""
        SELECT c.id, c.unit_id, c.path, c.sha256, c.size, c.received_at, c.captured_at,
               c.unit_time, c.unit_time_kind, c.trigger, c.meta, c.state, c.state_changed_at,
               c.empty, c.upload_variant, rank, held_here, phase
        FROM (
            SELECT c.*,
                (SELECT held_variant FROM upload_deliveries u
                 WHERE u.capture_id = c.id AND u.endpoint = ?) AS held_here,
                CASE WHEN ? AND c.upload_variant != 'none'
                          AND (c.empty IS NOT 1 OR ?)
                          AND NOT EXISTS (SELECT 1 FROM upload_deliveries u
                                          WHERE u.capture_id = c.id
                                            AND u.held_variant IS NOT NULL)
                     THEN 0 ELSE 1 END AS phase
            FROM ({captures_by_value_sql(len(states))}) AS c
            WHERE NOT EXISTS (SELECT 1 FROM upload_deliveries u
                              WHERE u.capture_id = c.id AND u.endpoint IN ({other_marks})
                                AND u.held_variant IS NOT NULL)
        ) AS c
        ORDER BY phase, rank, received_at, id
        LIMIT ?"""
    # placeholders in text order: the select list, the captures subquery, the other endpoints
    args = [endpoint, int(thumbnails_first), int(empty_full), *states, *others, limit]
    return conn.execute(sql, args).fetchall()


def detections_for(store: Store, ids: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """The stored detections of these captures as manifest entries (scores and boxes in 0..1)."""
    out: dict[str, list[dict[str, Any]]] = {}
    for cid, rows in store.detections_of(ids).items():
        out[cid] = [
            {
                "label": r["label"],
                "group": r["grp"],
                "score": _unit(r["score"]),
                "box": None
                if r["x"] is None
                else [_unit(r["x"]), _unit(r["y"]), _unit(r["w"]), _unit(r["h"])],
                "model": r["model"],
                "model_version": r["model_version"],
            }
            for r in rows
        ]
    return out


def _unit(v: float | None) -> float:
    return min(1.0, max(0.0, float(v or 0.0)))


def mark_in_doubt(
    conn: sqlite3.Connection,
    endpoint: str,
    sent: Iterable[tuple[str, str]],
    batch_id: str,
    at: float,
) -> None:
    """Before a batch goes out: these (capture, variant) may be held by `endpoint` from now on.
    One multi-row statement, not executemany's step per row (see record_held_many)."""
    params = [x for cid, variant in sent for x in (cid, endpoint, variant, batch_id, at)]
    if not params:
        return
    rows = ",".join("(?, ?, ?, ?, ?)" for _ in range(len(params) // 5))
    conn.execute(
        f"""INSERT INTO upload_deliveries (capture_id, endpoint, doubt_variant, doubt_batch, updated_at)
           VALUES {rows}
           ON CONFLICT (capture_id, endpoint) DO UPDATE SET doubt_variant = excluded.doubt_variant,
               doubt_batch = excluded.doubt_batch, updated_at = excluded.updated_at""",
        params,
    )


def clear_doubt(conn: sqlite3.Connection, endpoint: str, capture_id: str, at: float) -> None:
    """The endpoint does not hold what was in doubt (or it was settled otherwise)."""
    conn.execute(
        """UPDATE upload_deliveries SET doubt_variant = NULL, doubt_batch = NULL, updated_at = ?
           WHERE capture_id = ? AND endpoint = ?""",
        (at, capture_id, endpoint),
    )
    conn.execute(
        """DELETE FROM upload_deliveries WHERE capture_id = ? AND endpoint = ?
           AND held_variant IS NULL AND doubt_variant IS NULL""",
        (capture_id, endpoint),
    )


# manifest.VARIANT_RANK as SQL (names are our own literals); an unknown name ranks as "none"
_RANK_OF = (
    "CASE {v} "
    + " ".join(f"WHEN '{name}' THEN {rank}" for name, rank in VARIANT_RANK.items())
    + f" ELSE {VARIANT_RANK['none']} END"
)


def record_held(
    conn: sqlite3.Connection,
    endpoint: str,
    capture_id: str,
    variant: str,
    at: float,
    *,
    via_lookup: bool = False,
) -> str:
    """The endpoint acknowledged (or reported) `variant`; return the best variant it now holds."""
    return record_held_many(conn, endpoint, [(capture_id, variant)], at, via_lookup=via_lookup)[
        capture_id
    ]


def record_held_many(
    conn: sqlite3.Connection,
    endpoint: str,
    held: Sequence[tuple[str, str]],
    at: float,
    *,
    via_lookup: bool = False,
) -> dict[str, str]:
    """The endpoint acknowledged these (capture id, variant); return each one's best variant it
    now holds. One statement for a whole batch's answer (SQLite's driver hands the GIL on at
    every statement, and the ingest and inference threads wait for it meanwhile)."""
    if not held:
        return {}
    old = _RANK_OF.format(v="upload_deliveries.held_variant")
    new = _RANK_OF.format(v="excluded.held_variant")
    rows = ",".join("(?, ?, ?, ?, ?)" for _ in held)
    params = [x for cid, variant in held for x in (cid, endpoint, variant, int(via_lookup), at)]
    found = conn.execute(
        f"""INSERT INTO upload_deliveries (capture_id, endpoint, held_variant, via_lookup, updated_at)
            VALUES {rows}
            ON CONFLICT (capture_id, endpoint) DO UPDATE SET
                held_variant = CASE WHEN upload_deliveries.held_variant IS NOT NULL AND {old} > {new}
                                    THEN upload_deliveries.held_variant
                                    ELSE excluded.held_variant END,
                via_lookup = CASE WHEN upload_deliveries.held_variant IS NULL
                                  THEN excluded.via_lookup ELSE upload_deliveries.via_lookup END,
                doubt_variant = NULL, doubt_batch = NULL, updated_at = excluded.updated_at
            RETURNING capture_id, held_variant""",
        params,
    ).fetchall()
    return {r[0]: r[1] for r in found}


def in_doubt(conn: sqlite3.Connection, endpoint: str, limit: int = 1000) -> list[sqlite3.Row]:
    """(capture_id, doubt_variant) sent to `endpoint` with no answer yet, by capture id."""
    return conn.execute(
        """SELECT capture_id, doubt_variant FROM upload_deliveries
           WHERE endpoint = ? AND doubt_variant IS NOT NULL
           ORDER BY capture_id LIMIT ?""",
        (endpoint, limit),
    ).fetchall()


def undo_doubt(
    conn: sqlite3.Connection, endpoint: str, ids: Iterable[str], batch_id: str, at: float
) -> None:
    """A batch certainly never arrived: clear its marks (not marks a later batch has set)."""
    for cid in ids:
        row = conn.execute(
            "SELECT doubt_batch FROM upload_deliveries WHERE capture_id = ? AND endpoint = ?",
            (cid, endpoint),
        ).fetchone()
        if row is not None and row["doubt_batch"] == batch_id:
            clear_doubt(conn, endpoint, cid, at)


def doubt_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: r[1]
        for r in conn.execute(
            """SELECT endpoint, count(*) FROM upload_deliveries
               WHERE doubt_variant IS NOT NULL GROUP BY endpoint"""
        )
    }


def held_counts(conn: sqlite3.Connection) -> dict[str, int]:
    return {
        r[0]: r[1]
        for r in conn.execute(
            """SELECT endpoint, count(*) FROM upload_deliveries
               WHERE held_variant IS NOT NULL GROUP BY endpoint"""
        )
    }


def add_traffic(
    conn: sqlite3.Connection,
    endpoint: str,
    day: str,
    nbytes: int,
    *,
    requests: int = 1,
    items: int = 0,
) -> None:
    conn.execute(
        """INSERT INTO upload_bytes (endpoint, day, bytes, requests, items) VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (endpoint, day) DO UPDATE SET bytes = bytes + excluded.bytes,
               requests = requests + excluded.requests, items = items + excluded.items""",
        (endpoint, day, nbytes, requests, items),
    )


def traffic_on(conn: sqlite3.Connection, day: str) -> dict[str, dict[str, int]]:
    return {
        r["endpoint"]: {"bytes": r["bytes"], "requests": r["requests"], "items": r["items"]}
        for r in conn.execute(
            "SELECT endpoint, bytes, requests, items FROM upload_bytes WHERE day = ?", (day,)
        )
    }


NO_RECORDS = {"in_doubt": 0, "held": 0, "bytes_today": 0, "requests_today": 0, "items_today": 0}


def endpoint_day(conn: sqlite3.Connection, day: str) -> dict[str, dict[str, int]]:
    """Per endpoint: captures in doubt and held there, and its traffic on `day`."""
    traffic = traffic_on(conn, day)
    doubts, held = doubt_counts(conn), held_counts(conn)
    return {
        name: {
            "in_doubt": doubts.get(name, 0),
            "held": held.get(name, 0),
            "bytes_today": traffic.get(name, {}).get("bytes", 0),
            "requests_today": traffic.get(name, {}).get("requests", 0),
            "items_today": traffic.get(name, {}).get("items", 0),
        }
        for name in {*traffic, *doubts, *held}
    }


def deliveries_of(conn: sqlite3.Connection, capture_id: str) -> list[dict[str, Any]]:
    """Where one capture went (the station page): per endpoint, held and in-doubt variants."""
    return [
        dict(r)
        for r in conn.execute(
            """SELECT endpoint, held_variant, doubt_variant, via_lookup, updated_at
               FROM upload_deliveries WHERE capture_id = ? ORDER BY endpoint""",
            (capture_id,),
        )
    ]


def bytes_on(conn: sqlite3.Connection, day: str) -> int:
    """Request bytes sent to all endpoints on `day` (what the daily budget counts)."""
    return sum(t["bytes"] for t in traffic_on(conn, day).values())


def traffic_since(conn: sqlite3.Connection, day: str) -> dict[str, dict[str, int]]:
    """Request bytes per endpoint per day, for days after `day` (YYYY-MM-DD)."""
    out: dict[str, dict[str, int]] = {}
    for r in conn.execute(
        "SELECT endpoint, day, bytes FROM upload_bytes WHERE day > ? ORDER BY day", (day,)
    ):
        out.setdefault(r[0], {})[r[1]] = r[2]
    return out
