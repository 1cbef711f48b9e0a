"""Misbehaving units against a real Station: garbage, a unit that resets mid-capture, a unit that
lies about sizes, a flood. The station answers with NAKs, stores nothing corrupted, carries on."""

from __future__ import annotations

import os
import random

import pytest

from agent import protocol as p
from agent.esp32.units import virtual_unit
from agent.esp32.virtual import PtySerialLink, VirtualUnit
from agent.scenes import scene_jpeg
from tests.helpers import wait_for


@pytest.fixture
def line(make_station):
    link = PtySerialLink()
    station = make_station(
        f'[serial]\nports = ["{link.slave_path}"]\nreopen_s = 0.2\n'
        "[ingest]\ncapture_timeout_s = 1\n"
    )
    wait_for(lambda: station.serial_links[0]._serial is not None, what="port open")
    units: list[VirtualUnit] = []

    def unit(**kw) -> VirtualUnit:  # noqa: ANN003
        u = virtual_unit("cam-bad", link, chunk_size=2048, ack_timeout_s=3, **kw)
        units.append(u)
        return u

    yield station, link, unit
    link.close()


def stored_are_intact(station) -> list[bytes]:  # noqa: ANN001
    """Every capture in the buffer is a whole JPEG whose bytes match its recorded CRC."""
    out = []
    with station.store.read() as conn:
        rows = conn.execute("SELECT id FROM captures").fetchall()
    for row in rows:
        data = station.store.read_image(row["id"])
        assert data is not None and p.is_jpeg(data)
        out.append(data)
    return out


def raw_frames(link: PtySerialLink, msgs: list[p.Message]) -> None:
    for i, m in enumerate(msgs):
        link.send(p.encode_frame(m, i), "capture")


def test_garbage_both_ways_does_not_stop_a_capture(line):
    station, link, make_unit = line
    rnd = random.Random(5)
    noise = bytes(rnd.randrange(256) for _ in range(65536)).replace(
        b"\xa5\x5a", b"\xa5\x5a\x01", 50
    )
    link.send(noise, "capture")  # unit -> station: line noise with false syncs
    fd = os.open(link.slave_path, os.O_WRONLY | os.O_NOCTTY)
    os.write(fd, noise[:4096])  # station -> unit: the core's stream decoder must skip it
    os.close(fd)
    unit = make_unit()
    jpeg = scene_jpeg(11)
    assert unit.send_capture(jpeg).acked
    assert stored_are_intact(station) == [jpeg]


def test_unit_that_resets_mid_capture_resends_and_it_is_stored_once(line):
    station, link, make_unit = line
    jpeg = scene_jpeg(12)
    msgs = p.chunk_capture("cam-bad", 1, jpeg, 2048, 5)
    raw_frames(link, msgs[:3])  # BEGIN and two chunks, then the unit browns out
    unit = make_unit()  # after the reset the core starts over with its NVS capture counter (1)
    result = unit.send_capture(jpeg)
    assert result.acked
    wait_for(lambda: station.store.queue_summary()["pending"] == 1, what="one capture")
    assert stored_are_intact(station) == [jpeg]


def test_unit_lying_about_sizes_gets_naks_and_nothing_is_stored(line):
    station, link, make_unit = line
    unit = make_unit()
    jpeg = scene_jpeg(13)
    begin, *chunks = p.chunk_capture("cam-bad", 40, jpeg, 2048, 5)
    longer = p.CaptureBegin(**{**begin.__dict__, "total_size": begin.total_size + 5000})
    raw_frames(link, [longer, *chunks])  # says 5000 bytes more than it sends: last chunk short
    oversized = p.CaptureChunk(41, 0, b"\xff\xd8" + b"x" * 4000)  # chunk longer than chunk_size
    raw_frames(link, [p.CaptureBegin("cam-bad", 41, 10000, 0, 2048, 5), oversized])
    reasons: set[tuple[int, str]] = set()
    while {(40, "malformed"), (41, "malformed")} - reasons and (
        f := unit.link.recv(10)
    ) is not None:
        if isinstance(m := f.message(), p.Nak):
            reasons.add((m.capture_id, p.NakReason(m.reason).label))
    assert (41, "malformed") in reasons and (40, "malformed") in reasons  # short last chunk
    assert station.store.queue_summary()["pending"] == 0
    assert unit.send_capture(jpeg).acked  # the station is still fine
    assert stored_are_intact(station) == [jpeg]


def test_flood_of_open_captures_and_bad_frames_is_refused_then_work_goes_on(line):
    station, link, make_unit = line
    unit = make_unit()
    flood = [p.CaptureBegin("cam-bad", 100 + i, 5000, 0, 1024, 5) for i in range(20)]
    raw_frames(link, flood)
    bad_crc = bytearray(p.encode_frame(p.CaptureChunk(100, 0, b"x" * 1024), 1))
    bad_crc[-1] ^= 0xFF
    link.send(bytes(bad_crc) * 200, "capture")
    naks: list[p.Nak] = []
    while (
        not any(n.reason == p.NakReason.BUSY for n in naks)
        and (f := unit.link.recv(10)) is not None
    ):
        if isinstance(m := f.message(), p.Nak):
            naks.append(m)
    assert any(n.reason == p.NakReason.BUSY for n in naks)
    jpeg = scene_jpeg(14)
    assert unit.send_capture(jpeg).acked
    assert stored_are_intact(station) == [jpeg]
