"""`status` and `queue` find a systemd station's buffer with no flags, and say where they looked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import agent.install
from agent.cli import main
from agent.store import BUFFER_FILE, Store


@pytest.fixture
def buffer_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A real, empty buffer; no station variables in the environment, no /etc config."""
    for var in ("STATE_DIRECTORY", "FIELDSTATION_STATION_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "state"
    folder.mkdir()
    Store(folder / BUFFER_FILE).close()
    return folder


def no_config(tmp_path: Path) -> list[str]:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    return ["--config", str(empty)]


def test_queue_uses_state_directory_from_systemd(buffer_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", f"{buffer_dir}:/var/cache/other")
    assert main(["queue", *no_config(buffer_dir.parent)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first == f"buffer {buffer_dir / BUFFER_FILE} (from $STATE_DIRECTORY)"


def test_status_falls_back_to_the_systemd_state_folder(
    buffer_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(agent.install, "DATA_DIR", str(buffer_dir))
    assert main(["status", "--json", *no_config(buffer_dir.parent)]) == 3  # no daemon answers
    doc = json.loads(capsys.readouterr().out)
    assert doc["buffer"] == str(buffer_dir / BUFFER_FILE)
    assert doc["buffer_found_by"] == "the systemd station's StateDirectory"


def test_config_data_dir_wins_over_state_directory(buffer_dir: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", "/nonexistent")
    config = buffer_dir.parent / "station.toml"
    config.write_text(f'[station]\ndata_dir = "{buffer_dir}"\n')
    assert main(["status", "--config", str(config)]) == 3  # no daemon answers
    out = capsys.readouterr().out
    assert f"buffer    {buffer_dir / BUFFER_FILE} (schema v" in out
    assert "from station.data_dir)" in out


def test_no_buffer_anywhere_names_the_folder_it_tried(
    buffer_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(agent.install, "DATA_DIR", str(buffer_dir.parent / "absent"))
    with pytest.raises(SystemExit) as exc:
        main(["queue", *no_config(buffer_dir.parent)])
    assert exc.value.code == 2  # the buffer cannot be read, as `status --help` says
    assert "from the default ./fieldstation-data" in capsys.readouterr().err


def test_upload_status_finds_the_systemd_station_buffer_like_status(
    buffer_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(agent.install, "DATA_DIR", str(buffer_dir))
    assert main(["upload", "status", "--json", *no_config(buffer_dir.parent)]) == 0
    assert json.loads(capsys.readouterr().out)["endpoints"] == []


def test_models_list_looks_in_the_systemd_station_folder_like_status(
    buffer_dir: Path, monkeypatch, capsys
) -> None:
    monkeypatch.setattr(agent.install, "DATA_DIR", str(buffer_dir))
    assert main(["models", "list", "--json", *no_config(buffer_dir.parent)]) == 0
    assert json.loads(capsys.readouterr().out)["folders"][0] == str(buffer_dir / "models")
