"""Bad inputs on the station's sync path: each refused with its reason, reported, and the active
model still running. One real cloud for the module; each test follows its own model name."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import random
import tarfile
import time
from pathlib import Path

import pytest
import requests

from agent.capture import Capture
from agent.config import parse_config
from agent.inference.worker import InferenceWorker
from agent.metrics import Metrics
from agent.modelsync import artifact as art
from agent.modelsync.worker import ModelSync
from agent.store import BUFFER_FILE, Store
from agent.upload import ledger
from agent.upload.budget import local_day
from cloud import rollout as ro
from cloud.auth import issue_token
from cloud.config import load_config
from cloud.models import publish_package
from cloud.process import CloudService
from cloud.service import Service
from tests.helpers import tmpfs

from . import fleet
from .conftest import make_version
from .flaky import FlakyProxy

_names = itertools.count(1)


@pytest.fixture(scope="module")
def cloud_env(tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    _pub, public = art.generate_key(root / "k")
    _pub2, other = art.generate_key(root / "other")
    with CloudService.start(root / "cloud") as cloud:
        service = Service.open(load_config(None, data_dir=str(cloud.data_dir)))
        yield cloud, service, root / "k", public, other
        service.close()


class Rig:
    """One station's model sync, driven poll by poll: a buffer, an inference worker, the worker."""

    def __init__(
        self, tmp: Path, env, *, keys=None, extra: str = "", upload_extra: str = "", url=None
    ):
        cloud, self.service, self.key, public, _other = env
        self.cloud = cloud
        self.name = f"t{next(_names)}-det"
        self.tmp = tmp
        sid = f"st-{self.name}"
        self.service.db.add_station(sid)
        token = issue_token(self.service.db, sid)
        self.config = parse_config(
            fleet.station_toml(tmp / sid, sid, cloud, token, keys or [public], extra,
                               model=self.name, url=url, upload_extra=upload_extra),
            "<rig>",
        )  # fmt: skip
        self.store = Store(self.config.data_dir / BUFFER_FILE)
        self.inference = InferenceWorker(self.store, self.config, Metrics())
        self.sync = ModelSync(self.store, self.config, inference=self.inference)
        self.sid = sid

    def publish(self, version: str, **kw) -> dict:
        folder = make_version(self.tmp / "pkgs", version, name=self.name, **kw)
        return publish_package(
            self.service.db, self.service.store, folder, self.key, max_bytes=1 << 30
        )

    def roll(self, version: str) -> None:
        ro.create(
            self.service.db, self.name, version, ro.RolloutSpec(waves=(ro.Wave((self.sid,)),))
        )

    def running(self) -> str | None:
        p = self.inference.pipeline
        return p.detector.card.version if p else None

    def with_v1(self) -> Rig:
        self.publish("1.0.0")
        self.roll("1.0.0")
        self.sync.poll()
        assert self.running() == "1.0.0", self.sync.job
        return self

    def fails(self, version: str) -> str:
        """Poll; the job for `version` failed, v1 still runs; return the reason."""
        self.sync.poll()
        job = self.sync.job
        assert job is not None and job["version"] == version and job["state"] == "failed", job
        assert self.running() == "1.0.0"
        assert self.sync.versions.pointer().version == "1.0.0"
        assert self.sync.send_report()
        state = {s["station_id"]: s for s in ro.status(self.service.db, self.name)["stations"]}
        assert state[self.sid]["state"] == "failed"
        assert state[self.sid]["reason"] == job["reason"]
        return job["reason"]

    def model_bytes_today(self) -> int:
        with self.store.read() as conn:
            return (
                ledger.traffic_on(conn, local_day(self.sync.clock()))
                .get("modelsync", {})
                .get("bytes", 0)
            )

    def raw_release(self, version: str, tar_bytes: bytes, card: dict) -> None:
        """Sign and record bytes as a release, skipping the publish checks (a rogue or buggy cloud)."""
        sha = hashlib.sha256(tar_bytes).hexdigest()
        sig = art.sign(
            art.load_private_key(self.key), art.signed_message(self.name, version, sha, card)
        )
        key = f"models/{self.name}/{version}/raw"
        self.service.store.put(key, tar_bytes)
        ro.record_release(self.service.db, self.name, version, sha, len(tar_bytes), key, card,
                          sig.key_id, sig.value)  # fmt: skip

    def set_release(self, version: str, column: str, value: str) -> None:
        with self.service.db.transaction() as cur:
            cur.execute(f"UPDATE model_releases SET {column} = ? WHERE name = ? AND version = ?",
                        (value, self.name, version))  # fmt: skip


