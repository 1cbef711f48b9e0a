"""The station's own sections: identity, buffer, ingest paths, local HTTP and logging."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from agent.config.machinery import ByteSize, SecretError, opt, read_secret


@dataclass(frozen=True)
class StationSection:
    id: str = opt(
        "",
        help="station id used in MQTT topics and by the cloud; default: the host name",
        pattern=r"^$|^[a-z0-9][a-z0-9_-]{0,62}$",
        form="ridge-01 (lower-case letters, digits, - and _; at most 63)",
    )
    name: str = opt("", help="human name shown in status")
    data_dir: str = opt(
        "", help="buffer and state folder; default $STATE_DIRECTORY or ./fieldstation-data"
    )


@dataclass(frozen=True)
class StorageSection:
    quota_bytes: ByteSize = opt(
        ByteSize(8 << 30), help="image bytes the buffer may hold before evicting", min=1 << 20
    )
    min_free_bytes: ByteSize = opt(
        ByteSize(256 << 20), help="disk space always left free; below it new captures get NAK"
    )
    check_on_start: bool = opt(True, help="run PRAGMA quick_check when the daemon starts")
    evict_interval_s: float = opt(60.0, help="how often the quota is enforced", min=1, max=3600)
    reserve_bytes: ByteSize = opt(
        ByteSize(4 << 20),
        help="space held in a reserve file, given up so the buffer can open on a full disk",
        max=1 << 30,
    )


@dataclass(frozen=True)
class IngestSection:
    max_capture_bytes: ByteSize = opt(
        ByteSize(4 << 20), help="largest JPEG accepted", min=1024, max=64 << 20
    )
    max_chunk_bytes: int = opt(
        65000,
        help="largest chunk_size a unit may use; units are told the smaller of this and theirs",
        min=64,
        max=65000,
    )
    max_frame_payload: int = opt(
        65535, help="frames with a longer length field count as noise", min=128, max=65535
    )
    capture_timeout_s: float = opt(
        30.0, help="incomplete captures are discarded after this long", min=1, max=3600
    )
    max_open_captures: int = opt(8, help="concurrent incomplete captures per unit", min=1, max=256)
    unit_clock_skew_s: float = opt(
        900.0,
        help="a unit's timestamp is read as a date only within this many seconds of our clock",
        min=1,
        max=86400,
    )


@dataclass(frozen=True)
class SerialSection:
    ports: list[str] = opt(
        [], help="serial ports with units on them, e.g. /dev/serial/by-id/usb-…-if00"
    )
    baudrate: int = opt(921600, help="UART speed (ignored by USB CDC)", min=1200, max=5_000_000)
    reopen_s: float = opt(2.0, help="wait before reopening a port that went away", min=0.1, max=300)


@dataclass(frozen=True)
class MqttSection:
    enabled: bool = opt(False, help="connect to an MQTT broker for Wi-Fi units")
    host: str = opt("127.0.0.1", help="broker host")
    port: int = opt(1883, help="broker port", min=1, max=65535)
    protocol: str = opt("5", help="MQTT protocol version", choices=["3.1.1", "5"])
    client_id: str = opt("", help="default: fieldstation-<station id>")
    username: str = opt("", help="broker user name")
    password_file: str = opt("", help="file holding the broker password")
    keepalive_s: int = opt(60, help="MQTT keepalive", min=5, max=3600)
    topic_root: str = opt(
        "wildcam",
        help="first level of every topic",
        pattern=r"^[^+#/]+$",
        form="wildcam (no +, # or /)",
    )
    session_expiry_s: int = opt(
        7 * 86400, help="MQTT 5 session expiry, so queued captures survive a restart", min=0
    )
    tls_ca_file: str = opt("", help="CA bundle; set to use TLS")
    reconnect_max_s: float = opt(60.0, help="longest wait between reconnects", min=1, max=3600)

    def check(self) -> Iterator[tuple[str, str]]:
        yield from secret_file_problems("password_file", self.password_file)


@dataclass(frozen=True)
class HttpSection:
    listen: str = opt(
        "127.0.0.1:8080",
        help="main listener: health, metrics, status and intake",
        pattern=r"^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$",
        form="HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080",
    )
    lan_listen: str = opt(
        "",
        help="optional second listener serving only the intake routes, e.g. 0.0.0.0:8081",
        pattern=r"^$|^(\[[0-9a-fA-F:]+\]|[^:\s]+):\d{1,5}$",
        form="HOST:PORT, e.g. 0.0.0.0:8081",
    )
    token: str = opt("", help="when set, intake requests need Authorization: Bearer <token>")
    token_file: str = opt("", help="file holding the intake token (wins over token)")
    max_body_bytes: ByteSize = opt(
        ByteSize(5 << 20), help="largest intake request body", min=1024, max=128 << 20
    )

    def check(self) -> Iterator[tuple[str, str]]:
        yield from secret_file_problems("token_file", self.token_file)


@dataclass(frozen=True)
class LogSection:
    level: str = opt("info", help="log level", choices=["debug", "info", "warning", "error"])
    summary_interval_s: float = opt(
        300.0,
        help="how often the log says what the station did (stored, analysed, uploaded, failed); "
        "0: never",
        min=0,
        max=86400,
    )


def secret_file_problems(key: str, path: str) -> Iterator[tuple[str, str]]:
    """A problem for `key` when its token or password file is set but cannot be read."""
    if path:
        try:
            read_secret(path, key)
        except SecretError as exc:
            yield key, str(exc).removeprefix(f"{key}: ")
