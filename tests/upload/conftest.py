"""Three real `fieldstation-cloud serve` instances (aws, azure, gcp), each behind a LinkProxy."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.config import parse_config
from agent.metrics import Metrics
from agent.store import Store
from agent.upload.worker import Uploader
from tests.linkproxy import LinkProxy
from tests.upload.upload_helpers import NAMES, Cloud, Station, station_with_primary, upload_toml

try:
    from cloud.process import CloudService
except ImportError as exc:  # pragma: no cover - the fixture says what is missing
    CloudService = None  # type: ignore[assignment,misc]
    _CLOUD_IMPORT_ERROR = exc

_station_counter = iter(range(1, 10_000))


@pytest.fixture(scope="session")
def clouds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Cloud]]:
    if CloudService is None:
        pytest.fail(
            f"cloud.process is not importable ({_CLOUD_IMPORT_ERROR}); "
            "install the project: pip install -e '.[test]'"
        )
    base = tmp_path_factory.mktemp("clouds")
    out: dict[str, Cloud] = {}
    try:
        for name in NAMES:
            service = CloudService.start(base / name)
            cloud = Cloud(name, base / name, service, LinkProxy(service.port))
            cloud.admin = service.admin_token()
            out[name] = cloud
        yield out
    finally:
        for cloud in out.values():
            cloud.proxy.close()
            cloud.service.stop()


@pytest.fixture
def links(clouds: dict[str, Cloud]) -> Iterator[dict[str, Cloud]]:
    """The three clouds running with plain links, before and after each test."""
    for cloud in clouds.values():
        if not cloud.running() or cloud.env:
            cloud.start()
        cloud.proxy.set("pass")
    yield clouds
    for cloud in clouds.values():
        cloud.proxy.set("pass")
        if not cloud.running() or cloud.env:
            cloud.start()


@pytest.fixture
def new_station(tmp_path: Path, links: dict[str, Cloud]) -> Iterator[Callable[..., Station]]:
    made: list[Station] = []

    def make(
        station_id: str | None = None,
        *,
        primary: str | None = None,
        data_dir: Path | None = None,
        **upload: Any,
    ) -> Station:
        station_id = station_id or station_with_primary(primary, f"up{next(_station_counter)}")
        tokens = {n: c.service.add_station(station_id) for n, c in links.items()}
        urls = {n: c.proxy.url for n, c in links.items()}
        text = upload_toml(station_id, tokens, urls, **upload)
        config = parse_config(text, "test.toml")
        store = Store(data_dir / "buffer.db" if data_dir else tmp_path / f"{station_id}.sqlite3")
        metrics = Metrics()
        station = Station(
            station_id, store, metrics, Uploader(store, config, metrics), tokens, text, config
        )
        made.append(station)
        return station

    yield make
    for station in made:
        station.stop()
        station.store.close()
