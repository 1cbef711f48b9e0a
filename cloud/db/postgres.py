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


class PostgresDatabase(Database):
    placeholder = "%s"
    unavailable_errors = (psycopg.OperationalError, psycopg.InterfaceError)

    def __init__(self, url: str) -> None:
        self.url = url
        super().__init__()

    def connect(self) -> Any:
        return psycopg.connect(self.url, connect_timeout=5)

    def schema(self) -> list[str]:
        return portable_schema(real="DOUBLE PRECISION", blob="BIGINT")

    def describe(self) -> str:
        # Never print the password part of the URL.
        return "postgresql " + self.url.rsplit("@", 1)[-1]
