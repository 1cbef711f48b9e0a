"""The `fieldstation-cloud` command as an operator and the station's test suites use it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
import requests

from cloud.process import CloudService, run_cli
from tests.cloud.cloud_helpers import auth, item, statuses, upload
from tests.helpers import jpeg

TOKEN = re.compile(r"^fsc_[0-9a-f]{16}_[A-Za-z0-9_-]{43}$")


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cloud", *args], capture_output=True, text=True, env=env, timeout=60
    )


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    with CloudService.start(tmp_path_factory.mktemp("cloud")) as running:
        yield running


def test_stations_add_quiet_prints_only_the_token_in_either_flag_order(tmp_path):
    before = cli("--data-dir", str(tmp_path), "stations", "add", "st-a", "--quiet")
    after = cli("stations", "add", "st-b", "--quiet", "--data-dir", str(tmp_path))
    assert before.returncode == after.returncode == 0
    assert TOKEN.match(before.stdout.strip()) and TOKEN.match(after.stdout.strip())
    assert before.stdout.count("\n") == 1
    listed = cli("stations", "list", "--data-dir", str(tmp_path)).stdout
    assert "st-a" in listed and "st-b" in listed


def test_stations_add_without_quiet_says_what_happened(tmp_path):
    out = cli("--data-dir", str(tmp_path), "stations", "add", "st-a").stdout.splitlines()
    assert out[0] == "station st-a added"
    assert TOKEN.match(out[1].removeprefix("token: "))


def test_bad_station_id_is_refused(tmp_path):
    done = cli("--data-dir", str(tmp_path), "stations", "add", "../evil")
    assert done.returncode == 2 and "station id" in done.stderr


def test_token_from_the_cli_uploads_to_the_running_service(service):
    token = service.add_station("st-cli")
    assert TOKEN.match(token)
    response = upload(service.url, token, "st-cli", [item("cap-1", jpeg(1))])
    assert statuses(response) == ["stored"]


def test_revoked_station_gets_401(service):
    token = service.add_station("st-revoke")
    assert "revoked" in service.cli("stations", "revoke", "st-revoke")
    response = requests.post(
        f"{service.url}/v1/heartbeat",
        json={"station_id": "st-revoke", "time": 1.0},
        headers=auth(token),
        timeout=30,
    )
    assert response.status_code == 401


def test_admin_token_command_rotates_the_operator_token(service):
    first = service.admin_token()
    second = service.admin_token()
    ok = requests.get(f"{service.url}/v1/stations", headers=auth(second), timeout=30)
    old = requests.get(f"{service.url}/v1/stations", headers=auth(first), timeout=30)
    assert ok.status_code == 200 and old.status_code == 401


def test_models_publish_then_list_and_serve(service, tmp_path):
    package = tmp_path / "det.tar"
    package.write_bytes(b"model bytes" * 100)
    out = service.cli("models", "publish", str(package), "--name", "det", "--version", "2.0")
    assert out.startswith("published det 2.0 (1100 bytes, sha256 ")
    assert "det" in service.cli("models", "list")
    token = service.add_station("st-models")
    served = requests.get(
        f"{service.url}/v1/models/det/2.0/artifact", headers=auth(token), timeout=30
    )
    assert served.content == package.read_bytes()


def test_serve_stops_cleanly_on_sigterm(tmp_path):
    running = CloudService.start(tmp_path / "cloud")
    assert running.stop() == 0
    log = running.log.read_text()
    assert "Application shutdown complete" in log


def test_check_config_reads_file_and_environment_and_hides_secrets(tmp_path):
    config = tmp_path / "cloud.toml"
    config.write_text('[limits]\nmax_items = 42\n[storage]\nsecret_access_key = "hush"\n')
    done = cli(
        "config",
        "check",
        "--config",
        str(config),
        env={"PATH": "/usr/bin:/bin", "FIELDSTATION_CLOUD_LIMITS_MAX_BODY_BYTES": "1234"},
    )
    assert done.returncode == 0, done.stderr
    assert '"max_items": 42' in done.stdout and '"max_body_bytes": 1234' in done.stdout
    assert "hush" not in done.stdout


def test_bad_config_key_names_the_key_and_line(tmp_path):
    config = tmp_path / "cloud.toml"
    config.write_text("[server]\nlisten = '127.0.0.1:1'\n\n[limits]\nmax_itemz = 3\n")
    done = cli("config", "check", "--config", str(config))
    assert done.returncode == 2
    assert f"{config}:5: unknown key [limits] max_itemz" in done.stderr


def test_run_cli_helper_raises_with_stderr_on_failure(tmp_path):
    with pytest.raises(RuntimeError, match="no cloud database"):  # an empty folder: refused
        run_cli("stations", "revoke", "nobody", data_dir=tmp_path)
