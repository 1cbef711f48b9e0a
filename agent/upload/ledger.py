"""The uploader's SQL: the value-ordered queue and the per-endpoint delivery records.

Tables (schema migration 2 in agent/store.py):
- upload_deliveries: per (capture, endpoint) the variant the endpoint acknowledged (`held_variant`)
  and the variant sent in a batch whose outcome is unknown (`doubt_variant`);
- upload_bytes: request bytes, requests and acknowledged items per endpoint per local day.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence

# Higher replaces lower at the cloud; a capture is done when its final variant is held.
VARIANT_RANK = {"none": 0, "thumbnail": 1, "blurred": 2, "full": 3}

# Value order: 0 person/animal detections, 1 other detections, 2 not analysed (unknown value:
# usually empty PIR triggers, but it may hold anything, so above frames known to be empty),
# 3 frames the models found empty.
RANK_SQL = """
    CASE
        WHEN c.state = 'received' THEN 2
        WHEN EXISTS (SELECT 1 FROM detections d WHERE d.capture_id = c.id
                     AND d.grp IN ('person', 'animal')) THEN 0
        WHEN EXISTS (SELECT 1 FROM detections d WHERE d.capture_id = c.id) THEN 1
        WHEN c.empty = 1 THEN 3
        ELSE 2
    END"""


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
    state_marks = ",".join("?" * len(states))
    other_marks = ",".join("?" * len(others)) or "NULL"
    sql = f"""
        SELECT c.id, c.unit_id, c.path, c.sha256, c.size, c.received_at, c.captured_at,
               c.unit_time, c.unit_time_kind, c.trigger, c.meta, c.state, c.empty,
               c.upload_variant, rank, held_here, phase
        FROM (
            SELECT c.*, {RANK_SQL} AS rank,
                (SELECT held_variant FROM upload_deliveries u
                 WHERE u.capture_id = c.id AND u.endpoint = ?) AS held_here,
                CASE WHEN ? AND c.upload_variant != 'none'
                          AND (c.empty IS NOT 1 OR ?)
                          AND NOT EXISTS (SELECT 1 FROM upload_deliveries u
                                          WHERE u.capture_id = c.id
                                            AND u.held_variant IS NOT NULL)
                     THEN 0 ELSE 1 END AS phase
            FROM captures c
            WHERE c.state IN ({state_marks})
              AND NOT EXISTS (SELECT 1 FROM upload_deliveries u
                              WHERE u.capture_id = c.id AND u.endpoint IN ({other_marks})
                                AND u.held_variant IS NOT NULL)
        ) AS c
        ORDER BY phase, rank, received_at, id
        LIMIT ?"""
    args = [endpoint, int(thumbnails_first), int(empty_full), *states, *others, limit]
    return conn.execute(sql, args).fetchall()


def detections_for(conn: sqlite3.Connection, ids: Sequence[str]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {i: [] for i in ids}
    for chunk in _chunks(list(ids), 500):
        marks = ",".join("?" * len(chunk))
        for r in conn.execute(
            f"""SELECT capture_id, label, grp, score, x, y, w, h, model, model_version
                FROM detections WHERE capture_id IN ({marks}) ORDER BY capture_id, id""",
            chunk,
        ):
            box = (
                None
                if r["x"] is None
                else [_unit(r["x"]), _unit(r["y"]), _unit(r["w"]), _unit(r["h"])]
            )
            out[r["capture_id"]].append(
                {
                    "label": r["label"],
                    "group": r["grp"],
                    "score": _unit(r["score"]),
                    "box": box,
                    "model": r["model"],
                    "model_version": r["model_version"],
                }
            )
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
    """Before a batch goes out: these (capture, variant) may be held by `endpoint` from now on."""
    conn.executemany(
        """INSERT INTO upload_deliveries (capture_id, endpoint, doubt_variant, doubt_batch, updated_at)
           VALUES (?, ?, ?, ?, ?)
           ON CONFLICT (capture_id, endpoint) DO UPDATE SET doubt_variant = excluded.doubt_variant,
               doubt_batch = excluded.doubt_batch, updated_at = excluded.updated_at""",
        [(cid, endpoint, variant, batch_id, at) for cid, variant in sent],
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


_RANK_OF = "CASE {v} WHEN 'full' THEN 3 WHEN 'blurred' THEN 2 WHEN 'thumbnail' THEN 1 ELSE 0 END"


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
    old = _RANK_OF.format(v="upload_deliveries.held_variant")
    new = _RANK_OF.format(v="excluded.held_variant")
    row = conn.execute(
        f"""INSERT INTO upload_deliveries (capture_id, endpoint, held_variant, via_lookup, updated_at)
            VALUES (?, ?, ?, ?, ?)
            ON CONFLICT (capture_id, endpoint) DO UPDATE SET
                held_variant = CASE WHEN upload_deliveries.held_variant IS NOT NULL AND {old} > {new}
                                    THEN upload_deliveries.held_variant
                                    ELSE excluded.held_variant END,
                via_lookup = CASE WHEN upload_deliveries.held_variant IS NULL
                                  THEN excluded.via_lookup ELSE upload_deliveries.via_lookup END,
                doubt_variant = NULL, doubt_batch = NULL, updated_at = excluded.updated_at
            RETURNING held_variant""",
        (capture_id, endpoint, variant, int(via_lookup), at),
    ).fetchone()
    return row[0]


def in_doubt(conn: sqlite3.Connection, endpoint: str, limit: int = 1000) -> list[sqlite3.Row]:
    return conn.execute(
        """SELECT u.capture_id, u.doubt_variant, c.sha256, c.state, c.empty, c.upload_variant
           FROM upload_deliveries u
           JOIN captures c ON c.id = u.capture_id
           WHERE u.endpoint = ? AND u.doubt_variant IS NOT NULL
           ORDER BY u.capture_id LIMIT ?""",
        (endpoint, limit),
    ).fetchall()


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


def _chunks(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]
