"""The local API's FastAPI app: routes, the token guard, and errors as one-line JSON bodies.

Errors are never tracebacks: every failure is a JSON body ``{"error": "<one
line: what is wrong and where>", "code": "<stable name>"}`` with status 400
(bad input; an :class:`InvalidObject` adds ``"path"`` and ``"rule"``), 401
(token), 404 (unknown id or endpoint), 409 (ambiguous prefix, conflict), 413
(body too large) or 500 (a bug in the node).
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPBearer
from starlette.exceptions import HTTPException
from swapmeet.protocol.errors import InvalidObject, SwapmeetError

from ..contract import MarketAPI, TradingAPI, package_version
from ..ui.app import create_ui
from ..ui.session import UiSessions
from .guard import TokenGuard
from .models import ErrorOut
from .routes import router


def create_app(market: MarketAPI, trading: TradingAPI, token: str) -> FastAPI:
    """The app serving ``market`` and ``trading``; every request must carry ``Authorization: Bearer <token>``,
    except those under ``/ui``, which go to the web UI (:mod:`swapmeet.node.ui`) and its session guard."""
    errors: dict[int | str, dict[str, Any]] = {
        status: {"model": ErrorOut, "description": what}
        for status, what in ((400, "bad input"), (401, "missing or wrong token"), (404, "unknown id"))
    }
    app = FastAPI(
        title="swapmeet node",
        version=package_version(),
        description="The local API of a swapmeet node (127.0.0.1 only; bearer token from <home>/api.cookie).",
        # No docs UI: it would load assets from a CDN.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        # declares the scheme in the OpenAPI schema; TokenGuard enforces it on every path
        dependencies=[Security(HTTPBearer(auto_error=False, description="the token from <home>/api.cookie"))],
        responses=errors,
    )
    app.state.market = market
    app.state.trading = trading
    app.state.ui_sessions = sessions = UiSessions()  # POST /v1/ui/token mints login tokens into it
    app.add_exception_handler(SwapmeetError, _swapmeet_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    app.include_router(router)
    app.add_middleware(TokenGuard, token=token, ui=create_ui(market, trading, sessions))
    return app


def error_body(err: Exception) -> tuple[int, dict[str, Any]]:
    """The HTTP status and JSON body for an error raised while serving a request."""
    message = " ".join(str(err).split()) or type(err).__name__
    if isinstance(err, InvalidObject):
        return 400, {"error": message, "code": "invalid", "path": err.path, "rule": err.code}
    if isinstance(err, SwapmeetError):
        status = getattr(err, "http_status", 400)
        return status, {"error": message, "code": getattr(err, "api_code", "bad_request")}
    return 500, {"error": f"internal error in the node: {type(err).__name__}: {message}", "code": "internal"}


async def _swapmeet_error(request: Request, exc: SwapmeetError) -> JSONResponse:
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status)


async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    problems = exc.errors()
    first = problems[0] if problems else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return JSONResponse({"error": "the request body is not valid JSON", "code": "invalid", "path": ""}, 400)
    where = loc_path(first.get("loc", ()))
    message = f"{where}: {first.get('msg', 'invalid')}" if where else str(first.get("msg", "invalid"))
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''})"
    return JSONResponse({"error": message, "code": "invalid", "path": where}, status_code=400)


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    if exc.status_code == 404:
        body = {"error": f"no such endpoint: {request.method} {request.url.path}", "code": "not_found"}
    elif exc.status_code == 405:
        body = {"error": f"{request.method} is not allowed on {request.url.path}", "code": "bad_method"}
    else:
        body = {"error": str(exc.detail), "code": "http"}
    return JSONResponse(body, status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    # Starlette re-raises after answering, so the server logs the traceback; the client gets one line.
    status, body = error_body(exc)
    return JSONResponse(body, status_code=status)


def loc_path(loc: Any) -> str:
    """``("body", "have", 0, "qty")`` -> ``have[0].qty`` (field path as the protocol writes it)."""
    parts = list(loc)
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    out = ""
    for part in parts:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("text", "object"):  # the union's tags add nothing for a reader
            continue
        else:
            out += f".{part}" if out else str(part)
    return out
