"""Chunk size negotiated per unit: HELLO says what the unit can send, CONFIG says what to use.

Codec round trips (Python and the firmware's C core) for the appended optional fields, then the
real station with virtual units on the C core over Mosquitto and over a pty: a unit that can send
larger chunks is told to, and its captures arrive in fewer chunks; an older unit keeps its own.
"""

from __future__ import annotations

import json
import math
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from agent import protocol as p
from agent.esp32.core import reencode_frame
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink, PtySerialLink, VirtualUnit
from agent.ingest.mqtt import chunk_limit_for_packet
from agent.scenes import scene_jpeg
from tests.helpers import wait_for

VECTORS = Path(__file__).resolve().parents[2] / "esp32" / "test-vectors"
BIG_JPEG = scene_jpeg(5, (900, 700), 80)  # ~50 KB: four 16 KiB chunks, or one of 65000

unit_ids = st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z")
text = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
minute = st.one_of(st.integers(0, 1439), st.just(p.NO_QUIET_PERIOD))
optional_chunk = st.one_of(st.none(), st.integers(1, p.MAX_CHUNK))
config_fields = st.fixed_dictionaries(
    {
        "capture_interval_s": st.integers(0, 2**32 - 1),
        "frame_size": st.integers(0, 255),
        "jpeg_quality": st.integers(0, 63),
        "pir_enabled": st.integers(0, 1),
        "sleep_start_min": minute,
        "sleep_end_min": minute,
        "station_time_ms": st.integers(0, 2**64 - 1),
        "chunk_size": optional_chunk,
    }
)
messages = st.one_of(
    st.builds(
        p.Hello,
        unit_ids,
        text,
        text,
        st.binary(min_size=6, max_size=6).map(p.mac_text),
        st.integers(0, 255),
        st.one_of(st.none(), st.integers(1, 0xFFFF)),
    ),
    config_fields.map(lambda f: p.Config(**f)),
    st.builds(lambda u, f: p.ConfigReport(u, **f), unit_ids, config_fields),
)


# --- codec -----------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(messages, st.integers(0, 0xFFFF))
def test_optional_fields_round_trip_in_python_and_in_the_c_core(msg, seq):
    frame = p.encode_frame(msg, seq)
    assert p.decode_frame(frame).message() == msg
    assert reencode_frame(frame) == frame


@settings(max_examples=300, deadline=None)
@given(messages, st.binary(max_size=4))
def test_bytes_after_the_known_fields_decode_alike_in_python_and_c(msg, tail):
    payload = msg.encode_payload() + tail
    body = p.HEADER.pack(p.SYNC, p.VERSION, msg.TYPE, 1, len(payload)) + payload
    frame = body + p.crc32(body[2:]).to_bytes(4, "little")
    try:
        py: bytes | None = p.encode_frame(p.decode_frame(frame).message(), 1)
    except p.ProtocolError:
        py = None
    try:
        c: bytes | None = reencode_frame(frame)
    except ValueError:
        c = None
    assert c == py


def test_a_hello_without_max_chunk_is_an_older_unit_that_sends_16_kib():
    doc = json.loads((VECTORS / "hello.json").read_text())
    hello = p.decode_frame(bytes.fromhex(doc["frame_hex"])).message()
    assert isinstance(hello, p.Hello) and hello.max_chunk is None
    assert "max_chunk" not in hello.to_json()
    assert hello.sendable_chunk == p.LEGACY_MAX_CHUNK == 16384
    assert p.negotiate_chunk(hello, 65000, p.MAX_CHUNK) == 16384


def test_negotiated_chunk_is_the_smallest_of_unit_station_and_transport():
    hello = p.Hello("cam", "2.0.0", "esp32s3", "24:0a:c4:00:00:01", max_chunk=0xFFFF)
    assert p.negotiate_chunk(hello) == p.MAX_CHUNK == 65529  # a frame holds no more
    assert p.negotiate_chunk(hello, 65000, 40000) == 40000
    assert (
        p.negotiate_chunk(p.Hello("cam", "2", "esp32", "24:0a:c4:00:00:01", 1, 9000), 65000) == 9000
    )


