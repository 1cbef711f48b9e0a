"""Small pure parts: HTTP Range parsing, the token bucket, object key checks, token format."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cloud.api.models import etag_matches, parse_range
from cloud.ratelimit import RateLimiter, retry_after_header
from cloud.storage import check_key


@given(size=st.integers(1, 10_000), a=st.integers(0, 20_000), b=st.integers(0, 20_000))
def test_satisfiable_ranges_stay_inside_the_object(size, a, b):
    try:
        span = parse_range(f"bytes={a}-{b}", size)
    except ValueError:
        assert a >= size or b < a
        return
    assert span is not None
    start, end = span
    assert start == a and 0 <= start <= end <= size - 1 and end == min(b, size - 1)


@given(size=st.integers(1, 10_000), n=st.integers(1, 20_000))
def test_suffix_range_is_the_last_n_bytes(size, n):
    assert parse_range(f"bytes=-{n}", size) == (max(0, size - n), size - 1)


@pytest.mark.parametrize("header", ["bytes=0-1,5-6", "items=0-1", "bytes=-", "nonsense"])
def test_unusable_range_headers_mean_the_whole_object(header):
    assert parse_range(header, 100) is None


def test_if_none_match_accepts_lists_weak_tags_and_star():
    assert etag_matches('"a", "b"', '"b"')
    assert etag_matches('W/"b"', '"b"')
    assert etag_matches("*", '"b"')
    assert not etag_matches('"a"', '"b"') and not etag_matches(None, '"b"')


def test_token_bucket_allows_the_burst_then_says_how_long_to_wait():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=2, clock=lambda: now[0])
    assert limiter.take("st-1") == 0 and limiter.take("st-1") == 0
    wait = limiter.take("st-1")
    assert wait == pytest.approx(1.0)
    assert retry_after_header(wait) == "1"
    now[0] += 1.0
    assert limiter.take("st-1") == 0
    assert limiter.take("st-2") == 0  # its own bucket


def test_zero_rate_disables_the_limit():
    limiter = RateLimiter(per_minute=0, burst=1)
    assert all(limiter.take("st-1") == 0 for _ in range(1000))


@pytest.mark.parametrize(
    "key", ["../x", "a/../b", "/etc/passwd", "a//b", "a/./b", ".hidden", "a\\b", ""]
)
def test_unsafe_object_keys_are_refused(key):
    with pytest.raises(ValueError, match="unsafe object key"):
        check_key(key)


def test_ordinary_keys_pass():
    assert check_key("captures/st-1/a..b.full-0123456789abcdef.jpg")
