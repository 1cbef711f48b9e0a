"""The inference worker: received captures in, analysed (or failed) captures out.

Models are loaded and self-tested before they are activated; a package that fails keeps the
previous one running (or, at start, leaves captures waiting in `received` until it is fixed).
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agent.config import Config
from agent.doorbell import Doorbell
from agent.health import Alarm
from agent.inference import results
from agent.inference.image import ImageError
from agent.inference.package import Detection, ModelPackage, PackageError, load_package
from agent.inference.pipeline import STAGES, Analysis, Pipeline
from agent.inference.privacy import PersonFinders, blur_people, load_finders, upload_variant
from agent.inference.settings import InferenceSection, models_dir, resolve_package
from agent.metrics import Metrics
from agent.store import Store, StoreError

log = logging.getLogger(__name__)

ResultHook = Callable[[str, list[Detection]], None]


class InferenceMetrics:
    """Counters and histograms of the inference worker, on the station's registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.seconds = Histogram(
            "fieldstation_inference_seconds",
            "Time per capture in each inference stage (decode, preprocess, invoke, postprocess, "
            "privacy, store)",
            ["stage"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
            registry=registry,
        )
        self.captures = Counter(
            "fieldstation_inference_captures",
            "Captures handled by inference, by outcome (analysed, empty, failed, skipped)",
            ["outcome"],
            registry=registry,
        )
        self.detections = Counter(
            "fieldstation_inference_detections",
            "Detections stored, by group (classifier results on crops included)",
            ["group"],
            registry=registry,
        )
        self.model_errors = Counter(
            "fieldstation_inference_model_errors",
            "Model packages refused when loading (bad card, model or self-test)",
            ["role"],
            registry=registry,
        )
        self.model_active = Gauge(
            "fieldstation_inference_model_active",
            "1 for each active model package",
            ["role", "name", "version"],
            registry=registry,
        )


