"""Pack-file object store: objects appended to one growing file, durable after one data sync.

`put_many` appends every object of a call back to back to this process's current pack file
(`<root>/packs/<uuid>.pack`, its name synced into the folder when the file is made), syncs the
data, then records where each object lies in the index table `pack_objects` in one transaction.
An object exists once its index row is committed: a crash before that leaves unreferenced bytes in
a pack, never a half object under a key; a failed call cuts its bytes off again when nothing was
appended after them. Calls from several threads write side by side, each into the range it
reserved. A process starts a new pack when it first writes and once its pack passes PACK_BYTES,
and holds an exclusive flock on the pack it appends to, so no other process removes it while it
grows. `delete` drops the row; a pack file is removed when no row refers to it any more (its space
is not reclaimed while one object in it is still kept). Keys the index does not hold are looked up
as files `<root>/<key>`, where the one-file-per-image store (cloud/storage/local.py) keeps them.

The index lives in the service's SQLite database when there is one (`index=`): `storing` then
hands the caller the index rows to write in its own transaction, so a batch's image locations and
its capture rows commit together, one sync for both. Without it, in `<root>/pack-index.sqlite3`.
Why: the local store's one file per image costs ten fsyncs per batch of ten; this costs one data
sync and one commit per call, and ingest's group commit makes one call for every batch waiting.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cloud.errors import BackendUnavailable
from cloud.storage.base import Cursor, Mapper, NameObjects, ObjectStore, Upload, check_key
from cloud.storage.local import LocalStore

# A new pack once the current one is this big: bounds the space a few kept objects can pin.
PACK_BYTES = 64 * 1024 * 1024
_IOV_MAX = 1024  # buffers per pwritev (Linux's IOV_MAX)
_ROWS_PER_INSERT = 200  # index rows per INSERT: 800 parameters, below SQLite's limit
_FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk is the store unavailable for now (503)
# The data and the file size (which fdatasync covers) are what a read needs; mtime is not.
_sync_data = getattr(os, "fdatasync", os.fsync)
_SCHEMA = """CREATE TABLE IF NOT EXISTS pack_objects (
    key TEXT PRIMARY KEY,
    pack TEXT NOT NULL,
    offset INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS pack_objects_pack ON pack_objects (pack);"""
# Where an earlier version kept the index (table `objects`): merged into the index at open.
_OLD_INDEX = "index.sqlite3"


@dataclass
class _Pack:
    """The pack file this process appends to."""

    name: str
    fd: int
    end: int  # bytes handed out: the next call writes from here
    writers: int = 0  # calls writing into it now; its fd (and flock) stays open until they end
    retired: bool = False  # no new calls append to it


@dataclass
class _Appended:
    """One call's objects, written and synced into `pack` from `start`; not named yet."""

    pack: _Pack
    start: int
    size: int
    rows: list[tuple[str, str, int, int]]  # (key, pack, offset, size)
    named: bool = False
    unused: list[str] = field(default_factory=list)  # packs no row names after the naming

    def name(self, cur: Cursor) -> None:
        """Write the index rows in the caller's transaction (committed by the caller)."""
        keys = [row[0] for row in self.rows]
        replaced = _packs_of(cur, keys)
        for first in range(0, len(self.rows), _ROWS_PER_INSERT):
            chunk = self.rows[first : first + _ROWS_PER_INSERT]
            cur.execute(  # one statement, not one per row: each step hands the GIL around
                "INSERT OR REPLACE INTO pack_objects (key, pack, offset, size) VALUES "
                + ", ".join(["(?, ?, ?, ?)"] * len(chunk)),
                tuple(value for row in chunk for value in row),
            )
        self.unused = _unreferenced(cur, replaced - {self.pack.name})
        self.named = True


def _write_all(fd: int, views: list[memoryview], offset: int) -> None:
    """Write the buffers back to back from `offset`: one system call for a whole batch."""
    while views:
        written = os.pwritev(fd, views[:_IOV_MAX], offset)
        offset += written
        while views and written >= len(views[0]):
            written -= len(views[0])
            views = views[1:]
        if written:  # a short write ended inside this buffer
            views[0] = views[0][written:]


def _packs_of(cur: Cursor, keys: Sequence[str]) -> set[str]:
    out: set[str] = set()
    for first in range(0, len(keys), 500):
        chunk = tuple(keys[first : first + 500])
        marks = ", ".join("?" * len(chunk))
        cur.execute(f"SELECT DISTINCT pack FROM pack_objects WHERE key IN ({marks})", chunk)
        out.update(r[0] for r in cur.fetchall())
    return out


def _unreferenced(cur: Cursor, packs: set[str]) -> list[str]:
    unused = []
    for pack in packs:
        cur.execute("SELECT 1 FROM pack_objects WHERE pack = ? LIMIT 1", (pack,))
        if cur.fetchone() is None:
            unused.append(pack)
    return unused


class PackStore(ObjectStore):
    def __init__(self, root: Path, fsync: bool = True, index: Path | None = None) -> None:
        """`index`: the service's SQLite database file, whose transactions then carry the index
        rows of `storing`; None keeps the index in `<root>/pack-index.sqlite3`."""
        self.root = Path(root).resolve()
        self.packs = self.root / "packs"
        self.packs.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync
        self.shared = index is not None
        # Images the one-file-per-image store wrote here before the pack store became the
        # default: read and deleted where the index has no row; nothing new goes there.
        self._files = LocalStore(self.root, fsync)
        self._lock = threading.Lock()  # one index connection, shared by the worker threads
        self._writing = threading.Lock()  # appends and pack removals, one at a time
        self._current: _Pack | None = None
        self._db = sqlite3.connect(
            index if index is not None else self.root / "pack-index.sqlite3",
            timeout=30,
            isolation_level=None,
            check_same_thread=False,
        )
        self._db.execute("PRAGMA journal_mode = WAL")
        self._db.execute(f"PRAGMA synchronous = {'FULL' if fsync else 'OFF'}")
        self._db.executescript(_SCHEMA)
        self._merge_old_index()

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.put_many([(key, data)], content_type)

    def put_many(
        self,
        objects: Sequence[Upload],
        content_type: str = "application/octet-stream",
        run: Mapper = map,
    ) -> None:
        """Append the objects to the current pack, sync it, then name them all in one commit.

        Calls from several threads write and sync side by side (each into its own reserved
        range), so one call's sync overlaps another's index commit.
        """
        with self._appending(objects) as appended:
            if appended is not None:
                with self._transaction() as cur:
                    appended.name(cur)

    @contextlib.contextmanager
    def storing(
        self,
        objects: Sequence[Upload],
        content_type: str = "application/octet-stream",
        run: Mapper = map,
    ) -> Iterator[NameObjects | None]:
        """Append and sync the objects; with a shared index, the caller names them.

        The caller runs the yielded function in its transaction on the service's database: the
        objects exist once that commits. An error in the block cuts their bytes off again.
        """
        if not self.shared:
            self.put_many(objects, content_type, run)
            yield None
            return
        with self._appending(objects) as appended:
            yield None if appended is None else appended.name

    def get(self, key: str) -> bytes:
        where = self._where(key)
        if where is None:
            return self._files.get(key)
        pack, offset, size = where
        return self._read(pack, offset, size)

    def read_range(self, key: str, start: int, end: int) -> bytes:
        where = self._where(key)
        if where is None:
            return self._files.read_range(key, start, end)
        pack, offset, size = where
        start = max(0, start)
        end = min(end, size - 1)
        if end < start:
            return b""
        return self._read(pack, offset + start, end - start + 1)

    def size(self, key: str) -> int:
        where = self._where(key)
        return self._files.size(key) if where is None else where[2]

    def delete(self, key: str) -> None:
        with self._transaction() as cur:
            packs = _packs_of(cur, [key])
            cur.execute("DELETE FROM pack_objects WHERE key = ?", (key,))
            unused = _unreferenced(cur, packs)
        self._remove(unused)
        self._files.delete(key)

    def ping(self) -> None:
        if not os.access(self.packs, os.W_OK):
            raise BackendUnavailable(f"pack store {self.root} is not writable")

    def describe(self) -> str:
        return f"pack {self.root}"

    def close(self) -> None:
        with self._writing:
            self._retire()
        with self._lock:
            self._db.close()

    # --- inside ---------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _appending(self, objects: Sequence[Upload]) -> Iterator[_Appended | None]:
        """The objects written and synced into a pack; named in the block, else cut off again."""
        keys = [check_key(key) for key, _ in objects]
        if not objects:
            yield None
            return
        views = [memoryview(data) for _, data in objects]
        size = sum(len(view) for view in views)
        try:
            pack, start = self._reserve(size)
        except OSError as exc:
            full = self._unavailable(exc)
            if full is not None:
                raise full from exc
            raise
        rows = []
        offset = start
        for key, view in zip(keys, views, strict=True):
            rows.append((key, pack.name, offset, len(view)))
            offset += len(view)
        appended = _Appended(pack, start, size, rows)
        try:
            _write_all(pack.fd, views, start)
            if self.fsync:
                _sync_data(pack.fd)
            yield appended
            if not appended.named:
                raise RuntimeError("pack store: objects appended but never named")
        except BaseException as exc:
            self._release(pack, cut=(start, size))
            full = self._unavailable(exc)
            if full is not None:
                raise full from exc
            raise
        self._release(pack)
        self._remove(appended.unused)

    def _merge_old_index(self) -> None:
        """Take over the rows of an index an earlier version kept in `<root>/index.sqlite3`.

        Copied in one transaction, then the old file goes; a crash in between copies it again
        (keys already in the index keep their newer rows).
        """
        old = self.root / _OLD_INDEX
        if not old.exists():
            return
        self._db.execute("ATTACH DATABASE ? AS old", (str(old),))
        try:
            with self._transaction() as cur:
                cur.execute(
                    "INSERT OR IGNORE INTO pack_objects (key, pack, offset, size) "
                    "SELECT key, pack, offset, size FROM old.objects"
                )
        finally:
            self._db.execute("DETACH DATABASE old")
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{old}{suffix}")

    def _reserve(self, size: int) -> tuple[_Pack, int]:
        """A pack and the offset where `size` bytes of one call go (a new pack when needed)."""
        with self._writing:
            if self._current is not None and self._current.end >= PACK_BYTES:
                self._retire()
            if self._current is None:
                self._current = self._new_pack()
            pack = self._current
            pack.writers += 1
            start = pack.end
            pack.end += size
            return pack, start

    def _new_pack(self) -> _Pack:
        name = f"{uuid.uuid4().hex}.pack"
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(self.packs / name, flags, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # before any row names it: see _remove
            if self.fsync:
                self._sync_folder(self.packs)  # the name is durable before any row uses it
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(self.packs / name)
            raise
        return _Pack(name, fd, 0)

    def _release(self, pack: _Pack, cut: tuple[int, int] | None = None) -> None:
        """A call is done with `pack`; `cut`: it failed, drop its (start, size) range if last."""
        with self._writing:
            if cut is not None and pack.end == cut[0] + cut[1]:
                try:
                    os.ftruncate(pack.fd, cut[0])
                    pack.end = cut[0]
                except OSError:  # where the end is, is unknown now: later calls use a new pack
                    if pack is self._current:
                        self._retire()
            pack.writers -= 1
            if pack.retired and pack.writers == 0:
                os.close(pack.fd)

    def _retire(self) -> None:
        """No new calls append to the current pack; it closes (dropping its flock) once idle."""
        pack, self._current = self._current, None
        if pack is not None:
            pack.retired = True
            if pack.writers == 0:
                os.close(pack.fd)

    def _unavailable(self, exc: BaseException) -> BackendUnavailable | None:
        """A full disk as BackendUnavailable (503 + Retry-After); None for any other error."""
        if isinstance(exc, OSError) and exc.errno in _FULL:
            return BackendUnavailable(f"pack store {self.root}: {exc.strerror}")
        if (
            isinstance(exc, sqlite3.OperationalError)
            and getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
        ):
            return BackendUnavailable(f"pack store {self.root}: index: {exc}")
        return None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db.cursor()
                self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT leaves it open
                    self._db.execute("ROLLBACK")
                raise

    def _where(self, key: str) -> tuple[str, int, int] | None:
        """(pack, offset, size) of an object in a pack; None: not in one (perhaps a file)."""
        check_key(key)
        with self._lock:
            row = self._db.execute(
                "SELECT pack, offset, size FROM pack_objects WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else (str(row[0]), int(row[1]), int(row[2]))

    def _read(self, pack: str, offset: int, size: int) -> bytes:
        fd = os.open(self.packs / pack, os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def _remove(self, packs: list[str]) -> None:
        """Unlink packs no row names, after that commit: a crash leaves a stray file, no loss.

        A pack still being appended to, here or by another process, is kept (its flock is held):
        a call may be about to name new objects in it. This process's current pack is retired.
        """
        for pack in packs:
            with self._writing:
                if self._current is not None and pack == self._current.name:
                    self._retire()
            try:
                fd = os.open(self.packs / pack, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being appended to elsewhere
            else:
                os.unlink(self.packs / pack)
            finally:
                os.close(fd)

    @staticmethod
    def _sync_folder(folder: Path) -> None:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
