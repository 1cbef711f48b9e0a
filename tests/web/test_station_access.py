"""Who may use the station page: the password, its hash file, the loopback rule, the LAN listener,
the login limit, and secrets kept off the page."""

from __future__ import annotations

import asyncio
import math
import os
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import requests

from agent.config import ConfigError, parse_config
from agent.power.sources import Reading
from agent.web.auth import hash_password, verify_password
from tests.helpers import free_port, metric, wait_for
from tests.power.conftest import SysfsBattery
from tests.web.page_rig import PASSWORD, SCREENSHOTS, log_in

pytestmark = pytest.mark.timeout(120)


def passwd(tmp_path, password: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "web", "passwd", "--file", str(tmp_path / "pw"), "--stdin"],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )


def answers(listen: str) -> bool:
    """True once a listener accepts connections (the station waits only for its main one)."""
    try:
        requests.get(f"http://{listen}/healthz", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def test_web_passwd_writes_an_scrypt_hash_only_its_owner_reads(tmp_path):
    r = passwd(tmp_path, PASSWORD)
    assert r.returncode == 0, r.stderr
    stored = (tmp_path / "pw").read_text()
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert stat.S_IMODE(os.stat(tmp_path / "pw").st_mode) == 0o600
    assert verify_password(PASSWORD, stored) and not verify_password("ridge-station-pX", stored)
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # salted
    short = passwd(tmp_path / "short", "abc")
    assert short.returncode == 2 and "use 8 or more" in short.stderr
    assert not (tmp_path / "short" / "pw").exists()


def test_failed_logins_are_limited_and_counted(make_station, browser, tmp_path):
    passwd(tmp_path, PASSWORD)
    station = make_station(f'[web]\npassword_file = "{tmp_path / "pw"}"\nlogin_attempts = 3\n')
    url = f"http://{station.config.http.listen}"
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{url}/")
    for _ in range(3):
        page.fill("input[name=password]", "not-the-password")
        page.click("button[type=submit]")
        assert "Wrong password" in page.inner_text("#login-error")
    page.fill("input[name=password]", PASSWORD)  # right, but too late: this client must wait
    page.click("button[type=submit]")
    assert "Too many failed logins" in page.inner_text("#login-error")
    assert "/login" in page.url
    assert metric(station, "fieldstation_web_logins_total", outcome="bad_password") == 3
    assert metric(station, "fieldstation_web_logins_total", outcome="rate_limited") == 1
    context.close()


def test_no_password_serves_the_page_on_loopback_only(make_station):
    station = make_station()
    url = f"http://{station.config.http.listen}"
    with requests.Session() as s:
        r = s.get(f"{url}/", timeout=5)
        assert r.status_code == 200 and "READY" in r.text
        assert "Set-Cookie" in r.headers and "HttpOnly" in r.headers["Set-Cookie"]
        # a session alone is not enough to change anything: the CSRF token is needed
        assert s.post(f"{url}/flash", data={"port": "x"}, timeout=5).status_code == 403

    async def from_the_lan() -> httpx.Response:
        transport = httpx.ASGITransport(app=station.http.app, client=("192.168.4.20", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://station") as c:
            return await c.get("/")

    # in a thread of its own: the browser fixture's event loop runs in this one
    with ThreadPoolExecutor(1) as pool:
        r = pool.submit(asyncio.run, from_the_lan()).result(30)
    assert r.status_code == 403 and "fieldstation web passwd" in r.text
    assert metric(station, "fieldstation_web_refused_total", reason="not_loopback") == 1


def test_the_lan_listener_serves_the_page_only_when_configured(make_station, tmp_path):
    passwd(tmp_path, PASSWORD)
    lan = f"127.0.0.1:{free_port()}"
    off = make_station(http={"lan_listen": lan})
    wait_for(lambda: answers(lan), 10, "the LAN listener")
    assert requests.get(f"http://{lan}/", timeout=5).status_code == 404
    assert (
        requests.post(f"http://{lan}/api/cameras/register", json={}, timeout=5).status_code == 400
    )
    off.stop()
    lan = f"127.0.0.1:{free_port()}"
    make_station(
        f'[web]\nlan = true\npassword_file = "{tmp_path / "pw"}"\n', http={"lan_listen": lan}
    )
    wait_for(lambda: answers(lan), 10, "the LAN listener")
    r = requests.get(f"http://{lan}/", allow_redirects=False, timeout=5)
    assert r.status_code == 303 and r.headers["location"].startswith("/login")


def test_a_lan_page_without_a_password_is_refused_by_config_check():
    with pytest.raises(ConfigError) as err:
        parse_config("[web]\nlan = true\n", "station.toml")
    assert "station.toml:2: web.lan: the page on the LAN listener needs web.password_file" in str(
        err.value
    )


def test_the_config_page_hides_secrets(make_station, tmp_path):
    station = make_station(
        '[upload]\nenabled = false\n[[upload.endpoints]]\nname = "aws"\n'
        'url = "https://sync.example.org"\ntoken = "endpoint-secret-77"\n',
        http={"token": "intake-secret-42"},
    )
    text = requests.get(f"http://{station.config.http.listen}/config", timeout=5).text
    assert "intake-secret-42" not in text and "endpoint-secret-77" not in text
    assert text.count("(set, hidden)") == 2 and "https://sync.example.org" in text


def test_overview_shows_power_with_a_24h_chart(make_station, browser, tmp_path):
    passwd(tmp_path, PASSWORD)
    battery = SysfsBattery(tmp_path / "sys")
    battery.set(64, amps=1.5)
    station = make_station(
        f'[web]\npassword_file = "{tmp_path / "pw"}"\n'
        f'[power]\nsysfs_root = "{tmp_path / "sys"}"\nread_interval_s = 1\n'
        '[[power.sources]]\nkind = "sysfs"\n'
    )
    now = time.time()
    for i in range(96):  # the last day every 15 min: a sunny day on a 12 V pack
        at = now - 86400 + i * 900
        sun = max(0.0, math.sin((i - 24) / 48 * math.pi))
        station.power.history.add_reading(
            Reading("sysfs", at, soc=40 + 40 * sun, power_w=30 * sun - 4, solar_w=40 * sun),
            "normal",
        )
    page = log_in(browser, f"http://{station.config.http.listen}")
    chart = page.locator("#power-chart polyline.soc")
    assert len(chart.get_attribute("points").split()) >= 96
    # battery and solar: the panel's line climbs from the bottom edge at dawn
    solar = page.locator("#power-chart polyline.solar").get_attribute("points").split()
    assert len(solar) >= 95 and {p.split(",")[1] for p in solar} >= {"60.0", "2.0"}
    assert "solar 0-40.0 W" in page.inner_text("#power-chart + p + p")
    assert page.inner_text("#power-state") == "NORMAL"
    page.screenshot(path=str(SCREENSHOTS / "overview-power-laptop.png"))
    # the technician keeps the station awake for a while (the power manager's hold)
    page.select_option("select[name=duration]", "2h")
    page.click("form.hold button")
    assert "Held NORMAL for 2 h" in page.inner_text(".note.ok")
    assert station.power.hold_until is not None
    assert "held NORMAL until" in page.inner_text("#power-hold")
    page.context.close()
