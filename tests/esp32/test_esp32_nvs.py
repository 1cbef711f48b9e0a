"""Unit NVS images: generator -> our reader round trip, damaged images, limits, the key tables."""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.esp32.configure import (
    NVS_KEYS,
    ConfigureError,
    UnitSettings,
    build_nvs_image,
    check_value,
    verify_image,
)
from agent.esp32.nvs import NvsFormatError, NvsValue, read_nvs

ROOT = Path(__file__).resolve().parents[2]
SIZE = 0x6000
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

RANGES = {
    "u8": (0, 2**8 - 1),
    "i8": (-(2**7), 2**7 - 1),
    "u16": (0, 2**16 - 1),
    "i16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "i32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "i64": (-(2**63), 2**63 - 1),
}
keys = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_0123456789", min_size=1, max_size=15)
typed = st.one_of(
    *[st.tuples(st.just(t), st.integers(lo, hi)) for t, (lo, hi) in RANGES.items()],
    st.tuples(st.just("string"), st.text(max_size=200).filter(lambda s: "\0" not in s)),
)


def good_image() -> bytes:
    values = UnitSettings("cam-01", quiet=(1200, 360)).nvs_values()
    return build_nvs_image(values, SIZE)


@SETTINGS
@given(st.dictionaries(keys, typed, min_size=1, max_size=40))
def test_every_type_round_trips_through_generator_and_reader(values):
    image = build_nvs_image(values, SIZE)
    got = read_nvs(image)["wildcam"]
    assert got == {k: NvsValue(t, v) for k, (t, v) in values.items()}


@SETTINGS
@given(st.binary(min_size=1, max_size=64), st.integers(0, SIZE - 1))
def test_reader_refuses_damage_with_its_own_error_only(patch, at):
    image = bytearray(good_image())
    image[at : at + len(patch)] = patch[: SIZE - at]
    try:
        read_nvs(bytes(image))
    except NvsFormatError:
        pass  # a clear refusal is the only acceptable failure


@SETTINGS
@given(st.binary(max_size=3 * 4096))
def test_reader_on_arbitrary_bytes_never_crashes(data):
    try:
        read_nvs(data)
    except NvsFormatError:
        pass


def test_flipped_bit_in_an_entry_is_caught_by_its_crc():
    image = bytearray(good_image())
    first_entry = 64 + 32  # entry 0 is the namespace, entry 1 the first key
    image[first_entry + 25] ^= 0x01
    with pytest.raises(NvsFormatError, match="CRC"):
        read_nvs(bytes(image))


def test_truncated_image_is_refused():
    with pytest.raises(NvsFormatError, match="4096-byte pages"):
        read_nvs(good_image()[:5000])


def test_verify_image_notices_a_value_that_does_not_read_back():
    values = UnitSettings("cam-01").nvs_values()
    image = build_nvs_image(values, SIZE)
    values["interval_s"] = ("u32", 301)
    with pytest.raises(ConfigureError, match="interval_s"):
        verify_image(image, values)


@pytest.mark.parametrize(
    ("field", "value", "key"),
    [
        ("wifi_ssid", "x" * 33, "wifi_ssid"),
        ("mqtt_uri", "mqtt://" + "h" * 130, "mqtt_uri"),
        ("station_id", "Ridge Station", "station_id"),
        ("unit_id", "Cam 1", "unit_id"),
        ("wifi_password", "short", "wifi_pass"),
        ("jpeg_quality", 64, "jpeg_quality"),
        ("chunk_size", 0, "chunk_size"),
        ("quiet", (1500, 60), "quiet_start"),
    ],
)
def test_settings_too_long_or_out_of_range_name_the_key(field, value, key):
    base = {
        "unit_id": "cam-01",
        "station_id": "ridge",
        "wifi_ssid": "net",
        "wifi_password": "password1",
        "mqtt_uri": "mqtt://10.0.0.1",
    }
    base[field] = value
    with pytest.raises(ConfigureError, match=key):
        UnitSettings(transport="mqtt", **base).nvs_values()


def test_strings_longer_than_the_nvs_format_allows_are_refused():
    with pytest.raises(ConfigureError, match="NVS format cannot hold"):
        build_nvs_image({"note": ("string", "x" * 4001)}, SIZE)


def test_key_names_longer_than_15_characters_are_refused():
    with pytest.raises(ConfigureError, match="at most 15"):
        build_nvs_image({"a_very_long_key_x": ("u8", 1)}, SIZE)


def test_numbers_that_do_not_fit_their_type_are_refused():
    with pytest.raises(ConfigureError):
        build_nvs_image({"n": ("u8", 300)}, SIZE)
    with pytest.raises(ConfigureError, match="outside"):
        check_value("tz_offset_min", 900)


def test_too_many_values_for_the_partition_are_refused():
    values = {f"k{i}": ("string", "x" * 1000) for i in range(40)}
    with pytest.raises(ConfigureError):
        build_nvs_image(values, 0x3000)


def test_station_key_table_matches_the_firmware_table_and_protocol_doc():
    c_src = (ROOT / "esp32/firmware/components/wildcam_core/src/wc_config.c").read_text()
    c_keys = dict(re.findall(r'\{"(\w+)", WC_KV_(\w+), \w+\}', c_src))
    c_keys["capture_seq"] = "U32"  # named through WC_KEY_CAPTURE_SEQ
    kinds = {"STR": "string", "U8": "u8", "U16": "u16", "U32": "u32", "I16": "i16"}
    assert {k: kinds[v] for k, v in c_keys.items()} == {k: t for k, (t, _) in NVS_KEYS.items()}
    doc = (ROOT / "esp32/PROTOCOL.md").read_text().split("## 9.", 1)[1]
    doc_keys = dict(re.findall(r"^\| `(\w+)` \| (\w+) \|", doc, re.M))
    assert doc_keys == {k: t for k, (t, _) in NVS_KEYS.items()}
    assert all(len(k) <= 15 for k in NVS_KEYS)


def test_namespace_entry_is_what_nvs_flash_expects():
    image = good_image()
    entry = image[64 : 64 + 32]
    ns_index, etype, span = entry[0], entry[1], entry[2]
    assert (ns_index, etype, span) == (0, 0x01, 1)
    assert entry[8:24].rstrip(b"\0") == b"wildcam" and struct.unpack_from("<B", entry, 24)[0] == 1
