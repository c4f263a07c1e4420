"""OpenAI-shaped JSON errors for the HTTP API."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse

__all__ = ["ApiError", "error_response"]


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
