"""Bad input never gets a bare 500: every station JSON body under hypothesis nesting and sizes."""

from __future__ import annotations

import json

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.scenes import scene_jpeg
from tests.helpers import metric

ROUTES = ["register", "status", "metadata", "command"]


@pytest.fixture
def station(make_station):
    return make_station()


def document(depth: int, brace: bool, width: int) -> str:
    inner = "[" + ",".join(["0"] * width) + "]" if width else "0"
    if brace:
        return '{"a":' * depth + inner + "}" * depth
    return "[" * depth + inner + "]" * depth


def post(station, route: str, doc: str) -> requests.Response:
    base = f"http://{station.config.http.listen}"
    if route == "metadata":
        files = {
            "metadata": (None, doc),
            "image": ("c.jpg", scene_jpeg(1, (64, 48)), "image/jpeg"),
        }
        return requests.post(f"{base}/api/detections", files=files, timeout=30)
    path = {
        "register": "/api/cameras/register",
        "status": "/api/cameras/ab12/status",
        "command": "/api/units/ab12/commands",
    }[route]
    headers = {"Content-Type": "application/json"}
    return requests.post(f"{base}{path}", data=doc.encode(), headers=headers, timeout=30)


def refusals(station) -> float:
    return sum(
        metric(station, "fieldstation_rejected_total", path="http", reason=reason)
        for reason in ("bad_json", "too_large", "bad_multipart", "bad_device_id", "bad_field")
    )


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    route=st.sampled_from(ROUTES),
    depth=st.integers(min_value=0, max_value=50_000),
    brace=st.booleans(),
    width=st.sampled_from([0, 1, 1000, 3_000_000]),
)
def test_nested_or_huge_json_is_a_counted_4xx(station, route, depth, brace, width):
    doc = document(depth, brace, width)
    before = refusals(station)
    response = post(station, route, doc)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    assert "error" in response.json()
    if route != "command":  # the operator's command route is not a unit intake
        assert refusals(station) == before + 1


def test_the_reported_reproduction_a_few_kib_of_brackets(station):
    for route in ("register", "status", "metadata"):
        response = post(station, route, "[" * 4096 + "]" * 4096)
        assert response.status_code == 400
        assert response.json()["reason"] == "bad_json"
    assert metric(station, "fieldstation_rejected_total", path="http", reason="bad_json") == 3


def test_a_valid_body_still_works(station):
    body = json.dumps({"battery_level": 50, "battery_voltage": 3.9})
    assert post(station, "status", body).status_code == 200
