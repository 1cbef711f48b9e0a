"""Two simulators side by side are two sets of units; a station's duplicate answers are reported
as duplicates, not as plain acknowledgements."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.esp32.simulate import simulate
from tests.helpers import jpeg, wait_for


def _images(tmp_path: Path) -> Path:
    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(jpeg(i, (160, 120)))
    return folder


def test_two_simulators_side_by_side_get_distinct_units(make_station, mosquitto, tmp_path):
    station = make_station(f"[mqtt]\nenabled = true\nport = {mosquitto.port}\n")
    wait_for(station.mqtt.connected.is_set, 20, "broker")
    images = _images(tmp_path)
    said: list[list[str]] = [[], []]
    codes: list[int] = [-1, -1]

    def run(i: int) -> None:
        codes[i] = simulate(
            serial=None,
            mqtt=f"mqtt://127.0.0.1:{mosquitto.port}",
            images_dir=images,
            rate=600,
            station="test-station",
            count=2,
            say=said[i].append,
        )

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert codes == [0, 0], said
    units = {u["unit_id"]: u for u in (dict(r) for r in station.store.units())}
    assert len(units) == 2
    assert len({u["mac"] for u in units.values()}) == 2
    assert station.store.queue_summary()["by_state"]["received"]["count"] == 4


def test_a_simulator_reports_the_station_s_duplicate_answers(make_station, mosquitto, tmp_path):
    station = make_station(f"[mqtt]\nenabled = true\nport = {mosquitto.port}\n")
    wait_for(station.mqtt.connected.is_set, 20, "broker")
    images = _images(tmp_path)

    def run(say: list[str]) -> int:
        return simulate(
            serial=None,
            mqtt=f"mqtt://127.0.0.1:{mosquitto.port}",
            images_dir=images,
            rate=600,
            station="test-station",
            count=2,
            unit_id="cam-twin",
            say=say.append,
            clock=lambda: 1_790_000_000.0,  # both runs number their captures alike
        )

    first: list[str] = []
    assert run(first) == 0
    again: list[str] = []
    assert run(again) == 1
    assert any("DUPLICATE" in line for line in again)
    assert "0 acknowledged as new" in again[-2] and "2 acknowledged as DUPLICATES" in again[-1]
