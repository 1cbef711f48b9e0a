"""Model versions made from the real fixture models, signing keys, a real cloud on loopback."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.modelsync import artifact as art
from cloud.auth import issue_token
from cloud.config import load_config
from cloud.models import publish_package
from cloud.process import CloudService
from cloud.service import Service

FIXTURES = Path(__file__).resolve().parents[2] / "models" / "fixtures"
NAME = "wildcam-det"


def make_version(
    out: Path,
    version: str,
    *,
    base: str = "scene-animal",
    name: str = NAME,
    break_golden: bool = False,
    card_changes: dict | None = None,
) -> Path:
    """A package folder: the fixture `base` renamed to `name`@`version` (goldens still hold)."""
    folder = out / f"{name}-{version}"
    shutil.copytree(FIXTURES / base, folder)
    card = json.loads((folder / "model.json").read_text())
    card.update(name=name, version=version, **(card_changes or {}))
    if break_golden:  # as if recorded on another runtime: the first ramp output is off
        card["selftest"][0]["outputs"][0]["head"][0] += 5.0
    (folder / "model.json").write_text(json.dumps(card, indent=1))
    return folder


@pytest.fixture
def keypair(tmp_path: Path) -> tuple[Path, str]:
    """(private key path, public key text) from the same code `models keygen` runs."""
    _pub, text = art.generate_key(tmp_path / "signing.key")
    return tmp_path / "signing.key", text


@pytest.fixture
def cloud(tmp_path: Path) -> Iterator[CloudService]:
    with CloudService.start(tmp_path / "cloud") as service:
        yield service


class Operator:
    """The operator's side of a running cloud, in this process (same database and store):
    publishing and tokens without a command per step."""

    def __init__(self, cloud: CloudService) -> None:
        self.service = Service.open(load_config(None, data_dir=str(cloud.data_dir)))

    def publish(self, folder: Path, key: Path) -> dict:
        return publish_package(self.service.db, self.service.store, folder, key, max_bytes=1 << 30)

    def station_token(self, station_id: str) -> str:
        self.service.db.add_station(station_id)
        return issue_token(self.service.db, station_id)

    def admin_token(self) -> str:
        return issue_token(self.service.db, None, role="admin")


@pytest.fixture
def operator(cloud: CloudService) -> Iterator[Operator]:
    op = Operator(cloud)
    yield op
    op.service.close()
