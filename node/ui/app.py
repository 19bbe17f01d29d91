"""The web UI's ASGI app: its routes, templates and static files, behind its guard.

:func:`create_ui` builds a FastAPI app of its own (no OpenAPI schema: it serves
pages, not an API) and wraps it in :class:`~.guard.UiGuard`; the local API's
:class:`~swapmeet.node.http.guard.TokenGuard` hands it every ``/ui`` request.
Errors are pages, never tracebacks: a refusal by the node (bad input, unknown
id, conflict) is shown with its one-line message and the status the API would
answer with.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException
from swapmeet.protocol.errors import InvalidObject, SwapmeetError

from ..contract import MarketAPI, TradingAPI
from .guard import UiGuard
from .live import AuditJobs
from .live import router as live_router
from .render import HERE, error_page, templates
from .routes import router as pages_router
from .session import UiSessions


def create_ui(market: MarketAPI, trading: TradingAPI, sessions: UiSessions) -> UiGuard:
    """The web UI for ``market`` and ``trading``, guarded (session cookie, CSRF, Host, CSP)."""
    app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None, swagger_ui_oauth2_redirect_url=None)
    app.state.market = market
    app.state.trading = trading
    app.state.sessions = sessions
    app.state.templates = templates()
    app.state.audits = AuditJobs()
    app.include_router(pages_router)
    app.include_router(live_router)
    app.mount("/ui/static", StaticFiles(directory=HERE / "static"), name="static")
    app.add_exception_handler(SwapmeetError, _refused)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, _internal_error)
    return UiGuard(app, sessions)


async def _refused(request: Request, exc: SwapmeetError) -> Response:
    status = getattr(exc, "http_status", 400)
    message = " ".join(str(exc).split())
    if isinstance(exc, InvalidObject):
        status = 400
    return error_page(request, status, message)


async def _http_error(request: Request, exc: HTTPException) -> Response:
    if exc.status_code == 404:
        return error_page(request, 404, f"no such page: {request.url.path}")
    if exc.status_code == 405:
        return error_page(request, 405, f"{request.method} is not allowed on {request.url.path}")
    return error_page(request, exc.status_code, str(exc.detail))


async def _internal_error(request: Request, exc: Exception) -> Response:
    return error_page(request, 500, f"internal error in the node: {type(exc).__name__}: {exc}")
