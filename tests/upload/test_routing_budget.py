"""Rendezvous ranking, breakers, token bucket, windows, Retry-After: the parts with no network."""

from __future__ import annotations

from collections import Counter

import pytest

from agent.config import ConfigError, parse_config
from agent.upload.budget import ThrottledBody, TokenBucket, UploadWindows
from agent.upload.client import parse_retry_after
from agent.upload.routing import CircuitBreaker, rendezvous_rank
from agent.upload.settings import Window

FLEET = [("aws", 40.0), ("azure", 30.0), ("gcp", 30.0)]


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.t += s


def test_primary_split_follows_the_weights_across_a_fleet():
    primaries = Counter(rendezvous_rank(f"station-{i}", FLEET)[0] for i in range(20000))
    share = {k: v / 20000 for k, v in primaries.items()}
    assert share["aws"] == pytest.approx(0.40, abs=0.015)
    assert share["azure"] == pytest.approx(0.30, abs=0.015)
    assert share["gcp"] == pytest.approx(0.30, abs=0.015)


def test_ranking_is_stable_and_removing_an_endpoint_moves_only_its_stations():
    for i in range(500):
        sid = f"st-{i}"
        full = rendezvous_rank(sid, FLEET)
        assert full == rendezvous_rank(sid, list(reversed(FLEET)))
        without = rendezvous_rank(sid, [e for e in FLEET if e[0] != "gcp"])
        assert without == [n for n in full if n != "gcp"]


def test_breaker_opens_after_failures_probes_after_cooldown_and_closes_on_success():
    clock = FakeClock()
    br = CircuitBreaker(3, 10.0, 60.0, clock)
    assert br.available()
    assert not br.failure("x") and not br.failure("x")
    assert br.failure("x")  # third in a row opens it
    assert not br.available() and br.retry_in() == 10.0
    clock.t += 10
    assert br.available() and br.state == "half-open"
    assert br.failure("probe failed")  # a failed probe reopens, for longer
    assert br.retry_in() == 20.0
    clock.t += 20
    assert br.available()
    br.success()
    assert br.state == "closed" and br.failures == 0


def test_breaker_holds_for_a_long_retry_after():
    clock = FakeClock()
    br = CircuitBreaker(3, 1.0, 60.0, clock)
    assert br.failure("429", hold_s=300.0)
    assert br.retry_in() == 300.0


def test_token_bucket_keeps_the_average_rate_within_a_batch():
    clock = FakeClock()
    bucket = TokenBucket(10_000, clock)
    body = ThrottledBody(b"x" * 100_000, bucket, clock.sleep)
    start = clock.t
    sent = b""
    while chunk := body.read(8192):
        sent += chunk
    assert sent == b"x" * 100_000 and len(body) == 100_000
    # 100 kB at 10 kB/s from an empty bucket: at least 9 s of (fake) waiting
    assert clock.t - start >= 9.0


def test_unlimited_bucket_never_waits():
    bucket = TokenBucket(0)
    bucket.take(10**9)
    assert bucket.wait_s(10**9) == 0.0


@pytest.fixture
def utc(monkeypatch):
    import time

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_windows_open_close_and_cross_midnight(utc):
    day = 1_780_012_800  # a UTC midnight
    w = UploadWindows(["02:00-06:00", "22:00-01:00"])
    assert not w.is_open(day + 1.5 * 3600)
    assert w.seconds_until_open(day + 1.5 * 3600) == pytest.approx(1800)
    assert w.is_open(day + 3 * 3600)
    assert w.is_open(day + 23 * 3600) and w.is_open(day + 0.5 * 3600)
    assert w.seconds_until_open(day + 7 * 3600) == pytest.approx(15 * 3600)
    assert UploadWindows([]).is_open(day)


def test_bad_window_is_rejected_with_key_and_line():
    with pytest.raises(ConfigError) as err:
        parse_config('[upload]\nwindows = ["02:00-06:00", "2am-6am"]\n', "s.toml")
    assert "s.toml:2: upload.windows: '2am-6am' is not a window" in str(err.value)
    with pytest.raises(ValueError):
        Window("05:00-05:00")


def test_endpoint_tables_are_validated():
    with pytest.raises(ConfigError) as err:
        parse_config('[[upload.endpoints]]\nname = "AWS!"\nurl = "ftp://x"\nweight = 0\n', "s.toml")
    text = str(err.value)
    assert "name" in text and "url" in text and "weight" in text


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past
    assert parse_retry_after("soon") is None
