"""MQTT ingest through a real Mosquitto broker: QoS 1, both protocol versions, restarts."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import protocol as p
from agent.config import parse_config
from agent.daemon import Station
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink
from agent.scenes import scene_jpeg
from tests.conftest import station_config
from tests.helpers import metric, wait_for


def mqtt_toml(broker, protocol="5", client_id="") -> str:
    return (
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'protocol = "{protocol}"\nclient_id = "{client_id}"\n'
    )


@pytest.mark.parametrize("version", ["5", "3.1.1"])
def test_capture_over_mqtt_is_acked_after_commit(make_station, mosquitto, version):
    station = make_station(mqtt_toml(mosquitto, version, f"st-{version}"))
    wait_for(station.mqtt.connected.is_set, what="broker connection")
    unit = virtual_unit(
        f"cam-m{version[0]}",
        MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", f"cam-m{version[0]}"),
        chunk_size=8192,
    )
    unit.hello()
    jpeg = scene_jpeg(11)
    result = unit.send_capture(jpeg)
    assert result.acked and not result.duplicate
    row = station.store.captures_in_state("received")[0]
    assert row["path"] == "mqtt" and station.store.read_image(row["id"]) == jpeg
    unit.close()


def _raw_client(broker) -> mqtt.Client:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="raw-publisher")
    c.connect(broker.host, broker.port)
    c.loop_start()
    return c


def test_bad_frames_and_wrong_topics_are_counted_not_fatal(make_station, mosquitto):
    station = make_station(mqtt_toml(mosquitto, client_id="st-bad"))
    wait_for(station.mqtt.connected.is_set, what="broker connection")
    raw = _raw_client(mosquitto)
    base = "wildcam/test-station"
    raw.publish(f"{base}/cam1/capture", b"\x00garbage", qos=1).wait_for_publish(5)
    hello = p.encode_frame(p.Hello("cam1", "1", "esp32", "00:11:22:33:44:55"), 1)
    raw.publish(f"{base}/cam1/capture", hello, qos=1).wait_for_publish(5)  # wrong topic
    raw.publish(f"{base}/cam2/hello", hello, qos=1).wait_for_publish(5)  # unit mismatch
    raw.publish(f"{base}/BAD_ID/hello", hello, qos=1).wait_for_publish(5)
    wait_for(
        lambda: (
            metric(station, "fieldstation_rejected_total", path="mqtt", reason="bad_frame") == 1
            and metric(station, "fieldstation_rejected_total", path="mqtt", reason="wrong_topic")
            == 1
            and metric(station, "fieldstation_rejected_total", path="mqtt", reason="unit_mismatch")
            == 1
            and metric(station, "fieldstation_rejected_total", path="mqtt", reason="bad_unit_id")
            == 1
        ),
        what="rejections counted",
    )
    # the station still works afterwards
    unit = virtual_unit(
        "cam1", MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam1")
    )
    assert unit.send_capture(scene_jpeg(1)).acked
    raw.loop_stop()
    unit.close()


def test_captures_sent_while_the_station_is_down_arrive_after_restart(tmp_path, mosquitto):
    config = station_config(tmp_path, mqtt_toml(mosquitto, client_id="st-persist"))
    station = Station(config)
    station.start()
    wait_for(station.mqtt.connected.is_set, what="first connection")
    station.stop()  # the broker keeps our persistent session and queues QoS 1 messages
    link = MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-late")
    jpeg = scene_jpeg(5)
    for i, msg in enumerate(p.chunk_capture("cam-late", 1, jpeg, 8192, 1000)):
        link.send(p.encode_frame(msg, i), "capture")
    assert link.recv(0.5) is None  # nobody home: no ACK yet, so the unit keeps its copy
    station = Station(config)
    station.start()
    try:
        wait_for(lambda: station.store.queue_summary()["pending"] == 1, what="queued capture")
        reply = link.recv(10)
        assert reply is not None and reply.message() == p.Ack(1, 0)
        assert (
            station.store.read_image(station.store.captures_in_state("received")[0]["id"]) == jpeg
        )
    finally:
        station.stop()
        link.close()


def test_station_reconnects_after_the_broker_restarts(tmp_path):
    from agent.broker import PrivateBroker

    broker = PrivateBroker(persistence=True).start()
    port = broker.port
    station = Station(
        station_config(
            tmp_path, mqtt_toml(broker, client_id="st-reconnect") + "reconnect_max_s = 1\n"
        )
    )
    station.start()
    try:
        wait_for(station.mqtt.connected.is_set, what="connection")
        broker.proc.terminate()
        broker.proc.wait(5)
        wait_for(lambda: not station.mqtt.connected.is_set(), what="disconnect noticed")
        broker2 = PrivateBroker(port=port).start()
        try:
            wait_for(station.mqtt.connected.is_set, timeout=20, what="reconnection")
            unit = virtual_unit("cam-rc", MqttUnitLink("127.0.0.1", port, "test-station", "cam-rc"))
            assert unit.send_capture(scene_jpeg(9)).acked
            unit.close()
        finally:
            broker2.stop()
    finally:
        station.stop()
        broker.stop()


def test_parse_config_rejects_bad_topic_root():
    with pytest.raises(Exception, match="topic_root"):
        parse_config('[mqtt]\ntopic_root = "a/b"\n')


def test_a_capture_committed_while_the_station_stops_is_still_acknowledged(
    tmp_path, mosquitto, monkeypatch
):
    station = Station(station_config(tmp_path, mqtt_toml(mosquitto, client_id="st-stopping")))
    station.start()
    try:
        wait_for(station.mqtt.connected.is_set, what="broker connection")
        committing, release = threading.Event(), threading.Event()
        add = station.store.add_captures

        def slow_add(captures):  # the commit is under way when the stop comes
            committing.set()
            release.wait(10)
            return add(captures)

        monkeypatch.setattr(station.store, "add_captures", slow_add)
        unit = virtual_unit(
            "cam-stop", MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-stop")
        )
        unit.max_attempts = 1  # one send: the ACK for it, or nothing
        sent = {}
        sender = threading.Thread(target=lambda: sent.update(r=unit.send_capture(scene_jpeg(7))))
        sender.start()
        assert committing.wait(10)
        stopper = threading.Thread(target=station.stop)
        stopper.start()
        # the stop is under way: the link reads no more (its thread ended) and a moment passes;
        # only then does the commit finish
        wait_for(
            lambda: not any(t.name == "mqtt-network" for t in threading.enumerate()),
            what="the link's thread ended",
        )
        time.sleep(0.3)
        release.set()
        stopper.join(30)
        sender.join(30)
        assert sent["r"].acked  # the unit may forget it: no resend after the restart
        unit.close()
    finally:
        release.set()
        if not station.supervisor.stop_event.is_set():
            station.stop()
