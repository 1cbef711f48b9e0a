"""Sending one batch: the request, its retry policy (tenacity) and how a failure is counted."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential,
    wait_random,
)

from agent.upload.batch import Item
from agent.upload.budget import ThrottledBody, TokenBucket
from agent.upload.client import EndpointError, ItemResult
from agent.upload.endpoints import EndpointChooser


class Stopping(Exception):
    """The station is stopping while the uploader waits to retry."""


class LinkHeld(Exception):
    """The link may not carry this try now (daily budget spent, upload window closed)."""

    def __init__(self, reason: str, *, budget: bool) -> None:
        super().__init__(reason)
        self.budget = budget  # True: wait for tomorrow's budget; False: for the window


@dataclass
class Batch:
    """One encoded batch request for one endpoint."""

    endpoint: str
    items: list[Item]
    body: bytes
    content_type: str
    wire: int  # request bytes including the request line and headers
    batch_id: str

    @property
    def ids(self) -> list[str]:
        return [i.capture_id for i in self.items]

    @property
    def sent(self) -> list[tuple[str, str]]:
        """(capture id, variant) of each item: what the endpoint may hold once it went."""
        return [(i.capture_id, i.variant) for i in self.items]


@dataclass
class Outcome:
    """How sending a batch went, filled in by the sender thread."""

    results: list[ItemResult] | None = None
    in_doubt: bool = False  # some attempt may have reached the endpoint
    error: BaseException | None = None


@dataclass
class Delivery:
    """Sends batches with retries; every failed attempt is counted and reported to the chooser.

    `count(endpoint, nbytes)` records request bytes; `refused(items, exc)` hears a 400/413;
    `nap(s)` waits, raising Stopping when the station stops; `hold(nbytes)` raises LinkHeld when
    the link may not carry a try of that size now; `stop` is the worker's stop event.
    """

    chooser: EndpointChooser
    bucket: TokenBucket
    count: Callable[[str, int], None]
    refused: Callable[[list[Item], EndpointError], None]
    nap: Callable[[float], None]
    hold: Callable[[int], None] = lambda nbytes: None
    stop: threading.Event = field(default_factory=threading.Event)

    def send(self, batch: Batch, outcome: Outcome) -> None:
        """Send one batch with retries (runs in the sender thread); the outcome says how it went."""
        name = batch.endpoint
        ep = self.chooser.endpoints[name]
        s = self.chooser.settings
        metrics = self.chooser.metrics
        # exponential from retry_initial_s, capped at retry_max_s, plus up to one initial of jitter
        backoff = wait_exponential(multiplier=s.retry_initial_s, max=s.retry_max_s) + wait_random(
            0, s.retry_initial_s
        )

        def wait(rs: RetryCallState) -> float:
            exc = rs.outcome.exception() if rs.outcome is not None else None
            if isinstance(exc, EndpointError) and exc.retry_after is not None:
                return exc.retry_after  # 429/503: the server said when
            return float(backoff(rs))

        def retryable(exc: BaseException) -> bool:
            if not isinstance(exc, EndpointError) or not exc.retryable or self.stop.is_set():
                return False
            if self.chooser.is_open(name):
                return False  # give the endpoint its cool-down; the next step fails over
            return exc.retry_after is None or exc.retry_after <= s.retry_max_s

        retrying = Retrying(
            stop=stop_after_attempt(s.attempts),
            wait=wait,
            retry=retry_if_exception(retryable),
            sleep=self.nap,
            reraise=True,
        )
        try:
            for attempt in retrying:
                with attempt:
                    # every try is weighed: an earlier one cut by a drop already spent its bytes
                    self.hold(batch.wire)
                    data: bytes | ThrottledBody = batch.body
                    if self.bucket.rate:
                        data = ThrottledBody(batch.body, self.bucket, self.nap)
                    try:
                        results, _ = ep.send_batch(data, batch.content_type, batch.ids)
                    except EndpointError as exc:
                        outcome.in_doubt = outcome.in_doubt or exc.in_doubt
                        metrics.requests.labels(name, "batch", result_label(exc)).inc()
                        self.count(name, batch.wire if (exc.in_doubt or exc.status) else 0)
                        self.chooser.failed(name, exc)
                        if exc.status in (400, 413):
                            self.refused(batch.items, exc)
                        raise
        except BaseException as exc:  # handed to the loop's thread
            outcome.error = exc
            return
        metrics.requests.labels(name, "batch", "ok").inc()
        outcome.results = results


def result_label(exc: EndpointError) -> str:
    """The `result` label of a failed request."""
    if exc.in_doubt:
        return "in_doubt"
    if exc.status in (429, 503):
        return "throttled"
    return "not_delivered"


def overhead(url: str, content_type: str, body_len: int, token_len: int) -> int:
    """Request line and headers as requests writes them (counted in the per-day bytes)."""
    parts = urlsplit(url)
    head = (
        f"POST {parts.path}/v1/captures/batch HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "User-Agent: wildcam-fieldstation-uploader/1\r\nAccept-Encoding: gzip, deflate\r\n"
        "Accept: */*\r\nConnection: keep-alive\r\nAuthorization: Bearer "
        + "x" * token_len
        + f"\r\nContent-Type: {content_type}\r\nContent-Length: {body_len}\r\n\r\n"
    )
    return len(head)
