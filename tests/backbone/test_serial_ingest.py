"""Serial ingest over a real pseudo-terminal: ACK after commit, NAKs, noise, replug."""

from __future__ import annotations

import os
import tty

import pytest

from agent import protocol as p
from agent.esp32.virtual import PtySerialLink, VirtualUnit
from agent.scenes import scene_jpeg
from tests.helpers import metric, wait_for


@pytest.fixture
def serial_station(make_station, pty_pair):
    master, slave_path = pty_pair
    station = make_station(
        f'[serial]\nports = ["{slave_path}"]\nreopen_s = 0.2\n[ingest]\ncapture_timeout_s = 1\n'
    )
    wait_for(lambda: station.serial_links[0]._serial is not None, what="port open")
    unit = VirtualUnit("cam-serial", PtySerialLink(master), chunk_size=1024, ack_timeout_s=5)
    unit.hello()
    return station, unit


def test_capture_is_acked_and_stored_with_its_bytes(serial_station):
    station, unit = serial_station
    jpeg = scene_jpeg(7)
    result = unit.send_capture(jpeg)
    assert result.acked and not result.duplicate and unit.pending == {}
    rows = station.store.captures_in_state("received")
    assert len(rows) == 1 and rows[0]["unit_id"] == "cam-serial" and rows[0]["path"] == "serial"
    assert rows[0]["unit_time_kind"] == "boot_ms" and rows[0]["trigger"] == "pir"
    assert station.store.read_image(rows[0]["id"]) == jpeg
    assert metric(station, "fieldstation_captures_total", path="serial", outcome="stored") == 1


def test_hello_and_telemetry_reach_the_unit_record(serial_station):
    station, unit = serial_station
    unit.telemetry(battery_mv=3711, temperature_c=-4.25, rssi_dbm=0)
    wait_for(
        lambda: (
            (station.store.units() or [None])[0] is not None
            and station.store.units()[0]["battery_mv"] == 3711
        ),
        what="telemetry",
    )
    u = station.store.units()[0]
    assert u["chip"] == "esp32s3" and u["mac"] == unit.mac and u["temperature_c"] == -4.25
    assert u["config"] is not None


def test_retransmit_after_lost_ack_is_stored_once(serial_station):
    station, unit = serial_station
    jpeg = scene_jpeg(3)
    first = unit.send_capture(jpeg)
    unit.next_capture_id = first.capture_id  # as if the ACK was lost and the unit resends
    again = unit.send_capture(jpeg)
    assert again.acked and again.duplicate
    assert station.store.queue_summary()["pending"] == 1


def test_line_noise_between_frames_is_skipped_and_counted(serial_station):
    station, unit = serial_station
    os.write(
        unit.link.fd, b"ets Jun  8 2016 00:22:57\r\nrst:0x1 (POWERON_RESET)\xa5\x5a\x09garbage"
    )
    assert unit.send_capture(scene_jpeg(1)).acked
    wait_for(
        lambda: (
            metric(
                station, "fieldstation_serial_noise_bytes_total", port=station.serial_links[0].port
            )
            > 20
        ),
        what="noise counted",
    )


def test_wrong_image_checksum_gets_a_nak_and_nothing_is_stored(serial_station):
    station, unit = serial_station
    jpeg = scene_jpeg(2)
    msgs = p.chunk_capture("cam-serial", 77, jpeg, 4096, 1)
    begin = msgs[0]
    bad = p.CaptureBegin(**{**begin.__dict__, "image_crc32": begin.image_crc32 ^ 1})
    for i, m in enumerate([bad, *msgs[1:]]):
        unit.link.send(p.encode_frame(m, i), "capture")
    reply = unit.link.recv(5).message()
    assert isinstance(reply, p.Nak) and reply.reason == p.NakReason.CRC_MISMATCH
    assert reply.capture_id == 77
    assert station.store.queue_summary()["pending"] == 0
    assert metric(station, "fieldstation_naks_total", path="serial", reason="crc_mismatch") == 1


def test_too_large_capture_is_refused_at_begin(serial_station):
    station, unit = serial_station
    begin = p.CaptureBegin("cam-serial", 5, (4 << 20) + 1, 0, 4096, 1)
    unit.link.send(p.encode_frame(begin, 1), "capture")
    reply = unit.link.recv(5).message()
    assert isinstance(reply, p.Nak) and reply.reason == p.NakReason.TOO_LARGE


def test_unit_lying_about_chunk_sizes_gets_malformed(serial_station):
    station, unit = serial_station
    begin = p.CaptureBegin("cam-serial", 6, 3000, 0, 1024, 1)
    unit.link.send(p.encode_frame(begin, 1), "capture")
    unit.link.send(p.encode_frame(p.CaptureChunk(6, 0, b"x" * 100), 2), "capture")
    reply = unit.link.recv(5).message()
    assert isinstance(reply, p.Nak) and reply.reason == p.NakReason.MALFORMED
    assert "expected 1024" in reply.detail


def test_non_jpeg_bytes_are_refused(serial_station):
    station, unit = serial_station
    for m in p.chunk_capture("cam-serial", 8, b"GIF89a" + b"\0" * 500, 4096, 1):
        unit.link.send(p.encode_frame(m, 1), "capture")
    reply = unit.link.recv(5).message()
    assert isinstance(reply, p.Nak) and reply.reason == p.NakReason.NOT_JPEG
    assert station.store.queue_summary()["pending"] == 0


def test_incomplete_capture_times_out_with_nak_and_is_counted(serial_station):
    station, unit = serial_station
    msgs = p.chunk_capture("cam-serial", 9, scene_jpeg(4), 1024, 1)
    for m in msgs[:3]:  # the unit "disconnects" mid-capture
        unit.link.send(p.encode_frame(m, 1), "capture")
    reply = unit.link.recv(6).message()
    assert isinstance(reply, p.Nak) and reply.reason == p.NakReason.TIMEOUT
    assert metric(station, "fieldstation_captures_total", path="serial", outcome="timeout") == 1
    assert station.store.queue_summary()["pending"] == 0


def test_port_unplug_and_replug_through_a_by_id_symlink(make_station, tmp_path):
    link_path = tmp_path / "usb-Espressif_ESP32-CAM_0001-if00"
    master1, slave1 = os.openpty()
    tty.setraw(slave1)
    os.symlink(os.ttyname(slave1), link_path)
    station = make_station(f'[serial]\nports = ["{link_path}"]\nreopen_s = 0.2\n')
    wait_for(lambda: station.serial_links[0]._serial is not None, what="first open")
    unit = VirtualUnit("cam-usb", PtySerialLink(master1), ack_timeout_s=5)
    assert unit.send_capture(scene_jpeg(1)).acked
    # unplug: the device disappears, then comes back as another tty behind the same by-id name
    os.close(master1)
    os.close(slave1)
    os.unlink(link_path)
    wait_for(lambda: station.serial_links[0]._serial is None, what="port lost")
    master2, slave2 = os.openpty()
    tty.setraw(slave2)
    os.symlink(os.ttyname(slave2), link_path)
    wait_for(lambda: station.serial_links[0]._serial is not None, what="port reopened")
    unit.link = PtySerialLink(master2)
    assert unit.send_capture(scene_jpeg(2)).acked
    assert station.store.queue_summary()["pending"] == 2
    os.close(master2)
    os.close(slave2)
