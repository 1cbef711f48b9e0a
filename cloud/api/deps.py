"""Request dependencies: the service, and who the bearer token acts for.

The checks are plain functions (`authenticate`, `admit_station`) so the batch upload route can
call them directly: FastAPI's dependency solving costs more per request than the checks do.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.concurrency import run_in_threadpool

from cloud.auth import Principal, verify_token
from cloud.errors import Refused
from cloud.ratelimit import retry_after_header
from cloud.service import Service

# auto_error=False: we answer 401 ourselves (FastAPI's default would be 403 for a missing header).
bearer = HTTPBearer(auto_error=False, description="`fieldstation-cloud stations add` prints it")

UNAUTHORIZED = {"WWW-Authenticate": "Bearer"}


async def get_service(request: Request) -> Service:
    # async: a plain function would be run in a worker thread on every request.
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(get_service)]
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, read as `bearer` reads it."""
    scheme, token = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and token) or scheme.lower() != "bearer":
        return None
    return token


async def authenticate(service: Service, token: str | None) -> Principal:
    """The token's principal, or 401."""
    if token is None:
        raise Refused(401, "no_token", "missing bearer token", headers=UNAUTHORIZED)
    admin_token = service.config.auth.admin_token
    if service.db.local_file:  # a one-row read of a local file costs less than a thread hop
        found = verify_token(service.db, token, admin_token)
    else:
        found = await run_in_threadpool(verify_token, service.db, token, admin_token)
    if found is None:
        raise Refused(401, "bad_token", "unknown or revoked token", headers=UNAUTHORIZED)
    return found


def admit_station(service: Service, who: Principal) -> str:
    """The calling station's id (rate limited per station), or 403 for an operator token."""
    if who.role != "station" or who.station_id is None:
        raise Refused(403, "not_station_token", "this route is for station tokens")
    wait = service.limiter.take(who.station_id)
    if wait > 0:
        raise Refused(
            429,
            "rate_limited",
            f"station {who.station_id!r} is over its rate limit",
            headers={"Retry-After": retry_after_header(wait)},
        )
    return who.station_id


async def principal(service: ServiceDep, credentials: Credentials) -> Principal:
    """The token's principal, or 401."""
    return await authenticate(service, credentials.credentials if credentials else None)


PrincipalDep = Annotated[Principal, Depends(principal)]


async def station(who: PrincipalDep, service: ServiceDep) -> str:
    """The calling station's id (rate limited per station), or 403 for an operator token."""
    return admit_station(service, who)


async def station_or_admin(who: PrincipalDep) -> Principal:
    """Any valid token (model artifacts are readable by stations and operators)."""
    return who


async def admin(who: PrincipalDep) -> Principal:
    """Operator routes: 403 for station tokens."""
    if who.role != "admin":
        raise Refused(403, "not_admin_token", "this route needs the operator (admin) token")
    return who


StationId = Annotated[str, Depends(station)]
AnyToken = Annotated[Principal, Depends(station_or_admin)]
Admin = Annotated[Principal, Depends(admin)]


def forbid_other_station(station_id: str, claimed: str | None) -> None:
    """A token acts only for its own station: refuse a body naming another one."""
    if claimed is not None and claimed != station_id:
        raise Refused(403, "wrong_station", f"station_id {claimed!r} is not this token's station")
