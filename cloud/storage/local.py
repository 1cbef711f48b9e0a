"""Local filesystem object store: the embedded default."""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
from collections.abc import Sequence
from pathlib import Path

from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import Mapper, ObjectStore, Upload, check_key

# A full disk or quota is the store being unavailable for now (503 + Retry-After), not a bug.
_FULL = (errno.ENOSPC, errno.EDQUOT)

# POSIX_FADV_DONTNEED starts writeback of dirty pages on Linux; absent on some platforms.
_START_WRITEBACK = getattr(os, "POSIX_FADV_DONTNEED", None)


class LocalStore(ObjectStore):
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._prefix = self._root_text + os.sep
        self.fsync = fsync
        self._serial = itertools.count()  # unique temp names across threads

    def _file(self, key: str) -> str:
        # check_key refuses '..', absolute paths and odd characters, so plain joining stays
        # inside the root; normpath (no filesystem calls) is the belt to those braces.
        path = os.path.normpath(os.path.join(self._root_text, check_key(key)))
        if not path.startswith(self._prefix):
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def _path(self, key: str) -> Path:
        return Path(self._file(key))

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        self.put_many([(key, data)], content_type)

    def put_many(
        self,
        objects: Sequence[Upload],
        content_type: str = "application/octet-stream",
        run: Mapper = map,
    ) -> None:
        """Write each object to a temp file, fsync them all, rename them into place, then fsync
        each changed folder once: a batch becomes durable in one step, not one per image.

        A crash never leaves a half image under a key (only a temp file). The files are synced
        through `run`: with a thread pool's map the syncs overlap, and the filesystem serves
        them with fewer journal commits than one after the other. A full disk raises
        BackendUnavailable, with every temp file of the batch removed.
        """
        try:
            self._put_many(objects, run)
        except OSError as exc:
            if exc.errno in _FULL:
                raise BackendUnavailable(f"local store {self.root}: {exc.strerror}") from exc
            raise

    def _put_many(self, objects: Sequence[Upload], run: Mapper) -> None:
        written: list[tuple[int, str, str]] = []  # (fd, temp path, final path)
        folders: set[str] = set()
        try:
            for key, data in objects:
                path = self._file(key)
                folder, name = os.path.split(path)
                # Strings, not Path objects: this runs for every image and Path parsing shows up.
                tmp = f"{folder}/.{name}.{os.getpid()}-{next(self._serial)}.tmp"
                fd = self._create(tmp, folder, folders)
                written.append((fd, tmp, path))
                folders.add(folder)
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
            if self.fsync:
                if _START_WRITEBACK is not None:
                    # Start writing every file out first, so the fsyncs below wait on I/O that
                    # overlaps instead of issuing it one file at a time.
                    for fd, _, _ in written:
                        os.posix_fadvise(fd, 0, 0, _START_WRITEBACK)
                for _ in run(os.fsync, [fd for fd, _, _ in written]):
                    pass
        except BaseException:
            for fd, tmp, _ in written:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            raise
        for fd, _, _ in written:
            os.close(fd)
        for _, tmp, path in written:
            os.replace(tmp, path)
        if self.fsync:
            # The renames (and any new folders) are durable only once their folders are synced.
            for folder in sorted(folders, key=len, reverse=True):
                fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)

    def _create(self, tmp: str, folder: str, folders: set[str]) -> int:
        """Open a new temp file, making missing folders (their parents then need a sync too)."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            return os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            pass
        missing = []
        while not os.path.isdir(folder):  # stops at the root at the latest (made in __init__)
            missing.append(folder)
            folder = os.path.dirname(folder)
        for new in reversed(missing):
            with contextlib.suppress(FileExistsError):  # a concurrent upload made it first
                os.mkdir(new)
            folders.add(os.path.dirname(new))
        return os.open(tmp, flags, 0o644)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def read_range(self, key: str, start: int, end: int) -> bytes:
        try:
            with self._path(key).open("rb") as f:
                f.seek(start)
                return f.read(end - start + 1)
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise NotFound(key) from exc

    def delete(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass

    def ping(self) -> None:
        if not os.access(self.root, os.W_OK):
            raise BackendUnavailable(f"local store {self.root} is not writable")

    def describe(self) -> str:
        return f"local {self.root}"
