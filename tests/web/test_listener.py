"""The station's HTTP listener at rest: it sleeps between its once-a-second ticks and stops at once."""

from __future__ import annotations

import threading
import time
from email.utils import parsedate_to_datetime

import requests
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from agent.web.app import HttpListener
from tests.helpers import context_switches, free_port, wait_for


def test_an_idle_listener_sleeps_answers_with_a_fresh_date_and_stops_at_once():
    app = Starlette(routes=[Route("/healthz", lambda request: PlainTextResponse("ok\n"))])
    listener = HttpListener("http", app, f"127.0.0.1:{free_port()}")
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), name="http-test", daemon=True)
    thread.start()
    try:
        assert listener.wait_started()
        time.sleep(1.2)
        before = context_switches(thread)
        time.sleep(2.0)  # uvicorn's own 0.1 s tick would wake it twenty times here
        assert context_switches(thread) - before <= 8
        r = requests.get(f"http://{listener.host}:{listener.port}/healthz", timeout=5)
        assert r.text == "ok\n"
        assert abs(parsedate_to_datetime(r.headers["date"]).timestamp() - time.time()) < 3
    finally:
        stop.set()
        # stopped by waking its loop, not at its next tick
        wait_for(lambda: not thread.is_alive(), timeout=5, what="the listener to stop")
