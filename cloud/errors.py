"""Exceptions shared by the backends and the API layer."""

from starlette.exceptions import HTTPException


class BackendUnavailable(RuntimeError):
    """The database or object store cannot be reached now; the client should retry later (503)."""


class NotFound(KeyError):
    """A station, model or object that does not exist."""


class Refused(HTTPException):
    """A request refused with a status and a `reason`, the label it is counted under."""

    def __init__(
        self, status: int, reason: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(status, detail, headers=headers)
        self.reason = reason