def test_zero_or_oversized_optional_fields_are_refused_with_the_field_name():
    with pytest.raises(p.ProtocolError, match="max_chunk"):
        p.Hello.decode_payload(
            p.Hello("cam", "1", "esp32", "24:0a:c4:00:00:01").encode_payload() + b"\0\0"
        )
    config = p.Config(60, 5, 12).encode_payload()
    with pytest.raises(p.ProtocolError, match="chunk_size"):
        p.Config.decode_payload(config + b"\0\0")
    with pytest.raises(p.ProtocolError, match="chunk_size"):
        p.Config.decode_payload(config + (p.MAX_CHUNK + 1).to_bytes(2, "little"))
    with pytest.raises(p.ProtocolError, match="chunk_size"):
        p.Config.decode_payload(config + b"\x01")  # half a field


def test_broker_packet_limit_leaves_room_for_topic_and_headers():
    prefix = len("wildcam/test-station/")
    limit = chunk_limit_for_packet(65536, prefix)
    packet = 5 + 2 + prefix + 32 + len("/capture") + 2 + 1 + p.OVERHEAD + p.CHUNK_HEAD_SIZE + limit
    assert packet == 65536


# --- the station with units ------------------------------------------------------------------


def mqtt_toml(broker, extra: str = "") -> str:
    return (
        f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
        f'client_id = "st-chunk"\n' + extra
    )


