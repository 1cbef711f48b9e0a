"""What the page reads from outside (form fields, query strings, the password file) never
crashes it: property tests over any text."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agent.web.auth import hash_password, verify_password
from agent.web.forms import command_body, known_cards, quiet_minutes, safe_next

HASH = hash_password("ridge-station-pw", salt=b"0123456789abcdef")


@given(st.text())
def test_login_redirects_only_to_our_own_paths(target):
    out = safe_next(target)
    assert out.startswith("/") and not out.startswith("//") and "\\" not in out and ":" not in out


@given(st.text())
def test_the_quiet_period_is_two_minutes_of_the_day_or_a_clear_error(text):
    try:
        start, end = quiet_minutes(text)
    except ValueError as exc:
        assert "must look like 22:00-05:00" in str(exc)
    else:
        assert (start, end) == (0xFFFF, 0xFFFF) or (0 <= start < 1440 and 0 <= end < 1440)


@given(
    st.dictionaries(
        st.sampled_from(
            [
                "action",
                "capture_interval_s",
                "frame_size",
                "jpeg_quality",
                "duration_s",
                "quiet",
                "pir_enabled",
            ]
        ),
        st.text(max_size=12),
    )
)
def test_a_command_form_is_a_valid_body_or_a_clear_error(form):
    try:
        body = command_body(form.get("action", ""), form)
    except ValueError as exc:
        assert str(exc)
    else:
        assert body["command"] in ("capture_now", "sleep_now", "config")
        if body["command"] == "config":
            assert 0 <= body["jpeg_quality"] <= 63


@given(st.text(max_size=400))
def test_the_known_list_of_the_live_poll_parses_any_text(text):
    known = known_cards(text)
    assert all(isinstance(k, str) and k for k in known)


@given(st.text(max_size=200))
def test_a_damaged_password_file_never_lets_anyone_in(stored):
    assert verify_password("ridge-station-pw", stored) is False or stored.strip() == HASH
