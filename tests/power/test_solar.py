"""Solar input: read from sysfs input supplies and hwmon, stored in the bounded power history,
shown by `fieldstation power`, /metrics and the station page's chart."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from agent.power.history import PowerHistory, StoredReading
from agent.power.sources import Reading
from agent.store import Store
from agent.web.views import power_chart
from tests.helpers import free_port, metric, wait_for
from tests.power.conftest import START, Hwmon, power_config
from tests.power.test_station import fieldstation

SYSFS = '[[power.sources]]\nkind = "sysfs"\n'


def panel(sys_root: Path, watts: float | None, online: bool = True, kind: str = "Solar") -> Path:
    """A charge input supply as a charge-controller driver writes it (power_now in µW)."""
    d = sys_root / "class" / "power_supply" / "solar-in"
    d.mkdir(parents=True, exist_ok=True)
    (d / "type").write_text(kind + "\n")
    (d / "online").write_text("1\n" if online else "0\n")
    if watts is not None:
        (d / "power_now").write_text(f"{round(watts * 1e6)}\n")
    return d


def test_sysfs_reads_the_panel_from_an_online_input_supply(sysfs, sys_root, make_worker):
    worker = make_worker(power_config(sys_root, SYSFS))
    assert worker.tick().reading.solar_w is None  # the mains supply says nothing of its power
    panel(sys_root, 18.5)
    assert worker.tick().reading.solar_w == 18.5
    panel(sys_root, 18.5, online=False)  # night: the controller takes the panel offline
    assert worker.tick().reading.solar_w == 0.0
    usb = panel(sys_root, 4.0, kind="USB")
    (usb.parent / "AC" / "power_now").write_text("garbage\n")  # a garbled input costs nothing
    r = worker.tick().reading
    assert r.solar_w == 4.0 and r.soc == 80


def test_hwmon_reads_the_panel_channel(sys_root, make_worker):
    chip = Hwmon(sys_root, "ina3221")
    chip.set(13.1, -0.3)
    (chip.dir / "in2_input").write_text("18200\n")  # panel side on channel 2: 18.2 V, 0.9 A
    (chip.dir / "curr2_input").write_text("900\n")
    worker = make_worker(
        power_config(sys_root, '[[power.sources]]\nkind = "hwmon"\nsolar_channel = 2\n')
    )
    r = worker.tick().reading
    assert round(r.solar_w, 2) == 16.38 and r.voltage_v == 13.1
    (chip.dir / "curr2_input").unlink()  # the panel's shunt gone: the battery reading stays
    r = worker.tick().reading
    assert r.solar_w is None and "curr2_input" in str(r.detail["solar_error"])


def test_the_history_keeps_solar_and_stays_bounded(store):
    history = PowerHistory(store, max_rows=100)
    for i in range(250):
        at = START + 300 * i
        history.add_reading(Reading("vedirect:tty", at, soc=60, power_w=-3, solar_w=i / 10), "eco")
        history.add_transition(at, "eco", "normal", "test", {})
        history.add_event(at, "hold", "test")
    rows = history.readings(0)
    assert len(rows) == 100 and rows[-1].solar_w == 24.9 and rows[0].at == START + 300 * 150
    assert len(history.transitions(1000)) == 100 and len(history.events(1000)) == 100


def test_a_buffer_from_before_solar_gains_the_column_and_keeps_its_rows(tmp_path):
    path = tmp_path / "buffer.db"
    store = Store(path, check_on_start=False)
    PowerHistory(store).add_reading(Reading("sysfs:BAT0", START, soc=55.0), "normal")
    store.close()
    with sqlite3.connect(path) as conn:  # as the buffer was before power migration 2
        conn.execute("ALTER TABLE power_readings DROP COLUMN solar_w")
        conn.execute("DELETE FROM schema_migrations WHERE owner = 'power' AND version = 2")
    conn.close()
    store = Store(path, check_on_start=False)
    try:
        history = PowerHistory(store)
        history.add_reading(Reading("sysfs:BAT0", START + 60, soc=54.0, solar_w=7.5), "normal")
        old, new = history.readings(0)
        assert (old.soc, old.solar_w) == (55.0, None) and (new.soc, new.solar_w) == (54.0, 7.5)
    finally:
        store.close()


def test_fieldstation_power_shows_the_panel_while_the_daemon_is_down(
    sysfs, sys_root, tmp_path, capsys
):
    panel(sys_root, 21.0)
    conf = tmp_path / "station.toml"
    conf.write_text(
        f'[station]\ndata_dir = "{tmp_path / "data"}"\n'
        f'[http]\nlisten = "127.0.0.1:{free_port()}"\n'
        f'[power]\nsysfs_root = "{sys_root}"\n' + SYSFS
    )
    out = fieldstation(capsys, "power", "--config", str(conf))
    assert "sysfs:BAT0" in out and "panel 21 W" in out


def test_metrics_and_the_chart_have_the_solar_input(make_station, sysfs, sys_root):
    panel(sys_root, 12.5)
    station = make_station(
        f'[power]\nsysfs_root = "{sys_root}"\nread_interval_s = 1\nhistory_interval_s = 1\n' + SYSFS
    )
    wait_for(lambda: metric(station, "fieldstation_solar_watts") == 12.5, what="solar metric")
    wait_for(lambda: station.power.history.readings(0), what="a stored reading")
    assert station.power.history.readings(0)[-1].solar_w == 12.5


def test_the_chart_draws_solar_and_falls_back_to_net_power():
    now = START + 86400
    sunny = [StoredReading(START + 900 * i, 50.0, 5.0, 40.0 * (i % 2)) for i in range(96)]
    chart = power_chart(sunny, now)
    assert len(chart["solar"].split()) == 96 and chart["max_w"] == 40.0 and not chart["watts"]
    assert {p.split(",")[1] for p in chart["solar"].split()} == {"60.0", "2.0"}  # 0 W, peak
    dark = [StoredReading(r.at, r.soc, r.power_w, None) for r in sunny]
    chart = power_chart(dark, now)
    assert not chart["solar"] and len(chart["watts"].split()) == 96
