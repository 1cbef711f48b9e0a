"""Helpers for the upload tests: a station with an uploader, captures, checks against the clouds."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from agent.capture import Capture
from agent.inference.package import Detection
from agent.metrics import Metrics
from agent.store import Store
from agent.upload.worker import Uploader
from tests.helpers import jpeg
from tests.linkproxy import LinkProxy

NAMES = ("aws", "azure", "gcp")
WEIGHTS = {"aws": 40, "azure": 30, "gcp": 30}


@dataclass
class Cloud:
    name: str
    data_dir: Path
    service: Any
    proxy: LinkProxy
    admin: str = ""
    env: dict[str, str] = field(default_factory=dict)

    @property
    def direct_url(self) -> str:
        return self.service.url

    def stop(self) -> None:
        self.service.stop()

    def start(self, env: dict[str, str] | None = None) -> None:
        """(Re)start on the same data dir; the proxy follows it to its new port."""
        if self.service is not None and self.service.process.poll() is None:
            self.service.stop()
        self.env = env or {}
        from cloud.process import CloudService

        self.service = CloudService.start(self.data_dir, env=self.env)
        self.proxy.retarget(self.service.port)

    def running(self) -> bool:
        return self.service.process.poll() is None

    def lookup(self, token: str, ids: list[str]) -> dict[str, dict[str, str]]:
        held: dict[str, dict[str, str]] = {}
        for i in range(0, len(ids), 1000):
            for _ in range(20):  # a rate-limited test cloud answers 429 to the test too
                r = requests.post(
                    self.direct_url + "/v1/captures/lookup",
                    json={"capture_ids": ids[i : i + 1000]},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=30,
                )
                if r.status_code != 429:
                    break
                time.sleep(float(r.headers.get("Retry-After", "1")))
            r.raise_for_status()
            held.update(r.json()["held"])
        return held

    def records(self, station_id: str) -> list[dict[str, Any]]:
        r = requests.get(
            self.direct_url + "/v1/captures",
            params={"station_id": station_id, "limit": 10000},
            headers={"Authorization": f"Bearer {self.admin}"},
            timeout=30,
        )
        r.raise_for_status()
        return r.json()["captures"]


@dataclass
class Station:
    station_id: str
    store: Store
    metrics: Metrics
    uploader: Uploader
    tokens: dict[str, str]
    config_text: str
    uploader_config: Any
    thread: threading.Thread | None = None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.stop_event = threading.Event()
        self.thread = threading.Thread(
            target=self.uploader.run, args=(self.stop_event,), daemon=True
        )
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self.uploader.doorbell.ring()  # as the supervisor does: no wait for its next look
        if self.thread is not None:
            self.thread.join(30)
            assert not self.thread.is_alive(), "uploader did not stop"

    def ids(self) -> list[str]:
        with self.store.read() as conn:
            return [r[0] for r in conn.execute("SELECT id FROM captures ORDER BY id")]

    def states(self) -> dict[str, int]:
        with self.store.read() as conn:
            return dict(
                conn.execute("SELECT state, count(*) FROM captures GROUP BY state").fetchall()
            )

    def pending_or_doubt(self) -> int:
        with self.store.read() as conn:
            pending = conn.execute(
                "SELECT count(*) FROM captures WHERE state IN ('received', 'analysed')"
            ).fetchone()[0]
            doubt = conn.execute(
                "SELECT count(*) FROM upload_deliveries WHERE doubt_variant IS NOT NULL"
            ).fetchone()[0]
        return pending + doubt

    def held(self) -> dict[str, dict[str, str]]:
        """endpoint -> capture id -> variant, as the station records it."""
        out: dict[str, dict[str, str]] = {n: {} for n in NAMES}
        with self.store.read() as conn:
            for r in conn.execute(
                "SELECT endpoint, capture_id, held_variant FROM upload_deliveries "
                "WHERE held_variant IS NOT NULL"
            ):
                out[r[0]][r[1]] = r[2]
        return out


def upload_toml(
    station_id: str, tokens: dict[str, str], urls: dict[str, str], **upload: Any
) -> str:
    endpoint = {"connect_timeout_s": 1.0, "read_timeout_s": 2.0}
    for key in [k for k in upload if k.startswith("endpoint_")]:
        endpoint[key.removeprefix("endpoint_")] = upload.pop(key)
    settings = {
        "batch_max_items": 8,
        "retry_initial_s": 0.05,
        "retry_max_s": 1.0,
        "breaker_cooldown_s": 0.3,
        "breaker_cooldown_max_s": 1.0,
        "idle_poll_s": 0.1,
        "heartbeat_interval_s": 2.0,
        "empty_policy": "full",
        **upload,
    }
    lines = [f'[station]\nid = "{station_id}"\n', "[inference]\nenabled = false\n", "[upload]"]
    for k, v in settings.items():
        if isinstance(v, bool):
            v = "true" if v else "false"
        elif isinstance(v, str):
            v = f'"{v}"'
        elif isinstance(v, list):
            v = "[" + ", ".join(f'"{x}"' for x in v) + "]"
        lines.append(f"{k} = {v}")
    for name in NAMES:
        lines += [
            "\n[[upload.endpoints]]",
            f'name = "{name}"',
            f'url = "{urls[name]}"',
            f"weight = {WEIGHTS[name]}",
            f'token = "{tokens[name]}"',
            *(f"{k} = {v}" for k, v in endpoint.items()),
        ]
    return "\n".join(lines) + "\n"


def station_with_primary(primary: str | None, prefix: str) -> str:
    """A station id whose rendezvous primary is `primary` (any when None)."""
    from agent.upload.routing import rendezvous_rank

    for n in range(1000):
        sid = f"{prefix}-{n}"
        if primary is None or rendezvous_rank(sid, list(WEIGHTS.items()))[0] == primary:
            return sid
    raise AssertionError("no station id found")


def add_captures(
    store: Store,
    n: int,
    *,
    unit: str = "unit-1",
    kinds: list[str] | None = None,
    start: int = 0,
    size: tuple[int, int] = (64, 48),
) -> list[str]:
    """Store `n` captures; `kinds` per capture: received, person, animal, vehicle, empty."""
    ids = []
    for i in range(start, start + n):
        kind = kinds[(i - start) % len(kinds)] if kinds else "received"
        cap = Capture(
            unit_id=unit,
            unit_ref=str(i),
            path="serial",
            jpeg=jpeg(hash((unit, i)) & 0xFFFFFF, size),
            received_at=1_780_000_000.0 + i,
            unit_time=1_780_000_000 + i,
            unit_time_kind="epoch_s",
            trigger="pir",
            meta={"n": i, "kind": kind},
        )
        store.add_capture(cap)
        analyse(store, cap.id, kind)
        ids.append(cap.id)
    return ids


def analyse(
    store: Store,
    capture_id: str,
    kind: str,
    *,
    upload_variant: str = "original",
    blurred: bytes | None = None,
) -> None:
    """What the inference worker does: detections, empty flag, state analysed."""
    if kind == "received":
        return
    found = []
    if kind != "empty":
        found.append(Detection(kind, kind, 0.9, (0.1, 0.2, 0.3, 0.4), "md", "5"))
    store.save_analysis(
        capture_id,
        found,
        empty=not found,
        upload_variant=upload_variant,
        summary={"models": ["md@5"]},
        blurred=blurred,
    )


def assert_consistent(station: Station, clouds: dict[str, Cloud]) -> dict[str, set[str]]:
    """The issue's promises: all in ≥1 cloud, ≤1 copy per cloud, second copies only from
    batches in doubt, none lost, and the station's records agree with the clouds'."""
    ids = station.ids()
    states = station.states()
    assert states == {"uploaded": len(ids)}, states
    held_station = station.held()
    held_cloud: dict[str, set[str]] = {}
    for name, cloud in clouds.items():
        held = cloud.lookup(station.tokens[name], ids)
        held_cloud[name] = set(held)
        records = cloud.records(station.station_id)
        assert len(records) == len({r["capture_id"] for r in records}), f"{name} holds a copy twice"
        assert {r["capture_id"] for r in records} == set(held)
        assert set(held_station[name]) == set(held), f"station and {name} disagree"
        for cid, h in held.items():
            assert h["variant"] == held_station[name][cid]
    for cid in ids:
        assert any(cid in held_cloud[n] for n in NAMES), f"{cid} is in no cloud"
    with station.store.read() as conn:
        doubt = conn.execute(
            "SELECT count(*) FROM upload_deliveries WHERE doubt_variant IS NOT NULL"
        ).fetchone()[0]
        assert doubt == 0
        # a capture in two clouds: at most one of the copies came from a normal acknowledgement
        bad = conn.execute(
            """SELECT capture_id FROM upload_deliveries WHERE held_variant IS NOT NULL
               GROUP BY capture_id HAVING count(*) > 1 AND sum(via_lookup = 0) > 1"""
        ).fetchall()
        assert not bad, [r[0] for r in bad]
    return held_cloud
