"""Fetching from the cloud: the manifest (ETag, 304) and artifacts into staging, resumed by HTTP
Range after a dropped link, within a deadline and a bounded number of attempts."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import urllib3
from tenacity import (
    RetryError,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from agent.modelsync.verify import Release, VerifyError

Progress = Callable[[int, int], None]  # (bytes so far, total)


@dataclass(frozen=True)
class Source:
    """A sync endpoint as model sync talks to it."""

    url: str  # base, e.g. http://127.0.0.1:8780
    token: str
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def timeout(self) -> tuple[float, float]:
        return (self.connect_timeout_s, self.read_timeout_s)


class Unchanged(Exception):
    """The manifest has not changed since the ETag we hold (304)."""


def fetch_manifest(
    session: requests.Session, source: Source, etag: str | None
) -> tuple[dict[str, Any], str | None]:
    """The manifest body and its ETag; raises Unchanged on 304, VerifyError(retry) otherwise."""
    headers = dict(source.headers)
    if etag:
        headers["If-None-Match"] = etag
    try:
        r = session.get(f"{source.url}/v1/models/manifest", headers=headers, timeout=source.timeout)
    except requests.RequestException as exc:
        raise VerifyError("manifest", f"cloud unreachable: {exc}", retry=True) from None
    if r.status_code == 304:
        raise Unchanged()
    if r.status_code != 200:
        raise VerifyError("manifest", f"HTTP {r.status_code}: {r.text[:200]}", retry=True)
    try:
        body = r.json()
    except ValueError:
        raise VerifyError("manifest", "not JSON", retry=True) from None
    if not isinstance(body, dict):
        raise VerifyError("manifest", "not a JSON object", retry=True)
    return body, r.headers.get("ETag")


class _Transient(Exception):
    """A dropped link or a server hiccup: resume and try again within the attempts."""


def download(
    session: requests.Session,
    source: Source,
    release: Release,
    part: Path,
    *,
    attempts: int,
    deadline_s: float,
    chunk_bytes: int,
    max_bytes: int,
    on_bytes: Callable[[int], None] = lambda n: None,
    progress: Progress | None = None,
    cancelled: Callable[[], bool] = lambda: False,
) -> Path:
    """Download `release` into `part`, resuming what is already there; return the path.

    `on_bytes(n)` is called with every block written (the daily data budget counts them).
    Raises VerifyError (retry=True for link faults, so the next poll tries again).
    """
    if release.size > max_bytes:
        raise VerifyError("download", f"package is {release.size} bytes, over {max_bytes}")
    started = time.monotonic()
    url = release.url if release.url.startswith("http") else source.url + release.url

    def one_try() -> None:
        have = part.stat().st_size if part.exists() else 0
        if have > release.size:
            part.unlink()
            have = 0
        if have == release.size:
            return
        headers = dict(source.headers)
        if have:
            headers["Range"] = f"bytes={have}-"
            headers["If-Range"] = f'"{release.sha256}"'
        left = deadline_s - (time.monotonic() - started)
        if left <= 0:
            raise VerifyError("download", f"deadline of {deadline_s:g} s passed", retry=True)
        try:
            with session.get(
                url,
                headers=headers,
                stream=True,
                timeout=(source.connect_timeout_s, min(source.read_timeout_s, left)),
            ) as r:
                if r.status_code == 404:
                    raise VerifyError(
                        "download", f"{release.id} is not on the server (404)", retry=True
                    )
                if r.status_code == 206:
                    mode = "ab"
                elif r.status_code == 200:
                    mode, have = "wb", 0  # the server ignored Range: start over
                elif r.status_code == 416:
                    part.unlink(missing_ok=True)
                    raise _Transient("range not satisfiable; starting over")
                else:
                    raise _Transient(f"HTTP {r.status_code}")
                with part.open(mode) as f:
                    while True:
                        # read1: what has arrived, so a drop mid-block loses nothing already here
                        block = r.raw.read1(chunk_bytes)
                        if not block:
                            break
                        f.write(block)
                        have += len(block)
                        on_bytes(len(block))
                        if progress is not None:
                            progress(have, release.size)
                        if have > release.size:
                            raise VerifyError(
                                "download", f"server sent more than {release.size} bytes"
                            )
                        if cancelled():  # the station is stopping: resume next time
                            raise VerifyError("download", "station stopping", retry=True)
                        if time.monotonic() - started > deadline_s:
                            raise VerifyError(
                                "download", f"deadline of {deadline_s:g} s passed", retry=True
                            )
                    # no fsync: a part torn by a power cut fails its sha256 and is fetched again
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise _Transient(str(exc)) from None
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                part.unlink(missing_ok=True)
                raise VerifyError("download", "disk full", retry=True) from None
            raise
        if have < release.size:
            raise _Transient(f"link dropped at {have} of {release.size} bytes")

    try:
        for attempt in Retrying(
            stop=stop_after_attempt(attempts) | stop_after_delay(deadline_s),
            wait=wait_exponential(multiplier=0.2, max=5),
            retry=retry_if_exception(lambda e: isinstance(e, _Transient)),
            reraise=False,
        ):
            with attempt:
                one_try()
    except RetryError as exc:
        last = exc.last_attempt.exception()
        have = part.stat().st_size if part.exists() else 0
        raise VerifyError(
            "download",
            f"gave up after {attempts} attempt(s) at {have} of {release.size} bytes: {last}",
            retry=True,
        ) from None
    return part
