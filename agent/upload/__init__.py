"""Uploads: the buffer drained to the multi-cloud sync endpoints (see worker.Uploader)."""

import agent.config  # noqa: F401  # first, so agent.config <-> upload.settings import in either order