class InferenceWorker:
    """Supervised worker: `run(stop)` drains `received` captures through the active models.

    `on_result(capture_id, detections)` is called after each capture's analysis is committed
    (the demo prints detections as they happen); an exception in it is logged, not raised.
    """

    name = "inference"

    def __init__(
        self,
        store: Store,
        config: Config,
        metrics: Metrics,
        *,
        on_result: ResultHook | None = None,
    ) -> None:
        self.store = store
        self.section: InferenceSection = config.inference
        self.models_dir = models_dir(self.section, Path(config.data_dir))
        self.metrics = InferenceMetrics(metrics.registry)
        self.on_result = on_result
        self.pipeline: Pipeline | None = None
        self.privacy: PersonFinders | None = None  # loaded with the first pipeline
        self.last_error: str | None = None
        self._signature: tuple | None = None
        self._next_reload = 0.0
        self._lock = threading.Lock()
        self.doorbell = Doorbell()  # rung when a capture is stored, so it is analysed at once
        self.counts = {"analysed": 0, "empty": 0, "failed": 0, "skipped": 0}
        # model sync's seam: the detector folder it made active (None: the configured one)
        self.detector_source: Callable[[], Path | None] | None = None
        # (detector name@version, ok, seconds, non-empty) per capture, for model sync's probation
        self.recent: deque[tuple[str, bool, float, bool]] = deque(maxlen=2000)
        # the power manager's seam: all models, detector only, or paused (captures wait)
        self.power_mode = "all"

    # --- models ------------------------------------------------------------------------------

    def _paths(self) -> tuple[Path | None, Path | None]:
        s = self.section
        det = self.detector_source() if self.detector_source else None
        if det is None:
            det = resolve_package(s.detector, self.models_dir) if s.detector else None
        cls = resolve_package(s.classifier, self.models_dir) if s.classifier else None
        return det, cls

    def activate(self, detector: Path | str, classifier: Path | str | None = None) -> Pipeline:
        """Load, check and self-test packages, then swap them in; on any error the previous
        pipeline stays active and PackageError is raised."""
        s = self.section
        roles = (("detector", detector), ("classifier", classifier))
        loaded: dict[str, ModelPackage] = {}
        for role, path in roles:
            if path is None:
                continue
            try:
                loaded[role] = load_package(path, threads=s.threads, xnnpack=s.xnnpack)
            except PackageError:
                self.metrics.model_errors.labels(role).inc()
                raise
        privacy = self.privacy
        if privacy is None:
            try:
                privacy = load_finders(s, self.models_dir, threads=s.threads, xnnpack=s.xnnpack)
            except PackageError:
                self.metrics.model_errors.labels("privacy").inc()
                raise
        pipeline = Pipeline(
            loaded["detector"],
            loaded.get("classifier"),
            classify_groups=tuple(s.classify_groups),
            crop_margin=s.crop_margin,
            max_pixels=s.max_pixels,
            min_side=s.min_side,
        )
        with self._lock:
            old, self.pipeline = self.pipeline, pipeline
            self.privacy = privacy
            self._signature = (
                _stamp(Path(detector)),
                _stamp(Path(classifier) if classifier else None),
            )
        self.metrics.model_active.clear()
        for role, package in (("detector", pipeline.detector), ("classifier", pipeline.classifier)):
            if package is not None:
                self.metrics.model_active.labels(role, package.name, package.version).set(1)
        if old is not None:
            log.info("models replaced: %s (was %s)", _names(pipeline), _names(old))
        else:
            log.info("models active: %s", _names(pipeline))
        return pipeline

    def reload_if_changed(self, *, force: bool = False) -> None:
        """(Re)load the configured packages when their files changed, at most every interval
        (`force`: look now)."""
        now = time.monotonic()
        if now < self._next_reload and not force:
            return
        self._next_reload = now + self.section.reload_interval_s
        det, cls = self._paths()
        if det is None:
            return
        signature = (_stamp(det), _stamp(cls))
        if signature == self._signature:
            return
        try:
            self.activate(det, cls)
            self.last_error = None
        except PackageError as exc:
            if str(exc) != self.last_error:
                log.error(
                    "%s; %s",
                    exc,
                    "keeping the previous models"
                    if self.pipeline
                    else "captures wait until a good package is installed",
                )
            self.last_error = str(exc)
        self._signature = signature

    # --- the loop ----------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if self.section.enabled and self._has_detector():
                self.reload_if_changed()
            done = self.run_once()
            if done == 0:
                self.doorbell.wait(stop, self.section.poll_interval_s)

    def run_once(self) -> int:
        """Handle one batch of received captures; return how many were handled."""
        s = self.section
        skip_reason = None
        if not s.enabled:
            skip_reason = "inference disabled"
        elif not self._has_detector():
            skip_reason = "no model configured"
        if skip_reason is None and self.pipeline is None:
            return 0  # configured models not loadable: leave captures waiting
        if skip_reason is None and self.power_mode == "paused":
            return 0  # low battery: captures stay received and are analysed later
        rows = self.store.captures_in_state("received", s.batch_size)
        for row in rows:
            if skip_reason is not None:
                self._skip(row["id"], skip_reason)
            else:
                self.process(row["id"])
        return len(rows)

    def set_power_mode(self, mode: str) -> None:
        """Follow the power state: "all" models, "detector_only", or "paused"."""
        if mode not in ("all", "detector_only", "paused"):
            raise ValueError(f"inference power mode {mode!r} is not all, detector_only or paused")
        if mode != self.power_mode:
            log.info("inference: %s (power)", mode)
        self.power_mode = mode

    def _has_detector(self) -> bool:
        # model sync follows a model: captures wait for its first version, never pass unanalysed
        return bool(self.section.detector) or self.detector_source is not None

    def _skip(self, capture_id: str, reason: str) -> None:
        try:
            results.save_skipped(self.store, capture_id, reason)
        except StoreError as exc:  # a state race: someone else moved it
            log.warning("capture %s: not passed on: %s", capture_id, exc)
            return
        self.counts["skipped"] += 1
        self.metrics.captures.labels("skipped").inc()

    def process(self, capture_id: str) -> Analysis | None:
        """Analyse one capture and store the result; a capture that cannot be analysed is
        marked failed with the reason (its bytes stay stored)."""
        with self._lock:
            pipeline = self.pipeline
        if pipeline is None:
            raise RuntimeError("no active models")
        if self.power_mode == "detector_only" and pipeline.classifier is not None:
            pipeline = copy.copy(pipeline)  # ECO: the detector alone, crops stay unclassified
            pipeline.classifier = None
        jpeg = self.store.read_image(capture_id)
        if jpeg is None:
            self._fail(capture_id, "no original image stored")
            return None
        try:
            analysis = pipeline.analyse(jpeg)
            t0 = time.perf_counter()
            privacy = self.privacy
            if privacy is not None and self.section.person_policy != "keep":
                analysis.detections.extend(
                    privacy.find(jpeg, already=analysis.models, max_pixels=self.section.max_pixels)
                )
                analysis.models.extend(m for m in privacy.models if m not in analysis.models)
            variant = upload_variant(self.section.person_policy, analysis.detections)
            blurred = None
            if variant == "blurred":
                blurred = blur_people(
                    jpeg,
                    analysis.detections,
                    mask=privacy.mask if privacy else None,
                    quality=self.section.blur_quality,
                    max_pixels=self.section.max_pixels,
                )
            analysis.timings["privacy"] = time.perf_counter() - t0
        except ImageError as exc:
            self._fail(capture_id, f"bad image: {exc}")
            return None
        except Exception as exc:  # a model that breaks on this input: keep the capture, say why
            self.recent.append((pipeline.detector.card.id, False, 0.0, False))
            log.exception("capture %s: inference failed", capture_id)
            self._fail(capture_id, f"inference error: {type(exc).__name__}: {exc}")
            return None
        t0 = time.perf_counter()
        try:
            results.save_analysis(
                self.store, capture_id, analysis, upload_variant=variant, blurred=blurred
            )
        except StoreError as exc:  # moved on meanwhile (evicted, failed by hand): nothing to save
            log.warning("capture %s: analysis not stored: %s", capture_id, exc)
            return None
        analysis.timings["store"] = time.perf_counter() - t0
        seconds = sum(analysis.timings.get(k, 0.0) for k in STAGES)
        self.recent.append((pipeline.detector.card.id, True, seconds, not analysis.empty))
        self._count(analysis)
        if self.on_result is not None:
            try:
                self.on_result(capture_id, analysis.detections)
            except Exception:
                log.exception("on_result hook failed for capture %s", capture_id)
        return analysis

    def _fail(self, capture_id: str, reason: str) -> None:
        log.warning("capture %s failed: %s", capture_id, reason)
        self.store.mark_failed(capture_id, reason)
        self.counts["failed"] += 1
        self.metrics.captures.labels("failed").inc()

    def _count(self, analysis: Analysis) -> None:
        outcome = "empty" if analysis.empty else "analysed"
        self.counts[outcome] += 1
        self.metrics.captures.labels(outcome).inc()
        for stage in (*STAGES, "privacy", "store"):
            if stage in analysis.timings:
                self.metrics.seconds.labels(stage).observe(analysis.timings[stage])
        for d in analysis.detections:
            self.metrics.detections.labels(d.group).inc()
            for c in d.children:
                self.metrics.detections.labels(c.group).inc()

    def status(self) -> dict[str, Any]:
        """For `fieldstation status` and /api/status."""
        p = self.pipeline
        return {
            "models": _names(p) if p else [],
            "person_policy": self.section.person_policy,
            "counts": dict(self.counts),
            "error": self.last_error,
        }

    def alarms(self) -> list[Alarm]:
        """A configured model that does not load, in words (captures wait while no detector runs)."""
        error = self.last_error
        if not (self.section.enabled and self._has_detector()):
            return []
        if self.pipeline is None:
            why = error or "not loaded yet"
            return [Alarm("inference", "detector", f"{why}; captures wait unanalysed")]
        if error:
            return [Alarm("inference", "models", f"{error}; keeping the previous models")]
        return []


def _names(p: Pipeline) -> list[str]:
    return [f"{m.name}@{m.version}" for m in p.models]


def _stamp(path: Path | None) -> tuple | None:
    """What changes when a package is replaced: every file's name, mtime and size."""
    if path is None:
        return None
    try:
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        return tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files if f.is_file())
    except OSError:
        return (str(path), None)
