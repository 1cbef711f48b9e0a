"""One station per buffer: an OS file lock on the data folder, held for the station's life.

flock, not a pid file: the kernel releases it when the holder dies, so a SIGKILL or a power cut
never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "station.lock"


class BufferInUse(RuntimeError):
    """Another station process holds this data folder."""

    def __init__(self, data_dir: Path, pid: str) -> None:
        self.data_dir = data_dir
        self.pid = pid
        super().__init__(
            f"another station (pid {pid}) is already running on {data_dir}; "
            "stop it first or give this one its own data_dir"
        )


class BufferLock:
    """Held from `acquire()` until `release()` or the process ends."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock or raise BufferInUse naming the holder's pid."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise BufferInUse(self.data_dir, holder) from None
        self._fd = fd
        try:
            # fixed width, written in place: on a full disk the existing block is reused
            os.pwrite(fd, f"{os.getpid():<15}\n".encode(), 0)
        except OSError:
            pass  # the lock holds without the pid; a second station then says "pid unknown"

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
