"""Uploads: the buffer drained to the multi-cloud sync endpoints (see worker.Uploader)."""
