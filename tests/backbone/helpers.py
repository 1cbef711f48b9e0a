"""Small waits and reads the backbone tests share."""

from __future__ import annotations

import time
from collections.abc import Callable

import requests


def wait_for(cond: Callable[[], object], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def metric(station, name: str, **labels: str) -> float:
    """Read one sample from the station's /metrics, as a scraper would."""
    text = requests.get(f"http://{station.config.http.listen}/metrics", timeout=5).text
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        key, _, value = line.rpartition(" ")
        if key == (f"{name}{{{want}}}" if want else name):
            return float(value)
    return 0.0
