"""The virtual unit (the firmware's C core + host HAL) against the station's codec, over a pty and MQTT."""

from __future__ import annotations

import logging
import os
import queue
import select
import shutil
import threading
import tty
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from agent import protocol as p
from agent.esp32 import core, units
from agent.esp32.host_unit import CoreVirtualUnit, UnitRunner
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import MqttUnitLink, PtySerialLink
from agent.scenes import scene_jpeg

JPEG = scene_jpeg(1)


class StationEnd:
    """The station's side of a pty, speaking through agent/protocol only."""

    def __init__(self, path: str) -> None:
        self.fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
        tty.setraw(self.fd)
        self.decoder = p.StreamDecoder()
        self.closed = threading.Event()
        self.threads: list[threading.Thread] = []

    def read_until(self, ftype: p.FrameType, count: int = 1) -> list[p.Message]:
        """Messages received until `count` frames of ftype arrived (bounded by a generous limit)."""
        out: list[p.Message] = []
        seen = 0
        waited = 0.0
        while seen < count:
            if self.closed.is_set():
                raise EOFError("test over")
            ready, _, _ = select.select([self.fd], [], [], 0.1)
            waited += 0.1
            assert ready or waited < 20, (
                f"unit sent no {ftype.name} (got {[type(m).__name__ for m in out]})"
            )
            if not ready:
                continue
            for frame in self.decoder.feed(os.read(self.fd, 65536)):
                msg = frame.message()
                out.append(msg)
                seen += frame.type == ftype
        return out

    def send(self, msg: p.Message, noise: bytes = b"") -> None:
        os.write(self.fd, noise + p.encode_frame(msg, 1))

    def close(self) -> None:
        self.closed.set()
        for t in self.threads:
            t.join(5)
        os.close(self.fd)


@pytest.fixture
def unit_and_station():
    link = PtySerialLink()
    unit = virtual_unit("cam-core", link, chunk_size=1000, ack_timeout_s=0.3, max_attempts=3)
    station = StationEnd(link.slave_path)
    yield unit, station
    station.close()
    unit.close()


def serve(station: StationEnd, reply) -> threading.Thread:  # noqa: ANN001
    """Answer the unit's captures in a thread: reply(begin, attempt) -> message or None."""

    def run() -> None:
        try:
            answer_captures()
        except EOFError:
            pass

    def answer_captures() -> None:
        attempt = 0
        while True:
            msgs = station.read_until(p.FrameType.CAPTURE_BEGIN)
            attempt += 1
            begin = next(m for m in msgs if isinstance(m, p.CaptureBegin))
            n = begin.chunk_count
            chunks = [m for m in msgs if isinstance(m, p.CaptureChunk)]
            if len(chunks) < n:
                chunks += [
                    m
                    for m in station.read_until(p.FrameType.CAPTURE_CHUNK, n - len(chunks))
                    if isinstance(m, p.CaptureChunk)
                ]
            station.last = (begin, b"".join(c.data for c in sorted(chunks, key=lambda c: c.index)))
            answer = reply(begin, attempt)
            if answer is None:
                continue
            station.send(*answer) if isinstance(answer, tuple) else station.send(answer)
            if isinstance(answer, p.Ack) or (
                isinstance(answer, tuple) and isinstance(answer[0], p.Ack)
            ):
                return

    t = threading.Thread(target=run, daemon=True)
    station.threads.append(t)
    t.start()
    return t


def test_the_virtual_unit_runs_the_firmware_core():
    unit = virtual_unit("cam-x", PtySerialLink())
    try:
        assert isinstance(unit, CoreVirtualUnit) and unit.engine == "c-core"
    finally:
        unit.close()


def test_hello_from_the_core_decodes_with_the_station_codec(unit_and_station):
    unit, station = unit_and_station
    unit.hello()
    msgs = station.read_until(p.FrameType.CONFIG_REPORT)
    hello = msgs[0]
    assert isinstance(hello, p.Hello) and hello.unit_id == "cam-core" and hello.mac == unit.mac
    assert isinstance(msgs[1], p.ConfigReport) and msgs[1].capture_interval_s == 300