class ChunkCounter:
    """A subscriber on the units' capture topics: CAPTURE_CHUNK PUBLISHes per capture id."""

    def __init__(self, broker) -> None:
        self.chunks: dict[int, int] = {}
        self._lock = threading.Lock()
        ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="chunk-counter")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: ready.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        self.client.subscribe("wildcam/test-station/+/capture", qos=1)
        assert ready.wait(10), "chunk counter could not subscribe"

    def _on_message(self, c: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        frame = p.decode_frame(bytes(msg.payload))
        if frame.type == p.FrameType.CAPTURE_CHUNK:
            m = frame.message()
            assert isinstance(m, p.CaptureChunk)
            with self._lock:
                self.chunks[m.capture_id] = self.chunks.get(m.capture_id, 0) + 1

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def told_chunk(unit: VirtualUnit, size: int) -> bool:
    """Let the unit apply what the station sent; True once it sends chunks of `size`."""
    unit.poll_commands(0.2)
    return unit.chunk_in_use == size


def test_unit_over_mqtt_is_told_a_larger_chunk_and_sends_fewer_chunks(make_station, mosquitto):
    station = make_station(mqtt_toml(mosquitto))
    wait_for(station.mqtt.connected.is_set, what="broker connection")
    counter = ChunkCounter(mosquitto)
    link = MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-big")
    unit = virtual_unit("cam-big", link, chunk_size=16384, ack_timeout_s=5)
    try:
        before = unit.send_capture(BIG_JPEG)  # at the size it was configured with
        unit.hello()  # advertises a whole frame; the station's limit is 65000
        wait_for(lambda: told_chunk(unit, 65000), timeout=10, what="the negotiated chunk size")
        after = unit.send_capture(BIG_JPEG)
    finally:
        unit.close()
    assert before.acked and after.acked
    wait_for(lambda: after.capture_id in counter.chunks, what="chunks counted")
    counter.close()
    assert counter.chunks[before.capture_id] == math.ceil(len(BIG_JPEG) / 16384) > 1
    assert counter.chunks[after.capture_id] == 1
    report = json.loads(station.store.units()[0]["config"])
    assert report["chunk_size"] == 65000  # the unit's CONFIG_REPORT confirms it


def count_chunks_at(assembler) -> list[int]:
    """Capture ids of the CAPTURE_CHUNK frames the serial assembler handles, one per frame."""
    seen: list[int] = []
    handle = assembler.handle_frame

    def counting(frame: p.Frame, topic_unit: str | None = None) -> None:
        if frame.type == p.FrameType.CAPTURE_CHUNK:
            seen.append(int.from_bytes(frame.payload[:4], "little"))
        handle(frame, topic_unit)

    assembler.handle_frame = counting
    return seen


def test_unit_over_a_pty_is_told_a_larger_chunk_and_sends_fewer_chunks(make_station, pty_pair):
    master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\n[ingest]\nmax_chunk_bytes = 30000\n')
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    seen = count_chunks_at(station.serial_links[0].assembler)
    unit = virtual_unit("cam-pty", PtySerialLink(master), chunk_size=4096, ack_timeout_s=5)
    before = unit.send_capture(BIG_JPEG)
    unit.hello()
    wait_for(lambda: told_chunk(unit, 30000), timeout=10, what="the station's limit, 30000")
    after = unit.send_capture(BIG_JPEG)
    assert before.acked and after.acked
    assert seen.count(before.capture_id) == math.ceil(len(BIG_JPEG) / 4096)
    assert seen.count(after.capture_id) == math.ceil(len(BIG_JPEG) / 30000) == 2
    assert station.serial_links[0].assembler.chunk_sizes["cam-pty"] == 30000


def test_unit_with_little_ram_is_told_what_it_can_send(make_station, pty_pair):
    master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\n')
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    unit = virtual_unit("cam-small", PtySerialLink(master), chunk_size=1024, max_chunk=12000)
    unit.hello()
    wait_for(lambda: told_chunk(unit, 12000), timeout=10, what="the unit's own limit, 12000")
    assert unit.send_capture(BIG_JPEG).acked


def test_serial_frame_limit_bounds_the_chunk(make_station, pty_pair):
    master, path = pty_pair
    station = make_station(f'[serial]\nports = ["{path}"]\n[ingest]\nmax_frame_payload = 20006\n')
    wait_for(lambda: station.serial_links[0].is_open, what="port open")
    unit = virtual_unit("cam-frame", PtySerialLink(master), chunk_size=1024)
    unit.hello()
    wait_for(lambda: told_chunk(unit, 20000), timeout=10, what="the frame limit less 6 bytes")
    assert unit.send_capture(BIG_JPEG).acked


@pytest.mark.parametrize("transport", ["mqtt", "serial"])
def test_an_older_unit_gets_no_chunk_config_and_keeps_its_own(
    make_station, mosquitto, pty_pair, transport
):
    master, path = pty_pair
    if transport == "mqtt":
        station = make_station(mqtt_toml(mosquitto))
        wait_for(station.mqtt.connected.is_set, what="broker connection")
        link = MqttUnitLink(mosquitto.host, mosquitto.port, "test-station", "cam-old")
    else:
        station = make_station(f'[serial]\nports = ["{path}"]\n')
        wait_for(lambda: station.serial_links[0].is_open, what="port open")
        link = PtySerialLink(master)
    unit = VirtualUnit("cam-old", link, chunk_size=16384, ack_timeout_s=5, max_chunk=None)
    try:
        unit.hello()  # no max_chunk; its CONFIG_REPORT has no chunk_size
        assert unit.poll_commands(1.0) == []  # the station sends it nothing
        assert unit.send_capture(BIG_JPEG).acked and unit.chunk_in_use == 16384
    finally:
        unit.close()
    asm = (
        station.mqtt._assemblers["cam-old"]
        if transport == "mqtt"
        else station.serial_links[0].assembler
    )
    assert asm.chunk_sizes["cam-old"] == p.LEGACY_MAX_CHUNK
    assert "chunk_size" not in json.loads(station.store.units()[0]["config"])
