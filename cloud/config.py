"""Service configuration: one TOML file plus `FIELDSTATION_CLOUD_<SECTION>_<KEY>` overrides."""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_LISTEN = "127.0.0.1:8780"
DEFAULT_DATA_DIR = "./fieldstation-cloud-data"
ENV_PREFIX = "FIELDSTATION_CLOUD_"


class ConfigError(ValueError):
    """A config file or variable is wrong; the message names the key, the line and the reason."""


@dataclass
class ServerConfig:
    listen: str = DEFAULT_LISTEN
    data_dir: str = DEFAULT_DATA_DIR
    log_level: str = "info"
    # Seconds uvicorn waits for open requests after SIGTERM before closing them.
    shutdown_timeout: int = 10


@dataclass
class DatabaseConfig:
    # Empty means `sqlite:///<data_dir>/cloud.sqlite3`.
    url: str = ""


@dataclass
class StorageConfig:
    backend: str = "local"  # local | s3 | azure | gcs
    path: str = ""  # local: empty means <data_dir>/objects
    fsync: bool = True  # local: fsync each image before answering "stored"
    bucket: str = ""  # s3, gcs
    container: str = ""  # azure
    prefix: str = ""  # key prefix inside the bucket/container
    endpoint_url: str = ""  # s3 (MinIO, moto, GCS interop), gcs emulator
    region: str = ""  # s3
    access_key_id: str = ""  # s3; empty uses boto3's default credential chain
    secret_access_key: str = ""
    connection_string: str = ""  # azure
    account_url: str = ""  # azure, with DefaultAzureCredential-less account key below
    account_key: str = ""
    project: str = ""  # gcs
    create_bucket: bool = False  # create the bucket/container at start (emulators, demo)


@dataclass
class LimitsConfig:
    max_body_bytes: int = 64 * 1024 * 1024
    max_item_bytes: int = 8 * 1024 * 1024
    max_items: int = 500
    max_lookup_ids: int = 1000
    # Per-station token bucket over all station requests; 0 disables it.
    rate_limit_per_minute: float = 600.0
    rate_limit_burst: int = 60


@dataclass
class AuthConfig:
    # Plain admin token for operator routes (prefer FIELDSTATION_CLOUD_AUTH_ADMIN_TOKEN from a
    # secret); `fieldstation-cloud admin-token` issues a hashed one in the database instead.
    admin_token: str = ""


@dataclass
class CloudConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)

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


SECTIONS = {f.name: f.type for f in dataclasses.fields(CloudConfig)}


def _line_of(text: str, section: str, key: str | None) -> int | None:
    """Best-effort line number of a key (tomllib does not report positions)."""
    in_section = False
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            in_section = stripped.strip("[] ") == section
            if key is None and in_section:
                return number
            continue
        if in_section and key and re.match(rf"{re.escape(key)}\s*=", stripped):
            return number
    return None


def _coerce(section: str, key: str, value: Any, default: Any, where: str) -> Any:
    """Convert a file or environment value to the type of the default, or raise ConfigError."""
    want = type(default)
    if want is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in (
            "1",
            "true",
            "yes",
            "on",
            "0",
            "false",
            "no",
            "off",
        ):
            return value.lower() in ("1", "true", "yes", "on")
    elif want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
    elif want is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif want is str and isinstance(value, str):
        return value
    raise ConfigError(f"{where}: [{section}] {key} = {value!r}: expected {want.__name__}")


def load_config(
    path: str | os.PathLike[str] | None = None,
    env: dict[str, str] | None = None,
    data_dir: str | None = None,
    listen: str | None = None,
) -> CloudConfig:
    """Build the config: defaults, then the TOML file, then environment, then command-line flags."""
    config = CloudConfig()
    if path is not None:
        text = Path(path).read_text(encoding="utf-8")
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: {exc}") from exc
        for section, values in raw.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"{path}:{_line_of(text, section, None)}: unknown section [{section}]"
                )
            if not isinstance(values, dict):
                raise ConfigError(f"{path}: {section} must be a [section] table")
            target = getattr(config, section)
            for key, value in values.items():
                where = f"{path}:{_line_of(text, section, key)}"
                if not hasattr(target, key):
                    raise ConfigError(f"{where}: unknown key [{section}] {key}")
                setattr(target, key, _coerce(section, key, value, getattr(target, key), where))
    for name, value in (os.environ if env is None else env).items():
        if not name.startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX) :].lower()
        section, _, key = rest.partition("_")
        if section not in SECTIONS or not hasattr(getattr(config, section), key):
            raise ConfigError(f"environment {name}: no such setting")
        target = getattr(config, section)
        setattr(
            target, key, _coerce(section, key, value, getattr(target, key), f"environment {name}")
        )
    if data_dir is not None:
        config.server.data_dir = data_dir
    if listen is not None:
        config.server.listen = listen
    validate(config)
    return config


def parse_listen(listen: str) -> tuple[str, int]:
    """Split HOST:PORT (IPv6 as [::1]:PORT) or raise ConfigError."""
    match = re.fullmatch(r"\[?([^\]]*?)\]?:(\d{1,5})", listen.strip())
    if not match or not 0 <= int(match.group(2)) <= 65535:
        raise ConfigError(f"[server] listen = {listen!r}: expected HOST:PORT")
    return match.group(1) or "127.0.0.1", int(match.group(2))


def validate(config: CloudConfig) -> None:
    """Check cross-field rules once, before anything starts."""
    parse_listen(config.server.listen)
    storage = config.storage
    if storage.backend not in ("local", "s3", "azure", "gcs"):
        raise ConfigError(
            f"[storage] backend = {storage.backend!r}: expected local, s3, azure or gcs"
        )
    if storage.backend in ("s3", "gcs") and not storage.bucket:
        raise ConfigError(f"[storage] bucket: required for backend {storage.backend!r}")
    if storage.backend == "azure":
        if not storage.container:
            raise ConfigError("[storage] container: required for backend 'azure'")
        if not (storage.connection_string or storage.account_url):
            raise ConfigError(
                "[storage] connection_string or account_url: required for backend 'azure'"
            )
    url = config.database.url
    if url and not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
        raise ConfigError(f"[database] url = {url!r}: expected sqlite:///PATH or postgresql://...")
    limits = config.limits
    for name in ("max_body_bytes", "max_item_bytes", "max_items", "max_lookup_ids"):
        if getattr(limits, name) <= 0:
            raise ConfigError(f"[limits] {name}: must be positive")
    if limits.rate_limit_per_minute < 0 or limits.rate_limit_burst < 1:
        raise ConfigError("[limits] rate_limit_per_minute must be >= 0 and rate_limit_burst >= 1")
