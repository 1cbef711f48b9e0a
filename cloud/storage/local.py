"""Local filesystem object store: the embedded default."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from cloud.errors import BackendUnavailable, NotFound
from cloud.storage.base import ObjectStore, check_key


class LocalStore(ObjectStore):
    def __init__(self, root: Path, fsync: bool = True) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.fsync = fsync

    def _path(self, key: str) -> Path:
        path = (self.root / check_key(key)).resolve()
        # Belt and braces against traversal through symlinks planted in the tree.
        if not path.is_relative_to(self.root):
            raise ValueError(f"object key {key!r} escapes the store")
        return path

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # Write to a temp file and rename, so a crash never leaves a half image under the key.
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                if self.fsync:
                    f.flush()
                    os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
            raise

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
