"""The daily budget holds over a batch's retries: every try is weighed against what is left.

A try cut by a dropped link still cost its bytes on a metered link, so it counts; the batch's next
try goes only if it fits what is left, otherwise it waits for tomorrow with nothing lost.
"""

from __future__ import annotations

import time

from agent.upload import ledger
from agent.upload.budget import local_day
from tests.helpers import wait_for
from tests.upload.upload_helpers import NAMES, add_captures, assert_consistent


def _counted(station) -> int:
    with station.store.read() as conn:
        return ledger.bytes_on(conn, local_day(station.uploader.clock()))


def test_retries_of_a_batch_cut_by_drops_stay_within_the_daily_budget(new_station, links):
    # captures of about 3 kB: a two-capture batch is about 7 kB, so two tries fit, a third not
    budget = 20_000
    station = new_station(
        primary="aws", batch_max_items=2, heartbeat_interval_s=0, daily_budget_bytes=budget
    )
    add_captures(station.store, 6, kinds=["animal"])
    for name in NAMES:  # every request reaches the cloud, every answer is lost on the way back
        links[name].proxy.set("drop_response")
    before = sum(links[n].proxy.bytes_up for n in NAMES)
    station.start()
    wait_for(lambda: station.uploader.status()["state"] == "budget_exhausted", 30, "budget spent")
    station.stop()
    on_wire = sum(links[n].proxy.bytes_up for n in NAMES) - before
    counted = _counted(station)
    assert counted <= budget, f"{counted} bytes counted against a budget of {budget}"
    assert on_wire <= counted, f"{on_wire} bytes on the wire, {counted} counted"  # none missed
    # nothing lost: the batch stays pending (in doubt: the cloud may hold it) for tomorrow
    assert station.states() == {"analysed": 6}
    assert station.pending_or_doubt() > 6
    for name in NAMES:
        links[name].proxy.set("pass")
    station.uploader.clock = lambda: time.time() + 86400  # tomorrow: a new day's budget
    station.start()
    wait_for(lambda: station.pending_or_doubt() == 0, 30, "drained the next day")
    station.stop()
    assert_consistent(station, links)
    assert _counted(station) <= budget
