"""Batch upload of captures: validate each item, store new images, answer per item.

Idempotency is by (station, capture_id) with the original JPEG's sha256. Images are written to the
object store *before* their row is inserted, under a key that includes the image's own sha256, so
a row never points at a missing image and a racing or conflicting upload never overwrites another
capture's image (at worst it leaves an orphan object, which is deleted).

`check` is CPU only (parsing, per-item validation, digests); `commit` does the store and database
writes, for every batch waiting at once (cloud/commits.py runs it on one thread).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from agent.upload.manifest import MANIFEST_PART, VARIANT_RANK
from cloud.commits import CommitQueue
from cloud.db import CaptureRow, Database
from cloud.metrics import ServiceMetrics
from cloud.multipart import MultipartError, Part, PartTooLarge, parse_parts
from cloud.schema import BatchManifest, CaptureItem, ValidManifest, reason_of
from cloud.storage import ObjectStore
from cloud.storage.base import NameObjects, Upload

JPEG_MAGIC = b"\xff\xd8\xff"


class RequestError(Exception):
    """The request as a whole is refused with an HTTP status and a reason."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass
class _Pending:
    index: int
    item: CaptureItem
    image: memoryview | None  # a slice of the request body: never copied on the way to disk
    image_sha256: str | None
    image_key: str | None


@dataclass
class CheckedBatch:
    """A batch whose items were checked one by one; `pending` are those left to store."""

    station_id: str
    results: list[dict[str, Any] | None]  # None until the item is answered
    pending: list[_Pending]


def image_key(station_id: str, capture_id: str, variant: str, image_sha256: str) -> str:
    """Object key of one image variant; the digest keeps different bytes under different keys."""
    return f"captures/{station_id}/{capture_id}.{variant}-{image_sha256[:16]}.jpg"


def _capture_id(raw: CaptureItem | Any) -> str | None:
    """The capture id of a manifest item, validated or not, for its answer."""
    if isinstance(raw, CaptureItem):
        return raw.capture_id
    capture_id = raw.get("capture_id") if isinstance(raw, dict) else None
    return capture_id if isinstance(capture_id, str) else None


def _result(capture_id: str | None, status: str, reason: str | None = None) -> dict[str, Any]:
    return {"capture_id": capture_id, "status": status, "reason": reason}


