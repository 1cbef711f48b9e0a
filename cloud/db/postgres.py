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

# Per-station token buckets shared by the replicas (owned here; cloud/ratelimit.py spends them).
RATE_BUCKETS = (
    "CREATE TABLE IF NOT EXISTS rate_buckets (station_id TEXT PRIMARY KEY,"
    " tokens DOUBLE PRECISION NOT NULL, allowed BOOLEAN NOT NULL,"
    " updated_at DOUBLE PRECISION NOT NULL)"
)
# The bucket refilled since its last use (the database's clock, so replicas' clocks need not agree)
_AVAILABLE = "LEAST(?, b.tokens + GREATEST(0, EXCLUDED.updated_at - b.updated_at) * ?)"
# One statement: the row lock of ON CONFLICT DO UPDATE makes replicas answering at once take turns
_TAKE = f"""INSERT INTO rate_buckets AS b (station_id, tokens, allowed, updated_at)
    VALUES (?, ?, TRUE, EXTRACT(EPOCH FROM statement_timestamp()))
    ON CONFLICT (station_id) DO UPDATE SET
        tokens = {_AVAILABLE} - CASE WHEN {_AVAILABLE} >= 1 THEN 1 ELSE 0 END,
        allowed = {_AVAILABLE} >= 1,
        updated_at = GREATEST(b.updated_at, EXCLUDED.updated_at)
    RETURNING tokens, allowed"""


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
        return [lock, *portable_schema(real="DOUBLE PRECISION", blob="BIGINT"), RATE_BUCKETS]

    def rate_buckets(self) -> PostgresDatabase:
        return self

    def take_rate_token(self, key: str, rate: float, burst: float) -> tuple[float, bool]:
        """Spend one token of station `key`'s bucket if it has one; return (tokens left, allowed)."""
        with self.transaction() as cur:
            # a new station starts with a full bucket, less this request
            cur.execute(_TAKE, (key, burst - 1.0, *(burst, rate) * 3))
            tokens, allowed = cur.fetchone()
        return float(tokens), bool(allowed)

    def describe(self) -> str:
        # Never print the password part of the URL.
        return "postgresql " + self.url.rsplit("@", 1)[-1]
