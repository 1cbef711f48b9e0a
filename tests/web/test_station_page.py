"""The technician's page in a real browser (Debian's Chromium) against a real station whose
camera units are virtual units on ptys: what a technician on site does, and what they see."""

from __future__ import annotations

import json

import pytest
import requests

from agent import protocol as p
from agent.esp32.host_unit import UnitRunner
from agent.inference.package import Detection
from agent.scenes import scene_jpeg
from tests.helpers import metric, wait_for
from tests.web.page_rig import SCREENSHOTS, UNITS, Field, log_in

pytestmark = pytest.mark.timeout(120)


def unit_config(field: Field, unit_id: str) -> dict:
    row = next(r for r in field.station.store.units() if r["unit_id"] == unit_id)
    return json.loads(row["config"])


def test_log_in_and_see_every_unit(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    assert "READY" in page.inner_text("#ready")
    page.click("nav >> text=Units")
    cards = page.locator("article.unit")
    assert sorted(cards.evaluate_all("els => els.map(e => e.dataset.unit)")) == sorted(UNITS)
    north = page.locator("#unit-cam-north")
    assert "virtual-1.0.0" in north.inner_text() or "wildcam" in north.inner_text()
    assert "commands reach it" in north.inner_text()
    # the aim check: each unit's last capture as a thumbnail, loaded and a few KB
    thumbs = page.locator("article.unit img[data-thumb]")
    wait_for(
        lambda: all(thumbs.evaluate_all("els => els.map(e => e.complete && e.naturalWidth > 0)")),
        10,
        "thumbnails",
    )
    src = thumbs.first.get_attribute("src")
    thumb = page.request.get(f"{field_station.url}{src}")
    assert thumb.ok and len(thumb.body()) < 16_000
    assert "immutable" in thumb.headers["cache-control"]  # shown once, never fetched again
    page.context.close()


def test_a_new_capture_appears_without_a_reload(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/captures")
    before = page.locator("#captures .capture").count()
    page.evaluate("window.__sameDocument = true")
    thumb_requests: list[str] = []
    page.on("request", lambda r: thumb_requests.append(r.url) if "thumb.jpg" in r.url else None)
    field_station.units["cam-ridge"].capture(scene_jpeg(77))
    wait_for(lambda: page.locator("#captures .capture").count() > before, 30, "the new card")
    assert page.evaluate("window.__sameDocument") is True  # the page was not reloaded
    newest = page.locator("#captures .capture").first
    assert "cam-ridge" in newest.inner_text()
    page.wait_for_timeout(1500)  # a few more polls: images already shown are not fetched again
    assert len(thumb_requests) == 1, thumb_requests
    page.context.close()


def test_push_a_config_and_see_the_unit_confirm_it(field_station: Field, browser):
    page = log_in(browser, field_station.url, width=360, height=780)
    page.goto(f"{field_station.url}/units")
    card = page.locator("#unit-cam-north")
    card.locator("summary").click()
    form = card.locator("form.config-form")
    form.locator("input[name=capture_interval_s]").fill("600")
    form.locator("input[name=frame_size]").fill("10")
    form.locator("input[name=jpeg_quality]").fill("20")
    form.locator("input[name=quiet]").fill("22:00-05:30")
    form.locator("button[value=config]").click()
    assert "Sent CONFIG to cam-north" in page.inner_text(".note.ok")
    # the unit applies it and answers CONFIG_REPORT; the card says so without a reload
    page.wait_for_selector("#unit-cam-north .push.confirmed", timeout=15_000)
    assert unit_config(field_station, "cam-north")["capture_interval_s"] == 600
    text = card.locator(".config-words").inner_text()
    assert "every 600 s" in text and "quality 20" in text and "quiet 22:00-05:30" in text
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / "units-phone.png"), full_page=False)
    page.context.close()


