"""The published form of a model package: a tar, its ed25519 signature, safe extraction.

Shared by `fieldstation-cloud models publish` (which signs) and the station (which verifies), so
both read a package exactly the same way.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from agent.inference.card import CARD

DEFAULT_MAX_PACKAGE_BYTES = 512 << 20
SIGNATURE_DOMAIN = "wildcam-model-signature-v1"


class ArtifactError(ValueError):
    """A package file or its signature is refused; the message says why."""


def safe_extract(tar_path: Path, dest: Path, max_bytes: int = DEFAULT_MAX_PACKAGE_BYTES) -> Path:
    """Extract a package tar into `dest`; refuse absolute paths, `..`, links and devices, and
    archives whose files add up to more than `max_bytes`. Returns the folder holding model.json."""
    total = 0
    try:
        with tarfile.open(tar_path) as tar:
            members = tar.getmembers()
            for m in members:
                name = m.name
                parts = Path(name).parts
                if name.startswith(("/", "\\")) or Path(name).is_absolute():
                    raise ArtifactError(f"{tar_path.name}: absolute path {name!r} in the archive")
                if ".." in parts:
                    raise ArtifactError(f"{tar_path.name}: path {name!r} leaves the package")
                if m.issym() or m.islnk():
                    raise ArtifactError(f"{tar_path.name}: link {name!r} -> {m.linkname!r}")
                if not (m.isfile() or m.isdir()):
                    raise ArtifactError(f"{tar_path.name}: {name!r} is not a file or folder")
                total += m.size
                if total > max_bytes:
                    raise ArtifactError(f"{tar_path.name}: package is over {max_bytes} bytes")
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ArtifactError(f"{tar_path.name}: unreadable archive: {exc}") from None
    cards = sorted(dest.rglob(CARD), key=lambda p: len(p.parts))
    if not cards:
        raise ArtifactError(f"{tar_path.name}: no {CARD} in the archive")
    return cards[0].parent


def pack_folder(folder: Path, out: Path) -> None:
    """A deterministic tar.gz of a package folder (sorted names, zero times and owners)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=6) as tar:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            if path.is_symlink():
                raise ArtifactError(f"{path}: links are not allowed in a package")
            info = tarfile.TarInfo(path.relative_to(folder).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as f:
                tar.addfile(info, f)
    out.write_bytes(buf.getvalue())


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# --- signatures ----------------------------------------------------------------------------------


def signed_message(name: str, version: str, sha256: str, card: dict[str, Any]) -> bytes:
    """The bytes a signature covers: the artifact's sha256 together with the card."""
    doc: dict[str, Any] = {"domain": SIGNATURE_DOMAIN, "name": name, "version": version}
    doc.update(sha256=sha256, card=card)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(public: Ed25519PublicKey) -> str:
    """The form a station pins in `[modelsync] trusted_keys`: base64 of the raw 32 bytes."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode()


def parse_public_key(text: str) -> Ed25519PublicKey:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise ArtifactError(
            f"public key {text[:12]!r}...: not base64 of 32 bytes ({exc})"
        ) from None


def generate_key(private_path: Path) -> tuple[Path, str]:
    """Write a new private key (PEM, mode 0600) and KEY.pub; return (pub path, public text)."""
    if private_path.exists():
        raise ArtifactError(f"{private_path} exists; refusing to overwrite a key")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    text = public_key_text(key.public_key())
    pub = private_path.with_name(private_path.name + ".pub")
    pub.write_text(text + "\n")
    return pub, text


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ArtifactError(f"{path}: not a readable private key ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ArtifactError(f"{path}: not an ed25519 key")
    return key


@dataclass(frozen=True)
class Signature:
    key_id: str
    value: str  # base64


def sign(key: Ed25519PrivateKey, message: bytes) -> Signature:
    return Signature(key_id(key.public_key()), base64.b64encode(key.sign(message)).decode())


def verify(message: bytes, signature: str, signer: str, trusted: list[str]) -> str:
    """Check `signature` by key `signer` among the pinned `trusted` keys; return the key id.

    Raises ArtifactError for a missing signature, an unknown key or a bad signature."""
    if not signature:
        raise ArtifactError("the package is not signed")
    keys = {key_id(k): k for k in (parse_public_key(t) for t in trusted)}
    if not keys:
        raise ArtifactError("no trusted keys are configured ([modelsync] trusted_keys)")
    key = keys.get(signer)
    if key is None:
        raise ArtifactError(f"signed by unknown key {signer!r} (trusted: {', '.join(keys)})")
    try:
        key.verify(base64.b64decode(signature), message)
    except (InvalidSignature, ValueError):
        raise ArtifactError(f"bad signature by key {signer}") from None
    return signer
