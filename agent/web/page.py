"""The technician's page: routes for the overview, units, captures, flash and config screens.

Server-rendered HTML (Jinja2 templates beside this file) with one small script of our own that
asks `/live` for news every few seconds. Actions are HTML forms: each needs the session, its CSRF
token and a one-time form id, and goes through the station's own command path.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, select_autoescape
from prometheus_client import Counter
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from agent.esp32.configure import ConfigureError, UnitSettings
from agent.power.settings import parse_duration
from agent.store import STATES
from agent.web import views
from agent.web.auth import (
    COOKIE,
    LoginLimit,
    PasswordError,
    Session,
    Sessions,
    csrf_ok,
    is_loopback,
    read_password_hash,
    verify_password,
)
from agent.web.flashing import Flasher
from agent.web.forms import (
    CONFIG_LIMITS,
    HOLDS,
    capture_filter,
    command_body,
    form_int,
    known_cards,
    safe_next,
    thumb_url,
)
from agent.web.thumbs import Thumbnails

if TYPE_CHECKING:
    from agent.daemon import Station

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
    "style-src 'self' 'unsafe-inline'; script-src 'self'; frame-ancestors 'none'; "
    "form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


Handler = Callable[[Request, Session], Awaitable[Response]]


class Refused(Exception):
    """A request the page will not serve; the response says why."""

    def __init__(self, response: Response) -> None:
        self.response = response


class StationPage:
    """The page of one station; `routes(lan=...)` for each listener that serves it."""

    def __init__(self, station: Station) -> None:
        self.station = station
        self.settings = station.config.web
        self.sessions = Sessions(self.settings.session_hours * 3600)
        self.limit = LoginLimit(self.settings.login_attempts, self.settings.login_window_s)
        self.thumbs = Thumbnails()
        self.pushed = views.PushedConfigs()
        self.flasher = Flasher(self.settings, station.store)
        self._warned: str | None = None
        self.templates = Environment(
            loader=FileSystemLoader(HERE / "templates"),
            autoescape=select_autoescape(["html"]),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.templates.globals["q"] = lambda s: quote(str(s), safe="")
        r = station.metrics.registry
        self.logins = Counter(
            "fieldstation_web_logins",
            "Logins to the station page, by outcome (ok, bad_password, rate_limited, no_password)",
            ["outcome"],
            registry=r,
        )
        self.refused = Counter(
            "fieldstation_web_refused",
            "Page requests refused, by reason (no_session, csrf, not_loopback, double_submit)",
            ["reason"],
            registry=r,
        )

    # --- routes ---------------------------------------------------------------------------------

    def routes(self, *, lan: bool = False) -> list[BaseRoute]:
        def guard(
            handler: Handler, *, write: bool = False
        ) -> Callable[[Request], Awaitable[Response]]:
            async def endpoint(request: Request) -> Response:
                try:
                    session = await self._session(request, lan=lan, write=write)
                    response = await handler(request, session)
                except Refused as exc:
                    response = exc.response
                return self._with_headers(response)

            return endpoint

        async def login_get(request: Request) -> Response:
            return self._with_headers(await self.login_page(request, lan=lan))

        async def login_post(request: Request) -> Response:
            return self._with_headers(await self.login(request, lan=lan))

        return [
            Route("/", guard(self.overview_page)),
            Route("/units", guard(self.units_page)),
            Route(
                "/units/{unit_id}/command", guard(self.unit_command, write=True), methods=["POST"]
            ),
            Route("/captures", guard(self.captures_page)),
            Route("/captures/{capture_id}", guard(self.capture_page)),
            Route("/captures/{capture_id}/thumb.jpg", guard(self.thumbnail)),
            Route("/captures/{capture_id}/image.jpg", guard(self.image)),
            Route("/power/hold", guard(self.power_hold, write=True), methods=["POST"]),
            Route("/flash", guard(self.flash_page)),
            Route("/flash", guard(self.flash_start, write=True), methods=["POST"]),
            Route("/flash/job", guard(self.flash_job)),
            Route("/config", guard(self.config_page)),
            Route("/live", guard(self.live)),
            Route("/login", login_get),
            Route("/login", login_post, methods=["POST"]),
            Route("/logout", guard(self.logout, write=True), methods=["POST"]),
            Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        ]

    @staticmethod
    def _with_headers(response: Response) -> Response:
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)  # images keep their own Cache-Control
        return response

    # --- access ---------------------------------------------------------------------------------

    def _password_hash(self) -> str | None:
        try:
            return read_password_hash(self.settings.password_file)
        except PasswordError as exc:
            if str(exc) != self._warned:  # once per problem, not once per request
                self._warned = str(exc)
                log.warning("%s; the page answers loopback clients only", exc)
            return None

    async def _session(self, request: Request, *, lan: bool, write: bool) -> Session:
        client = request.client.host if request.client else None
        hashed = await asyncio.to_thread(self._password_hash)
        session = self.sessions.get(request.cookies.get(COOKIE))
        if hashed is not None and session is not None and session.user != "technician":
            session = None  # opened before a password was set: a login is needed now
        if hashed is None:
            if lan or not is_loopback(client):
                self.refused.labels("not_loopback").inc()
                raise Refused(
                    self._message(
                        403,
                        "Refused",
                        "This station has no password, so its page answers only on the station "
                        "itself (loopback). Set one with `fieldstation web passwd`.",
                    )
                )
            if session is None and not write:
                session = self.sessions.open("loopback")
                request.state.new_cookie = session.token
        if session is None:
            self.refused.labels("no_session").inc()
            if write or request.url.path in ("/live", "/flash/job"):
                raise Refused(
                    self._message(
                        403, "Refused", "There is no session: log in (or reload the page) first."
                    )
                )
            raise Refused(RedirectResponse(f"/login?next={quote(request.url.path)}", 303))
        if write:
            form = await request.form()
            request.state.form = form
            if not csrf_ok(session, str(form.get("csrf", ""))):
                self.refused.labels("csrf").inc()
                raise Refused(
                    self._message(
                        403,
                        "Refused",
                        "The form's CSRF token is missing or wrong; nothing changed.",
                    )
                )
        return session

    async def login_page(self, request: Request, *, lan: bool, error: str = "") -> Response:
        hashed = await asyncio.to_thread(self._password_hash)
        return self._render(
            "login.html",
            None,
            status=400 if error else 200,
            error=error,
            no_password=hashed is None,
            next=safe_next(request.query_params.get("next", "/")),
        )

    async def login(self, request: Request, *, lan: bool) -> Response:
        client = request.client.host if request.client else "?"
        form = await request.form()
        hashed = await asyncio.to_thread(self._password_hash)
        if hashed is None:
            self.logins.labels("no_password").inc()
            return await self.login_page(
                request, lan=lan, error="This station has no password set; there is no login."
            )
        wait = self.limit.wait_s(client)
        if wait > 0:
            self.logins.labels("rate_limited").inc()
            response = await self.login_page(
                request,
                lan=lan,
                error=f"Too many failed logins from {client}: try again in {wait:.0f} s.",
            )
            response.status_code = 429
            response.headers["Retry-After"] = str(int(wait))
            return response
        ok = await asyncio.to_thread(verify_password, str(form.get("password", "")), hashed)
        if not ok:
            self.limit.failed(client)
            self.logins.labels("bad_password").inc()
            log.warning("failed login to the station page from %s", client)
            return await self.login_page(request, lan=lan, error="Wrong password.")
        self.limit.succeeded(client)
        self.logins.labels("ok").inc()
        self.sessions.close(request.cookies.get(COOKIE))
        session = self.sessions.open("technician")
        response = RedirectResponse(safe_next(str(form.get("next", "/"))), 303)
        self._set_cookie(response, session.token)
        return response

    async def logout(self, request: Request, session: Session) -> Response:
        self.sessions.close(session.token)
        response = RedirectResponse("/login", 303)
        response.delete_cookie(COOKIE, path="/")
        return response

    def _set_cookie(self, response: Response, token: str) -> None:
        response.set_cookie(
            COOKIE,
            token,
            max_age=int(self.settings.session_hours * 3600),
            path="/",
            httponly=True,
            samesite="strict",
        )

    # --- rendering ------------------------------------------------------------------------------

    def _render(
        self,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        request: Request | None = None,
        **context: Any,
    ) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            session=session,
            csrf=session.csrf if session else "",
            notes=session.take_notes() if session else [],
            form_id=lambda: secrets.token_urlsafe(9),
            station_id=self.station.station_id,
            refresh_ms=int(self.settings.refresh_s * 1000),
            **context,
        )
        response = HTMLResponse(html, status_code=status)
        token = getattr(request.state, "new_cookie", None) if request else None
        if token:
            self._set_cookie(response, token)
        return response

    def _message(self, status: int, title: str, text: str) -> HTMLResponse:
        return self._render("message.html", None, status=status, title=title, text=text)

    # --- screens --------------------------------------------------------------------------------

    async def overview_page(self, request: Request, session: Session) -> Response:
        o = await asyncio.to_thread(views.overview, self.station)
        return self._render(
            "overview.html", session, request=request, o=o, page="overview", holds=HOLDS
        )

    async def units_page(self, request: Request, session: Session) -> Response:
        cards = await asyncio.to_thread(views.units, self.station, self.pushed)
        return self._render(
            "units.html",
            session,
            request=request,
            units=cards,
            page="units",
            limits=CONFIG_LIMITS,
        )

    async def captures_page(self, request: Request, session: Session) -> Response:
        f = capture_filter(request)
        cards = await asyncio.to_thread(views.captures, self.station, f, limit=48)
        units = [r["unit_id"] for r in await asyncio.to_thread(self.station.store.units)]
        labels = sorted(await asyncio.to_thread(self.station.store.count_by_label))
        return self._render(
            "captures.html",
            session,
            request=request,
            captures=cards,
            f=f,
            units=units,
            labels=labels,
            states=STATES,
            page="captures",
        )

    async def capture_page(self, request: Request, session: Session) -> Response:
        c = await asyncio.to_thread(
            views.capture_detail, self.station, request.path_params["capture_id"]
        )
        if c is None:
            return self._message(
                404, "No such capture", "The buffer holds no capture with this id."
            )
        return self._render("capture.html", session, request=request, c=c, page="captures")

    async def config_page(self, request: Request, session: Session) -> Response:
        doc = json.dumps(views.redacted(self.station.config), indent=2, sort_keys=False)
        return self._render(
            "config.html",
            session,
            request=request,
            config=doc,
            source=self.station.config.source,
            page="config",
        )

    # --- images ---------------------------------------------------------------------------------

    def _shown(self, capture_id: str, want: str | None) -> str | None:
        row = self.station.store.get_capture(capture_id)
        if row is None:
            return None
        variant, _ = views.shown_variant(self.station, row)
        # the variant in the URL must be what the policy allows now (URLs are cached for good)
        return variant if variant is not None and (want is None or want == variant) else None

    async def thumbnail(self, request: Request, session: Session) -> Response:
        cid = request.path_params["capture_id"]
        variant = await asyncio.to_thread(self._shown, cid, request.query_params.get("v"))
        if variant is None:
            return Response("no image may be shown for this capture\n", 404)
        thumb = await asyncio.to_thread(
            self.thumbs.get, cid, variant, lambda: self.station.store.read_image(cid, variant)
        )
        if thumb is None:
            return Response("the image is no longer on the station\n", 404)
        return Response(
            thumb,
            media_type="image/jpeg",
            headers={"Cache-Control": "private, max-age=31536000, immutable"},
        )

    async def image(self, request: Request, session: Session) -> Response:
        cid = request.path_params["capture_id"]
        variant = await asyncio.to_thread(self._shown, cid, request.query_params.get("v"))
        data = (
            await asyncio.to_thread(self.station.store.read_image, cid, variant)
            if variant
            else None
        )
        if data is None:
            return Response("no image may be shown for this capture\n", 404)
        return Response(
            data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"}
        )

    # --- unit actions ---------------------------------------------------------------------------

    async def unit_command(self, request: Request, session: Session) -> Response:
        form = request.state.form
        uid = request.path_params["unit_id"]
        back = RedirectResponse(f"/units#unit-{quote(uid)}", 303)
        if not session.use_form(str(form.get("form_id", ""))):
            self.refused.labels("double_submit").inc()
            session.note("error", "This form was sent already (a double submit): nothing changed.")
            return back
        known = {r["unit_id"] for r in await asyncio.to_thread(self.station.store.units)}
        if uid not in known:
            session.note("error", f"Unknown unit {uid!r}: nothing was sent.")
            return RedirectResponse("/units", 303)
        try:
            body = command_body(str(form.get("action", "")), form)
        except ValueError as exc:
            session.note("error", f"{uid}: {exc}; nothing was sent.")
            return back
        try:
            result = await asyncio.to_thread(self.station.send_command, uid, body)
        except LookupError as exc:
            session.note("error", f"{uid}: {exc}; nothing was sent.")
            return back
        except (ValueError, TypeError, ConnectionError) as exc:
            session.note("error", f"{uid}: the station refused it: {exc}")
            return back
        if body["command"] == "config":
            self.pushed.pushed(uid, {k: body[k] for k in views.CONFIG_FIELDS})
            session.note(
                "ok", f"Sent {result['sent']} to {uid}; waiting for its CONFIG_REPORT to confirm."
            )
        elif body["command"] == "capture_now":
            session.note(
                "ok", f"Sent {result['sent']} to {uid}; its capture appears when it arrives."
            )
        else:
            session.note("ok", f"Sent {result['sent']} to {uid} for {body['duration_s']} s.")
        return back

    async def power_hold(self, request: Request, session: Session) -> Response:
        """Keep NORMAL behaviour for a while (the power manager's hold, as `fieldstation power hold`)."""
        form = request.state.form
        back = RedirectResponse("/", 303)
        if not session.use_form(str(form.get("form_id", ""))):
            self.refused.labels("double_submit").inc()
            session.note("error", "This form was sent already (a double submit): nothing changed.")
            return back
        power = self.station.power
        if power is None:
            session.note("error", "The power manager is off ([power] enabled): nothing changed.")
            return back
        text = str(form.get("duration", ""))
        if text not in HOLDS:
            session.note(
                "error", f"Hold {text!r} is not one of {', '.join(HOLDS)}; nothing changed."
            )
            return back
        await asyncio.to_thread(power.hold, parse_duration(text), "station page")
        session.note("ok", f"Held NORMAL for {HOLDS[text]}." if text != "0" else "Hold ended.")
        return back

    # --- flash ----------------------------------------------------------------------------------

    async def flash_page(self, request: Request, session: Session) -> Response:
        ports = await asyncio.to_thread(self.flasher.ports)
        job = self.flasher.job()
        return self._render(
            "flash.html",
            session,
            request=request,
            ports=ports,
            firmware=self.flasher.firmware,
            job=job.as_dict() if job else None,
            page="flash",
        )

    async def flash_start(self, request: Request, session: Session) -> Response:
        form = request.state.form
        back = RedirectResponse("/flash", 303)
        if not session.use_form(str(form.get("form_id", ""))):
            self.refused.labels("double_submit").inc()
            session.note("error", "This form was sent already (a double submit): nothing changed.")
            return back
        try:
            settings = UnitSettings(
                unit_id=str(form.get("unit_id", "")).strip(),
                capture_interval_s=form_int(form, "capture_interval_s", 0, 86400, "timer interval"),
                frame_size=form_int(form, "frame_size", 0, 30, "frame size"),
                jpeg_quality=form_int(form, "jpeg_quality", 0, 63, "JPEG quality"),
                pir_enabled=form.get("pir_enabled") == "1",
            )
            job = await asyncio.to_thread(self.flasher.start, str(form.get("port", "")), settings)
        except (ValueError, ConfigureError) as exc:
            session.note("error", f"{exc}; nothing was written.")
            return back
        session.note("ok", f"Flashing {job.unit_id} on {job.port}.")
        return back

    async def flash_job(self, request: Request, session: Session) -> Response:
        job = self.flasher.job()
        return JSONResponse(job.as_dict() if job else None)

    # --- live updates ---------------------------------------------------------------------------

    async def live(self, request: Request, session: Session) -> Response:
        """What changed since the page was drawn, as HTML fragments (images are never resent)."""
        page = request.query_params.get("page", "")
        known = known_cards(request.query_params.get("known", ""))
        out: dict[str, Any] = {}
        if page == "overview":
            o = await asyncio.to_thread(views.overview, self.station)
            out["regions"] = {"overview": self._part("overview_body", session, o=o)}
        elif page == "units":
            cards = await asyncio.to_thread(views.units, self.station, self.pushed)
            out["units"] = [
                {
                    "id": u["id"],
                    "status": self._part("unit_status", session, u=u),
                    "thumb": thumb_url(u["last_capture"]),
                    "card": None
                    if u["id"] in known
                    else self._part("unit_card", session, u=u, limits=CONFIG_LIMITS),
                }
                for u in cards
            ]
        elif page == "captures":
            cards = await asyncio.to_thread(
                views.captures, self.station, capture_filter(request), limit=48
            )
            out["cards"] = [
                {"id": c["id"], "sig": c["sig"], "html": self._part("capture_card", session, c=c)}
                for c in cards
                if known.get(c["id"]) != c["sig"]
            ]
            out["order"] = [c["id"] for c in cards]
        return JSONResponse(out, headers={"Cache-Control": "no-store"})

    def _part(self, macro: str, session: Session, **kwargs: Any) -> str:
        module = self.templates.get_template("parts.html").make_module(
            {"csrf": session.csrf, "form_id": lambda: secrets.token_urlsafe(9)}
        )
        return str(getattr(module, macro)(**kwargs))
