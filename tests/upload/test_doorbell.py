"""Workers are rung when work arrives: a capture is analysed and uploaded at once, not at the next
poll, and a lingering batch is rung only once it could be full."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from agent.doorbell import STOP_LOOK_S, Doorbell
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink
from agent.scenes import scene_jpeg
from tests.helpers import wait_for

DETECTOR = Path(__file__).resolve().parents[2] / "models" / "fixtures" / "scene-animal"


def test_a_ring_wakes_the_wait_and_a_ring_before_the_wait_is_kept():
    bell, stop = Doorbell(), threading.Event()
    threading.Timer(0.2, bell.ring).start()
    t0 = time.monotonic()
    assert bell.wait(stop, 30) and time.monotonic() - t0 < 10
    bell.ring()  # while nobody waits: the next wait returns at once
    assert bell.wait(stop, 30)
    assert not bell.wait(stop, 0.05)  # and once only


def test_a_wait_ends_at_its_time_and_sees_stop_without_a_ring():
    bell, stop = Doorbell(), threading.Event()
    t0 = time.monotonic()
    assert not bell.wait(stop, 0.3) and time.monotonic() - t0 >= 0.3
    threading.Timer(0.1, stop.set).start()
    t0 = time.monotonic()
    assert not bell.wait(stop, 60) and time.monotonic() - t0 <= STOP_LOOK_S + 5


def test_a_capture_is_analysed_and_uploaded_at_once_not_at_the_next_poll(
    make_station, links, mosquitto
):
    aws = links["aws"]
    token = aws.service.add_station("test-station")
    # both workers look at the buffer only once a minute on their own
    station = make_station(
        f"""
[mqtt]
enabled = true
port = {mosquitto.port}
client_id = "st-bell"
[inference]
detector = "{DETECTOR}"
threads = 1
poll_interval_s = 60
[upload]
idle_poll_s = 60
linger_s = 0
heartbeat_interval_s = 0
[[upload.endpoints]]
name = "aws"
url = "{aws.proxy.url}"
token = "{token}"
"""
    )
    wait_for(station.mqtt.connected.is_set, what="broker connection")
    wait_for(lambda: station.inference.pipeline is not None, what="detector loaded")
    time.sleep(0.5)  # both workers have looked once and sleep for their minute
    unit = virtual_unit(
        "cam-bell", MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-bell")
    )
    try:
        assert unit.send_capture(scene_jpeg(4)).acked
        wait_for(
            lambda: station.store.queue_summary()["by_state"]["uploaded"]["count"] == 1,
            timeout=20,
            what="the capture analysed and uploaded well before a poll",
        )
    finally:
        unit.close()


def test_a_lingering_batch_is_rung_only_once_it_could_be_full(new_station):
    station = new_station(primary="aws")
    uploader = station.uploader
    bell = uploader.doorbell
    uploader.batches.lingering_room = 3  # a lingering batch that 3 more captures would fill
    uploader.captures_ready()
    uploader.captures_ready()
    assert not bell.wait(threading.Event(), 0.05)
    uploader.captures_ready()
    assert bell.wait(threading.Event(), 0.05)
    uploader.batches.lingering_room = None  # nothing lingers: every capture rings
    uploader.captures_ready()
    assert bell.wait(threading.Event(), 0.05)
    uploader.state = "budget_exhausted"  # its wait ends with the day, not with a capture
    uploader.captures_ready()
    assert not bell.wait(threading.Event(), 0.05)
