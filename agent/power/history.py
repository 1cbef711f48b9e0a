"""The power history: readings, transitions and the technician's hold. Owner of the power_* tables."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from typing import NamedTuple

from agent.power.sources import Reading
from agent.store import Store, StoreError

SCHEMA_SQL = """
CREATE TABLE power_readings (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    source TEXT NOT NULL,
    soc REAL,
    voltage_v REAL,
    current_a REAL,
    power_w REAL,
    charging INTEGER,
    state TEXT NOT NULL
);
CREATE INDEX power_readings_at ON power_readings (at);

CREATE TABLE power_transitions (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    from_state TEXT NOT NULL,
    to_state TEXT NOT NULL,
    reason TEXT NOT NULL,
    readings TEXT NOT NULL              -- JSON: the reading behind it and every source's view
);

CREATE TABLE power_events (
    id INTEGER PRIMARY KEY,
    at REAL NOT NULL,
    kind TEXT NOT NULL,                 -- wake_armed | wake_failed | shutdown | hold | hold_cleared
    detail TEXT NOT NULL
);

CREATE TABLE power_hold (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    until REAL NOT NULL,
    set_at REAL NOT NULL,
    reason TEXT NOT NULL
);
"""

Store.register_migration("power", 1, SCHEMA_SQL)
# solar input (panel or charger) in watts, for the station page's 24 h chart next to the battery
Store.register_migration("power", 2, "ALTER TABLE power_readings ADD COLUMN solar_w REAL;")


@dataclass(frozen=True)
class Hold:
    until: float
    set_at: float
    reason: str


class StoredReading(NamedTuple):
    """One row of power_readings as the chart and the runway trend use it."""

    at: float
    soc: float | None
    power_w: float | None  # the battery's, positive while charging
    solar_w: float | None  # panel or charger input


class PowerHistory:
    """Bounded power history in the buffer; every other module goes through these methods."""

    def __init__(self, store: Store, max_rows: int = 20000) -> None:
        self.store = store
        self.max_rows = max_rows
        if not self.present(store):
            raise StoreError(
                "the buffer has no power tables: agent.power.history must be imported before "
                "the store is opened"
            )

    @staticmethod
    def present(store: Store) -> bool:
        with store.read() as conn:
            row = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'power_readings'"
            ).fetchone()
        return row is not None

    def add_reading(self, reading: Reading, state: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                """INSERT INTO power_readings (at, source, soc, voltage_v, current_a, power_w,
                       solar_w, charging, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                (
                    reading.at,
                    reading.source,
                    reading.soc,
                    reading.voltage_v,
                    reading.current_a,
                    reading.power_w,
                    reading.solar_w,
                    None if reading.charging is None else int(reading.charging),
                    state,
                ),
            )
            self._trim(conn, "power_readings")

    def add_transition(
        self, at: float, old: str, new: str, reason: str, readings: dict[str, object]
    ) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                """INSERT INTO power_transitions (at, from_state, to_state, reason, readings)
                   VALUES (?, ?, ?, ?, ?)""",
                (at, old, new, reason, json.dumps(readings, default=str)),
            )
            self._trim(conn, "power_transitions")

    def add_event(self, at: float, kind: str, detail: str) -> None:
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO power_events (at, kind, detail) VALUES (?, ?, ?)", (at, kind, detail)
            )
            self._trim(conn, "power_events")

    def _trim(self, conn: sqlite3.Connection, table: str) -> None:
        # tables are fixed names above, never user input
        conn.execute(
            f"DELETE FROM {table} WHERE id <= (SELECT max(id) FROM {table}) - ?", (self.max_rows,)
        )

    def set_hold(self, hold: Hold | None) -> None:
        with self.store.transaction() as conn:
            conn.execute("DELETE FROM power_hold")
            if hold is not None:
                conn.execute(
                    "INSERT INTO power_hold (id, until, set_at, reason) VALUES (1, ?, ?, ?)",
                    (hold.until, hold.set_at, hold.reason),
                )

    # --- reads (the daemon, and `fieldstation power` while the daemon is down) -------------------

    def hold(self) -> Hold | None:
        with self.store.read() as conn:
            row = conn.execute("SELECT until, set_at, reason FROM power_hold").fetchone()
        return Hold(row[0], row[1], row[2]) if row else None

    def transitions(self, limit: int = 20) -> list[dict[str, object]]:
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT * FROM power_transitions ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [
            {
                "at": r["at"],
                "from": r["from_state"],
                "to": r["to_state"],
                "reason": r["reason"],
                "readings": json.loads(r["readings"]),
            }
            for r in rows
        ]

    def events(self, limit: int = 20) -> list[dict[str, object]]:
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT at, kind, detail FROM power_events ORDER BY id DESC LIMIT ?", (limit,)
            ).fetchall()
        return [dict(r) for r in rows]

    def readings(self, since: float) -> list[StoredReading]:
        """The stored readings since a time, oldest first."""
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT at, soc, power_w, solar_w FROM power_readings WHERE at >= ? ORDER BY at",
                (since,),
            ).fetchall()
        return [StoredReading(r[0], r[1], r[2], r[3]) for r in rows]
