"""Units get the power state's CONFIG: over a pty at their HELLO, retained over real MQTT.

The units are the firmware's own C core (CoreVirtualUnit), so its parser is the one that accepts it.
"""

from __future__ import annotations

import json
import queue
import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import protocol as p
from agent.cli import main
from agent.esp32 import core
from agent.esp32.host_unit import CoreVirtualUnit
from agent.esp32.virtual import MqttUnitLink, PtySerialLink
from agent.power import worker as worker_module
from tests.helpers import wait_for

pytestmark = pytest.mark.skipif(
    not core.core_available(), reason="the firmware's C core needs a C compiler (gcc)"
)

ECO_UNITS = {"capture_interval_s": 900, "jpeg_quality": 15}


def power_toml(sys_root, extra: str = "") -> str:
    return f"""
[power]
sysfs_root = "{sys_root}"
read_interval_s = 1
low_read_factor = 1
min_dwell_s = 0
charging_dwell_s = 0
wake_command = []
[[power.sources]]
kind = "sysfs"
{extra}
"""


def report_of(station, unit_id: str) -> dict | None:
    for u in station.store.units():
        if u["unit_id"] == unit_id and u["config"]:
            return json.loads(u["config"])
    return None


def test_a_serial_unit_gets_the_eco_config_at_its_hello(make_station, pty_pair, sysfs, sys_root):
    master, path = pty_pair
    sysfs.set(30)  # ECO
    station = make_station(f'[serial]\nports = ["{path}"]\n' + power_toml(sys_root))
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    wait_for(lambda: station.power.current.state == "eco", what="ECO")
    unit = CoreVirtualUnit("cam-pty", PtySerialLink(master), ack_timeout_s=2)
    try:
        unit.run_cycle("power_on")  # HELLO, the station's CONFIG, CONFIG_REPORT, sleep
        assert unit.config.capture_interval_s == 900 and unit.config.jpeg_quality == 15
        assert unit.nvs["interval_s"] == 900  # the core stored it as the firmware would
        wait_for(
            lambda: (report_of(station, "cam-pty") or {}).get("capture_interval_s") == 900,
            what="CONFIG_REPORT stored",
        )
        units = wait_for(lambda: station.status()["power"]["units"], what="units in status")
        assert units[0]["unit_id"] == "cam-pty"
        wait_for(lambda: station.status()["power"]["units"][0]["confirmed"], what="confirmed")
    finally:
        unit.close()


def test_a_unit_that_never_confirms_shows_in_status(
    make_station, pty_pair, sysfs, sys_root, tmp_path, capsys
):
    master, path = pty_pair
    sysfs.set(30)
    station = make_station(f'[serial]\nports = ["{path}"]\n' + power_toml(sys_root))
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    link = PtySerialLink(master)  # a unit with old firmware: says hello, ignores CONFIG
    link.send(p.encode_frame(p.Hello("cam-old", "0.9", "esp32", "24:0a:c4:00:00:09"), 1), "hello")
    msg = link.recv(5).message()
    assert isinstance(msg, p.Config) and msg.capture_interval_s == 900
    assert msg.station_time_ms > 0  # serial: live, so it carries the station's clock
    units = wait_for(lambda: station.status()["power"]["units"], what="unit listed")
    assert units[0]["unit_id"] == "cam-old" and units[0]["confirmed"] is False
    conf = tmp_path / "status.toml"
    conf.write_text(
        f'[station]\ndata_dir = "{station.data_dir}"\n'
        f'[http]\nlisten = "{station.config.http.listen}"\n'
    )
    capsys.readouterr()
    assert main(["status", "--config", str(conf)]) == 0
    out = capsys.readouterr().out
    assert "power     ECO, not charging, 30% (sysfs:BAT0)" in out
    assert "units that have not confirmed the ECO config: cam-old" in out


