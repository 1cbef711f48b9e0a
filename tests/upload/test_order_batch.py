"""Value order, empty-frame policy, thumbnails first and the multipart body, on a real buffer."""

from __future__ import annotations

import email.parser
import hashlib
import json

import pytest

from agent.config import load_config
from agent.store import Store
from agent.upload import ledger
from agent.upload.batch import build_item, encode
from agent.upload.client import SyncEndpoint
from agent.upload.window import BatchWindow
from tests.upload.upload_helpers import NAMES, add_captures, analyse, upload_toml

ENDPOINTS = ["aws", "azure", "gcp"]


def _order(store: Store, **kw) -> list:
    args = {"thumbnails_first": False, "empty_full": False, "limit": 100}
    args.update(kw)
    with store.read() as conn:
        return ledger.candidates(conn, "aws", ENDPOINTS, ("received", "analysed"), **args)


def _kind(row) -> str:
    return json.loads(row["meta"])["kind"]


def _store(tmp_path) -> Store:
    store = Store(tmp_path / "b.sqlite3")
    add_captures(store, 10, kinds=["empty", "received", "vehicle", "animal", "person"])
    return store


def test_people_and_animals_first_then_other_detections_then_unknown_then_empty(tmp_path):
    store = _store(tmp_path)
    kinds = [_kind(r) for r in _order(store)]
    rank = {"person": 0, "animal": 0, "vehicle": 1, "received": 2, "empty": 3}
    assert [rank[k] for k in kinds] == sorted(rank[k] for k in kinds)
    assert kinds[-2:] == ["empty", "empty"]


def test_a_capture_another_endpoint_holds_waits_for_that_endpoint(tmp_path):
    store = _store(tmp_path)
    first = _order(store)[0]["id"]
    with store.transaction() as conn:
        ledger.record_held(conn, "gcp", first, "thumbnail", 0.0)
    assert first not in [r["id"] for r in _order(store)]
    with store.read() as conn:
        at_gcp = ledger.candidates(
            conn,
            "gcp",
            ENDPOINTS,
            ("received", "analysed"),
            thumbnails_first=False,
            empty_full=False,
            limit=100,
        )
    assert first in [r["id"] for r in at_gcp]


def _item(store, row, **kw):
    args = {"empty_policy": "thumbnail", "thumbnails_first": False, "thumbnail_px": 32}
    args.update(kw)
    dets = ledger.detections_for(store, [row["id"]])[row["id"]]
    return build_item(row, dets, store.read_image, **args)


def test_empty_policy_picks_the_variant(tmp_path):
    store = _store(tmp_path)
    empty = next(r for r in _order(store) if _kind(r) == "empty")
    assert _item(store, empty, empty_policy="skip").variant == "none"
    assert _item(store, empty, empty_policy="skip").image is None
    thumb = _item(store, empty, empty_policy="thumbnail")
    assert thumb.variant == "thumbnail" and thumb.image.startswith(b"\xff\xd8\xff")
    assert thumb.manifest["image_sha256"] == hashlib.sha256(thumb.image).hexdigest()
    full = _item(store, empty, empty_policy="full")
    assert full.variant == "full" and full.image == store.read_image(empty["id"])
    # an unanalysed capture is not known to be empty: it goes whole
    received = next(r for r in _order(store) if _kind(r) == "received")
    assert _item(store, received).variant == "full"


def test_thumbnails_first_sends_every_thumbnail_before_any_full_image(tmp_path):
    store = _store(tmp_path)
    rows = _order(store, thumbnails_first=True)
    phase0 = [r for r in rows if r["phase"] == 0]
    assert len(phase0) == 8  # all but the two empty frames (their final variant is a thumbnail)
    item = _item(store, phase0[0], thumbnails_first=True)
    assert item.variant == "thumbnail" and item.final_variant == "full"
    with store.transaction() as conn:
        ledger.record_held(conn, "aws", phase0[0]["id"], "thumbnail", 0.0)
    again = {r["id"]: r for r in _order(store, thumbnails_first=True)}
    assert again[phase0[0]["id"]]["phase"] == 1
    assert _item(store, again[phase0[0]["id"]], thumbnails_first=True).variant == "full"


def test_privacy_variant_wins_over_everything(tmp_path):
    store = _store(tmp_path)
    (person,) = add_captures(store, 1, kinds=["received"], start=10)
    analyse(store, person, "person", upload_variant="none")  # the privacy policy: no image
    row = next(r for r in _order(store) if r["id"] == person)
    assert _item(store, row, thumbnails_first=True, empty_policy="full").variant == "none"


