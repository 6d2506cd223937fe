"""One error hierarchy for the service: each error carries its DALI name and HTTP status."""

from __future__ import annotations


class ServiceError(Exception):
    """Base of the errors rendered to clients as ``Name: message`` in text/plain."""

    status = 500
    name = "Error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def render(self) -> str:
        """The text/plain body."""
        return f"{self.name}: {self.message}\n"


class UsageError(ServiceError):
    """A malformed request; the message starts with the parameter at fault."""

    status = 400
    name = "UsageError"

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param


class AuthenticationError(ServiceError):
    """No valid credentials."""

    status = 401
    name = "AuthenticationError"


class PermissionDenied(ServiceError):
    """Not allowed: another owner's job, or a request illegal in the job's phase."""

    status = 403
    name = "PermissionDenied"


class NotFound(ServiceError):
    """No such job, result or resource."""

    status = 404
    name = "NotFound"


class MultiValuedParamNotSupported(UsageError):
    """A parameter given several times where only one value is taken (SODA 1.0, 3.1)."""

    name = "MultiValuedParamNotSupported"


class UnknownDataset(UsageError):
    """An ID that names no dataset of this archive (SODA calls it a usage error; HTTP says 404)."""

    status = 404


class Unavailable(ServiceError):
    """The service cannot do this now (its executor or its database is down); try again later."""

    status = 503
    name = "Unavailable"

    def __init__(self, message: str) -> None:
        super().__init__(message, {"Retry-After": "30"})
