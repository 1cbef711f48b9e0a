"""Property tests for the parsers of outside bytes: JPEG headers and model cards."""

from __future__ import annotations

import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.inference.image import ImageError, decode_jpeg, jpeg_size, open_jpeg
from agent.inference.package import PackageError, parse_card

from .conftest import FIXTURES, jpeg_bytes

SMALL = jpeg_bytes(np.full((48, 64, 3), 128, np.uint8))
SOF = SMALL.index(b"\xff\xc0")
CARD = json.loads((FIXTURES / "blob-yolo-nc" / "model.json").read_text())


@given(st.binary(max_size=2048))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_bytes_give_an_image_error_or_an_image(data):
    try:
        image, size = decode_jpeg(data)
    except ImageError as exc:
        assert str(exc)
    else:
        assert image.size[0] <= size[0] and image.size[1] <= size[1]


@given(st.binary(max_size=512))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_bytes_after_a_jpeg_start_never_escape_as_another_error(tail):
    try:
        decode_jpeg(b"\xff\xd8" + tail)
    except ImageError:
        pass


@given(st.integers(0, 65535), st.integers(0, 65535))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_the_frame_header_size_is_read_exactly_and_limits_hold(width, height):
    data = bytearray(SMALL)
    data[SOF + 5 : SOF + 7] = height.to_bytes(2, "big")
    data[SOF + 7 : SOF + 9] = width.to_bytes(2, "big")
    assert jpeg_size(bytes(data)) == (width, height)
    try:
        open_jpeg(bytes(data), max_pixels=1_000_000, min_side=16)
    except ImageError:
        assert width * height > 1_000_000 or min(width, height) < 16
    else:
        assert min(width, height) >= 16 and width * height <= 1_000_000


@given(st.integers(1, len(SMALL) - 1))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_any_truncation_of_a_jpeg_is_an_image_error(cut):
    try:
        decode_jpeg(SMALL[:cut])
    except ImageError:
        return
    # libjpeg would pad a cut stream with grey; Pillow refuses it (LOAD_TRUNCATED_IMAGES is off)
    raise AssertionError(f"a JPEG cut at {cut} of {len(SMALL)} bytes decoded")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)


@given(st.dictionaries(st.sampled_from(sorted(CARD)), json_values, max_size=6))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_a_card_with_any_fields_replaced_parses_or_names_its_problems(changes):
    card = {**CARD, **changes}
    try:
        parsed = parse_card(card, "prop")
    except PackageError as exc:
        assert str(exc).startswith("model package prop: ")
    else:
        assert len(parsed.labels) == len(parsed.thresholds)


@given(st.binary(max_size=300) | st.text(max_size=300))
@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_arbitrary_card_text_is_refused_with_a_package_error(text):
    try:
        parse_card(text, "prop")
    except PackageError:
        pass
