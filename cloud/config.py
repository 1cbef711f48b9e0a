"""Service configuration: one TOML file plus `FIELDSTATION_CLOUD_<SECTION>_<KEY>` overrides.

Loaded by the station's config machinery (`agent.config.machinery`), so both sides share one
loader: the same types, the same one-pass validation, the same file:line of every problem.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.config import machinery
from agent.config.machinery import Problem, build, opt, parse_toml, section

DEFAULT_LISTEN = "127.0.0.1:8780"
DEFAULT_DATA_DIR = "./fieldstation-cloud-data"
ENV_PREFIX = "FIELDSTATION_CLOUD_"
_LISTEN_RE = re.compile(r"\[?([^\]]*?)\]?:(\d{1,5})")


class ConfigError(machinery.ConfigError):
    """A config file or variable is wrong; the message names the key, the line and the reason."""

    def render(self, problem: Problem) -> str:
        # keys read as the cloud's docs write them: `[limits] max_items`
        where = problem.where(self.source)
        name, _, key = problem.key.partition(".")
        if not key:
            return f"{where}: {problem.reason}"
        if problem.expected:
            return f"{where}: [{name}] {key} = {problem.value!r}: expected {problem.expected}"
        if problem.reason.startswith("unknown key"):
            rest = problem.reason.removeprefix("unknown key")
            return f"{where}: unknown key [{name}] {key}{rest}"
        return f"{where}: [{name}] {key}: {problem.reason}"


@dataclass
class ServerConfig:
    listen: str = opt(DEFAULT_LISTEN, help="HOST:PORT the API listens on ([::1]:PORT for IPv6)")
    data_dir: str = opt(DEFAULT_DATA_DIR, help="SQLite database and local objects")
    log_level: str = opt("info", help="log level")
    shutdown_timeout: int = opt(
        10, help="seconds uvicorn waits for open requests after SIGTERM", min=0, max=3600
    )
    docs: bool = opt(
        False,
        help="serve the browsable API page at /docs (its Swagger UI loads from a CDN, so it "
        "needs the internet); /openapi.json is always served",
    )

    def check(self) -> Iterator[tuple[str, str]]:
        if _listen_parts(self.listen) is None:
            yield "listen", f"{self.listen!r} must look like HOST:PORT, e.g. 127.0.0.1:8780"


@dataclass
class DatabaseConfig:
    url: str = opt(
        "",
        help="empty: sqlite:///<data_dir>/cloud.sqlite3",
        pattern=r"^$|^sqlite:///|^postgres(ql)?://",
        form="sqlite:///PATH or postgresql://USER@HOST/DB",
    )


@dataclass
class StorageConfig:
    backend: str = opt(
        "pack",
        help="where images go (pack: appended to pack files on the local disk, reading files an "
        "earlier local store left; local: one file per image)",
        choices=["local", "pack", "s3", "azure", "gcs"],
    )
    path: str = opt("", help="local, pack: empty means <data_dir>/objects")
    fsync: bool = opt(True, help="local, pack: fsync each image before answering stored")
    bucket: str = opt("", help="s3, gcs")
    container: str = opt("", help="azure")
    prefix: str = opt("", help="key prefix inside the bucket/container")
    endpoint_url: str = opt("", help="s3 (MinIO, moto, GCS interop), gcs emulator")
    region: str = opt("", help="s3")
    access_key_id: str = opt("", help="s3; empty uses boto3's default credential chain")
    secret_access_key: str = opt("", help="s3")
    connection_string: str = opt("", help="azure")
    account_url: str = opt(
        "", help="azure; with account_key, else workload/managed identity (DefaultAzureCredential)"
    )
    account_key: str = opt("", help="azure")
    project: str = opt("", help="gcs")
    create_bucket: bool = opt(False, help="create the bucket/container at start (emulators, demo)")

    def check(self) -> Iterator[tuple[str, str]]:
        if self.backend in ("s3", "gcs") and not self.bucket:
            yield "bucket", f"required for backend {self.backend!r}"
        if self.backend == "azure":
            if not self.container:
                yield "container", "required for backend 'azure'"
            if not (self.connection_string or self.account_url):
                yield "connection_string", "required for backend 'azure' (or account_url)"


@dataclass
class LimitsConfig:
    max_body_bytes: int = opt(64 * 1024 * 1024, help="largest request body", min=1)
    max_item_bytes: int = opt(8 * 1024 * 1024, help="largest image in a batch", min=1)
    max_items: int = opt(500, help="captures per batch", min=1)
    max_lookup_ids: int = opt(1000, help="ids per lookup request", min=1)
    max_json_bytes: int = opt(
        256 * 1024, help="largest body of every route but the batch upload", min=1024
    )
    rate_limit_per_minute: float = opt(
        600.0, help="per-station token bucket over all station requests; 0 disables it", min=0
    )
    rate_limit_burst: int = opt(60, help="requests a station may burst", min=1)


@dataclass
class AuthConfig:
    admin_token: str = opt(
        "",
        help="plain admin token for operator routes (prefer FIELDSTATION_CLOUD_AUTH_ADMIN_TOKEN "
        "from a secret); `fieldstation-cloud admin-token` issues a hashed one instead",
    )


@dataclass
class CloudConfig:
    server: ServerConfig = section(ServerConfig)
    database: DatabaseConfig = section(DatabaseConfig)
    storage: StorageConfig = section(StorageConfig)
    limits: LimitsConfig = section(LimitsConfig)
    auth: AuthConfig = section(AuthConfig)

    @property
    def data_path(self) -> Path:
        return Path(self.server.data_dir).expanduser()

    def database_url(self) -> str:
        return self.database.url or f"sqlite:///{(self.data_path / 'cloud.sqlite3').resolve()}"

    def storage_path(self) -> Path:
        return (
            Path(self.storage.path).expanduser()
            if self.storage.path
            else self.data_path / "objects"
        )


SECTIONS = machinery.section_fields(CloudConfig)


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    data_dir: str | None = None,
    listen: str | None = None,
) -> CloudConfig:
    """Build the config: defaults, then the TOML file, then environment, then command-line flags."""
    env = os.environ if env is None else env
    text, source = "", "<defaults>"
    if path is not None:
        text, source = Path(path).read_text(encoding="utf-8"), str(path)
    data = parse_toml(text, source, error=ConfigError) if text else {}
    config = build(CloudConfig, data, text, source, env, ENV_PREFIX, error=ConfigError)
    if data_dir is not None or listen is not None:
        if data_dir is not None:
            config.server.data_dir = data_dir
        if listen is not None:
            config.server.listen = listen
        validate(config, "command line")
    return config


def validate(config: CloudConfig, source: str = "<config>") -> None:
    """Check a config built in code (tests, flags) by the same rules as a file, or ConfigError."""
    data = {name: dataclasses.asdict(getattr(config, name)) for name in SECTIONS}
    build(CloudConfig, data, "", source, {}, ENV_PREFIX, error=ConfigError)


def _listen_parts(listen: str) -> tuple[str, int] | None:
    match = _LISTEN_RE.fullmatch(listen.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        return None
    return match.group(1) or "127.0.0.1", int(match.group(2))


def parse_listen(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) or raise ConfigError."""
    parts = _listen_parts(listen)
    if parts is None:
        reason = f"{listen!r} must look like HOST:PORT, e.g. 127.0.0.1:8780"
        raise ConfigError("listen", [Problem("server.listen", None, reason)])
    return parts
