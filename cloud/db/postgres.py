"""PostgreSQL metadata database (psycopg 3, from the `cloud` extra)."""

from __future__ import annotations

from typing import Any

from cloud.db.base import Database, portable_schema

try:
    import psycopg
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "PostgreSQL backend needs psycopg 3: pip install 'wildcam-fieldstation[cloud]'"
    ) from exc


# The advisory lock key every replica of this service takes while it creates the schema.
SCHEMA_LOCK = 0x57494C4443414D  # "WILDCAM"


class PostgresDatabase(Database):
    placeholder = "%s"
    unavailable_errors = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def connect(self) -> Any:
        return psycopg.connect(self.url, connect_timeout=5)

    def schema(self) -> list[str]:
        # Replicas starting together take turns: without the lock their CREATE TABLE IF NOT EXISTS
        # race and all but one fail on pg_type's unique index. Released when the schema commits.
        lock = f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})"
        return [lock, *portable_schema(real="DOUBLE PRECISION", blob="BIGINT")]

    def describe(self) -> str:
        # Never print the password part of the URL.
        return "postgresql " + self.url.rsplit("@", 1)[-1]
