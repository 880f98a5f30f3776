"""One error shape for every refusal, whatever raised it: ttsd's own errors, FastAPI's validation of a
request body, Starlette's 404 and 405, and the guard's refusals."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ttsd.errors import JobNotFound, JobRejected, TtsdError
from ttsd.intake.requests import QueueFull
from ttsd.jobqueue.transitions import IllegalTransition


class HttpProblem(TtsdError):
    """A request that cannot be served as asked, with the HTTP status that says so."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.field = field


class BodyTooLarge(HTTPException):
    """A body sent without Content-Length (chunked) went past the limit while it was read. An
    HTTPException, so FastAPI lets it through its body parsing instead of calling it a parse error."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is over {limit} bytes")


class ErrorDetail(BaseModel):
    """What went wrong: `param` names the request field at fault, when one is."""

    message: str
    type: str
    param: str | None
    code: str


class ErrorBody(BaseModel):
    """Every refusal's body (documented in the OpenAPI schema)."""

    error: ErrorDetail
    detail: str


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": description}
    for status, description in (
        (400, "a field is wrong: `param` names it"),
        (401, "the API key is missing or wrong"),
        (404, "no such job"),
        (409, "the job is not in a state that allows this"),
        (413, "the request body is over TTS_HTTP_MAX_BODY_BYTES"),
        (415, "the body is not JSON"),
        (429, "the model's queue is full: see Retry-After, or use POST /v1/jobs"),
        (500, "the job failed"),
        (504, "no audio within TTS_HTTP_WAIT_S; the job goes on"),
    )
}
"""The refusals every route may answer with, for the schema."""


def error_body(code: str, message: str, field: str | None = None, status: int = 400) -> dict[str, Any]:
    """OpenAI's shape (`error.message/type/param/code`), plus FastAPI's `detail`, which the original
    service's clients read."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": field, "code": code}, "detail": message}


_STATUS_OF: dict[type[TtsdError], int] = {
    JobRejected: 400,
    JobNotFound: 404,
    QueueFull: 429,
    IllegalTransition: 409,
}
_CODE_OF_STATUS = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def error_response(exc: TtsdError) -> JSONResponse:
    """The HTTP answer to one of ttsd's errors."""
    if isinstance(exc, HttpProblem):
        return JSONResponse(error_body(exc.code, str(exc), exc.field, exc.status), status_code=exc.status)
    status = next((code for kind, code in _STATUS_OF.items() if isinstance(exc, kind)), 500)
    field = exc.field if isinstance(exc, JobRejected) else None
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
    return JSONResponse(error_body(exc.code, str(exc), field, status), status_code=status, headers=headers)


def http_error_response(exc: HTTPException) -> JSONResponse:
    """Starlette's own refusals (no such route, wrong method, a body over the limit) in the same shape."""
    code = _CODE_OF_STATUS.get(exc.status_code, "http_error")
    body = error_body(code, str(exc.detail), None, exc.status_code)
    return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)
