"""Model versions on this station: folders on disk, one atomic pointer to the active one, and the
`model_versions` table (owner: this module) that remembers bad versions and shadow results.

Layout under `<data_dir>/modelsync/<name>/`: `versions/<version>/` (checked packages),
`ACTIVE` (the pointer: JSON with the version, the ones before it, when it was activated and the
shadow run's expectation), `staging/` (downloads in progress).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.store import Store

POINTER = "ACTIVE"
KEEP_PREVIOUS = 2

_SQL = """
CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version TEXT NOT NULL,
    state TEXT NOT NULL,          -- installed | bad | rolled_back
    reason TEXT,
    shadow TEXT,                  -- JSON of the shadow run
    updated_at REAL NOT NULL,
    PRIMARY KEY (name, version)
);
"""
Store.register_migration("modelsync", 1, _SQL)


class PointerError(Exception):
    """The version asked for cannot be made active."""


@dataclass
class Pointer:
    version: str
    previous: list[str] = field(default_factory=list)
    activated_at: float = 0.0
    probation: bool = False  # watched by probation until it ends or rolls back
    expected_nonempty: float | None = None  # the shadow run's non-empty rate
    how: str = "sync"  # sync | manual | rollback

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_tree(folder: Path) -> None:
    for path in folder.rglob("*"):
        if path.is_file():
            with path.open("rb") as f:
                os.fsync(f.fileno())
    for path in [*sorted(p for p in folder.rglob("*") if p.is_dir()), folder]:
        fsync_dir(path)


class ModelVersions:
    """The versions of one model on this station."""

    def __init__(self, data_dir: Path, name: str, store: Store | None = None) -> None:
        self.name = name
        self.root = data_dir / "modelsync" / name
        self.versions = self.root / "versions"
        self.staging = self.root / "staging"
        self.store = store
        for d in (self.versions, self.staging):
            d.mkdir(parents=True, exist_ok=True)

    # --- the pointer ---------------------------------------------------------------------------

    def pointer(self) -> Pointer | None:
        """The active version, or None when none was ever activated (or the pointer is unusable)."""
        try:
            d = json.loads((self.root / POINTER).read_text())
            return Pointer(**d)
        except (OSError, ValueError, TypeError):
            return None

    def active_folder(self) -> Path | None:
        p = self.pointer()
        if p is None:
            return None
        folder = self.versions / p.version
        return folder if (folder / "model.json").is_file() else None

    def write_pointer(self, pointer: Pointer) -> None:
        """Write, fsync, rename over ACTIVE, fsync the folder: old or new, never a mix."""
        tmp = self.root / f".{POINTER}.{os.getpid()}.tmp"
        data = json.dumps(pointer.as_json(), indent=1).encode()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.root / POINTER)
        fsync_dir(self.root)

    def switch(self, version: str, *, how: str, expected_nonempty: float | None = None) -> Pointer:
        """Point at an installed `version`, remembering the one before; prune old versions."""
        if not (self.versions / version / "model.json").is_file():
            raise PointerError(f"{self.name}@{version} is not installed")
        old = self.pointer()
        previous = [] if old is None else [old.version, *old.previous]
        previous = [v for v in dict.fromkeys(previous) if v != version][:KEEP_PREVIOUS]
        new = Pointer(
            version=version,
            previous=previous,
            activated_at=time.time(),
            probation=how == "sync",
            expected_nonempty=expected_nonempty,
            how=how,
        )
        self.write_pointer(new)
        history = set() if old is None else {old.version, *old.previous}
        self.prune(history - {version, *previous})  # what fell off the end of the history
        return new

    def end_probation(self) -> None:
        p = self.pointer()
        if p is not None and p.probation:
            p.probation = False
            self.write_pointer(p)

    # --- folders -------------------------------------------------------------------------------

    def installed(self) -> list[str]:
        return sorted(p.name for p in self.versions.iterdir() if (p / "model.json").is_file())

    def install(self, folder: Path, version: str) -> Path:
        """Move a checked, extracted package into versions/ (fsynced first, one rename)."""
        target = self.versions / version
        if target.exists():
            shutil.rmtree(target)
        fsync_tree(folder)
        os.replace(folder, target)
        fsync_dir(self.versions)
        return target

    def prune(self, drop: set[str]) -> None:
        """Delete versions no longer active nor among the previous ones kept."""
        for v in drop:
            shutil.rmtree(self.versions / v, ignore_errors=True)

    # --- the table -----------------------------------------------------------------------------

    def mark(self, version: str, state: str, reason: str | None, shadow: Any = None) -> None:
        if self.store is None:
            return
        with self.store.transaction() as conn:
            conn.execute(
                "INSERT INTO model_versions (name, version, state, reason, shadow, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name, version) DO UPDATE SET "
                "state = excluded.state, reason = excluded.reason, "
                "shadow = COALESCE(excluded.shadow, model_versions.shadow), "
                "updated_at = excluded.updated_at",
                (
                    self.name,
                    version,
                    state,
                    reason,
                    None if shadow is None else json.dumps(shadow),
                    time.time(),
                ),
            )

    def refused(self) -> dict[str, tuple[str, str]]:
        """version -> (state, reason) of every version this station will not run again."""
        if self.store is None:
            return {}
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT version, state, reason FROM model_versions "
                "WHERE name = ? AND state IN ('bad', 'rolled_back')",
                (self.name,),
            ).fetchall()
        return {r[0]: (r[1], r[2] or "") for r in rows}

    def records(self) -> list[dict[str, Any]]:
        if self.store is None:
            return []
        with self.store.read() as conn:
            rows = conn.execute(
                "SELECT version, state, reason, shadow, updated_at FROM model_versions "
                "WHERE name = ? ORDER BY updated_at",
                (self.name,),
            ).fetchall()
        return [
            {
                "version": r[0],
                "state": r[1],
                "reason": r[2],
                "shadow": json.loads(r[3]) if r[3] else None,
                "updated_at": r[4],
            }
            for r in rows
        ]

    def forgive(self, version: str) -> None:
        """A technician's `activate` of a refused version clears the mark."""
        if self.store is None:
            return
        with self.store.transaction() as conn:
            conn.execute(
                "DELETE FROM model_versions WHERE name = ? AND version = ?", (self.name, version)
            )