class BatchIngest:
    def __init__(
        self,
        db: Database,
        store: ObjectStore,
        metrics: ServiceMetrics,
        max_item_bytes: int,
        max_items: int,
        writers: int = 8,
    ) -> None:
        self.db = db
        self.store = store
        self.metrics = metrics
        self.max_item_bytes = max_item_bytes
        self.max_items = max_items
        # Object store writes of one batch run in parallel: network stores are latency-bound.
        self._writers = ThreadPoolExecutor(max_workers=writers, thread_name_prefix="image-put")
        self.commits = CommitQueue(self.commit)

    def close(self) -> None:
        self.commits.shutdown()
        self._writers.shutdown(wait=True)

    # -- request level ---------------------------------------------------------------------------

    def parse(self, content_type: str, body: bytes) -> tuple[list[Any], dict[str, Part], str]:
        """Return (raw items, parts by name, manifest station id) or raise RequestError."""
        try:
            # The manifest is JSON; allow it generous room even when images are capped small.
            parts = parse_parts(
                content_type,
                body,
                max_part_bytes=max(self.max_item_bytes, 4 * 1024 * 1024),
                max_parts=self.max_items + 1,
            )
        except PartTooLarge as exc:
            raise RequestError(413, str(exc)) from exc
        except MultipartError as exc:
            raise RequestError(400, str(exc)) from exc
        manifest_part = parts.pop(MANIFEST_PART, None)
        if manifest_part is None:
            raise RequestError(400, "no 'manifest' part in the multipart body")
        text = bytes(manifest_part.data)
        manifest: ValidManifest | BatchManifest
        try:
            manifest = ValidManifest.model_validate_json(text)
        except ValidationError:  # some item is off (or all is): each item is checked on its own
            manifest = self._manifest(text)
        if len(manifest.items) > self.max_items:
            raise RequestError(413, f"{len(manifest.items)} items; the limit is {self.max_items}")
        for part in parts.values():
            if part.size > self.max_item_bytes:
                raise RequestError(
                    413,
                    f"part {part.name!r} is over the per-item limit of {self.max_item_bytes} bytes",
                )
        return manifest.items, parts, manifest.station_id

    @staticmethod
    def _manifest(text: bytes) -> BatchManifest:
        """The manifest with its items as plain JSON objects, or RequestError."""
        try:
            raw = json.loads(text)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"manifest is not valid JSON: {exc}") from exc
        except RecursionError:  # [[[[...]]]] a few KiB deep: refused, never a bare 500
            raise RequestError(400, "manifest nests too deeply to be a manifest") from None
        try:
            return BatchManifest.model_validate(raw)
        except ValidationError as exc:
            raise RequestError(400, f"manifest: {reason_of(exc)}") from exc

    def check(self, station_id: str, content_type: str, body: bytes) -> CheckedBatch:
        """Parse a batch and check each item on its own (CPU only: no database, no store)."""
        raw_items, parts, manifest_station = self.parse(content_type, body)
        if manifest_station != station_id:
            raise RequestError(
                403, f"manifest station_id {manifest_station!r} is not this token's station"
            )
        batch = CheckedBatch(station_id, [None] * len(raw_items), [])
        seen: dict[str, int] = {}
        for index, raw in enumerate(raw_items):
            capture_id = _capture_id(raw)
            try:
                pending = self._check_item(index, raw, parts, station_id)
            except _Rejected as exc:
                self.metrics.rejections.labels(exc.kind).inc()
                batch.results[index] = _result(capture_id, "rejected", exc.reason)
                continue
            first = seen.get(pending.item.capture_id)
            if first is not None:
                # The same id twice in one batch: answer the later one like a re-upload.
                earlier = batch.pending[first].item
                same = earlier.sha256 == pending.item.sha256
                batch.results[index] = _result(
                    capture_id,
                    "duplicate" if same else "conflict",
                    "same capture_id earlier in this batch"
                    if same
                    else f"capture_id earlier in this batch has sha256 {earlier.sha256}",
                )
                continue
            seen[pending.item.capture_id] = len(batch.pending)
            batch.pending.append(pending)
        return batch

    async def group_commit(self, batch: CheckedBatch) -> list[dict[str, Any]]:
        """Store a checked batch with the others waiting; its results once all is durable."""
        if not batch.pending:  # nothing to write: every item was refused or repeated
            return self.commit([batch])[0]
        return await self.commits.store(batch)

    def commit(self, batches: list[CheckedBatch]) -> list[list[dict[str, Any]]]:
        """Store checked batches of different stations together, their results in item order.

        Their new images go to the store in one write and their rows into one transaction, so
        the batches waiting share the syncs. Stations differ, so no two batches touch one row.
        """
        assert len({b.station_id for b in batches}) == len(batches), "one batch per station"
        new: list[tuple[CheckedBatch, _Pending]] = []
        for batch in batches:
            if not batch.pending:
                continue
            held = self.db.held(batch.station_id, [p.item.capture_id for p in batch.pending])
            for pending in batch.pending:
                existing = held.get(pending.item.capture_id)
                if existing is None:
                    new.append((batch, pending))
                else:
                    batch.results[pending.index] = self._against_existing(
                        batch.station_id, pending, existing
                    )
        now = time.time()
        rows = [self._row(b.station_id, p, now) for b, p in new]
        # The images are durable before their rows commit (with a pack store on this database,
        # their index rows commit in the same transaction as the capture rows).
        with self._storing([p for _, p in new if p.image is not None]) as name_images:
            inserted = self.db.insert_captures(rows, also=name_images) if rows else []
        lost: dict[int, list[_Pending]] = {}
        for (batch, pending), ok in zip(new, inserted, strict=True):
            if ok:
                batch.results[pending.index] = _result(pending.item.capture_id, "stored")
            else:
                lost.setdefault(id(batch), []).append(pending)
        answers = []
        for batch in batches:
            if id(batch) in lost:
                self._settle_lost(batch, lost[id(batch)])
            answered = [r for r in batch.results if r is not None]
            assert len(answered) == len(batch.results), "every item gets exactly one result"
            for status, count in Counter(r["status"] for r in answered).items():
                self.metrics.captures.labels(status).inc(count)
            answers.append(answered)
        return answers

    def _settle_lost(self, batch: CheckedBatch, lost: list[_Pending]) -> None:
        """Answer items another request stored between our read and our insert."""
        winners = self.db.held(batch.station_id, [p.item.capture_id for p in lost])
        for pending in lost:
            winner = winners[pending.item.capture_id]
            if pending.image_key and pending.image_key != winner[2]:
                self.store.delete(pending.image_key)
            same = winner[0] == pending.item.sha256
            batch.results[pending.index] = _result(
                pending.item.capture_id,
                "duplicate" if same else "conflict",
                None if same else f"capture_id already held with sha256 {winner[0]}",
            )

    # -- item level ------------------------------------------------------------------------------

    def _check_item(
        self, index: int, raw: Any, parts: dict[str, Part], station_id: str
    ) -> _Pending:
        if isinstance(raw, CaptureItem):  # validated with the whole manifest
            item = raw
        elif not isinstance(raw, dict):
            raise _Rejected("schema", f"item {index} is not a JSON object")
        else:
            try:
                item = CaptureItem.model_validate(raw)
            except ValidationError as exc:
                raise _Rejected("schema", reason_of(exc)) from exc
        if item.variant == "none":
            if item.image_part is not None:
                raise _Rejected("schema", "variant 'none' must not name an image_part")
            return _Pending(index, item, None, None, None)
        if item.image_part is None:
            raise _Rejected("schema", f"variant {item.variant!r} needs an image_part")
        part = parts.get(item.image_part)
        if part is None:
            raise _Rejected("missing_part", f"image part {item.image_part!r} is not in the request")
        data = part.data
        if data[:3] != JPEG_MAGIC:
            raise _Rejected(
                "not_jpeg", f"image part {item.image_part!r} is not a JPEG (no FF D8 FF magic)"
            )
        digest = hashlib.sha256(data).hexdigest()
        if item.image_sha256 is not None and item.image_sha256 != digest:
            raise _Rejected(
                "digest", f"image part {item.image_part!r} has sha256 {digest}, not image_sha256"
            )
        if item.variant == "full" and (digest != item.sha256 or len(data) != item.size):
            raise _Rejected(
                "digest",
                f"variant 'full' must be the original: part has sha256 {digest} and "
                f"{len(data)} bytes, item says {item.sha256} and {item.size}",
            )
        key = image_key(station_id, item.capture_id, item.variant, digest)
        return _Pending(index, item, data, digest, key)

    def _against_existing(
        self, station_id: str, pending: _Pending, existing: tuple[str, str, str | None]
    ) -> dict[str, Any]:
        sha, variant, _ = existing
        item = pending.item
        if sha != item.sha256:
            return _result(
                item.capture_id, "conflict", f"capture_id already held with sha256 {sha}"
            )
        if VARIANT_RANK[item.variant] <= VARIANT_RANK[variant]:
            return _result(item.capture_id, "duplicate", f"already held as {variant!r}")
        # A better variant of a capture we hold (e.g. full after thumbnail): keep the better one.
        assert pending.image is not None and pending.image_key and pending.image_sha256
        with self._storing([pending]) as name_image:
            upgraded = self.db.upgrade_image(
                station_id,
                item.capture_id,
                variant,
                item.variant,
                pending.image_key,
                pending.image_sha256,
                len(pending.image),
                also=name_image,
            )
        if upgraded:
            return _result(
                item.capture_id, "duplicate", f"image upgraded from {variant!r} to {item.variant!r}"
            )
        return _result(
            item.capture_id, "duplicate", "already held (changed by a concurrent upload)"
        )

    @contextmanager
    def _storing(self, pending: list[_Pending]) -> Iterator[NameObjects | None]:
        """The images of `pending` durable in the store; see ObjectStore.storing."""
        objects: list[Upload] = []
        for p in pending:
            assert p.image_key is not None and p.image is not None
            objects.append((p.image_key, p.image))
        if not objects:
            yield None
            return
        run = self._writers.map if len(objects) > 1 else map
        with self.store.storing(objects, "image/jpeg", run=run) as name_images:
            yield name_images
        self.metrics.image_bytes.inc(sum(len(data) for _, data in objects))

    @staticmethod
    def _row(station_id: str, pending: _Pending, now: float) -> CaptureRow:
        item = pending.item
        return CaptureRow(
            station_id=station_id,
            capture_id=item.capture_id,
            unit_id=item.unit_id,
            path=item.path,
            sha256=item.sha256,
            size=item.size,
            received_at=item.received_at,
            captured_at=item.captured_at,
            uploaded_at=now,
            trigger=item.trigger,
            unit_time=item.unit_time,
            unit_time_kind=item.unit_time_kind,
            variant=item.variant,
            image_key=pending.image_key,
            image_sha256=pending.image_sha256,
            image_size=len(pending.image) if pending.image is not None else None,
            empty=item.empty,
            detections=[d.model_dump() for d in item.detections],
            meta={**item.meta, "_extra": item.model_extra} if item.model_extra else item.meta,
        )


class _Rejected(Exception):
    def __init__(self, kind: str, reason: str) -> None:
        super().__init__(reason)
        self.kind = kind
        self.reason = reason
