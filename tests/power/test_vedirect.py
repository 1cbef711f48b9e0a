"""VE.Direct: real text-protocol blocks over a pty, bad checksums dropped and counted."""

from __future__ import annotations

import os

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.power.settings import SourceConfig
from agent.power.sources.vedirect import VeDirectParser, VeDirectSource, encode_block
from agent.power.states import State
from tests.helpers import wait_for
from tests.power.conftest import power_config

# A SmartSolar MPPT 100|20 block as the device sends it (fields in the device's order)
MPPT = {
    "PID": "0xA053",
    "FW": "159",
    "SER#": "HQ2132ABCDE",
    "V": "12800",
    "I": "1500",
    "VPV": "18540",
    "PPV": "21",
    "CS": "3",
    "MPPT": "2",
    "OR": "0x00000000",
    "ERR": "0",
    "LOAD": "ON",
    "IL": "0",
    "H19": "10312",
    "H20": "12",
    "H21": "45",
    "H22": "31",
    "H23": "80",
    "HSDS": "186",
}
# A BMV-712 battery monitor block: SOC in per mille, current in mA (negative: discharging)
BMV = {
    "PID": "0xA381",
    "V": "12510",
    "VS": "13020",
    "I": "-2330",
    "P": "-29",
    "CE": "-45300",
    "SOC": "723",
    "TTG": "1180",
    "Alarm": "OFF",
    "Relay": "OFF",
    "AR": "0",
    "BMV": "712 Smart",
    "FW": "0408",
}


def test_checksum_makes_the_block_sum_to_zero():
    block = encode_block(MPPT)
    assert sum(block) % 256 == 0
    assert block.startswith(b"\r\nPID\t0xA053") and b"\r\nChecksum\t" in block


def test_blocks_over_a_pty_give_readings_and_bad_ones_are_counted(pty_pair):
    master, path = pty_pair
    src = VeDirectSource(SourceConfig(kind="vedirect", port=path), clock=lambda: 1000.0)
    try:
        wait_for(lambda: src.connected, timeout=30, what="port open")
        bad = bytearray(encode_block({**MPPT, "V": "12900"}))
        bad[bad.index(b"12900") + 1] ^= 0x01  # one flipped bit on the wire
        hex_frame = b":A0102000543\n"  # an asynchronous HEX message between records
        good = encode_block({**MPPT, "V": "13150"})
        os.write(master, encode_block(MPPT) + bytes(bad) + good[:30] + hex_frame + good[30:])
        wait_for(lambda: src.parser.counts.blocks == 2, timeout=30, what="two good blocks")
        r = src.read()
        assert r.voltage_v == 13.15 and r.current_a == 1.5 and r.solar_w == 21
        assert r.charging is True and r.detail["charger"] == "bulk"
        assert r.detail["yield_today_kwh"] == 0.12 and r.detail["yield_total_kwh"] == 103.12
        assert src.parser.counts.bad_checksum == 1
        assert src.parser.counts.hex_frames == 1
    finally:
        src.close()


def test_a_battery_monitor_reports_its_own_charge(pty_pair):
    master, path = pty_pair
    src = VeDirectSource(SourceConfig(kind="vedirect", port=path), clock=lambda: 1000.0)
    try:
        wait_for(lambda: src.connected, timeout=30, what="port open")
        os.write(master, encode_block(BMV))
        wait_for(lambda: src.parser.counts.blocks == 1, timeout=30, what="a block")
        r = src.read()
        assert r.soc == 72.3 and r.current_a == -2.33 and r.power_w == -29
        assert r.charging is False
    finally:
        src.close()


def test_a_vedirect_stream_drives_the_states(pty_pair, clock, make_worker, sys_root):
    master, path = pty_pair
    w = make_worker(
        power_config(
            sys_root,
            f'[[power.sources]]\nkind = "vedirect"\nport = "{path}"',
            min_dwell_s=0,
        )
    )
    src = w.sources[0]
    wait_for(lambda: src.connected, timeout=30, what="port open")
    states = []
    for soc in (800, 600, 450, 380, 300, 200, 140, 120):  # per mille, falling slowly
        clock.advance(1800)  # blocks are stamped on arrival by the worker's (test) clock
        before = src.parser.counts.blocks
        block = {**BMV, "SOC": str(soc), "V": str(12000 + soc), "I": str(-2000 - soc)}
        os.write(master, encode_block(block))
        wait_for(lambda b=before: src.parser.counts.blocks > b, timeout=30, what=f"block {soc}")
        states.append(w.tick().state)
    assert states == [State.NORMAL] * 3 + [State.ECO] * 3 + [State.CRITICAL] * 2


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=600))
def test_any_bytes_never_crash_the_parser(data):
    parser = VeDirectParser()
    for block in parser.feed(data):
        assert isinstance(block, dict)


label = st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789#", min_size=1, max_size=8).filter(
    lambda s: s != "Checksum"
)
value = st.text(alphabet="0123456789-ABCDEFx ", min_size=1, max_size=12)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(label, value, min_size=1, max_size=12), st.data())
def test_a_block_split_anywhere_decodes_to_its_fields(fields, data):
    block = encode_block(fields)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(block)), max_size=6)))
    parser = VeDirectParser()
    got = []
    start = 0
    for cut in [*cuts, len(block)]:
        got += parser.feed(block[start:cut])
        start = cut
    assert got == [fields]


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 18), st.integers(1, 9))
def test_a_changed_digit_fails_the_checksum(position, delta):
    block = bytearray(encode_block({"V": "1234567890123456789", "I": "100"}))
    at = block.index(b"1234567890") + position
    block[at] = ord("0") + (block[at] - ord("0") + delta) % 10
    parser = VeDirectParser()
    parser.feed(encode_block({"V": "1"}))  # in sync first
    assert parser.feed(bytes(block)) == []
    assert parser.counts.bad_checksum == 1


def test_a_silent_controller_goes_stale_and_is_not_trusted(pty_pair, clock, make_worker, sys_root):
    master, path = pty_pair
    w = make_worker(
        power_config(
            sys_root, f'[[power.sources]]\nkind = "vedirect"\nport = "{path}"\nstale_s = 120'
        )
    )
    wait_for(lambda: w.sources[0].connected, timeout=30, what="port open")
    os.write(master, encode_block(BMV))
    wait_for(lambda: w.sources[0].parser.counts.blocks == 1, timeout=30, what="block")
    assert w.tick().reading.soc == 72.3
    clock.advance(121)  # the cable fell out: no block since
    st = w.tick()
    assert st.reading is None and "no trusted reading" in st.reason
    assert w.status()["sources"][0]["flag"] == "stale"
