"""Metadata databases: one module per backend behind `cloud.db.base.Database`."""

from __future__ import annotations

from pathlib import Path

from cloud.db.base import CaptureRow, Database, TokenRow


def sqlite_path(url: str) -> Path | None:
    """The file of a sqlite:///PATH url; None for any other database."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


def open_database(url: str) -> Database:
    """Open the database named by `url` (sqlite:///PATH or postgresql://...) and create its tables."""
    path = sqlite_path(url)
    if path is not None:
        from cloud.db.sqlite import SQLiteDatabase

        return SQLiteDatabase(str(path))
    if url.startswith(("postgresql://", "postgres://")):
        # Lazy: psycopg is in the `cloud` extra, not in the core install.
        from cloud.db.postgres import PostgresDatabase

        return PostgresDatabase(url)
    raise ValueError(f"database url {url!r}: expected sqlite:///PATH or postgresql://...")


__all__ = ["CaptureRow", "Database", "TokenRow", "open_database", "sqlite_path"]
