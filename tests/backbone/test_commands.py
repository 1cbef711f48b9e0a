"""Station-to-unit commands through the local API, over serial and MQTT."""

from __future__ import annotations

import json

import requests

from agent import protocol as p
from agent.esp32.virtual import MqttUnitLink, PtySerialLink
from tests.helpers import wait_for


def command(station, unit: str, body: dict) -> requests.Response:
    return requests.post(
        f"http://{station.config.http.listen}/api/units/{unit}/commands", json=body, timeout=10
    )


def test_config_command_reaches_a_serial_unit(make_station, pty_pair):
    master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\n')
    wait_for(lambda: station.serial_links[0]._serial is not None, what="port open")
    link = PtySerialLink(master)
    link.send(p.encode_frame(p.Hello("cam-cmd", "1.0", "esp32", "24:0a:c4:00:00:01"), 1), "hello")
    wait_for(lambda: station.store.units(), what="hello recorded")
    r = command(
        station,
        "cam-cmd",
        {"command": "config", "capture_interval_s": 600, "frame_size": 10, "jpeg_quality": 12},
    )
    assert r.status_code == 200 and r.json()["sent"] == "CONFIG"
    msg = link.recv(5).message()
    assert isinstance(msg, p.Config) and msg.capture_interval_s == 600 and msg.station_time_ms > 0
    # the unit applies it and reports back; the station records what the unit now runs
    report = p.ConfigReport("cam-cmd", 600, 10, 12, 1, p.NO_QUIET_PERIOD, p.NO_QUIET_PERIOD, 0)
    link.send(p.encode_frame(report, 2), "hello")
    wait_for(
        lambda: (
            station.store.units()[0]["config"] is not None
            and json.loads(station.store.units()[0]["config"])["capture_interval_s"] == 600
        ),
        what="config report",
    )


def test_capture_now_and_sleep_now_over_mqtt(make_station, mosquitto):
    station = make_station(
        f'[mqtt]\nenabled = true\nport = {mosquitto.port}\nclient_id = "st-cmd"\n'
    )
    wait_for(station.mqtt.connected.is_set, what="broker")
    link = MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-wifi")
    link.send(p.encode_frame(p.Hello("cam-wifi", "1.0", "esp32", "24:0a:c4:00:00:02"), 1), "hello")
    wait_for(lambda: station.store.units(), what="hello recorded")
    assert command(station, "cam-wifi", {"command": "capture_now", "request_id": 9}).ok
    assert link.recv(5).message() == p.CaptureNow(9)
    assert command(station, "cam-wifi", {"command": "sleep_now", "duration_s": 3600}).ok
    assert link.recv(5).message() == p.SleepNow(3600)
    link.close()


def test_bad_commands_are_refused_with_a_reason(make_station):
    station = make_station()
    r = command(station, "nobody", {"command": "capture_now"})
    assert r.status_code == 404 and "not been seen" in r.json()["error"]
    station._unit_links["u1"] = object()  # seen, but the command itself is wrong
    assert command(station, "u1", {"command": "dance"}).status_code == 400
    r = command(
        station,
        "u1",
        {"command": "config", "capture_interval_s": 1, "frame_size": 1, "jpeg_quality": 99},
    )
    assert r.status_code == 400 and "jpeg_quality" in r.json()["error"]