def test_capture_now_shows_the_units_capture(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/units")
    before = field_station.captures_of("cam-water")
    page.locator("#unit-cam-water button[value=capture_now]").click()
    assert "Sent CAPTURE_NOW to cam-water" in page.inner_text(".note.ok")
    wait_for(lambda: field_station.captures_of("cam-water") > before, 15, "the unit's capture")
    page.context.close()


def test_bad_form_input_gets_a_clear_message_and_changes_nothing(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/units")
    ridge = field_station.units["cam-ridge"]
    sent_before = len(ridge.commands)
    config_before = unit_config(field_station, "cam-ridge")
    card = page.locator("#unit-cam-ridge")
    card.locator("summary").click()
    form = card.locator("form.config-form")
    form.locator("input[name=jpeg_quality]").fill("99")
    form.locator("button[value=config]").click()
    assert "JPEG quality must be between 0 and 63, not 99" in page.inner_text(".note.error")
    card.locator("summary").click()
    card.locator("input[name=quiet]").fill("late evening")
    card.locator("button[value=config]").click()
    assert "must look like 22:00-05:00" in page.inner_text(".note.error")
    # an unknown unit, and the same form sent twice (a double submit)
    csrf = page.locator("#unit-cam-ridge input[name=csrf]").first.input_value()
    r = page.request.post(
        f"{field_station.url}/units/cam-nobody/command",
        form={"csrf": csrf, "form_id": "f-unknown", "action": "capture_now"},
    )
    assert r.ok and "Unknown unit &#39;cam-nobody&#39;: nothing was sent" in r.text()
    form_id = page.locator("#unit-cam-ridge input[name=form_id]").first.input_value()
    for _ in range(2):
        r = page.request.post(
            f"{field_station.url}/units/cam-ridge/command",
            form={"csrf": csrf, "form_id": form_id, "action": "sleep_now", "duration_s": "60"},
        )
    assert "double submit" in r.text()
    wait_for(lambda: len(ridge.commands) > sent_before, 10, "the one SLEEP_NOW")
    page.wait_for_timeout(500)
    assert [type(m) for m in ridge.commands[sent_before:]] == [p.SleepNow]
    assert unit_config(field_station, "cam-ridge") == config_before
    page.context.close()


def test_refused_without_a_session_or_the_csrf_token(field_station: Field, browser):
    url = field_station.url
    north = field_station.units["cam-north"]
    sent_before = len(north.commands)
    # no session: pages send the browser to the login, actions are refused
    assert requests.get(f"{url}/units", allow_redirects=False, timeout=5).status_code == 303
    r = requests.post(f"{url}/units/cam-north/command", data={"action": "capture_now"}, timeout=5)
    assert r.status_code == 403 and "There is no session" in r.text
    assert (
        requests.get(f"{url}/captures/x/thumb.jpg", allow_redirects=False, timeout=5).status_code
        == 303
    )
    # a session but no CSRF token (what a forged cross-site form would send)
    page = log_in(browser, url)
    r = page.request.post(
        f"{url}/units/cam-north/command", form={"action": "capture_now", "form_id": "f1"}
    )
    assert r.status == 403 and "CSRF token is missing or wrong" in r.text()
    page.goto(f"{url}/units")
    assert len(north.commands) == sent_before
    assert metric(field_station.station, "fieldstation_web_refused_total", reason="csrf") >= 1
    # the cookie is HttpOnly and SameSite
    cookie = next(c for c in page.context.cookies() if c["name"] == "fs_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.context.close()


def test_flash_and_configure_a_virtual_board_then_see_its_hello(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/flash")
    page.select_option("select[name=port]", field_station.board.port)
    page.fill("input[name=unit_id]", "cam-bench-01")
    page.fill("input[name=capture_interval_s]", "900")
    page.click("form[action='/flash'] button")
    assert "Flashing cam-bench-01" in page.inner_text(".note"), page.inner_text("main")
    wait_for(lambda: "waiting for HELLO" in page.inner_text("#flash-log"), 20, "the HELLO step")
    log = page.inner_text("#flash-log")
    assert "verify    ok" in log and "write     ok, verified" in log
    # the unit reboots into the new firmware and its settings: it says HELLO on its serial port
    assert field_station.board.firmware_version() == "wildcam-2.4.0"
    unit = field_station.board.boot(field_station.board_link, images=[scene_jpeg(9)])
    runner = UnitRunner(unit).start()
    field_station.extra.append(runner)
    try:
        wait_for(
            lambda: page.inner_text("#flash-state") != "running" or runner.error,
            30,
            "the job to finish",
        )
        assert runner.error is None, runner.error
        assert page.inner_text("#flash-state") == "done", page.inner_text("#flash-log")
        assert "HELLO from cam-bench-01: firmware wildcam-2.4.0" in page.inner_text("#flash-log")
        assert int(page.get_attribute("#flash-progress", "value")) == 100
        page.screenshot(path=str(SCREENSHOTS / "flash-laptop.png"))
        page.goto(f"{field_station.url}/units")
        assert page.locator("#unit-cam-bench-01").count() == 1
        assert "every 900 s" in page.inner_text("#unit-cam-bench-01 .config-words")
    finally:
        runner.stop()
    page.context.close()


def test_flash_form_refuses_bad_input_and_writes_nothing(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/flash")
    before = field_station.board.path.read_bytes()
    page.select_option("select[name=port]", field_station.board.port)
    page.fill("input[name=unit_id]", "Bad Unit!")
    page.click("form[action='/flash'] button")
    assert "unit_id 'Bad Unit!' must match" in page.inner_text(".note.error")
    csrf = page.locator("input[name=csrf]").first.input_value()
    r = page.request.post(
        f"{field_station.url}/flash",
        form={
            "csrf": csrf,
            "form_id": "f-port",
            "port": "virtual:/etc/passwd",
            "unit_id": "cam-x",
            "capture_interval_s": "300",
            "frame_size": "8",
            "jpeg_quality": "12",
        },
    )
    assert "is not a connected unit" in r.text()
    assert field_station.board.path.read_bytes() == before
    page.context.close()


def test_captures_show_boxes_labels_and_only_what_privacy_allows(field_station: Field, browser):
    store = field_station.station.store
    u = field_station.units["cam-water"]
    n = field_station.captures_of("cam-water")
    for seed in (41, 42, 43):
        u.capture(scene_jpeg(seed))
    wait_for(lambda: field_station.captures_of("cam-water") >= n + 3, 15, "three captures")
    newest = store.latest_captures(unit_id="cam-water", limit=3)
    deer_id, person_id, dropped_id = [r["id"] for r in newest][::-1]
    deer = Detection("deer", "animal", 0.91, (0.2, 0.3, 0.4, 0.5), "wildcam-detector", "3")
    person = Detection("person", "person", 0.88, (0.5, 0.1, 0.3, 0.8), "wildcam-detector", "3")
    # what the inference worker records (it is off in this station): a deer, and a person blurred
    store.save_analysis(deer_id, [deer], empty=False, upload_variant="original", summary={})
    store.save_analysis(
        person_id,
        [person],
        empty=False,
        upload_variant="blurred",
        summary={},
        blurred=scene_jpeg(99),
    )
    store.save_analysis(dropped_id, [person], empty=False, upload_variant="none", summary={})
    page = log_in(browser, field_station.url)
    page.goto(f"{field_station.url}/captures/{dropped_id}")
    assert page.locator(".photo img").count() == 0
    assert "withheld: people in view" in page.inner_text(".photo")
    assert page.request.get(f"{field_station.url}/captures/{dropped_id}/image.jpg").status == 404
    page.goto(f"{field_station.url}/captures?label=deer")
    cards = page.locator("#captures .capture")
    assert cards.count() == 1 and "deer" in cards.first.inner_text()
    assert cards.first.locator(".box.animal").inner_text() == "deer 91%"
    page.goto(f"{field_station.url}/captures?state=analysed&unit=cam-water")
    states = page.locator("#captures .capture .state").all_inner_texts()
    assert states == ["analysed"] * 3
    page.goto(f"{field_station.url}/captures/{person_id}")
    img = page.locator(".photo img").get_attribute("src")
    assert img.endswith("v=blurred") and "People blurred" in page.inner_text(".photo")
    base = f"{field_station.url}/captures/{person_id}"
    assert page.request.get(f"{base}/image.jpg?v=original").status == 404
    assert page.request.get(f"{base}/thumb.jpg?v=original").status == 404
    assert "received" in page.inner_text("#history")
    page.goto(f"{field_station.url}/captures?unit=cam-water")
    page.set_viewport_size({"width": 1280, "height": 860})
    page.screenshot(path=str(SCREENSHOTS / "captures-laptop.png"))
    page.context.close()


def test_first_load_is_small_and_needs_nothing_outside(field_station: Field, browser):
    page = log_in(browser, field_station.url)
    sizes: dict[str, int] = {}
    outside: list[str] = []

    def seen(response):
        if not response.url.startswith(field_station.url):
            outside.append(response.url)
        elif "thumb.jpg" not in response.url:
            sizes[response.url] = len(response.body())

    page.on("response", seen)
    page.goto(f"{field_station.url}/units")
    page.wait_for_load_state("networkidle")
    assert not outside
    assert sum(sizes.values()) < 150_000, sizes
    page.set_viewport_size({"width": 1280, "height": 860})
    page.goto(f"{field_station.url}/")
    page.screenshot(path=str(SCREENSHOTS / "overview-laptop.png"))
    page.set_viewport_size({"width": 360, "height": 780})
    page.screenshot(path=str(SCREENSHOTS / "overview-phone.png"), full_page=True)
    page.context.close()
