"""The helpers every test folder shares: waiting, free loopback ports, real JPEGs, metric reads.

Imported one way: `from tests.helpers import wait_for, free_port, jpeg, metric`.
"""

from __future__ import annotations

import io
import random
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import requests

from agent.broker import free_port

__all__ = ["free_port", "jpeg", "metric", "tmpfs", "wait_for"]

T = TypeVar("T")


def wait_for(cond: Callable[[], T], timeout: float = 60.0, what: str = "condition") -> T:
    """Poll `cond` (bounded in time) and return its first true value; fail naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def jpeg(seed: int = 0, size: tuple[int, int] = (64, 48)) -> bytes:
    """A real JPEG of noise whose bytes depend only on `seed` and `size` (compresses like a photo)."""
    from PIL import Image

    rnd = random.Random(seed)
    img = Image.new("RGB", size)
    img.putdata(
        [
            (rnd.randrange(256), rnd.randrange(256), rnd.randrange(256))
            for _ in range(size[0] * size[1])
        ]
    )
    out = io.BytesIO()
    img.save(out, "JPEG", quality=85)
    return out.getvalue()


def metric(station: Any, name: str, **labels: str) -> float:
    """Read one sample from the station's /metrics, as a scraper would (0.0 when absent)."""
    text = requests.get(f"http://{station.config.http.listen}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0


@contextmanager
def tmpfs(path: Path, size: str = "2m") -> Iterator[Path]:
    """A small tmpfs mounted at `path` that really fills up (needs root, as `.ci/run` is)."""
    import pytest

    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True
    )
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs at {path} (needs root): {done.stderr.decode().strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def context_switches(thread: threading.Thread) -> int:
    """How often the thread gave up the CPU by itself (each sleep that ends is one).

    Only voluntary switches count: on a loaded two-core CI machine the kernel preempts a
    running thread whenever it likes, and those involuntary switches say nothing about how
    often the thread wakes.
    """
    status = Path(f"/proc/self/task/{thread.native_id}/status").read_text()
    return sum(
        int(line.split()[1])
        for line in status.splitlines()
        if line.startswith("voluntary_ctxt_switches")
    )