def test_mqtt_units_get_a_retained_config_that_follows_the_state(
    make_station, mosquitto, sysfs, sys_root
):
    sysfs.set(30)
    station = make_station(
        f'[mqtt]\nenabled = true\nport = {mosquitto.port}\nclient_id = "st-power"\n'
        + power_toml(sys_root)
    )
    wait_for(station.mqtt.connected.is_set, what="broker")
    link = MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-air")
    unit = CoreVirtualUnit("cam-air", link, ack_timeout_s=2)
    try:
        unit.run_cycle("power_on")
        wait_for(lambda: unit.config.capture_interval_s == 900, what="ECO config applied")
        wait_for(
            lambda: (report_of(station, "cam-air") or {}).get("jpeg_quality") == 15,
            what="CONFIG_REPORT",
        )
        # the sun comes out while the unit sleeps: the NORMAL config waits at the broker
        sysfs.set(90, amps=1.5)
        wait_for(lambda: station.power.current.state == "normal", what="NORMAL")
        frame = wait_for(lambda: retained_cmd(mosquitto, "cam-air", 300), what="retained CONFIG")
        msg = frame.message()
        assert isinstance(msg, p.Config) and msg.capture_interval_s == 300
        assert msg.station_time_ms == 0  # a retained clock would be stale when read
        unit.run_cycle("timer")  # wakes, gets it, reports it
        wait_for(lambda: unit.config.capture_interval_s == 300, what="NORMAL config applied")
        wait_for(
            lambda: (report_of(station, "cam-air") or {}).get("capture_interval_s") == 300,
            what="CONFIG_REPORT after NORMAL",
        )
    finally:
        unit.close()


def retained_cmd(broker, unit_id: str, interval: int) -> p.Frame | None:
    """What a unit subscribing now would get on its cmd topic, if it is retained and matches."""
    got: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"probe-{unit_id}")
    c.on_message = lambda _c, _u, m: got.put(m)
    c.on_connect = lambda cl, *_a: cl.subscribe(f"wildcam/test-station/{unit_id}/cmd", 1)
    c.connect(broker.host, broker.port)
    c.loop_start()
    try:
        m = got.get(timeout=3)
    except queue.Empty:
        return None
    finally:
        c.disconnect()
        c.loop_stop()
    frame = p.decode_frame(m.payload)
    if not m.retain or frame.message().capture_interval_s != interval:
        return None
    return frame


def test_a_burst_of_frames_from_a_unit_wakes_the_power_worker_once(
    sysfs, sys_root, clock, make_worker
):
    """Every chunk of a capture calls unit_seen; only a unit's first frame after a silence may
    rouse the worker (each wake reads every unit row): a burst costs one wake, not one per frame."""
    from tests.power.conftest import power_config
    from tests.power.test_technician import SYSFS, Sent

    # one hand-moved clock for both: the test decides when the unit has been silent
    worker = make_worker(power_config(sys_root, SYSFS), send_command=Sent(), monotonic=clock)
    passes: list[float] = []
    push_units = worker.push_units

    def counted() -> int:
        passes.append(clock())
        return push_units()

    worker.push_units = counted
    stop = threading.Event()
    loop = threading.Thread(target=worker.run, args=(stop,), name="power-test", daemon=True)
    loop.start()
    try:
        wait_for(lambda: passes, timeout=10, what="the worker's first pass")
        time.sleep(0.2)
        before = len(passes)
        for _ in range(40):  # a capture's frames, within one wake of the unit
            worker.unit_seen("cam-1", "mqtt")
            time.sleep(0.005)
        time.sleep(0.3)
        assert 1 <= len(passes) - before <= 2  # the new unit wakes it; the rest of the burst not
        clock.advance(worker_module.WAKE_GAP_S + 1)  # the unit sleeps, then wakes again
        before = len(passes)
        worker.unit_seen("cam-1", "mqtt")
        wait_for(lambda: len(passes) > before, timeout=5, what="the wake after a silence")
    finally:
        stop.set()
        loop.join(5)
