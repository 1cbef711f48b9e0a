"""`fieldstation-cloud models keygen|publish`: checked as a station checks, signed, stored once."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from agent.modelsync import artifact as art
from cloud.db import open_database
from cloud.process import run_cli

from .conftest import NAME, make_version


def _publish(data: Path, *args: str) -> str:
    return run_cli("models", "publish", *args, data_dir=data)


def test_keygen_writes_a_private_key_and_the_public_text_to_pin(tmp_path):
    out = run_cli("models", "keygen", str(tmp_path / "k"), data_dir=tmp_path / "c")
    assert (tmp_path / "k").stat().st_mode & 0o777 == 0o600
    pub = (tmp_path / "k.pub").read_text().strip()
    assert f'trusted_keys = ["{pub}"]' in out
    with pytest.raises(RuntimeError, match="refusing to overwrite"):
        run_cli("models", "keygen", str(tmp_path / "k"), data_dir=tmp_path / "c")


def test_publish_signs_the_artifact_sha256_with_the_card(tmp_path, keypair):
    key, public = keypair
    folder = make_version(tmp_path, "1.0.0")
    out = _publish(
        tmp_path / "c", str(folder), "--sign-key", str(key), "--out", str(tmp_path / "usb")
    )
    assert out.startswith(f"published {NAME} 1.0.0 (")
    sig = json.loads((tmp_path / "usb" / f"{NAME}-1.0.0.tar.gz.sig").read_text())
    tar = tmp_path / "usb" / f"{NAME}-1.0.0.tar.gz"
    assert sig["sha256"] == art.file_sha256(tar)
    message = art.signed_message(NAME, "1.0.0", sig["sha256"], sig["card"])
    assert art.verify(message, sig["signature"], sig["key_id"], [public]) == sig["key_id"]
    changed = art.signed_message(NAME, "1.0.0", sig["sha256"], {**sig["card"], "labels": ["x"]})
    with pytest.raises(art.ArtifactError, match="bad signature"):
        art.verify(changed, sig["signature"], sig["key_id"], [public])


def test_publish_refuses_to_overwrite_a_published_version(tmp_path, keypair):
    key, _ = keypair
    folder = make_version(tmp_path, "1.0.0")
    _publish(tmp_path / "c", str(folder), "--sign-key", str(key))
    with pytest.raises(RuntimeError, match="already published"):
        _publish(tmp_path / "c", str(folder), "--sign-key", str(key))
    db = open_database(f"sqlite:///{tmp_path / 'c' / 'cloud.sqlite3'}")
    try:
        assert [m["version"] for m in db.list_models()] == ["1.0.0"]
    finally:
        db.close()


def test_publish_refuses_a_card_that_contradicts_its_model(tmp_path, keypair):
    key, _ = keypair
    folder = make_version(tmp_path, "1.0.0")
    card = json.loads((folder / "model.json").read_text())
    card["input"]["width"] = 96  # the model takes 128x128
    (folder / "model.json").write_text(json.dumps(card))
    with pytest.raises(RuntimeError, match="card contradicts the model"):
        _publish(tmp_path / "c", str(folder), "--sign-key", str(key))


def _tar_with(tmp_path: Path, name: str, evil: tarfile.TarInfo, data: bytes = b"") -> Path:
    folder = make_version(tmp_path, "1.0.0")
    path = tmp_path / name
    with tarfile.open(path, "w") as tar:
        for f in sorted(folder.iterdir()):
            tar.add(f, arcname=f.name)
        tar.addfile(evil, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(
    ("member", "reason"),
    [
        ("../escape.txt", "leaves the package"),
        ("/etc/evil.txt", "absolute path"),
        ("link", "link"),
    ],
)
def test_publish_refuses_tars_that_leave_their_folder(tmp_path, keypair, member, reason):
    key, _ = keypair
    info = tarfile.TarInfo(member)
    data = b""
    if member == "link":
        info.type, info.linkname = tarfile.SYMTYPE, "../../etc/passwd"
    else:
        data = b"x"
        info.size = 1
    path = _tar_with(tmp_path, "evil.tar", info, data)
    with pytest.raises(RuntimeError, match=reason):
        _publish(tmp_path / "c", str(path), "--sign-key", str(key))
    assert not (tmp_path / "escape.txt").exists()


def test_publish_refuses_a_package_over_the_size_cap(tmp_path, keypair):
    key, _ = keypair
    folder = make_version(tmp_path, "1.0.0")
    tar = tmp_path / "p.tar.gz"
    art.pack_folder(folder, tar)
    with pytest.raises(RuntimeError, match="over 1000"):
        _publish(tmp_path / "c", str(tar), "--sign-key", str(key), "--max-bytes", "1000")
