"""Planned failures: a ``Fault`` and the error bodies it sends, in Google's shape."""

from __future__ import annotations

import math
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

# google.rpc.Code names as the Gemini API reports them for each HTTP status.
_STATUS_NAMES: dict[int, str] = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    499: "CANCELLED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
    504: "DEADLINE_EXCEEDED",
}

# Messages modelled on what the real API returns, so error-string matching in callers
# sees something realistic.
_DEFAULT_MESSAGES: dict[int, str] = {
    400: "Request contains an invalid argument.",
    401: (
        "Request had invalid authentication credentials. Expected OAuth 2 access token, "
        "login cookie or other valid authentication credential."
    ),
    403: "The caller does not have permission",
    404: "Requested entity was not found.",
    429: "Resource has been exhausted (e.g. check quota).",
    500: "An internal error has occurred. Please retry or report in "
    "https://developers.generativeai.google/guide/troubleshooting",
    503: "The model is overloaded. Please try again later.",
    504: "Deadline expired before operation could complete.",
}

_RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


@dataclass(frozen=True)
class Fault:
    """A planned failure for one request.

    Design: the server first stalls for ``hang_s`` seconds (interrupted at once by
    ``stop()``, in which case the connection is dropped without an answer), then:

    * ``status`` 400..599 -> an error in Google's shape with that HTTP status;
    * ``status == 0`` -> no error: the request gets the default answer (as if the plan
      were empty). ``Fault.hang(s)`` builds this; with a client timeout shorter than
      ``s`` the client gives up first, which is how timeouts are simulated.

    ``retry_after_s`` adds a ``Retry-After`` header (whole seconds, rounded up, as HTTP
    requires) and a ``google.rpc.RetryInfo`` detail with the exact ``retryDelay``.

    ``echo_key`` puts the API key the client sent into the message, in place of
    ``{api_key}``: some real errors repeat the key, and what the caller does with it
    (logs, traces, artifacts) must still not leak it.
    """

    status: int
    retry_after_s: float | None = None
    hang_s: float = 0.0
    message: str = ""
    echo_key: bool = False

    def __post_init__(self) -> None:
        if self.status != 0 and not 400 <= self.status <= 599:
            raise ValueError("Fault.status must be 0 (hang only) or an HTTP 4xx/5xx code")
        if self.hang_s < 0:
            raise ValueError("hang_s must be >= 0")
        if self.retry_after_s is not None and self.retry_after_s < 0:
            raise ValueError("retry_after_s must be >= 0")

    @classmethod
    def rate_limit(cls, retry_after_s: float | None = 1.0, message: str = "") -> Fault:
        """429 RESOURCE_EXHAUSTED, with retry advice unless ``retry_after_s`` is None."""
        return cls(429, retry_after_s=retry_after_s, message=message)

    @classmethod
    def server_error(cls, status: int = 500, message: str = "") -> Fault:
        """A 5xx: 500 INTERNAL by default, 503 UNAVAILABLE for an overloaded model."""
        if not 500 <= status <= 599:
            raise ValueError("server_error takes a 5xx status")
        return cls(status, message=message)

    @classmethod
    def hang(cls, seconds: float, status: int = 0) -> Fault:
        """Stall ``seconds``, then answer normally (``status=0``) or fail with ``status``."""
        return cls(status, hang_s=seconds)

    @classmethod
    def bad_request(cls, message: str = "") -> Fault:
        """400 INVALID_ARGUMENT (a permanent error: retrying cannot help)."""
        return cls(400, message=message)

    @classmethod
    def unauthenticated(cls, message: str = "") -> Fault:
        """401 UNAUTHENTICATED."""
        return cls(401, message=message)

    @classmethod
    def permission_denied(cls, message: str = "") -> Fault:
        """403 PERMISSION_DENIED."""
        return cls(403, message=message)

    @classmethod
    def permission_denied_echoing_key(cls) -> Fault:
        """403 PERMISSION_DENIED whose message repeats the API key the client sent."""
        return cls(
            403, message="Permission denied: API key {api_key} is not allowed", echo_key=True
        )

    @classmethod
    def not_found_echoing_key(cls) -> Fault:
        """404 NOT_FOUND whose message holds a URL with the key as a ``?key=`` parameter."""
        url = "https://generativelanguage.googleapis.com/v1beta/models/none:generateContent"
        return cls(
            404, message=f"Requested entity was not found: {url}?key={{api_key}}", echo_key=True
        )

    def error_json(self, api_key: str | None = None) -> dict[str, Any]:
        """The error body in Google's shape; ``api_key`` is the key the request sent."""
        message = self.message or default_message(self.status)
        if self.echo_key:
            message = message.replace("{api_key}", api_key or "")
        error: dict[str, Any] = {
            "code": self.status,
            "message": message,
            "status": status_name(self.status),
        }
        if self.retry_after_s is not None:
            error["details"] = [
                {"@type": _RETRY_INFO_TYPE, "retryDelay": proto_duration(self.retry_after_s)}
            ]
        return {"error": error}

    def headers(self) -> dict[str, str]:
        """Extra response headers (``Retry-After``) for this fault."""
        if self.retry_after_s is None:
            return {}
        return {"Retry-After": str(math.ceil(self.retry_after_s))}


def status_name(status: int) -> str:
    return _STATUS_NAMES.get(status, "UNKNOWN")


def default_message(status: int) -> str:
    if status in _DEFAULT_MESSAGES:
        return _DEFAULT_MESSAGES[status]
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def proto_duration(seconds: float) -> str:
    """Format like google.protobuf.Duration JSON: ``"2s"`` or ``"1.500s"``."""
    if float(seconds).is_integer():
        return f"{int(seconds)}s"
    return f"{seconds:.3f}s"


def error_body(status: int, message: str) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "status": status_name(status)}}
