"""`fieldstation models verify|activate|rollback|status`, as a technician runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from agent.modelsync.versions import ModelVersions
from cloud.config import load_config
from cloud.models import publish_package
from cloud.service import Service

from .conftest import NAME, make_version


def fieldstation(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args], capture_output=True, text=True, timeout=60
    )


def _station_toml(tmp_path: Path, key: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(
        f'[station]\ndata_dir = "{tmp_path / "station"}"\n[modelsync]\nmodel = "{NAME}"\n'
        f'trusted_keys = ["{key}"]\n'
    )
    return path


def test_verify_checks_a_usb_package_as_the_sync_path_does(tmp_path, keypair):
    key, public = keypair
    service = Service.open(load_config(None, data_dir=str(tmp_path / "cloud")))
    try:
        publish_package(service.db, service.store, make_version(tmp_path, "1.2.0"), key,
                        max_bytes=1 << 30, out_dir=tmp_path / "usb")  # fmt: skip
    finally:
        service.close()
    config = _station_toml(tmp_path, public)
    pkg = tmp_path / "usb" / f"{NAME}-1.2.0.tar.gz"
    ok = fieldstation("models", "verify", str(pkg), "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.splitlines()[-1] == f"{NAME}@1.2.0: ok"
    assert "golden self-test(s) reproduce" in ok.stdout
    data = bytearray(pkg.read_bytes())
    data[len(data) // 2] ^= 1
    (tmp_path / "usb" / "t.tar.gz").write_bytes(bytes(data))
    (tmp_path / "usb" / "t.tar.gz.sig").write_bytes((pkg.parent / (pkg.name + ".sig")).read_bytes())
    bad = fieldstation(
        "models", "verify", str(tmp_path / "usb" / "t.tar.gz"), "--config", str(config)
    )
    assert bad.returncode == 1 and "(tampered?)" in bad.stderr
    other = fieldstation("models", "verify", str(pkg), "--config", str(config),
                         "--key", "J0sC7FIhW0vvkfbtP5IaPTJXHlHeMvSAnVR99vJhAEM=")  # fmt: skip
    assert other.returncode == 1 and "signed by unknown key" in other.stderr


def test_verify_checks_an_unsigned_folder_or_tar_and_says_it_is_unsigned(tmp_path, keypair):
    _key, public = keypair
    config = _station_toml(tmp_path, public)
    folder = make_version(tmp_path, "2.0.0")
    ok = fieldstation("models", "verify", str(folder), "--config", str(config))
    assert ok.returncode == 0, ok.stderr
    assert "NOT signed" in ok.stdout and "golden self-test(s) reproduce" in ok.stdout
    assert (
        ok.stdout.splitlines()[-1] == f"{NAME}@2.0.0: ok, but unsigned: model sync would refuse it"
    )
    strict = fieldstation(
        "models", "verify", str(folder), "--config", str(config), "--require-signature"
    )
    assert strict.returncode == 1 and "no signature" in strict.stderr
    broken = make_version(tmp_path / "b", "2.0.1", break_golden=True)
    tar = tmp_path / "broken.tar.gz"
    from agent.modelsync.artifact import pack_folder

    pack_folder(broken, tar)
    bad = fieldstation("models", "verify", str(tar), "--config", str(config))
    assert bad.returncode == 1 and "selftest" in bad.stderr


def test_activate_rollback_and_status_switch_the_pointer(tmp_path, keypair):
    _key, public = keypair
    config = _station_toml(tmp_path, public)
    versions = ModelVersions(tmp_path / "station", NAME)
    for v in ("1.0.0", "2.0.0"):
        versions.install(make_version(tmp_path / "pkgs", v), v)
        versions.switch(v, how="sync")
    back = fieldstation("models", "rollback", "--config", str(config))
    assert back.stdout == f"{NAME}@1.0.0 active (rolled back from 2.0.0)\n", back.stderr
    status = fieldstation("models", "status", "--config", str(config))
    assert "active     1.0.0 (rollback)" in status.stdout
    assert "refused    2.0.0: rolled_back: rolled back by hand" in status.stdout
    again = fieldstation("models", "activate", "2.0.0", "--config", str(config))
    assert again.stdout == f"{NAME}@2.0.0 active (was 1.0.0)\n"
    assert versions.pointer().version == "2.0.0"
    missing = fieldstation("models", "activate", "9.9.9", "--config", str(config))
    assert missing.returncode == 1 and "installed: 1.0.0, 2.0.0" in missing.stderr
