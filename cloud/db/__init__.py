"""Metadata databases: one module per backend behind `cloud.db.base.Database`."""

from __future__ import annotations

from cloud.db.base import CaptureRow, Database, TokenRow


def open_database(url: str) -> Database:
    """Open the database named by `url` (sqlite:///PATH or postgresql://...) and create its tables."""
    if url.startswith("sqlite:///"):
        from cloud.db.sqlite import SQLiteDatabase

        return SQLiteDatabase(url.removeprefix("sqlite:///"))
    if url.startswith(("postgresql://", "postgres://")):
        # Lazy: psycopg is in the `cloud` extra, not in the core install.
        from cloud.db.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ValueError(f"database url {url!r}: expected sqlite:///PATH or postgresql://...")


__all__ = ["CaptureRow", "Database", "TokenRow", "open_database"]
