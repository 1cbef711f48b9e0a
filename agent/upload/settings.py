"""The `[upload]` config section: sync endpoints, batching, value order, budget and windows."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

from agent.config.machinery import ByteSize, SecretError, opt, read_secret

_WINDOW_RE = re.compile(r"^\s*([01]\d|2[0-3]):([0-5]\d)\s*-\s*([01]\d|2[0-4]):([0-5]\d)\s*$")


class Window(str):
    """A daily upload window in local time, "HH:MM-HH:MM"; it may cross midnight ("22:00-02:00")."""

    def __new__(cls, value: object) -> Window:
        text = str(value)
        m = _WINDOW_RE.match(text)
        if not m or (m.group(3) == "24" and m.group(4) != "00"):
            raise ValueError(f'{text!r} is not a window such as "02:00-06:00"')
        if m.group(1, 2) == m.group(3, 4):
            raise ValueError(f"{text!r} is an empty window (start equals end)")
        return super().__new__(cls, text.strip())

    @property
    def minutes(self) -> tuple[int, int]:
        """(start, end) as minutes after local midnight."""
        m = _WINDOW_RE.match(self)
        assert m is not None
        return int(m.group(1)) * 60 + int(m.group(2)), int(m.group(3)) * 60 + int(m.group(4))


@dataclass(frozen=True)
class EndpointConfig:
    name: str = opt(
        "",
        help="short name shown in status and logs, e.g. aws",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$",
        form="aws (lower-case letters, digits, - and _; at most 32)",
    )
    url: str = opt(
        "",
        help="base URL of the sync endpoint, e.g. https://sync-aws.example.org",
        pattern=r"^https?://[^\s/]+(/\S*)?$",
        form="https://host or https://host/path",
    )
    weight: float = opt(1.0, help="share of the fleet that uses it as primary", min=0.001, max=1e6)
    token: str = opt("", help="this station's bearer token at this endpoint")
    token_file: str = opt("", help="file holding the token (wins over token)")
    connect_timeout_s: float = opt(5.0, help="TCP/TLS connect timeout", min=0.1, max=120)
    read_timeout_s: float = opt(60.0, help="wait for the answer to a request", min=0.1, max=600)

    def bearer_token(self, where: str) -> str:
        """The token to send: `token_file`'s content (SecretError naming `where`) or `token`."""
        if self.token_file:
            return read_secret(self.token_file, f"{where}.token_file")
        return self.token


@dataclass(frozen=True)
class UploadSection:
    enabled: bool = opt(True, help="upload captures to the sync endpoints")
    endpoints: list[EndpointConfig] = opt([], help="sync endpoints, [[upload.endpoints]] tables")
    batch_max_items: int = opt(50, help="captures per batch request", min=1, max=500)
    batch_max_bytes: ByteSize = opt(
        ByteSize(4 << 20), help="image bytes per batch request", min=1024, max=64 << 20
    )
    empty_policy: str = opt(
        "thumbnail",
        help="frames the models found empty: skip (metadata only), thumbnail, or full",
        choices=["skip", "thumbnail", "full"],
    )
    thumbnails_first: bool = opt(
        False, help="send a thumbnail of every capture before any full-resolution image"
    )
    thumbnail_px: int = opt(320, help="longest side of a thumbnail", min=32, max=2048)
    unanalysed: str = opt(
        "auto",
        help="upload captures inference has not analysed: auto (when inference is off), always, never",
        choices=["auto", "always", "never"],
    )
    bandwidth_bytes_per_s: ByteSize = opt(
        ByteSize(0), help="token-bucket cap on upload bytes per second; 0 = unlimited"
    )
    daily_budget_bytes: ByteSize = opt(
        ByteSize(0), help="bytes per local day over all endpoints; 0 = unlimited"
    )
    windows: list[Window] = opt(
        [], help='local-time upload windows, e.g. ["02:00-06:00"]; empty = any time'
    )
    attempts: int = opt(
        3, help="tries of one batch at one endpoint before failing over", min=1, max=20
    )
    retry_initial_s: float = opt(
        1.0, help="first retry wait (exponential, jittered)", min=0.01, max=600
    )
    retry_max_s: float = opt(
        60.0,
        help="longest retry wait, also the largest Retry-After honoured in place",
        min=0.01,
        max=3600,
    )
    breaker_failures: int = opt(
        3, help="consecutive failures that open an endpoint's breaker", min=1, max=100
    )
    breaker_cooldown_s: float = opt(
        30.0, help="first wait before a half-open probe", min=0.01, max=3600
    )
    breaker_cooldown_max_s: float = opt(
        600.0, help="longest wait between probes of a dead endpoint", min=0.01, max=86400
    )
    idle_poll_s: float = opt(
        5.0, help="how often an idle uploader looks for new captures", min=0.05, max=3600
    )
    # Each request costs the station two durable commits, a thread and an HTTP exchange whatever
    # its size: while captures trickle in, one request per linger_s instead of one per capture.
    linger_s: float = opt(
        1.0,
        help="while captures trickle in, a batch that could still grow waits this long after the "
        "last one (unless its first capture has been ready as long); 0 = send at once",
        min=0,
        max=3600,
    )
    heartbeat_interval_s: float = opt(
        300.0, help="seconds between heartbeats; 0 = none", min=0, max=86400
    )

    def check(self) -> Iterator[tuple[str, str]]:
        """Each endpoint has a name, a url and a readable token; no name is used twice."""
        first: dict[str, int] = {}
        for i, ep in enumerate(self.endpoints):
            where = f"endpoints[{i}]"
            for key in ("name", "url"):
                if not getattr(ep, key):
                    yield f"{where}.{key}", "missing; every endpoint needs a name and a url"
            if ep.name and ep.name in first:
                yield (
                    f"{where}.name",
                    f"{ep.name!r} is already the name of endpoints[{first[ep.name]}]",
                )
            first.setdefault(ep.name, i)
            if ep.token_file:
                try:
                    read_secret(ep.token_file, f"{where}.token_file")
                except SecretError as exc:
                    yield f"{where}.token_file", str(exc).removeprefix(f"{where}.token_file: ")
            elif not ep.token:
                yield where, "needs `token` or `token_file`"
