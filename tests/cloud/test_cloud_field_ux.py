"""The cloud's commands as a new user meets them: `config check` as on the station, a mistyped
--data-dir refused instead of an empty database made, /docs off unless asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import requests

from cloud.process import CloudService


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud", *args], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize(
    "command",
    [
        ["stations", "list"],
        ["models", "list"],
        ["export", "megadetector", "out.json"],
    ],
)
def test_read_commands_refuse_a_folder_with_no_database(tmp_path: Path, command: list[str]):
    typo = tmp_path / "clod-data"
    done = cli(*command, "--data-dir", str(typo))
    assert done.returncode == 2
    assert f"no cloud database in {typo}" in done.stderr and "is --data-dir right?" in done.stderr
    assert not (typo / "cloud.sqlite3").exists()


def test_stations_add_creates_the_database_and_list_then_reads_it(tmp_path: Path):
    assert (
        cli("stations", "add", "ridge-01", "--quiet", "--data-dir", str(tmp_path)).returncode == 0
    )
    done = cli("stations", "list", "--data-dir", str(tmp_path))
    assert done.returncode == 0 and "ridge-01" in done.stdout


def test_config_check_is_spelt_as_on_the_station(tmp_path: Path):
    done = cli("config", "check", "--data-dir", str(tmp_path))
    assert done.returncode == 0 and '"server"' in done.stdout
    assert cli("check-config").returncode == 2  # one way to do it


def test_docs_page_is_off_by_default_and_on_when_asked(tmp_path: Path):
    with CloudService.start(tmp_path / "off") as running:
        assert requests.get(f"{running.url}/docs", timeout=10).status_code == 404
        assert requests.get(f"{running.url}/openapi.json", timeout=10).status_code == 200
    with CloudService.start(
        tmp_path / "on", env={"FIELDSTATION_CLOUD_SERVER_DOCS": "true"}
    ) as running:
        assert requests.get(f"{running.url}/docs", timeout=10).status_code == 200


def test_config_check_takes_the_file_as_the_station_does(tmp_path: Path):
    """`fieldstation-cloud config check cloud.toml`, as `fieldstation config check station.toml`."""
    config = tmp_path / "cloud.toml"
    config.write_text("[limits]\nmax_items = 42\n")
    done = cli("config", "check", str(config))
    assert done.returncode == 0, done.stderr
    assert '"max_items": 42' in done.stdout
    bad = tmp_path / "bad.toml"
    bad.write_text("[limits]\nmax_itemz = 3\n")
    done = cli("config", "check", str(bad))
    assert done.returncode == 2 and f"{bad}:2: unknown key [limits] max_itemz" in done.stderr


def test_a_missing_config_file_is_one_line_not_a_traceback(tmp_path: Path):
    for args in (
        ["config", "check", str(tmp_path / "nope.toml")],
        ["--config", "/nope.toml", "serve"],
    ):
        done = cli(*args)
        assert done.returncode == 2, done
        assert "file does not exist" in done.stderr and "Traceback" not in done.stderr