def test_tampered_artifact_is_refused_then_never_retried(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    release = rig.publish("2.0.0")
    obj = rig.service.db.get_model(rig.name, "2.0.0")["object_key"]
    data = bytearray(rig.service.store.get(obj))
    data[-100] ^= 0xFF
    rig.service.store.put(obj, bytes(data))
    rig.roll("2.0.0")
    assert "tampered" in rig.fails("2.0.0")
    assert rig.sync.versions.refused()["2.0.0"][0] == "bad"
    spent = rig.model_bytes_today()
    assert spent >= release["size"]
    again = ModelSync(rig.store, rig.config, inference=rig.inference)  # e.g. after a restart
    again.poll()
    assert again.job["reason"].startswith("already marked bad: verify: sha256")
    assert rig.model_bytes_today() == spent  # not downloaded again


@pytest.mark.parametrize(
    ("problem", "reason"),
    [("wrong", "bad signature"), ("missing", "not signed"), ("unknown", "unknown key")],
)
def test_signature_problems_are_refused(tmp_path, cloud_env, problem, reason):
    keys = [cloud_env[4], cloud_env[3]] if problem != "unknown" else None
    rig = Rig(tmp_path, cloud_env, keys=keys).with_v1()
    rig.publish("2.0.0")
    if problem == "wrong":
        rig.set_release("2.0.0", "signature", _signature_of(rig, "1.0.0"))
    elif problem == "missing":
        rig.set_release("2.0.0", "signature", "")
    else:
        _with(rig, trusted_keys=[cloud_env[4]])
    rig.roll("2.0.0")
    assert reason in rig.fails("2.0.0")


def _signature_of(rig: Rig, version: str) -> str:
    return ro.get_release(rig.service.db, rig.name, version)["signature"]


def test_a_manifest_naming_an_unpublished_version_is_reported(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    with rig.service.db.transaction() as cur:  # the artifact and its record vanish
        cur.execute("DELETE FROM models WHERE name = ? AND version = ?", (rig.name, "2.0.0"))
    assert "2.0.0 is not published" in rig.fails("2.0.0")


def test_a_dropped_link_resumes_by_range(tmp_path, cloud_env):
    proxy = FlakyProxy(cloud_env[0].port)
    try:
        rig = Rig(tmp_path, cloud_env, url=proxy.url).with_v1()
        folder = make_version(tmp_path / "big", "2.0.0", name=rig.name)
        (folder / "notes.bin").write_bytes(random.Random("x").randbytes(256_000))  # 256 KB
        release = publish_package(
            rig.service.db, rig.service.store, folder, rig.key, max_bytes=1 << 30
        )
        rig.roll("2.0.0")
        before = rig.model_bytes_today()
        proxy.mode, proxy.cut_after, proxy.cuts = "cut", 100_000, 2
        rig.sync.poll()
        assert rig.running() == "2.0.0", rig.sync.job
        assert proxy.ranges[:2] == ["bytes=100000-", "bytes=200000-"]
        assert rig.model_bytes_today() - before == release["size"]  # nothing fetched twice
    finally:
        proxy.close()


def test_a_server_that_ignores_range_restarts_the_download(tmp_path, cloud_env):
    proxy = FlakyProxy(cloud_env[0].port)
    try:
        rig = Rig(tmp_path, cloud_env, url=proxy.url).with_v1()
        folder = make_version(tmp_path / "big", "2.0.0", name=rig.name)
        (folder / "notes.bin").write_bytes(random.Random("y").randbytes(256_000))
        release = publish_package(
            rig.service.db, rig.service.store, folder, rig.key, max_bytes=1 << 30
        )
        rig.roll("2.0.0")
        part = rig.sync.versions.staging / f"{rig.name}-2.0.0.part"
        part.write_bytes(b"\0" * 100_000)  # left by a dropped link; the path now drops Range
        before = rig.model_bytes_today()
        proxy.mode = "no_range"
        rig.sync.poll()
        assert proxy.ranges == ["bytes=100000-"]  # asked to resume, got the whole object
        assert rig.running() == "2.0.0", rig.sync.job
        assert rig.model_bytes_today() - before == release["size"]
    finally:
        proxy.close()


def _with(rig: Rig, **changes: object) -> None:
    rig.sync.settings = dataclasses.replace(rig.sync.settings, **changes)


def test_a_package_over_the_size_cap_is_not_downloaded(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    _with(rig, max_package_bytes=2048)
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    before = rig.model_bytes_today()
    assert "over 2048" in rig.fails("2.0.0")
    assert rig.model_bytes_today() == before


def _evil_tar(folder: Path, evil: tarfile.TarInfo | None = None) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f.name)
        if evil is not None:
            tar.addfile(evil, io.BytesIO(b"x" * evil.size))
    return out.getvalue()


def test_a_signed_tar_with_dotdot_paths_is_refused_and_writes_nothing_outside(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    folder = make_version(tmp_path / "evil", "2.0.0", name=rig.name)
    evil = tarfile.TarInfo("../../../../escaped.txt")
    evil.size = 1
    rig.raw_release(
        "2.0.0", _evil_tar(folder, evil), json.loads((folder / "model.json").read_text())
    )
    rig.roll("2.0.0")
    assert "leaves the package" in rig.fails("2.0.0")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_a_signed_card_that_contradicts_its_model_is_refused(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    folder = make_version(tmp_path / "bad", "2.0.0", name=rig.name)
    card = json.loads((folder / "model.json").read_text())
    card["input"]["width"] = 96
    (folder / "model.json").write_text(json.dumps(card))
    rig.raw_release("2.0.0", _evil_tar(folder), card)
    rig.roll("2.0.0")
    assert "card contradicts the model" in rig.fails("2.0.0")


def test_goldens_that_do_not_reproduce_are_refused(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0", break_golden=True)
    rig.roll("2.0.0")
    assert "self-test 0 failed" in rig.fails("2.0.0")


def test_a_version_that_disagrees_with_the_active_one_on_live_captures_is_refused(
    tmp_path, cloud_env
):
    """The shadow run: the blob detector passes its own self-test but calls every animal scene
    the active model finds empty; the card asks for 80% agreement, so it never goes live."""
    rig = Rig(tmp_path, cloud_env).with_v1()
    for n, seed in enumerate(fleet.ANIMAL_SEEDS[:4]):
        rig.store.add_capture(Capture("cam-1", str(n), "http", fleet.scene(seed), time.time()))
    rig.publish("2.0.0", base="blob-yolo-cn", card_changes={"min_agreement": 0.8})
    rig.roll("2.0.0")
    reason = rig.fails("2.0.0")
    assert "agrees with the active model on 0% of 4 captures, below the 80% required" in reason
    assert "2.0.0" in rig.sync.versions.refused()
    assert rig.sync.status()["shadow"]["disagreements"]  # which captures, for the technician


def test_budget_windows_and_power_make_it_wait_not_fail(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    used = rig.model_bytes_today()
    rig.sync.daily_budget = used + 100
    rig.sync.poll()
    assert rig.sync.job["state"] == "waiting" and "daily data budget" in rig.sync.job["reason"]
    rig.sync.daily_budget = 0
    rig.sync.power_check = lambda what: what != "download"
    rig.sync.poll()
    assert rig.sync.job["reason"] == "power state does not allow downloads"
    rig.sync.power_check = lambda what: what != "activate"
    rig.sync.poll()
    assert rig.sync.job["reason"] == "power state does not allow activation"
    assert rig.running() == "1.0.0"
    rig.sync.power_check = None
    rig.sync.step()
    assert rig.running() == "2.0.0"
    assert rig.sync.versions.pointer().previous == ["1.0.0"]


def test_a_torn_partial_download_from_before_a_restart_is_fetched_again(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    part = rig.sync.versions.staging / f"{rig.name}-2.0.0.part"
    part.write_bytes(b"\0" * 1000)  # a power cut left zeros where bytes were not yet on disk
    rig.sync.poll()
    assert rig.sync.job["state"] == "failed" and "fetching it whole again" in rig.sync.job["reason"]
    assert "2.0.0" not in rig.sync.versions.refused()  # not marked bad: it was our own disk
    rig.sync.poll()
    assert rig.running() == "2.0.0", rig.sync.job


def test_the_report_rides_in_the_heartbeat_and_a_failed_report_changes_nothing(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env).with_v1()  # poll() activates; no report has gone yet
    live = rig.sync.source
    rig.sync.source = dataclasses.replace(live, url=f"http://127.0.0.1:{fleet.free_port()}")
    assert rig.sync.send_report() is False  # no link
    rig.sync.step()  # a tick without a link: the model stays, the report waits
    assert rig.running() == "1.0.0" and rig.sync.report_pending
    state = {s["station_id"]: s["state"] for s in ro.status(rig.service.db, rig.name)["stations"]}
    assert state[rig.sid] == "pending"
    beat = {"station_id": rig.sid, "time": 1.0, "modelsync": rig.sync.report()}
    r = requests.post(f"{live.url}/v1/heartbeat", json=beat, headers=live.headers, timeout=10)
    assert r.status_code == 200, r.text
    state = {s["station_id"]: s["state"] for s in ro.status(rig.service.db, rig.name)["stations"]}
    assert state[rig.sid] == "probation"  # it runs 1.0.0; active once probation passed


def test_captures_wait_for_the_first_version_instead_of_passing_unanalysed(tmp_path, cloud_env):
    rig = Rig(tmp_path, cloud_env)
    added = rig.store.add_capture(
        Capture("cam-1", "1", "http", fleet.scene(fleet.ANIMAL_SEEDS[0]), time.time())
    )
    assert rig.inference.run_once() == 0
    assert rig.store.get_capture(added.capture_id)["state"] == "received"
    rig.with_v1()
    assert rig.inference.run_once() == 1
    assert rig.store.get_capture(added.capture_id)["state"] == "analysed"


def test_a_full_disk_during_download_is_reported_and_cleaned_up(tmp_path, cloud_env):
    with tmpfs(tmp_path / "disk", "3m") as disk:
        rig = Rig(disk, cloud_env).with_v1()
        folder = make_version(tmp_path / "big", "2.0.0", name=rig.name)
        (folder / "notes.bin").write_bytes(random.Random("full").randbytes(4 << 20))
        publish_package(rig.service.db, rig.service.store, folder, rig.key, max_bytes=1 << 30)
        rig.roll("2.0.0")
        assert rig.fails("2.0.0") == "download: disk full"
        assert not list(rig.sync.versions.staging.iterdir())  # the partial file is gone
        assert "2.0.0" not in rig.sync.versions.refused()  # retried when there is room
        rig.store.close()


@pytest.mark.parametrize(
    ("record", "reason"),
    [
        ((False, 0.0, False), "probation: 5 of 5 captures failed in inference"),
        ((True, 9.0, True), "probation: 9000 ms per capture, over 2000 ms"),
    ],
)
def test_probation_rolls_back_on_inference_errors_and_latency(tmp_path, cloud_env, record, reason):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    rig.sync.poll()
    assert rig.running() == "2.0.0" and rig.sync.versions.pointer().probation
    for _ in range(5):  # what the inference worker records per capture it ran on 2.0.0
        rig.inference.recent.append((f"{rig.name}@2.0.0", *record))
    rig.sync.check_probation()
    assert rig.running() == "1.0.0"
    assert rig.sync.versions.refused()["2.0.0"] == ("rolled_back", reason)


def test_an_operator_rollback_switches_back_to_the_kept_copy_without_a_download(
    tmp_path, cloud_env
):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.publish("2.0.0")
    rig.roll("2.0.0")
    rig.sync.poll()
    assert rig.running() == "2.0.0" and rig.sync.send_report()
    spent = rig.model_bytes_today()
    ro.rollback(rig.service.db, rig.name)
    rig.sync.poll()
    assert rig.running() == "1.0.0"
    assert rig.model_bytes_today() == spent  # the previous version was still on disk
    assert rig.sync.send_report()
    state = {s["station_id"]: s for s in ro.status(rig.service.db, rig.name)["stations"]}
    assert state[rig.sid]["state"] == "rolled_back"


def test_the_end_of_probation_is_reported_and_the_cloud_counts_the_station_active(
    tmp_path, cloud_env
):
    rig = Rig(tmp_path, cloud_env).with_v1()
    rig.sync.step()  # reports the activation
    doc = ro.status(rig.service.db, rig.name)
    assert doc["stations"][0]["state"] == "probation" and doc["state"] == "running"
    probation_s = rig.config.modelsync.probation_s
    rig.sync.clock = lambda: time.time() + probation_s + 1
    rig.sync.step()  # probation is over: the station says so at once
    assert not rig.sync.versions.pointer().probation and not rig.sync.report_pending
    doc = ro.status(rig.service.db, rig.name)
    assert doc["stations"][0]["state"] == "active" and doc["state"] == "finished"
