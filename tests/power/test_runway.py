"""Runway from the measured charge trend or power, and the energy one capture costs."""

from __future__ import annotations

import threading

import pytest

from agent.power.runway import EnergyMeter, Trend
from agent.power.sources import Reading
from tests.power.conftest import power_config


def test_the_runway_follows_the_discharge_trend(sysfs, clock, make_worker, sys_root):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    for i in range(13):  # -2 %/h for six hours, a reading every 30 min
        sysfs.set(80 - i, amps=-0.4)
        w.tick()
        clock.advance(1800)
    runway = w.status()["runway"]
    assert runway["basis"] == "trend"
    assert runway["rate_pct_per_h"] == pytest.approx(-2.0, abs=0.05)
    assert runway["hours_to_empty"] == pytest.approx(68 / 2.0, rel=0.05)


def test_with_a_capacity_the_runway_uses_measured_power():
    trend = Trend()
    r = Reading("sysfs:BAT0", 0.0, soc=50.0, power_w=-5.0)
    runway = trend.runway(r, battery_wh=120.0)  # 60 Wh left at 5 W
    assert runway.basis == "power" and runway.hours_to_empty == pytest.approx(12.0)
    charging = trend.runway(Reading("x", 0.0, soc=50.0, power_w=20.0), battery_wh=120.0)
    assert charging.hours_to_full == pytest.approx(3.0)


def test_each_capture_costs_the_cpu_its_stages_spent():
    meter = EnergyMeter(board_watts=2.0)
    burnt = threading.Event()
    release = threading.Event()

    def worker() -> None:  # a long-lived worker thread, like the station's inference worker
        x = 0
        for i in range(2_000_000):
            x += i * i
        burnt.set()
        release.wait(10)

    t = threading.Thread(target=worker, name="inference")
    t.start()
    try:
        assert burnt.wait(30)
        meter.capture()
        meter.capture()
        doc = meter.per_capture()
    finally:
        release.set()
        t.join()
    per_capture = doc["cpu_s_per_capture"]["inference"]
    assert per_capture > 0.01  # two million multiplications take a while in Python
    assert doc["joules_per_capture"] == pytest.approx(per_capture * 2.0, rel=0.2)
