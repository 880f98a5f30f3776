"""The ASGI application: the routers of the three APIs and the dashboard behind the guard, and one
error shape for every refusal."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles

from ttsd import __version__
from ttsd.config import parse_http_address
from ttsd.errors import TtsdError
from ttsd.http import dashboard, jobs_routes, openai_routes, original_routes
from ttsd.http.door import FrontDoor, error_body, error_response
from ttsd.http.guard import BodyTooLarge, Guard, allowed_hosts

STATIC_DIR = Path(__file__).parent / "static"


def create_app(door: FrontDoor) -> FastAPI:
    """The whole HTTP surface over `door`."""
    app = FastAPI(title="ttsd", version=__version__, summary="A local text-to-speech job daemon: the HTTP front door")
    app.state.door = door
    # OpenAI's /v1/audio/voices before the original /v1/audio/{id}, which would take "voices" for an id.
    for module in (openai_routes, original_routes, jobs_routes, dashboard):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    _add_error_handlers(app)
    settings = door.settings
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
        )
    bind_host = parse_http_address(settings.http)[0] if settings.http else "127.0.0.1"
    app.add_middleware(
        Guard,
        api_key=settings.api_key,
        max_body_bytes=settings.http_max_body_bytes,
        hosts=allowed_hosts(bind_host),
    )
    return app


def _add_error_handlers(app: FastAPI) -> None:
    async def ttsd_error(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, TtsdError)
        return error_response(exc)

    async def invalid_request(_request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        first = exc.errors()[0]
        location = [str(part) for part in first["loc"] if part != "body"]
        field = ".".join(location) or None
        message = f"{field}: {first['msg']}" if field else str(first["msg"])
        return JSONResponse(error_body("invalid_field", message, field), status_code=400)

    async def too_large(_request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("too_large", str(exc)), status_code=413)

    app.add_exception_handler(TtsdError, ttsd_error)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(BodyTooLarge, too_large)
