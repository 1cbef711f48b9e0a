"""The model sync worker: follow the cloud's rollout for one model, safely.

Each poll: fetch the manifest (ETag); when it names a version this station neither runs nor has
refused, download it into staging (Range resume, deadline, bounded attempts, the uploader's daily
budget and windows), verify it (sha256, pinned-key signature, safe extraction, signed card),
self-test it (goldens, latency), shadow-run it on recent captures against the active model, then
switch the pointer atomically and tell the inference worker. During probation a version that
errors, slows down or stops finding what the shadow run found is rolled back and never retried.
What happened is reported to the cloud and in the heartbeat; a failed report is never a reason
to roll back, it is simply sent again later.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import requests

from agent.config import ComponentConfigError
from agent.inference.package import PackageError
from agent.inference.pipeline import Pipeline
from agent.modelsync.download import Progress, Source, Unchanged, download, fetch_manifest
from agent.modelsync.settings import ModelSyncSection
from agent.modelsync.verify import (
    Release,
    ShadowResult,
    VerifyError,
    open_package,
    self_test,
    shadow_run,
    verify_package,
)
from agent.modelsync.versions import ModelVersions, Pointer, PointerError
from agent.store import Store
from agent.upload import ledger
from agent.upload.budget import UploadWindows, local_day

log = logging.getLogger(__name__)

LEDGER_NAME = "modelsync"  # model bytes go in the upload ledger under this name
PowerCheck = Callable[[str], bool]  # ("download" | "activate") -> allowed now


class ModelSyncConfigError(ComponentConfigError):
    """[modelsync] cannot work with the rest of the config (no endpoint to fetch from)."""


def source_from(config: Any) -> Source:
    """The sync endpoint model sync fetches from, with its token."""
    s: ModelSyncSection = config.modelsync
    endpoints = list(config.upload.endpoints)
    if not endpoints:
        raise ModelSyncConfigError("[modelsync] needs an [[upload.endpoints]] entry to fetch from")
    chosen = next((e for e in endpoints if e.name == s.endpoint), None) if s.endpoint else None
    if s.endpoint and chosen is None:
        raise ModelSyncConfigError(f"modelsync.endpoint: no upload endpoint named {s.endpoint!r}")
    e = chosen or endpoints[0]
    token = e.token
    if e.token_file:
        token = Path(e.token_file).read_text(encoding="utf-8").strip()
    return Source(e.url.rstrip("/"), token, e.connect_timeout_s, e.read_timeout_s)


class ModelSync:
    """Supervised worker: `run(stop)` polls, installs, activates and watches one model."""

    name = "modelsync"

    def __init__(
        self,
        store: Store,
        config: Any,
        *,
        inference: Any = None,
        clock: Callable[[], float] = time.time,
        source: Source | None = None,
    ) -> None:
        self.store = store
        self.config = config
        self.settings: ModelSyncSection = config.modelsync
        self.versions = ModelVersions(Path(config.data_dir), self.settings.model, store)
        self.inference = inference
        self.clock = clock
        self.source = source or source_from(config)
        self.windows = UploadWindows(config.upload.windows)
        self.daily_budget = int(config.upload.daily_budget_bytes)
        self.power_check: PowerCheck | None = None
        self.session = requests.Session()
        self.job: dict[str, Any] | None = None
        self.last_shadow: dict[str, Any] | None = None
        self._etag: str | None = None
        self._target: Release | None = None
        self._next_poll = 0.0
        self._report_due = True
        self._lock = threading.Lock()
        self._flush_bytes: Callable[[], None] = lambda: None
        self._stop = threading.Event()
        self._pending: tuple[Release, Path, ShadowResult] | None = None
        self.stages: dict[str, tuple[float, float]] = {}  # last install: wall and CPU seconds
        if inference is not None:
            inference.detector_source = self.versions.active_folder

    # --- gates ---------------------------------------------------------------------------------

    def may_download(self) -> bool:
        """Config flag now; the power manager's check once it is wired in (`power_check`)."""
        return self.settings.download_when_power and (
            self.power_check is None or self.power_check("download")
        )

    def may_activate(self) -> bool:
        return self.settings.activate_when_power and (
            self.power_check is None or self.power_check("activate")
        )

    def _budget_wait(self, needed: int) -> str | None:
        """Why the link may not carry `needed` bytes now (windows, daily budget), or None."""
        now = self.clock()
        if not self.windows.is_open(now):
            return "outside the upload windows"
        if self.daily_budget:
            with self.store.read() as conn:
                sent = sum(t["bytes"] for t in ledger.traffic_on(conn, local_day(now)).values())
            if sent + needed > self.daily_budget:
                return (
                    f"daily data budget: {sent} of {self.daily_budget} bytes used, {needed} needed"
                )
        return None

    def _count_bytes(self, n: int) -> None:
        with self.store.transaction() as conn:
            ledger.add_traffic(conn, LEDGER_NAME, local_day(self.clock()), n, requests=0)

    # --- the loop ------------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            self.step()
            stop.wait(min(1.0, self.settings.poll_interval_s))

    def step(self) -> None:
        """One tick: follow the pointer, watch probation, poll when due, report when changed."""
        self.follow_pointer()
        self.check_probation()
        if self._pending is not None and self.may_activate():
            self._activate_installed(*self._pending)
        if time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.settings.poll_interval_s
            self.poll()
        if self._report_due:
            self.send_report()

    def poll(self) -> None:
        """Fetch the manifest; install its version of our model when it is new to us."""
        try:
            body, etag = fetch_manifest(self.session, self.source, self._etag)
        except Unchanged:
            body, etag = None, self._etag
        except VerifyError as exc:
            log.info("model sync: %s", exc)  # no link: nothing to do until it returns
            return
        if body is not None:
            self._etag = etag
            self._target = None
            for entry in body.get("targets") or []:
                if isinstance(entry, dict) and entry.get("name") == self.settings.model:
                    try:
                        self._target = Release.from_json(entry)
                    except VerifyError as exc:  # e.g. a version that was never published
                        self._etag = None  # ask again next poll
                        if self.job is None or self.job.get("reason") != str(exc):
                            log.error("model sync: %s", exc)
                            self.job = {"version": str(entry.get("version")), "state": "failed",
                                        "reason": str(exc), "at": round(self.clock(), 3)}  # fmt: skip
                            self._report_due = True
        release = self._target
        if release is None:
            return
        current = self.versions.pointer()
        if current is not None and current.version == release.version:
            return
        if self._pending is not None and self._pending[0].version == release.version:
            return  # checked, waiting for a power state that allows activation
        refused = self.versions.refused()
        if release.version in refused:
            state, reason = refused[release.version]
            if not self.job or self.job.get("version") != release.version:
                log.warning(
                    "model sync: %s is marked %s (%s); not retried", release.id, state, reason
                )
                self._set_job(release, "failed", f"already marked bad: {reason}")
            return
        if self._kept_locally(release):
            return
        self.install(release)

    def _kept_locally(self, release: Release) -> bool:
        """A version still on disk (one of the previous two) whose card is the signed one is
        switched back to without a download (an operator's rollback, offline-fast)."""
        folder = self.versions.versions / release.version
        try:
            kept = json.loads((folder / "model.json").read_bytes()) == release.card
        except (OSError, ValueError):
            return False
        if not kept or not self.may_activate():
            return False
        try:
            self.activate(release.version, how="sync")
        except (PointerError, PackageError) as exc:
            log.warning("model sync: kept copy of %s unusable (%s); fetching it", release.id, exc)
            return False
        self._set_job(release, "active", None)
        return True

    # --- install: download, verify, self-test, shadow, activate ---------------------------------

    def install(self, release: Release, progress: Progress | None = None) -> bool:
        """Take `release` through every stage; True when it became active."""
        s = self.settings
        part = self.versions.staging / f"{release.name}-{release.version}.part"
        try:
            if not self.may_download():
                self._set_job(release, "waiting", "power state does not allow downloads")
                return False
            have = part.stat().st_size if part.exists() else 0
            why = self._budget_wait(max(0, release.size - have))
            if why:
                self._set_job(release, "waiting", why)
                return False
            self._set_job(release, "downloading", None)
            self.stages = {}
            had_part = part.exists()  # a resume from before a restart may be torn (no fsync)
            counter = self._byte_counter()
            try:
                with self._stage("download"):
                    download(
                        self.session,
                        self.source,
                        release,
                        part,
                        attempts=s.download_attempts,
                        deadline_s=s.download_deadline_s,
                        chunk_bytes=int(s.chunk_bytes),
                        max_bytes=int(s.max_package_bytes),
                        on_bytes=counter,
                        progress=progress or self._progress,
                        cancelled=self._stop.is_set,
                    )
            finally:
                self._flush_bytes()
            self._set_job(release, "verifying", None)
            work = Path(tempfile.mkdtemp(prefix="verify-", dir=self.versions.staging))
            try:
                try:
                    with self._stage("verify"):
                        folder = verify_package(
                            part, release, list(s.trusted_keys), work / "pkg",
                            int(s.max_package_bytes),
                        )  # fmt: skip
                except VerifyError as exc:
                    if exc.code == "sha256" and had_part:
                        part.unlink(missing_ok=True)
                        raise VerifyError(
                            "verify", exc.reason + "; resumed from a part kept over a restart, "
                            "fetching it whole again", retry=True,
                        ) from None  # fmt: skip
                    raise
                with self._stage("selftest"):
                    package, latency_ms = self_test(
                        folder,
                        latency_budget_ms=s.max_latency_ms,
                        deadline_s=s.selftest_deadline_s,
                        threads=self.config.inference.threads,
                        xnnpack=self.config.inference.xnnpack,
                    )
                self._set_job(release, "shadow", None)
                with self._stage("shadow"):
                    shadow = self._shadow(package)
                needed = max(
                    s.min_agreement,
                    release.min_agreement or 0.0,
                    package.card.min_agreement or 0.0,
                )
                agreement = shadow.agreement
                self.last_shadow = {"version": release.version, **shadow.as_json()}
                self.versions.mark(release.version, "installed", None, self.last_shadow)
                if agreement is not None and agreement < needed:
                    raise VerifyError(
                        "shadow",
                        f"agrees with the active model on {agreement:.0%} of "
                        f"{shadow.captures} captures, below the {needed:.0%} required",
                    )
                with self._stage("activate"):
                    installed = self.versions.install(folder, release.version)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            part.unlink(missing_ok=True)
            log.info(
                "model sync: %s checked (%.1f ms/image, shadow agreement %s on %d captures)",
                release.id,
                latency_ms,
                "n/a" if shadow.agreement is None else f"{shadow.agreement:.0%}",
                shadow.captures,
            )
            return self._activate_installed(release, installed, shadow)
        except VerifyError as exc:
            if exc.retry:  # a link or disk fault: the next poll tries again
                self._set_job(release, "failed", str(exc))
            else:
                part.unlink(missing_ok=True)
                self.refuse(release.version, "bad", str(exc))
                self._set_job(release, "failed", str(exc))
            return False

    @contextlib.contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        """Add this stage's wall and CPU seconds (this thread's) to `stages`."""
        wall, cpu = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            w, c = self.stages.get(name, (0.0, 0.0))
            self.stages[name] = (w + time.perf_counter() - wall, c + time.thread_time() - cpu)

    def _progress(self, done: int, total: int) -> None:
        """Bytes so far in the job, for `fieldstation models status --watch`."""
        if self.job is not None:
            self.job["bytes"], self.job["size"] = done, total

    def _byte_counter(self) -> Callable[[int], None]:
        """Count downloaded bytes into the upload ledger, one commit per MiB (and at the end)."""
        pending = [0]

        def count(n: int) -> None:
            pending[0] += n
            if pending[0] >= 8 << 20:
                self._count_bytes(pending[0])
                pending[0] = 0

        def flush() -> None:
            if pending[0]:
                self._count_bytes(pending[0])
                pending[0] = 0

        self._flush_bytes = flush
        return count

    def _activate_installed(self, release: Release, folder: Path, shadow: ShadowResult) -> bool:
        if not self.may_activate():
            self._set_job(release, "waiting", "power state does not allow activation")
            self._pending = (release, folder, shadow)
            return False
        self._pending = None
        try:
            with self._stage("activate"):
                self.activate(release.version, how="sync", expected_nonempty=shadow.nonempty_rate)
        except (PointerError, PackageError) as exc:
            self.refuse(release.version, "bad", f"activation: {exc}")
            self._set_job(release, "failed", f"activation: {exc}")
            return False
        self._set_job(release, "active", None)
        return True

    def _shadow(self, candidate_package: Any) -> ShadowResult:
        s = self.settings
        inf = self.config.inference
        opts: dict[str, Any] = {"max_pixels": inf.max_pixels, "min_side": inf.min_side}
        candidate = Pipeline(candidate_package, None, **opts)
        active = None
        folder = self.versions.active_folder()
        if folder is not None:
            try:
                active = Pipeline(open_package(folder, threads=inf.threads), None, **opts)
            except VerifyError as exc:
                log.warning("model sync: active model unusable for the shadow run: %s", exc)
        return shadow_run(
            candidate,
            active,
            self._recent_captures(s.shadow_captures),
            s.shadow_deadline_s,
            busy=self.inference_busy,
        )

    def inference_busy(self) -> bool:
        """Live captures are waiting for the inference worker."""
        working = self.inference is not None and self.inference.pipeline is not None
        return working and bool(self.store.captures_in_state("received", 1))

    def _recent_captures(self, n: int) -> list[tuple[str, bytes]]:
        """The newest `n` captures whose original image is still in the buffer."""
        if n <= 0:
            return []
        rows = []
        for state in ("received", "analysed", "uploaded"):
            rows += self.store.captures_in_state(state, 5000)
        rows.sort(key=lambda r: (r["received_at"], r["id"]), reverse=True)
        out = []
        for row in rows:
            jpeg = self.store.read_image(row["id"])
            if jpeg is not None:
                out.append((row["id"], jpeg))
                if len(out) >= n:
                    break
        return out

    # --- activation, rollback, probation --------------------------------------------------------

    def activate(
        self, version: str, *, how: str, expected_nonempty: float | None = None
    ) -> Pointer:
        """Point at `version` (durably) and make the inference worker use it between captures."""
        with self._lock:
            old = self.versions.pointer()
            pointer = self.versions.switch(version, how=how, expected_nonempty=expected_nonempty)
            if self.inference is not None:
                try:
                    self.inference.activate(self.versions.versions / version)
                except PackageError:
                    if old is not None:
                        self.versions.write_pointer(old)  # the new one would not load: undo
                    raise
            log.info(
                "model %s@%s active (%s; was %s)",
                self.settings.model,
                version,
                how,
                old.version if old else "none",
            )
            self._report_due = True
            return pointer

    def rollback(self, reason: str) -> str | None:
        """Go back to the previous version and never retry the current one; return the version."""
        current = self.versions.pointer()
        if current is None or not current.previous:
            log.error("model sync: cannot roll back (%s): no previous version", reason)
            return None
        for previous in current.previous:
            try:
                self.activate(previous, how="rollback")
            except (PointerError, PackageError) as exc:
                log.error("model sync: previous version %s unusable: %s", previous, exc)
                continue
            self.refuse(current.version, "rolled_back", reason)
            log.error(
                "model %s@%s rolled back to %s: %s",
                self.settings.model,
                current.version,
                previous,
                reason,
            )
            if self.job and self.job.get("version") == current.version:
                self.job = {**self.job, "state": "rolled_back", "reason": reason}
            return previous
        return None

    def refuse(self, version: str, state: str, reason: str) -> None:
        self.versions.mark(version, state, reason)
        self._report_due = True

    def check_probation(self) -> None:
        """Roll a new version back when it errors, slows down or stops finding things."""
        p = self.versions.pointer()
        if p is None or not p.probation:
            return
        s = self.settings
        if self.clock() - p.activated_at > s.probation_s:
            self.versions.end_probation()
            log.info("model %s@%s passed probation", self.settings.model, p.version)
            self._report_due = True  # the cloud's next wave waits for this report
            return
        if self.inference is None:
            return
        me = f"{self.settings.model}@{p.version}"
        runs = [r for r in list(self.inference.recent) if r[0] == me]
        n = len(runs)
        if n == 0:
            return
        errors = sum(not ok for _, ok, _, _ in runs)
        reason = None
        if n >= 3 and errors / n > s.max_error_rate:
            reason = f"probation: {errors} of {n} captures failed in inference"
        times = [sec * 1000 for _, ok, sec, _ in runs if ok]
        if reason is None and len(times) >= 3 and statistics.median(times) > s.max_latency_ms:
            reason = (
                f"probation: {statistics.median(times):.0f} ms per capture, over "
                f"{s.max_latency_ms:g} ms"
            )
        if reason is None and n >= s.probation_min_captures and p.expected_nonempty:
            rate = sum(found for *_, found in runs) / n
            if rate < p.expected_nonempty * s.collapse_ratio:
                reason = (
                    f"probation: found something in {rate:.0%} of {n} captures, the shadow run "
                    f"expected {p.expected_nonempty:.0%}"
                )
        if reason:
            self.rollback(reason)

    def follow_pointer(self) -> None:
        """A pointer changed by `fieldstation models activate|rollback` takes effect here."""
        p = self.versions.pointer()
        if p is None or self.inference is None:
            return
        pipeline = self.inference.pipeline
        running = pipeline.detector.card.id if pipeline is not None else None
        if running == f"{self.settings.model}@{p.version}":
            return
        folder = self.versions.active_folder()
        if folder is None:
            return
        try:
            with self._lock:
                self.inference.activate(folder)
            self._report_due = True
        except PackageError as exc:
            log.error("model sync: active version %s will not load: %s", p.version, exc)

    # --- reports -------------------------------------------------------------------------------

    def _set_job(self, release: Release | None, state: str, reason: str | None) -> None:
        version = release.version if release else None
        old = self.job or {}
        repeat = (old.get("version"), old.get("state"), old.get("reason")) == (
            version,
            state,
            reason,
        )
        self.job = {
            "version": release.version if release else None,
            "rollout_id": release.rollout_id if release else None,
            "state": state,
            "reason": reason,
            "at": round(self.clock(), 3),
        }
        if state == "failed" and reason and not repeat:  # the reason is logged once
            log.error("model sync: %s: %s", release.id if release else "manifest", reason)
        self._report_due = True

    def report(self) -> dict[str, Any]:
        """What this station tells the cloud about the model (heartbeat `modelsync` block)."""
        p = self.versions.pointer()
        refused = self.versions.refused()
        return {
            "models": {
                self.settings.model: {
                    "active": p.version if p else None,
                    "previous": p.previous if p else [],
                    "probation": bool(p and p.probation),
                    "job": self.job,
                    "bad": {v: r for v, (st, r) in refused.items() if st == "bad"},
                    "rolled_back": {v: r for v, (st, r) in refused.items() if st == "rolled_back"},
                    "shadow": self.last_shadow,
                }
            }
        }

    @property
    def report_pending(self) -> bool:
        """A report is waiting for the link (sent on the next tick that reaches the cloud)."""
        return self._report_due

    def send_report(self) -> bool:
        """POST the report; on failure it is sent again next tick (never a reason to roll back)."""
        self._report_due = False
        try:
            r = self.session.post(
                f"{self.source.url}/v1/models/report",
                json=self.report(),
                headers=self.source.headers,
                timeout=self.source.timeout,
            )
            ok = r.status_code == 200
        except requests.RequestException:
            ok = False
        if not ok:
            self._report_due = True
        return ok

    def status(self) -> dict[str, Any]:
        p = self.versions.pointer()
        return {
            "model": self.settings.model,
            "active": p.version if p else None,
            "previous": p.previous if p else [],
            "probation": bool(p and p.probation),
            "installed": self.versions.installed(),
            "job": self.job,
            "refused": {
                v: {"state": st, "reason": r} for v, (st, r) in self.versions.refused().items()
            },
            "shadow": self.last_shadow,
            "stages": {
                k: {"wall_s": round(w, 4), "cpu_s": round(c, 4)}
                for k, (w, c) in self.stages.items()
            },
        }
