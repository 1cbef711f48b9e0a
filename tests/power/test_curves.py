"""Scripted battery curves written into a sysfs tree, read by the real sources on a moved clock."""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.power.states import State
from tests.power.conftest import DAY, Hwmon, power_config

STEP = 600.0  # a reading every ten minutes of script time


def run_curve(worker, sysfs, clock, curve, seconds: float, step: float = STEP) -> list[State]:
    """Write curve(t) into sysfs before every tick; return the state after each tick."""
    seen = []
    t = 0.0
    while t <= seconds:
        soc, amps = curve(t)
        sysfs.set(soc, amps=amps)
        seen.append(worker.tick().state)
        clock.advance(step)
        t += step
    return seen


def changes(states: list[State]) -> list[State]:
    out = [states[0]]
    for s in states[1:]:
        if s != out[-1]:
            out.append(s)
    return out


def solar(t: float) -> float:
    """0 at night, up to 1 at noon (06:00 to 18:00)."""
    hour = (t / 3600.0) % 24
    return max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0


def test_a_sunny_day_stays_normal_and_follows_charging(sysfs, clock, make_worker, sys_root):
    def curve(t: float) -> tuple[float, float]:
        hour = t / 3600
        soc = 60 - 1.5 * min(hour, 7) + 8 * max(0.0, min(hour, 14) - 7) - 1.5 * max(0, hour - 14)
        return min(100.0, soc), 2.0 * solar(t) - 0.4

    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    states = run_curve(w, sysfs, clock, curve, DAY)
    assert set(states) == {State.NORMAL}
    assert w.history.transitions() == []
    # charging followed the sun: off at night, on at noon
    assert w.current.charging is False


def test_a_cloudy_week_steps_down_once_per_threshold(sysfs, clock, make_worker, sys_root):
    def curve(t: float) -> tuple[float, float]:
        # net -11 %/day with a small daytime top-up that makes the charge wobble
        soc = 85 - 11 * t / DAY + 3 * solar(t)
        return max(0.0, soc), 0.3 * solar(t) - 0.4

    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    states = run_curve(w, sysfs, clock, curve, 7 * DAY, step=3600)
    assert changes(states) == [State.NORMAL, State.ECO, State.CRITICAL]
    moves = [(t["from"], t["to"]) for t in reversed(w.history.transitions())]
    assert moves == [("normal", "eco"), ("eco", "critical")]
    # every transition keeps its reason and the reading behind it
    last = w.history.transitions(1)[0]
    assert "15%" in last["reason"] and last["readings"]["chosen"]["soc"] <= 15
    assert w.current.decisions.inference == "paused"


def test_a_battery_hovering_at_a_threshold_does_not_flap(sysfs, clock, make_worker, sys_root):
    def curve(t: float) -> tuple[float, float]:
        return 40 + 4 * math.cos(t / 900), -0.3  # 44..36 % around eco_enter 40

    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    states = run_curve(w, sysfs, clock, curve, DAY / 2, step=300)
    assert changes(states) == [State.NORMAL, State.ECO]  # never back: leave is at 50 %


def test_a_dying_battery_arms_the_wake_up_then_shuts_down_once(sysfs, clock, make_worker, sys_root):
    from tests.power.conftest import Commands

    run = Commands()
    settings = power_config(
        sys_root,
        '[[power.sources]]\nkind = "sysfs"\n',
    )
    from dataclasses import replace

    settings = replace(
        settings,
        wake_command=["rtcwake", "-m", "no", "-s", "{seconds}"],
        shutdown_command=["systemctl", "poweroff"],
        wake_after_s=7200,
    )
    checkpoints = []
    w = make_worker(settings, run=run, checkpoint=lambda: checkpoints.append(clock()))
    paused = []
    w.subscribe(lambda st: paused.append(st.decisions.uploads_allowed))
    states = run_curve(w, sysfs, clock, lambda t: (max(0.0, 50 - 10 * t / 3600), -1.0), 8 * 3600)
    assert changes(states) == [State.NORMAL, State.ECO, State.CRITICAL]
    assert run.calls == [["rtcwake", "-m", "no", "-s", "7200"], ["systemctl", "poweroff"]]
    assert len(checkpoints) == 1
    assert paused[-1] is False  # uploads were stopped
    kinds = [e["kind"] for e in reversed(w.history.events())]
    assert kinds == ["wake_armed", "shutdown"]


