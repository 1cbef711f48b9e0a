"""The object store interface: put/get/delete whole objects by key, read byte ranges."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol

from cloud.errors import NotFound

# One object to store: its key and its bytes (a memoryview slice of a request body is fine).
Upload = tuple[str, bytes | memoryview]
# A `map`: ingest passes a thread pool's, so network stores send a batch's objects in parallel
# (and the local store syncs its files in parallel).
Mapper = Callable[[Callable[[Any], Any], Iterable[Any]], Iterator[Any]]


class Cursor(Protocol):
    """The DB-API cursor of a transaction on the service's database."""

    def execute(self, sql: str, args: Any = (), /) -> Any: ...
    def executemany(self, sql: str, rows: Any, /) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...


# Writes where stored objects lie into the caller's transaction (see ObjectStore.storing).
NameObjects = Callable[[Cursor], None]

# Keys are built by the service from validated ids; this is the last line of defence.
_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]*(/[A-Za-z0-9][A-Za-z0-9._:-]*)*$")


def check_key(key: str) -> str:
    """Return `key` if it is a safe relative object key (no '..', no absolute path), else raise."""
    if not _KEY.match(key) or any(part in (".", "..") for part in key.split("/")) or len(key) > 900:
        raise ValueError(f"unsafe object key {key!r}")
    return key


class ObjectStore:
    """Blocking object store; the API calls it from worker threads."""

    def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        raise NotImplementedError

    def put_many(
        self,
        objects: Sequence[Upload],
        content_type: str = "application/octet-stream",
        run: Mapper = map,
    ) -> None:
        """Store several objects; all are complete and durable when this returns.

        The default puts them one by one through `run`; backends that can make a whole batch
        durable in one step (the local filesystem) override this.
        """
        for _ in run(lambda obj: self.put(obj[0], bytes(obj[1]), content_type), objects):
            pass

    @contextlib.contextmanager
    def storing(
        self,
        objects: Sequence[Upload],
        content_type: str = "application/octet-stream",
        run: Mapper = map,
    ) -> Iterator[NameObjects | None]:
        """`put_many`, for a caller that then commits rows naming the objects.

        Yields None, or (a store whose index is in the service's database) a function the caller
        must run in that transaction: then the objects and the rows become durable in one commit.
        """
        self.put_many(objects, content_type, run)
        yield None

    def get(self, key: str) -> bytes:
        """Whole object, or raise NotFound."""
        raise NotImplementedError

    def read_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes start..end inclusive. Backends with ranged GETs override this."""
        return self.get(key)[start : end + 1]

    def size(self, key: str) -> int:
        """Object size in bytes, or raise NotFound."""
        return len(self.get(key))

    def delete(self, key: str) -> None:
        """Remove an object; a missing one is not an error."""
        raise NotImplementedError

    def ping(self) -> None:
        """Raise BackendUnavailable unless the store answers."""
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError

    def close(self) -> None:
        """Release clients and connections (called at shutdown)."""


__all__ = ["Cursor", "Mapper", "NameObjects", "NotFound", "ObjectStore", "Upload", "check_key"]
