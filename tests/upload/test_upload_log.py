"""The uploader's log says one line per batch: how many, where, and after a run (or every 10 s)
the backlog left."""

from __future__ import annotations

import logging
import re

from agent.capture import Capture
from tests.helpers import jpeg, wait_for


def test_each_uploaded_batch_is_one_log_line(make_station, links, caplog):
    caplog.set_level(logging.INFO, logger="agent.upload.worker")
    aws = links["aws"]
    token = aws.service.add_station("test-station")
    station = make_station(
        f"""
[upload]
batch_max_items = 4
idle_poll_s = 0.1
empty_policy = "full"
[[upload.endpoints]]
name = "aws"
url = "{aws.proxy.url}"
token = "{token}"
"""
    )
    station.uploader.pause("filling the buffer")  # one run of back-to-back batches after
    for i in range(20):
        station.store.add_capture(
            Capture(
                unit_id="cam-log", unit_ref=str(i), path="serial", jpeg=jpeg(i), received_at=1e9 + i
            )
        )
    station.uploader.resume()

    def lines() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploaded ")]

    wait_for(lambda: sum(int(m.split()[1]) for m in lines()) >= 20, 30, "20 captures uploaded")
    pattern = r"uploaded (\d+) of \d+ captures \(\d+ bytes\) to aws(; backlog (\d+) captures)?"
    parsed = [re.fullmatch(pattern + r"( \(\d+ bytes\))?", m) for m in lines()]
    assert all(parsed), lines()
    assert parsed[-1] is not None and parsed[-1].group(3) == "0"  # the run's last says it
    # counting the backlog is not every batch's work: the batches between say nothing of it
    assert len(parsed) >= 5 and any(m is not None and m.group(2) is None for m in parsed)
