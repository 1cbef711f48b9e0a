"""Exports of stored captures: Camtrap DP 1.0 packages and MegaDetector batch output."""

from __future__ import annotations


class ExportError(ValueError):
    """The data cannot be exported as asked (the message says what to fix)."""


__all__ = ["ExportError"]