def test_capture_arrives_whole_and_is_forgotten_only_after_ack(unit_and_station):
    unit, station = unit_and_station
    t = serve(station, lambda b, n: (p.Ack(b.capture_id, 0), b"\x00garbage\xa5\x5a\x01"))
    result = unit.send_capture(JPEG)
    t.join(10)
    begin, data = station.last
    assert data == JPEG and begin.image_crc32 == p.crc32(JPEG) and begin.trigger == p.Trigger.PIR
    assert result.acked and result.attempts == 1 and unit.pending == {}


def test_nak_crc_mismatch_makes_the_unit_resend_the_whole_capture(unit_and_station):
    unit, station = unit_and_station
    t = serve(
        station,
        lambda b, n: (
            p.Nak(b.capture_id, p.NakReason.CRC_MISMATCH, "x") if n == 1 else p.Ack(b.capture_id, 0)
        ),
    )
    result = unit.send_capture(JPEG)
    t.join(10)
    assert result.acked and result.attempts == 2 and result.nak_reasons == ["crc_mismatch"]


def test_nak_not_jpeg_drops_the_capture(unit_and_station):
    unit, station = unit_and_station
    t = serve(
        station,
        lambda b, n: (p.Nak(b.capture_id, p.NakReason.NOT_JPEG, "no SOI"), b"") if n == 1 else None,
    )
    result = unit.send_capture(b"not a jpeg at all")
    assert not result.acked and result.nak_reasons == ["not_jpeg"] and unit.pending == {}
    del t


def test_silent_station_gets_every_attempt_then_the_unit_sleeps_keeping_it(unit_and_station):
    unit, station = unit_and_station
    t = serve(station, lambda b, n: None)
    result = unit.send_capture(JPEG)
    assert not result.acked and result.attempts == 3
    assert list(unit.pending.values()) == [JPEG] and unit.sleeps and unit.stats["timeouts"] == 3
    del t


def test_config_from_the_station_is_applied_persisted_and_reported(unit_and_station):
    unit, station = unit_and_station
    station.send(p.Config(900, 5, 30, 0, 1200, 360, 1764115200000), noise=b"\xa5\xa5noise")
    applied = unit.poll_commands(0.5)
    assert [type(m) for m in applied] == [p.Config]
    assert unit.config.capture_interval_s == 900 and unit.config.sleep_start_min == 1200
    assert unit.nvs["interval_s"] == 900 and unit.nvs["quiet_end"] == 360
    report = [
        m for m in station.read_until(p.FrameType.CONFIG_REPORT) if isinstance(m, p.ConfigReport)
    ][0]
    assert (report.capture_interval_s, report.jpeg_quality, report.pir_enabled) == (900, 30, 0)


def test_config_with_out_of_range_values_is_not_applied(unit_and_station):
    unit, station = unit_and_station
    bad = bytearray(p.encode_frame(p.Config(60, 5, 12), 1))
    bad[8 + 5] = 99  # jpeg_quality 99, CRC recomputed: a well-formed frame with a bad value
    bad[-4:] = p.crc32(bytes(bad[2:-4])).to_bytes(4, "little")
    os.write(station.fd, bytes(bad))
    assert unit.poll_commands(0.3) == []
    assert unit.config.capture_interval_s == 300 and unit.stats["bad_frames"] == 1


def test_capture_now_and_sleep_now_are_obeyed(unit_and_station):
    unit, station = unit_and_station
    unit.images = [JPEG]
    station.send(p.CaptureNow(11))
    station.send(p.SleepNow(42))
    unit.poll_commands(0.3)
    assert unit.capture_requests == 1 and unit.asleep_for == 42
    assert list(unit.pending.values()) == [JPEG]
    assert unit.poll().sleep_s == 42


def test_runner_wakes_on_pir_sends_and_sleeps_for_the_interval(unit_and_station):
    unit, station = unit_and_station
    unit.images = [JPEG]
    runner = UnitRunner(unit).start()
    try:
        station.read_until(p.FrameType.TELEMETRY)  # power-on announce
        t = serve(station, lambda b, n: p.Ack(b.capture_id, 0))
        runner.wake("pir")
        t.join(20)
        assert station.last[1] == JPEG and station.last[0].trigger == p.Trigger.PIR
        while runner.cycles < 2 and runner.error is None:
            runner.thread.join(0.05)
        assert runner.error is None and unit.pending == {} and unit.sleeps[-1].seconds == 300
    finally:
        runner.stop()