def test_no_shutdown_when_the_wake_up_cannot_be_armed(sysfs, clock, make_worker, sys_root):
    from dataclasses import replace

    from tests.power.conftest import Commands

    run = Commands()
    run.fail.add("rtcwake")
    settings = replace(
        power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'),
        wake_command=["rtcwake", "-m", "no", "-s", "{seconds}"],
        shutdown_command=["systemctl", "poweroff"],
    )
    w = make_worker(settings, run=run)
    sysfs.set(5)
    clock.advance(settings.shutdown_grace_s)
    w.tick()
    clock.advance(60)
    w.tick()
    assert run.calls == [["rtcwake", "-m", "no", "-s", str(settings.wake_after_s)]]
    assert "cancelled" in (w.critical.outcome or "")


def test_after_a_start_in_critical_a_hold_in_the_grace_keeps_it_up(
    sysfs, clock, make_worker, sys_root
):
    from dataclasses import replace

    from tests.power.conftest import Commands

    run = Commands()
    settings = replace(
        power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'),
        wake_command=["rtcwake", "-m", "no", "-s", "{seconds}"],
        shutdown_command=["systemctl", "poweroff"],
    )
    w = make_worker(settings, run=run)
    sysfs.set(12)  # CRITICAL, above the hard floor: a technician just powered it up
    assert w.tick().state == State.CRITICAL
    assert run.calls == [] and "unless held" in (w.critical.outcome or "")
    clock.advance(120)
    w.hold(1800)
    clock.advance(settings.shutdown_grace_s)
    assert w.tick().state == State.NORMAL
    assert run.calls == []


def test_a_flapping_sensor_is_flagged_and_the_next_source_takes_over(
    sysfs, clock, make_worker, sys_root
):
    hw = Hwmon(sys_root)
    w = make_worker(
        power_config(
            sys_root, '[[power.sources]]\nkind = "sysfs"\n[[power.sources]]\nkind = "hwmon"'
        )
    )

    def curve(t: float) -> tuple[float, float]:
        n = int(t / STEP)
        hw.set(13.2 + 0.001 * (n % 3), -0.5)  # a LiFePO4 pack around 70 %, with ADC noise
        return (12.0 if n % 2 else 80.0), -0.4  # the gauge jumps between two levels

    states = run_curve(w, sysfs, clock, curve, DAY)
    assert set(states) == {State.NORMAL}
    sysfs_health = w.health[0]
    assert sysfs_health.flag == "flapping"
    assert w.reading is not None and w.reading.source == "hwmon:first"


def test_a_vanished_sensor_hands_over_to_the_next(sysfs, clock, make_worker, sys_root):
    Hwmon(sys_root, "ina3221").set(12.9, -0.5)  # ~10 %: a much emptier view
    w = make_worker(
        power_config(
            sys_root,
            '[[power.sources]]\nkind = "sysfs"\n[[power.sources]]\nkind = "hwmon"\nname = "ina3221"',
        )
    )
    sysfs.set(70)
    assert w.tick().reading.source == "sysfs:BAT0"
    sysfs.vanish()
    clock.advance(60)
    st = w.tick()
    assert st.reading.source == "hwmon:ina3221"
    assert w.health[0].flag == "error" and "gone" in w.health[0].error
    doc = w.status()
    assert doc["sources"][0]["trusted"] is False


def test_a_stuck_sensor_is_not_trusted(sysfs, clock, make_worker, sys_root):
    hw = Hwmon(sys_root)
    w = make_worker(
        power_config(
            sys_root,
            '[[power.sources]]\nkind = "sysfs"\n[[power.sources]]\nkind = "hwmon"',
            stuck_after_s=1800,
        )
    )
    sysfs.set(90, volts=13.3, amps=-0.2)  # frozen: a driver that stopped updating
    for i in range(8):
        hw.set(13.25 - i * 0.001, -0.5)  # the other sensor keeps moving
        w.tick()
        clock.advance(600)
    assert w.health[0].flag == "stuck"
    assert w.reading.source == "hwmon:first"


def test_garbage_and_impossible_values_are_flagged_and_counted(sysfs, clock, make_worker, sys_root):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    (sysfs.dir / "capacity").write_text("\x00\x7fgarbage\n")
    w.tick()
    assert w.health[0].flag == "error" and "not a number" in w.health[0].error
    sysfs.set(250)  # no battery is at 250 %
    clock.advance(60)
    w.tick()
    assert w.health[0].flag == "out_of_range"
    assert w.health[0].errors == 1 and w.health[0].rejected == 1
    assert w.reading is None
    assert "no trusted reading" in w.current.reason


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=40), st.sampled_from(["capacity", "voltage_now", "current_now"]))
def test_any_bytes_in_a_sysfs_file_are_flagged_never_raised(
    sysfs, clock, make_worker, sys_root, data, name
):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    sysfs.set(70)
    (sysfs.dir / name).write_bytes(data)
    st_ = w.tick()
    h = w.health[0]
    if st_.reading is None:
        assert h.flag in ("error", "out_of_range") and h.error
    else:
        assert 0 <= st_.reading.soc <= 100
