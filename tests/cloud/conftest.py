"""Fixtures: real PostgreSQL, moto S3, Azurite, gcp-storage-emulator, and the service itself."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cloud.auth import issue_token
from cloud.config import CloudConfig, validate
from tests.cloud.cloud_services import (
    LiveServer,
    Postgres,
    azurite,
    gcs_emulator,
    moto_s3,
    postgres_server,
)

# Every database and every object store appears at least once; the upload suite runs on each.
BACKENDS = ["sqlite+local", "postgres+s3", "sqlite+azure", "postgres+gcs", "sqlite+pack"]


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    with postgres_server() as pg:
        yield pg


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with moto_s3() as url:
        yield url


@pytest.fixture(scope="session")
def azurite_connection() -> Iterator[str]:
    with azurite() as conn:
        yield conn


@pytest.fixture(scope="session")
def gcs_endpoint() -> Iterator[str]:
    with gcs_emulator() as url:
        yield url


def make_config(
    request: pytest.FixtureRequest, backend: str, data_dir: Path, **limits: Any
) -> CloudConfig:
    """A config for `backend` ("database+storage") with fresh, empty database and bucket."""
    database, storage = backend.split("+")
    config = CloudConfig()
    config.server.data_dir = str(data_dir)
    if database == "postgres":
        config.database.url = request.getfixturevalue("postgres").create_database()
    bucket = "t-" + uuid.uuid4().hex[:12]
    config.storage.backend = storage
    config.storage.create_bucket = True
    if storage == "local":
        config.storage.fsync = False  # tmpfs-speed tests; durability is benchmarked, not tested
    elif storage == "s3":
        config.storage.endpoint_url = request.getfixturevalue("s3_endpoint")
        config.storage.bucket = bucket
        config.storage.access_key_id = "testing"
        config.storage.secret_access_key = "testing"
    elif storage == "azure":
        config.storage.connection_string = request.getfixturevalue("azurite_connection")
        config.storage.container = bucket
    elif storage == "gcs":
        config.storage.endpoint_url = request.getfixturevalue("gcs_endpoint")
        config.storage.bucket = bucket
    for key, value in limits.items():
        setattr(config.limits, key, value)
    validate(config)
    return config


@pytest.fixture(params=BACKENDS)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LiveServer]:
    """The service on a loopback port over one database+storage combination."""
    server = LiveServer(make_config(request, request.param, tmp_path)).start()
    yield server
    server.stop()


@pytest.fixture
def make_live(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[..., LiveServer]]:
    """Factory: the service over SQLite + local files with the given limits / config changes."""
    servers: list[LiveServer] = []

    def make(backend: str = "sqlite+local", **limits: Any) -> LiveServer:
        data = tmp_path / f"cloud-{len(servers)}"
        server = LiveServer(make_config(request, backend, data, **limits)).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def station_token() -> Callable[[LiveServer, str], str]:
    """Create a station on a live server and return a token for it."""

    def make(
        server: LiveServer, station_id: str = "st-1", location: tuple[float, float] | None = None
    ) -> str:
        lat, lon = location or (None, None)
        server.service.db.add_station(station_id, lat, lon)
        return issue_token(server.service.db, station_id)

    return make


@pytest.fixture
def admin_token() -> Callable[[LiveServer], str]:
    def make(server: LiveServer) -> str:
        return issue_token(server.service.db, None, role="admin")

    return make
