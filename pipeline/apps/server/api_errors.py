"""JSON errors for the HTTP API: OpenAI-shaped, and Anthropic-shaped on ``/v1/messages``."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiError", "anthropic_error_response", "error_response"]

# HTTP status -> the error type Anthropic names it with
_ANTHROPIC_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    529: "overloaded_error",
}


class ApiError(Exception):
    """An error the client caused or must see, with its HTTP status."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        """The ``{"error": {...}}`` body."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    """A JSON response for ``error``."""
    return JSONResponse(error.body(), status_code=error.status, headers=headers)


def anthropic_error_response(
    error: ApiError, headers: dict[str, str] | None = None
) -> JSONResponse:
    """A JSON response for ``error`` in Anthropic's shape (what the ``anthropic`` SDK reads).

    ``{"type": "error", "error": {"type": "invalid_request_error", "message": ...}}``;
    an upstream's own Anthropic error type (``error.code``, ``overloaded_error``...) is kept.
    """
    status = error.status
    if error.code and error.code.endswith("_error"):
        kind = error.code
    else:
        kind = _ANTHROPIC_TYPES.get(
            status, "api_error" if status >= 500 else "invalid_request_error"
        )
    body = {"type": "error", "error": {"type": kind, "message": error.message}}
    return JSONResponse(body, status_code=status, headers=headers)
