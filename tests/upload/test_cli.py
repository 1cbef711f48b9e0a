"""`fieldstation upload check` and `fieldstation upload status`, as an operator runs them."""

from __future__ import annotations

import json

from agent.cli import main
from tests.helpers import wait_for
from tests.upload.upload_helpers import add_captures


def _write_config(tmp_path, station) -> str:
    path = tmp_path / "station.toml"
    text = station.config_text.replace(
        "[station]\n", f'[station]\ndata_dir = "{station.store.path.parent}"\n', 1
    )
    path.write_text(text)
    return str(path)


def test_upload_check_reports_each_endpoint(new_station, links, tmp_path, capsys):
    station = new_station(primary="aws")
    config = _write_config(tmp_path, station)
    assert main(["upload", "check", "--config", config]) == 0
    out = capsys.readouterr().out
    assert out.count(" ok") == 3
    links["gcp"].proxy.set("down")
    assert main(["upload", "check", "--config", config]) == 1
    out = capsys.readouterr().out
    assert "gcp" in out and "FAILED" in out and "Connection refused" in out


def test_upload_status_shows_holdings_bytes_and_backlog(new_station, links, tmp_path, capsys):
    station = new_station(primary="azure", data_dir=tmp_path / "data")
    add_captures(station.store, 6, kinds=["animal", "empty"])
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, what="drained")
    station.stop()
    add_captures(station.store, 2, kinds=["person"], start=50)
    config = _write_config(tmp_path, station)
    assert main(["upload", "status", "--config", config, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["primary"] == "azure"
    azure = report["endpoints"][0]
    assert azure["name"] == "azure" and azure["held"] == 6 and azure["in_doubt"] == 0
    assert sum(azure["bytes_by_day"].values()) > 6 * 2000
    assert list(report["backlog"]) == ["person/animal"]
    assert report["backlog"]["person/animal"]["captures"] == 2
    assert main(["upload", "status", "--config", config]) == 0
    text = capsys.readouterr().out
    assert "primary azure" in text and "holds       6" in text
