"""The upload tests' link proxy lives in tests/linkproxy.py (shared with tests/e2e)."""

from tests.linkproxy import ERROR_500, MODES, FieldLink, LinkProxy

__all__ = ["ERROR_500", "MODES", "FieldLink", "LinkProxy"]
