"""A reserve file: disk space the buffer holds back for the day the disk fills.

On a disk another program filled to the last byte, SQLite cannot even open the buffer (it needs
room for its WAL index and log) nor evict (a delete writes to the log too). The reserve is given up
at that moment so the station can start, raise its alarm, evict and answer units; it is taken
again once the disk has room.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

RESERVE_FILE = "buffer.reserve"


class DiskReserve:
    """`size` bytes held in one file beside the buffer."""

    def __init__(self, folder: Path, size: int) -> None:
        self.path = Path(folder) / RESERVE_FILE
        self.size = size

    @property
    def held(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def take(self, keep_free: int = 0) -> bool:
        """Hold the reserve if the disk has room for it plus `keep_free`; True when held."""
        if self.size <= 0 or self.held >= self.size:
            return True
        if shutil.disk_usage(self.path.parent).free - (self.size - self.held) < keep_free:
            return False
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                os.posix_fallocate(fd, 0, self.size)  # blocks really allocated, not a sparse file
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            log.warning("could not take the %d-byte disk reserve: %s", self.size, exc)
            with contextlib.suppress(OSError):
                self.path.unlink()
            return False
        log.info("holding %d bytes of disk in reserve at %s", self.size, self.path)
        return True

    def give_up(self) -> int:
        """Free the reserve for the buffer's own use; return the bytes freed."""
        held = self.held
        if held:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            log.error("disk full: gave up the %d-byte reserve at %s", held, self.path)
        return held
