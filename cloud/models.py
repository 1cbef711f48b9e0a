"""Publishing model artifacts: bytes into the object store, an entry into the database."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from cloud.db import Database
from cloud.storage import ObjectStore

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def publish_model(
    db: Database, store: ObjectStore, path: Path, name: str, version: str
) -> dict[str, Any]:
    """Store the package file at `path` as model `name` `version`; return its manifest entry."""
    for what, value in (("name", name), ("version", version)):
        if not NAME_PATTERN.match(value) or ".." in value:
            raise ValueError(f"model {what} {value!r}: use letters, digits, '.', '_', '-' (max 64)")
    data = Path(path).read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    key = f"models/{name}/{version}/{sha[:16]}.artifact"
    store.put(key, data)
    published_at = db.publish_model(name, version, sha, len(data), key)
    return {
        "name": name,
        "version": version,
        "sha256": sha,
        "size": len(data),
        "url": f"/v1/models/{name}/{version}/artifact",
        "published_at": published_at,
    }