def test_over_mqtt_the_unit_publishes_on_its_topics_and_obeys_commands(mosquitto):
    got: queue.Queue[tuple[str, bytes]] = queue.Queue()
    station = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-station")
    subscribed = threading.Event()
    station.on_message = lambda c, u, m: got.put((m.topic, m.payload))
    station.on_subscribe = lambda *a: subscribed.set()
    station.connect(mosquitto.host, mosquitto.port)
    station.subscribe("wildcam/st1/+/+", qos=1)
    station.loop_start()
    assert subscribed.wait(10)
    link = MqttUnitLink(mosquitto.host, mosquitto.port, "st1", "cam-mqtt")
    unit = virtual_unit("cam-mqtt", link, chunk_size=8192, ack_timeout_s=5)
    try:
        unit.hello()
        topic, payload = got.get(timeout=10)
        assert topic == "wildcam/st1/cam-mqtt/hello" and isinstance(
            p.decode_frame(payload).message(), p.Hello
        )
        station.publish(
            "wildcam/st1/cam-mqtt/cmd", p.encode_frame(p.Config(60, 8, 10, 1), 1), qos=1
        )
        station.publish("wildcam/st1/cam-mqtt/cmd", b"\x00not a frame", qos=1)
        applied: list[p.Message] = []
        for _ in range(50):  # bounded: both messages were published with QoS 1, in order
            applied += unit.poll_commands(0.2)
            if applied and unit.stats["bad_frames"]:
                break
        assert [type(m) for m in applied] == [p.Config] and unit.config.capture_interval_s == 60
        assert (
            unit.stats["bad_frames"] == 1
        )  # the junk message is refused by the C decoder, not raised
    finally:
        unit.close()
        station.loop_stop()
        station.disconnect()


def test_without_a_c_compiler_the_python_fallback_runs_and_says_so(monkeypatch, caplog):
    monkeypatch.setenv("WILDCAM_VIRTUAL_UNIT", "python")
    monkeypatch.setattr(units, "_fallback_logged", False)
    with caplog.at_level(logging.WARNING, logger="agent.esp32.units"):
        unit = virtual_unit("cam-py", PtySerialLink())
    unit.close()
    assert unit.engine == "python" and not isinstance(unit, CoreVirtualUnit)
    assert "pure-Python fallback" in caplog.text


def test_core_build_without_a_compiler_is_reported(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("CC", raising=False)
    with pytest.raises(core.CoreUnavailable, match="no C compiler"):
        core.build_core(out_dir=tmp_path / "cache")


def test_core_build_error_shows_the_compiler_message(tmp_path):
    src = tmp_path / "core"
    shutil.copytree(core.core_source_dir(), src, ignore=shutil.ignore_patterns("build"))
    with open(src / "src" / "wc_proto.c", "a") as f:
        f.write("\nstatic int unused_thing;\n")  # -Werror turns the warning into an error
    with pytest.raises(core.CoreUnavailable, match="unused"):
        core.build_core(src, tmp_path / "cache")


def test_core_build_is_cached_by_source_hash(tmp_path):
    first = core.build_core(out_dir=tmp_path)
    assert core.build_core(out_dir=tmp_path) == first
    assert Path(first).name.startswith("libwildcam_core-")


def test_capture_needing_more_chunks_than_indexes_allow_is_dropped_not_wrapped():
    unit = virtual_unit("cam-tiny", PtySerialLink(), chunk_size=1, ack_timeout_s=0.2)
    try:
        result = unit.send_capture(b"\xff\xd8" + b"\0" * 70000 + b"\xff\xd9")
        assert not result.acked and result.attempts == 0
        assert unit.pending == {} and unit.stats["dropped"] == 1
        assert any("more than 65536 chunks" in line for line in unit.log_lines)
    finally:
        unit.close()
