"""Writing an analysis into the buffer: detections, the blurred image, the capture's new state."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from agent.inference.package import Detection
from agent.inference.pipeline import Analysis


def save_analysis(
    store: Any,
    capture_id: str,
    analysis: Analysis,
    *,
    upload_variant: str,
    blurred: bytes | None = None,
) -> None:
    """One durable transaction: detections in, capture marked analysed (and empty or not)."""
    with store.transaction() as conn:
        conn.execute("DELETE FROM detections WHERE capture_id = ?", (capture_id,))
        for d in analysis.detections:
            parent = _insert(conn, capture_id, d, None)
            for child in d.children:
                _insert(conn, capture_id, child, parent)
        if blurred is not None:
            conn.execute(
                """INSERT INTO images (capture_id, variant, bytes, jpeg) VALUES (?, 'blurred', ?, ?)
                   ON CONFLICT (capture_id, variant) DO UPDATE SET bytes = excluded.bytes,
                       jpeg = excluded.jpeg""",
                (capture_id, len(blurred), blurred),
            )
        conn.execute(
            "UPDATE captures SET empty = ?, upload_variant = ?, analysis = ? WHERE id = ?",
            (
                int(analysis.empty),
                upload_variant,
                json.dumps(analysis.summary(), sort_keys=True),
                capture_id,
            ),
        )
        store.set_state(conn, capture_id, "analysed", expect=("received",))


def save_skipped(store: Any, capture_id: str, reason: str) -> None:
    """Move a capture on without models (inference disabled or none configured)."""
    with store.transaction() as conn:
        conn.execute(
            "UPDATE captures SET analysis = ? WHERE id = ?",
            (json.dumps({"models": [], "skipped": reason}), capture_id),
        )
        store.set_state(conn, capture_id, "analysed", expect=("received",))


def _insert(conn: sqlite3.Connection, capture_id: str, d: Detection, parent: int | None) -> int:
    x = y = w = h = None
    if d.box is not None:
        x, y, w, h = d.box
    cur = conn.execute(
        """INSERT INTO detections (capture_id, label, grp, score, x, y, w, h, model,
               model_version, parent_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
        (capture_id, d.label, d.group, d.score, x, y, w, h, d.model, d.model_version, parent),
    )
    return int(cur.lastrowid)


def read_detections(store: Any, capture_id: str) -> list[dict[str, Any]]:
    """Stored detections of a capture, detector results first, as plain dicts."""
    with store.read() as conn:
        rows = conn.execute(
            "SELECT * FROM detections WHERE capture_id = ? ORDER BY id", (capture_id,)
        ).fetchall()
    return [dict(r) for r in rows]
