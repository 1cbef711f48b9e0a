"""`fieldstation units list|command`: what the API does, from the command line."""

from __future__ import annotations

import json
from pathlib import Path

from agent import protocol as p
from agent.broker import free_port
from agent.cli import main
from agent.esp32.virtual import PtySerialLink
from tests.helpers import wait_for


def _config_for(station, tmp_path: Path) -> str:
    f = tmp_path / "cli.toml"
    f.write_text(
        f'[station]\ndata_dir = "{station.data_dir}"\n[http]\nlisten = "{station.config.http.listen}"\n'
    )
    return str(f)


def _serial_unit(make_station, pty_pair):
    master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\n')
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    link = PtySerialLink(master)
    hello = p.Hello("cam-cli", "1.2.3", "esp32", "24:0a:c4:00:00:09")
    link.send(p.encode_frame(hello, 1), "hello")
    wait_for(lambda: station.store.units(), what="hello recorded")
    return station, link


def test_units_list_shows_a_unit_that_said_hello(make_station, pty_pair, tmp_path, capsys):
    station, _link = _serial_unit(make_station, pty_pair)
    config = _config_for(station, tmp_path)
    assert main(["units", "list", "--config", config]) == 0
    out = capsys.readouterr().out
    assert "cam-cli" in out and "1.2.3" in out and "24:0a:c4:00:00:09" in out
    assert main(["units", "list", "--config", config, "--json"]) == 0
    (unit,) = json.loads(capsys.readouterr().out)
    assert unit["unit_id"] == "cam-cli"


def test_units_command_reaches_the_unit(make_station, pty_pair, tmp_path, capsys):
    station, link = _serial_unit(make_station, pty_pair)
    config = _config_for(station, tmp_path)
    assert main(["units", "command", "cam-cli", "capture-now", "--config", config]) == 0
    assert "sent CAPTURE_NOW to cam-cli" in capsys.readouterr().out
    assert isinstance(link.recv(5).message(), p.CaptureNow)
    args = ["--interval", "600", "--frame-size", "10", "--jpeg-quality", "12"]
    assert main(["units", "command", "cam-cli", "config", *args, "--config", config]) == 0
    msg = link.recv(5).message()
    assert isinstance(msg, p.Config) and msg.capture_interval_s == 600


def test_units_command_to_an_unknown_unit_says_so(make_station, tmp_path, capsys):
    station = make_station()
    config = _config_for(station, tmp_path)
    assert main(["units", "command", "cam-none", "capture-now", "--config", config]) == 1
    assert "has not been seen" in capsys.readouterr().err


def test_units_command_without_a_daemon_exits_3(tmp_path, capsys):
    f = tmp_path / "down.toml"
    f.write_text(f'[http]\nlisten = "127.0.0.1:{free_port()}"\n')
    assert main(["units", "command", "cam-1", "capture-now", "--config", str(f)]) == 3
    assert "no daemon answers" in capsys.readouterr().err


def test_units_command_config_needs_its_values(tmp_path, capsys):
    f = tmp_path / "down.toml"
    f.write_text(f'[http]\nlisten = "127.0.0.1:{free_port()}"\n')
    assert main(["units", "command", "cam-1", "config", "--config", str(f)]) == 2
    assert "config needs --interval, --frame-size, --jpeg-quality" in capsys.readouterr().err
