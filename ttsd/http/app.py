"""The ASGI application: the routers of the three APIs and the dashboard behind the guard, and one
error shape for every refusal."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from ttsd import __version__
from ttsd.config import parse_http_address
from ttsd.errors import TtsdError
from ttsd.http import dashboard, jobs_routes, openai_routes, original_routes
from ttsd.http.door import FrontDoor
from ttsd.http.errors import ERROR_RESPONSES, error_body, error_response, http_error_response
from ttsd.http.guard import Guard, allowed_hosts

STATIC_DIR = Path(__file__).parent / "static"


def create_app(door: FrontDoor) -> FastAPI:
    """The whole HTTP surface over `door`."""
    app = FastAPI(title="ttsd", version=__version__, summary="A local text-to-speech job daemon: the HTTP front door")
    app.state.door = door
    # OpenAI's /v1/audio/voices before the original /v1/audio/{id}, which would take "voices" for an id.
    for module in (openai_routes, original_routes, jobs_routes, dashboard):
        app.include_router(module.router, responses=ERROR_RESPONSES)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_error_handlers(app)
    settings = door.settings
    bind_host = parse_http_address(settings.http)[0] if settings.http else "127.0.0.1"
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.http_max_body_bytes,
        hosts=allowed_hosts(bind_host),
    )
    if settings.cors_origins:
        # Added last, so outermost: a browser's preflight carries no key and is answered here, and
        # the guard's refusals still carry the CORS headers the page needs to read them.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def ttsd_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TtsdError)
        return error_response(exc)

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        code, message, field = _first_problem(exc.errors()[0])
        return JSONResponse(error_body(code, message, field), status_code=400)

    async def http_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return http_error_response(exc)

    app.add_exception_handler(TtsdError, ttsd_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(StarletteHTTPException, http_error)


_WHERE = ("body", "query", "path", "header")
"""Where FastAPI says a value came from, in front of its name."""


def _first_problem(problem: Mapping[str, Any]) -> tuple[str, str, str | None]:
    """(code, message, field) of a request body's first validation problem. The field is the request
    field at fault: the top-level name only, since pydantic adds union member tags (`voice.str`)."""
    location = [part for part in problem["loc"] if part not in _WHERE]
    if problem["type"] == "json_invalid":
        return "invalid_json", f"the body is not valid JSON: {problem['ctx'].get('error', problem['msg'])}", None
    if not location:
        return "invalid_body", "the request body must be a JSON object", None
    field = str(location[0])
    if problem["type"] == "missing":
        return "missing_field", f"{field}: is required", field
    if problem["type"] == "extra_forbidden":
        return "unknown_field", f"{field}: unknown field", field
    return "invalid_field", f"{field}: {problem['msg']}", field
