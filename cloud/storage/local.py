"""Local filesystem object store: the embedded default."""

from __future__ import annotations

import os
import threading
from pathlib import Path

from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import ObjectStore, check_key


class LocalStore(ObjectStore):
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self._root_text = str(self.root)
        self._prefix = self._root_text + os.sep
        self.fsync = fsync

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
        path = self._file(key)
        folder, name = os.path.split(path)
        # Write a temp file and rename it, so a crash never leaves a half image under the key.
        # (Strings, not Path objects: this runs for every image and Path parsing shows up.)
        tmp = f"{folder}/.{name}.{os.getpid()}.{threading.get_ident()}.tmp"
        flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
        try:
            fd = os.open(tmp, flags, 0o644)
        except FileNotFoundError:
            os.makedirs(folder, exist_ok=True)
            fd = os.open(tmp, flags, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            os.unlink(tmp)
            raise
        os.close(fd)
        os.replace(tmp, path)

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
