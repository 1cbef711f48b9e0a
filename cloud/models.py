"""Publishing model artifacts: bytes into the object store, an entry into the database."""

from __future__ import annotations

import hashlib
import json
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


class PublishError(ValueError):
    """A package is refused for publishing; the message says why."""


def publish_package(
    db: Database,
    store: ObjectStore,
    path: Path,
    key_path: Path,
    *,
    max_bytes: int,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Check a package folder or tar as a station will, sign it and store it; refuse to replace
    a published name@version. `out_dir` also gets the tar and its `.sig` (for a USB stick)."""
    import tempfile

    from agent.modelsync import artifact as art
    from agent.modelsync.verify import VerifyError, open_package

    key = art.load_private_key(key_path)
    with tempfile.TemporaryDirectory(prefix="fscloud-publish-") as tmp:
        work = Path(tmp)
        path = Path(path)
        try:
            if path.is_dir():
                folder = path
            elif path.is_file():
                if path.stat().st_size > max_bytes:
                    raise PublishError(f"{path}: {path.stat().st_size} bytes, over {max_bytes}")
                folder = art.safe_extract(path, work / "in", max_bytes)
            else:
                raise PublishError(f"{path}: no such file or folder")
            size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
            if size > max_bytes:
                raise PublishError(f"{path}: package is {size} bytes, over {max_bytes}")
            # card, sha256, shapes as the station checks them; goldens are judged by each
            # station on its own runtime (a cloud x86 runtime may reproduce what an ARM one won't)
            package = open_package(folder)
        except (art.ArtifactError, VerifyError) as exc:
            raise PublishError(str(exc)) from None
        card = package.card
        name, version = card.name, card.version
        if db.get_model(name, version) is not None:
            raise PublishError(f"{name}@{version} is already published; publish a new version")
        tar = work / f"{name}-{version}.tar.gz"
        art.pack_folder(folder, tar)
        data = tar.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        sig = art.sign(key, art.signed_message(name, version, sha, card.raw))
        object_key = f"models/{name}/{version}/{sha[:16]}.tar.gz"
        store.put(object_key, data)
        from cloud import rollout

        published_at = rollout.record_release(
            db, name, version, sha, len(data), object_key, card.raw, sig.key_id, sig.value
        )
        release = {
            "name": name,
            "version": version,
            "sha256": sha,
            "size": len(data),
            "url": f"/v1/models/{name}/{version}/artifact",
            "card": card.raw,
            "key_id": sig.key_id,
            "signature": sig.value,
            "published_at": published_at,
        }
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / tar.name).write_bytes(data)
            (out_dir / (tar.name + ".sig")).write_text(json.dumps(release, indent=2) + "\n")
    return release