def test_multipart_body_carries_the_manifest_and_each_image(tmp_path):
    store = _store(tmp_path)
    items = [_item(store, r, empty_policy="skip") for r in _order(store)[:5]] + [
        _item(store, r, empty_policy="skip") for r in _order(store) if _kind(r) == "empty"
    ]
    body, content_type = encode("st-1", items)
    msg = email.parser.BytesParser().parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    parts = msg.get_payload()
    manifest = json.loads(parts[0].get_payload(decode=True))
    assert manifest["station_id"] == "st-1"
    assert [i["capture_id"] for i in manifest["items"]] == [i.capture_id for i in items]
    images = {
        p.get_param("name", header="content-disposition"): p.get_payload(decode=True)
        for p in parts[1:]
    }
    for entry, item in zip(manifest["items"], items, strict=True):
        if item.image is None:
            assert entry["image_part"] is None and entry["variant"] == "none"
        else:
            assert images[entry["image_part"]] == item.image
            assert hashlib.sha256(item.image).hexdigest() == entry["image_sha256"]
    payload = sum(i.nbytes for i in items)
    # framing and manifest cost a few hundred bytes per item, whatever the image size
    assert len(body) - payload < 800 * len(items)


def _window(tmp_path, store: Store, times: dict[str, float], **upload) -> BatchWindow:
    """A batch window on `store` whose clocks read `times` ("mono", "wall")."""
    path = tmp_path / "station.toml"
    urls = {n: f"http://127.0.0.1:9/{n}" for n in NAMES}
    path.write_text(upload_toml("st-linger", {n: "t" for n in NAMES}, urls, **upload))
    settings = load_config(path).upload
    endpoints = {ep.name: SyncEndpoint(ep, "t") for ep in settings.endpoints}
    return BatchWindow(
        store,
        settings,
        "st-linger",
        endpoints,
        ("received", "analysed"),
        lambda conn, capture_id, reason: None,
        monotonic=lambda: times["mono"],
        clock=lambda: times["wall"],
    )


def test_a_trickle_lingers_into_one_batch_while_the_first_and_a_backlog_go_at_once(tmp_path):
    born = 1_780_000_000.0
    times = {"mono": 100.0, "wall": born + 0.1}
    # a capture is ready for upload from its analysis (the store's clock), not its arrival
    store = Store(tmp_path / "b.sqlite3", clock=lambda: times["wall"])
    received = add_captures(store, 1, kinds=["received"])  # arrived long ago, analysed now
    times["wall"] = born + 100.1
    analyse(store, received[0], "animal")
    window = _window(tmp_path, store, times, batch_max_items=8, linger_s=1.0)
    first = window.prepare("aws", None, frozenset())
    assert first is not None and len(first.items) == 1  # after a quiet spell: at once
    # two more trickle in a moment later: they wait for the linger, and say how long
    times.update(mono=100.1, wall=born + 100.2)
    add_captures(store, 2, start=1)
    times.update(mono=100.2, wall=born + 100.3)
    window.forget()
    assert window.prepare("aws", None, frozenset(first.ids)) is None
    assert window.lingering == pytest.approx(0.8)
    # once linger_s has passed since the last batch they go, together
    times.update(mono=101.0, wall=born + 100.4)
    window.forget()
    together = window.prepare("aws", None, frozenset(first.ids))
    assert together is not None and len(together.items) == 2 and window.lingering is None
    # a backlog (captures older than linger_s) and a full batch never wait
    add_captures(store, 3, start=3)
    times.update(mono=101.1, wall=born + 110)
    window.forget()
    done = frozenset(first.ids) | frozenset(together.ids)
    backlog = window.prepare("aws", None, done)
    assert backlog is not None and len(backlog.items) == 3
    add_captures(store, 8, start=6)
    times.update(mono=101.2, wall=born + 110.1)
    window.forget()
    full = window.prepare("aws", None, done | frozenset(backlog.ids))
    assert full is not None and len(full.items) == 8


def test_linger_zero_sends_every_capture_at_once(tmp_path):
    store = Store(tmp_path / "b.sqlite3")
    times = {"mono": 100.0, "wall": 1_780_000_000.1}
    window = _window(tmp_path, store, times, linger_s=0)
    add_captures(store, 1)
    first = window.prepare("aws", None, frozenset())
    assert first is not None
    add_captures(store, 1, start=1)
    times.update(mono=100.01, wall=1_780_000_001.1)
    window.forget()
    assert window.prepare("aws", None, frozenset(first.ids)) is not None
