"""A technician's hold keeps NORMAL behaviour for its time, short of the hard floor."""

from __future__ import annotations

from agent.power.states import State
from tests.power.conftest import power_config


def test_the_hold_overrides_eco_and_expires(sysfs, clock, make_worker, sys_root):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    sysfs.set(30)
    assert w.tick().state == State.ECO
    seen = []
    w.subscribe(lambda st: seen.append((st.state, st.decisions.inference)))
    st = w.hold(1800)
    assert st.state == State.NORMAL and st.measured == State.ECO
    assert st.decisions.inference == "all" and "held" in st.label()
    clock.advance(1700)
    assert w.tick().state == State.NORMAL
    clock.advance(101)
    st = w.tick()
    assert st.state == State.ECO and st.hold_until is None
    assert seen == [
        (State.ECO, "detector_only"),
        (State.NORMAL, "all"),
        (State.ECO, "detector_only"),
    ]
    kinds = [e["kind"] for e in reversed(w.history.events())]
    assert kinds == ["hold", "hold_expired"]


def test_the_hold_survives_a_restart(sysfs, clock, make_worker, sys_root):
    settings = power_config(sys_root, '[[power.sources]]\nkind = "sysfs"')
    sysfs.set(30)
    w = make_worker(settings)
    w.tick()
    w.hold(600)
    again = make_worker(settings)
    assert again.tick().state == State.NORMAL
    assert again.current.hold_until == w.current.hold_until


def test_below_the_hard_floor_the_hold_gives_way(sysfs, clock, make_worker, sys_root):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    sysfs.set(20)
    w.tick()
    w.hold(3600)
    assert w.current.state == State.NORMAL
    clock.advance(1200)  # a plausible fall: 14 points in 20 minutes
    sysfs.set(6)
    st = w.tick()
    assert st.state == State.CRITICAL and "hard floor" in (st.hold_note or "")


def test_a_hold_of_zero_clears_it(sysfs, clock, make_worker, sys_root):
    w = make_worker(power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'))
    sysfs.set(30)
    w.tick()
    w.hold(600)
    assert w.hold(0).state == State.ECO
    assert w.history.hold() is None


def test_a_history_that_cannot_be_written_does_not_stop_the_policy(
    sysfs, clock, store, sys_root, tmp_path
):
    from agent.power.worker import PowerWorker
    from agent.store import Store

    # a buffer that refuses writes, as a full or failing disk does
    refusing = Store(store.path, readonly=True)
    w = PowerWorker(
        power_config(sys_root, '[[power.sources]]\nkind = "sysfs"'), refusing, clock=clock
    )
    try:
        sysfs.set(30)
        assert w.tick().state == State.ECO  # the transition was not stored, the state moved
        assert w.hold(600).state == State.NORMAL
        assert w.history_errors >= 2
    finally:
        w.close()
        refusing.close()
