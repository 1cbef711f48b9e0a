"""Writing an analysis into the buffer: detections, the blurred image, the capture's new state."""

from __future__ import annotations

from typing import Any

from agent.inference.pipeline import Analysis
from agent.store import Store


def save_analysis(
    store: Store,
    capture_id: str,
    analysis: Analysis,
    *,
    upload_variant: str,
    blurred: bytes | None = None,
) -> None:
    """One durable transaction: detections in, capture marked analysed (and empty or not)."""
    store.save_analysis(
        capture_id,
        analysis.detections,
        empty=analysis.empty,
        upload_variant=upload_variant,
        summary=analysis.summary(),
        blurred=blurred,
    )


def save_skipped(store: Store, capture_id: str, reason: str) -> None:
    """Move a capture on without models (inference disabled or none configured)."""
    store.skip_analysis(capture_id, reason)


def read_detections(store: Store, capture_id: str) -> list[dict[str, Any]]:
    """Stored detections of a capture, detector results first, as plain dicts."""
    return store.detections(capture_id)
