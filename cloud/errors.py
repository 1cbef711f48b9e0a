"""Exceptions shared by the backends and the API layer."""


class BackendUnavailable(RuntimeError):
    """The database or object store cannot be reached now; the client should retry later (503)."""


class NotFound(KeyError):
    """A station, model or object that does not exist."""
