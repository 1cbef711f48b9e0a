"""An operator's refused rollout action is a 409 or 404 counted under its reason in /metrics."""

from __future__ import annotations

import requests

from . import fleet
from .conftest import make_version


def rejections(url: str, reason: str) -> float:
    key = f'fieldstation_cloud_rejections_total{{reason="{reason}"}} '
    for line in requests.get(f"{url}/metrics", timeout=10).text.splitlines():
        if line.startswith(key):
            return float(line.split()[-1])
    return 0.0


def test_an_action_the_rollout_state_does_not_allow_is_a_counted_409(
    tmp_path, cloud, operator, keypair
):
    key, _public = keypair
    operator.publish(make_version(tmp_path / "pkgs", "1.0.0"), key)
    admin = operator.admin_token()
    fleet.rollout(cloud, admin, "1.0.0", [{"percent": 100}])
    auth = {"Authorization": f"Bearer {admin}"}
    promote = requests.post(
        f"{cloud.url}/v1/rollouts/{fleet.NAME}/promote", headers=auth, timeout=10
    )
    assert promote.status_code == 409
    assert promote.json()["detail"].endswith("it is finished")  # no stations: done at once
    assert rejections(cloud.url, "rollout_conflict") == 1
    other = requests.post(f"{cloud.url}/v1/rollouts/other-model/pause", headers=auth, timeout=10)
    assert other.status_code == 404
    assert rejections(cloud.url, "unknown_rollout") == 1
