"""One sync endpoint over HTTP: batch, lookup, heartbeat and ping, with errors sorted by what they mean."""

from __future__ import annotations

import email.utils
import json
import re
import time
from dataclasses import dataclass
from typing import Any

import requests

from agent.upload.settings import EndpointConfig

USER_AGENT = "wildcam-fieldstation-uploader/1"
PROBE_READ_S = 2.0  # the connectivity probe's read timeout (at least the connect timeout)


class EndpointError(Exception):
    """A request to a sync endpoint failed as a whole."""

    in_doubt = False  # the endpoint may have processed it
    timed_out = False  # no answer within the read timeout: the endpoint may be blackholed
    retryable = True
    retry_after: float | None = None

    def __init__(self, endpoint: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{endpoint}: {message}")
        self.endpoint = endpoint
        self.status = status


class NotDelivered(EndpointError):
    """Certainly not processed: no connection, or a whole-request refusal (4xx, 429, 503)."""

    def __init__(
        self,
        endpoint: str,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        retryable: bool = True,
    ) -> None:
        super().__init__(endpoint, message, status=status)
        self.retry_after = retry_after
        self.retryable = retryable


class InDoubt(EndpointError):
    """Sent, but no usable answer (timeout, reset, 5xx): the endpoint may hold some of it."""

    in_doubt = True


@dataclass(frozen=True)
class ItemResult:
    capture_id: str
    status: str  # stored | duplicate | conflict | rejected
    reason: str | None


class SyncEndpoint:
    """A `SyncEndpoint` at one cloud; keeps one keep-alive session."""

    def __init__(self, cfg: EndpointConfig, token: str) -> None:
        self.name = cfg.name
        self.url = cfg.url.rstrip("/")
        self.timeout = (cfg.connect_timeout_s, cfg.read_timeout_s)
        self.weight = cfg.weight
        self._token = token
        self.session = requests.Session()
        self.session.headers["User-Agent"] = USER_AGENT

    def close(self) -> None:
        self.session.close()

    @property
    def token_len(self) -> int:
        """Length of the bearer token: its header is part of every request's counted bytes."""
        return len(self._token)

    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _request(self, method: str, path: str, **kw: Any) -> requests.Response:
        try:
            return self.session.request(method, self.url + path, timeout=self.timeout, **kw)
        except requests.exceptions.ConnectTimeout as exc:
            raise NotDelivered(self.name, f"connect timeout: {exc}") from exc
        except requests.exceptions.ConnectionError as exc:
            # a refused or unreachable connect never carried the request; anything later might
            if _never_connected(exc):
                raise NotDelivered(self.name, f"cannot connect: {_short(exc)}") from exc
            raise InDoubt(self.name, f"connection lost: {_short(exc)}") from exc
        except requests.exceptions.Timeout as exc:
            doubt = InDoubt(self.name, f"no answer within {self.timeout[1]} s")
            doubt.timed_out = True
            raise doubt from exc
        except requests.exceptions.RequestException as exc:
            raise InDoubt(self.name, f"request failed: {_short(exc)}") from exc

    def _check(self, resp: requests.Response) -> None:
        status = resp.status_code
        if status < 300:
            return
        detail = _detail(resp)
        if status in (429, 503):
            raise NotDelivered(
                self.name,
                f"HTTP {status}: {detail}",
                status=status,
                retry_after=parse_retry_after(resp.headers.get("Retry-After")),
            )
        if 400 <= status < 500:
            # 408 is a timeout the server gave up on: nothing processed, try again
            retryable = status in (408, 413)
            raise NotDelivered(
                self.name, f"HTTP {status}: {detail}", status=status, retryable=retryable
            )
        raise InDoubt(self.name, f"HTTP {status}: {detail}", status=status)

    def ping(self) -> bool:
        """The cheap probe: GET /v1/ping, no auth, with a short read timeout (it answers at once
        when the endpoint is alive; a blackholed one must not hold the uploader long)."""
        connect, read = self.timeout
        try:
            resp = self.session.get(
                self.url + "/v1/ping", timeout=(connect, min(read, max(PROBE_READ_S, connect)))
            )
        except requests.exceptions.RequestException:
            return False
        return resp.status_code == 200

    def send_batch(
        self, body: Any, content_type: str, ids: list[str]
    ) -> tuple[list[ItemResult], int]:
        """POST /v1/captures/batch; return results by capture id and the response size."""
        resp = self._request(
            "POST",
            "/v1/captures/batch",
            data=body,
            headers={**self._auth(), "Content-Type": content_type},
        )
        self._check(resp)
        try:
            results = resp.json()["results"]
            out = [ItemResult(r["capture_id"], r["status"], r.get("reason")) for r in results]
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise InDoubt(self.name, f"unreadable batch answer: {exc}") from exc
        return out, len(resp.content)

    def lookup(self, capture_ids: list[str]) -> dict[str, dict[str, str]]:
        """POST /v1/captures/lookup: which of these ids the endpoint holds (≤1000 per call)."""
        resp = self._request(
            "POST", "/v1/captures/lookup", json={"capture_ids": capture_ids}, headers=self._auth()
        )
        self._check(resp)
        try:
            held = resp.json()["held"]
            return {k: {"sha256": v["sha256"], "variant": v["variant"]} for k, v in held.items()}
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
            raise InDoubt(self.name, f"unreadable lookup answer: {exc}") from exc

    def heartbeat(self, payload: dict[str, Any]) -> int:
        """POST /v1/heartbeat; return the bytes sent."""
        body = json.dumps(payload, separators=(",", ":")).encode()
        resp = self._request(
            "POST",
            "/v1/heartbeat",
            data=body,
            headers={**self._auth(), "Content-Type": "application/json"},
        )
        self._check(resp)
        return len(body)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _never_connected(exc: Exception) -> bool:
    text = repr(exc)
    return any(
        s in text
        for s in ("NewConnectionError", "ConnectionRefused", "Connection refused", "NameResolution")
    )


def _short(exc: Exception) -> str:
    """The useful part of a requests/urllib3 error, e.g. "[Errno 111] Connection refused"."""
    text = str(exc)
    m = re.search(r"\[Errno -?\d+\] [^'\")]+", text) or re.search(
        r"(Remote end closed connection without response|Connection reset by peer|"
        r"Connection aborted|Read timed out)",
        text,
    )
    if m:
        return m.group(0).strip()
    return text if len(text) < 200 else text[:200] + "…"


def _detail(resp: requests.Response) -> str:
    try:
        return str(resp.json().get("detail", ""))[:300]
    except (ValueError, AttributeError, RecursionError):
        return resp.text[:300]
