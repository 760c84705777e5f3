"""The API application: request ids, body limit, one error shape, the routers.

Every response carries `X-Request-ID` (the caller's, when it is a sane token; else a new one).
Every error is `{"error": {"type", "message", "request_id", ...}}` with the right status; a core
error adds its `field` (in the API's words) and `hint` (a machine-readable way out, such as
`needs_override`) where it has them. No traceback or secret ever reaches a response. Bearer
auth and what the routers share are in `api/deps.py`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gpushop_tui import __version__
from gpushop_tui.api import facade, health, inventory, money, ops, sessions
from gpushop_tui.api.deps import ApiError, ApiState, answer_for, details
from gpushop_tui.core import ProviderError, RateLimited, redact
from gpushop_tui.errors import UserError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 1 << 20
"""Request bodies over 1 MiB are refused (413) before they are read."""
REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


def error_response(
    request_id: str, status: int, type_: str, message: str, **extra: Any
) -> JSONResponse:
    body = {"error": {"type": type_, "message": redact(message), "request_id": request_id, **extra}}
    return JSONResponse(body, status_code=status, headers={"X-Request-ID": request_id})


def _request_id(request: Request) -> str:
    return str(request.scope.get("state", {}).get("request_id") or uuid.uuid4().hex)


def install_error_handlers(app: FastAPI) -> None:
    """Map every failure to the one JSON error shape."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(_request_id(request), exc.status, exc.type, exc.message, **exc.extra)

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        status, type_, extra = answer_for(exc)
        return error_response(
            _request_id(request), status, type_, exc.message, **{**extra, **details(exc)}
        )

    @app.exception_handler(RateLimited)
    async def rate_limited(request: Request, exc: RateLimited) -> JSONResponse:
        return error_response(
            _request_id(request), 429, "rate_limited", str(exc), retry_suggested=True
        )

    @app.exception_handler(ProviderError)
    async def provider_error(request: Request, exc: ProviderError) -> JSONResponse:
        return error_response(
            _request_id(request),
            503,
            "provider_unavailable",
            str(exc),
            provider=exc.provider,
            retry_suggested=exc.retryable,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ())]
        in_body = bool(where) and where[0] == "body"
        name = ".".join(where[1:]) or (where[0] if where else "request")
        return error_response(
            _request_id(request),
            422 if in_body else 400,
            "invalid_body" if in_body else "bad_request",
            f"{name}: {first.get('msg', 'invalid')}",
            field=name,
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        words = {404: "not_found", 405: "method_not_allowed", 413: "too_large"}
        response = error_response(
            _request_id(request),
            exc.status_code,
            words.get(exc.status_code, "http_error"),
            str(exc.detail),
        )
        response.headers.update(exc.headers or {})
        return response

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("API request failed unexpectedly")
        return error_response(
            _request_id(request), 500, "internal", "internal error; details in the server log"
        )


class RequestContext:
    """Pure ASGI middleware: a request id on every response, and the body size limit."""

    def __init__(self, app: ASGIApp, max_body: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        given = headers.get("x-request-id", "")
        request_id = given if REQUEST_ID.match(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        length = headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            await self._too_large(request_id, scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    # FastAPI answers any other exception raised while it reads a body with 400.
                    raise StarletteHTTPException(413, f"request body over {self.max_body} bytes")
            return message

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [
                    *(h for h in message["headers"] if h[0].lower() != b"x-request-id"),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        await self.app(scope, limited_receive, send_with_id)

    async def _too_large(self, request_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            request_id, 413, "too_large", f"request body over {self.max_body} bytes"
        )
        await response(scope, receive, send)


RouterInstaller = Callable[[FastAPI], None]
ROUTERS: tuple[RouterInstaller, ...] = (
    health.install,
    inventory.install,
    sessions.install,
    money.install,
    ops.install,
    facade.install,
)
"""Each route module's `install`, in the order the routes are added."""


def build_api(api: ApiState, *, installers: tuple[RouterInstaller, ...] = ROUTERS) -> FastAPI:
    """The FastAPI app over `api.shopper`; routers come from the route modules."""
    app = FastAPI(
        title="gpushop",
        version=__version__,
        description="Rent GPUs across marketplaces; every /api call needs a bearer token.",
    )
    app.state.api = api
    install_error_handlers(app)
    app.add_middleware(RequestContext)
    for install in installers:
        install(app)
    return app
