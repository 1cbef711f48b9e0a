"""MQTT's commit queue: captures waiting while a commit is on disk go into the next one together,
each is answered after its own commit, and one unit's lost link costs no other unit its ACK."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from agent import protocol as p
from agent.capture import Capture
from agent.config import parse_config
from agent.ingest.assembler import Assembler
from agent.ingest.commits import CommitQueue
from agent.metrics import Metrics
from agent.scenes import scene_jpeg
from agent.store import AddResult, StorageFull, Store
from tests.helpers import wait_for


class Unit:
    """What one unit's topic hears back: the ACKs and NAKs, or a lost link."""

    def __init__(self, lost: bool = False) -> None:
        self.replies: list[p.Message] = []
        self.lost = lost

    def __call__(self, msg: p.Message) -> None:
        if self.lost:
            raise ConnectionError("mqtt is not connected")
        self.replies.append(msg)


def assembler(store: Store, unit: Unit, name: str) -> Assembler:
    limits = parse_config("", "<test>").ingest
    return Assembler(store, Metrics(), limits, "mqtt", unit, link=f"mqtt:{name}")


def begin(unit_id: str, capture_id: int, jpeg: bytes) -> p.CaptureBegin:
    (first, *_chunks) = p.chunk_capture(unit_id, capture_id, jpeg, len(jpeg), 1)
    assert isinstance(first, p.CaptureBegin)
    return first


class HeldFirstCommit:
    """Store.add_captures that waits on `release` in its first call and records every batch."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.batches: list[int] = []
        self.entered = threading.Event()
        self.release = threading.Event()
        self._add = store.add_captures

    def __call__(self, captures: list[Capture]) -> list[AddResult | BaseException]:
        self.batches.append(len(captures))
        if len(self.batches) == 1:
            self.entered.set()
            assert self.release.wait(10)
        return self._add(captures)


@pytest.fixture
def store(tmp_path: Path):
    s = Store(tmp_path / "buffer.db", check_on_start=False)
    yield s
    s.close()


def test_captures_waiting_on_a_commit_share_the_next_one(store, monkeypatch):
    held = HeldFirstCommit(store)
    monkeypatch.setattr(store, "add_captures", held)
    queue = CommitQueue(store, "test-commit")
    units = {f"cam-{i}": Unit() for i in range(6)}
    links = {name: assembler(store, unit, name) for name, unit in units.items()}
    try:
        first = scene_jpeg(0, (64, 48))
        queue.put(links["cam-0"], begin("cam-0", 1, first), first)
        assert held.entered.wait(10)
        for i in range(1, 6):  # five more units finish a capture while the first is on disk
            jpeg = scene_jpeg(i, (64, 48))
            queue.put(links[f"cam-{i}"], begin(f"cam-{i}", 1, jpeg), jpeg)
        assert not any(u.replies for u in units.values())  # nothing answered before its commit
        held.release.set()
        wait_for(lambda: all(u.replies for u in units.values()), timeout=10, what="every ACK")
    finally:
        held.release.set()
        queue.shutdown()
    assert held.batches == [1, 5]
    assert all(isinstance(u.replies[0], p.Ack) for u in units.values())
    assert store.count_in_states(["received"]) == 6


def test_a_lost_link_costs_no_other_unit_its_ack(store):
    queue = CommitQueue(store, "test-commit")
    gone, here = Unit(lost=True), Unit()
    a, b = assembler(store, gone, "gone"), assembler(store, here, "here")
    ja, jb = scene_jpeg(1, (64, 48)), scene_jpeg(2, (64, 48))
    queue.put(a, begin("gone", 7, ja), ja)
    queue.put(b, begin("here", 8, jb), jb)
    queue.shutdown()  # stores and answers what is queued first
    assert [type(m) for m in here.replies] == [p.Ack]
    assert store.count_in_states(["received"]) == 2  # stored all the same; the unit resends


def test_a_damaged_capture_is_refused_and_its_neighbours_stored(store):
    queue = CommitQueue(store, "test-commit")
    bad, good = Unit(), Unit()
    jpeg = scene_jpeg(3, (64, 48))
    rotten = begin("bad", 1, jpeg)
    queue.put(assembler(store, bad, "bad"), rotten, jpeg[:-8] + b"\x00" * 8)
    queue.put(assembler(store, good, "good"), begin("good", 1, jpeg), jpeg)
    queue.shutdown()
    (nak,) = bad.replies
    assert isinstance(nak, p.Nak) and nak.reason == p.NakReason.CRC_MISMATCH
    assert [type(m) for m in good.replies] == [p.Ack]
    assert store.count_in_states(["received"]) == 1


def test_add_captures_answers_each_capture_in_order(store, monkeypatch):
    jpegs = [scene_jpeg(i, (64, 48)) for i in range(3)]
    caps = [Capture("u1", str(i), "mqtt", j, 1.7e9) for i, j in enumerate(jpegs)]
    first = store.add_captures(caps)
    assert all(isinstance(r, AddResult) and not r.duplicate for r in first)
    again = store.add_captures([caps[1], Capture("u1", "9", "mqtt", jpegs[0], 1.7e9)])
    assert isinstance(again[0], AddResult) and again[0].duplicate
    assert isinstance(again[1], AddResult) and not again[1].duplicate

    def full(incoming: int) -> Any:
        raise StorageFull("disk has 0 bytes free")

    monkeypatch.setattr(store, "_ensure_room", full)
    (refused,) = store.add_captures([Capture("u1", "10", "mqtt", jpegs[2], 1.7e9)])
    assert isinstance(refused, StorageFull)
    assert store.count_in_states(["received"]) == 4
