"""SQLite metadata database: the embedded default (standard library only)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from cloud.db.base import Database, portable_schema


class SQLiteDatabase(Database):
    # "database is locked" after busy_timeout means writers are starved: tell clients to retry.
    unavailable_errors = (sqlite3.OperationalError,)
    local_file = True

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._one_at_a_time = threading.Lock()
        super().__init__()

    def serialized(self) -> AbstractContextManager[Any]:
        # One writer at a time in this process: SQLite's own busy handler would make concurrent
        # uploads sleep in growing steps (up to 100 ms) instead of queueing fairly.
        return self._one_at_a_time

    def connect(self) -> Any:
        conn = sqlite3.connect(self.path, timeout=15.0, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit is on disk before the station is told "stored" (it then deletes its copy).
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        return conn

    def schema(self) -> list[str]:
        return portable_schema(real="REAL", blob="INTEGER")

    def describe(self) -> str:
        return f"sqlite {self.path}"
