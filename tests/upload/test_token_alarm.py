"""An endpoint that refuses the station's token is an alarm in words, not just a log line."""

from __future__ import annotations

import requests

from agent.capture import Capture
from tests.helpers import jpeg, metric, wait_for


def test_a_rejected_endpoint_token_is_an_alarm(make_station, links):
    aws = links["aws"]
    station = make_station(
        f"""
[upload]
retry_initial_s = 0.05
breaker_cooldown_s = 0.2
idle_poll_s = 0.1
[[upload.endpoints]]
name = "aws"
url = "{aws.proxy.url}"
token = "not-the-token"
"""
    )
    station.store.add_capture(
        Capture(
            unit_id="cam-1",
            unit_ref="1",
            path="serial",
            jpeg=jpeg(1),
            received_at=1_780_000_000.0,
            unit_time=1_780_000_000,
            unit_time_kind="epoch_s",
            trigger="pir",
            meta={},
        )
    )
    url = f"http://{station.config.http.listen}"

    def upload_alarms() -> list[dict[str, str]]:
        health = requests.get(f"{url}/api/status", timeout=5).json()["health"]
        return [a for a in health if a["kind"] == "upload"]

    alarm = wait_for(upload_alarms, 20, "upload alarm")
    assert alarm[0]["subject"] == "aws" and "refused the station's token" in alarm[0]["message"]
    assert "401" in alarm[0]["message"]
    ready = requests.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 503 and "upload aws: endpoint refused" in ready.text
    assert metric(station, "fieldstation_health_alarm", kind="upload", subject="aws") == 1
