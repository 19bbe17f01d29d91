"""Rendering the web UI's pages: the Jinja2 environment (autoescaping on), pages and error pages."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from . import views

HERE = Path(__file__).resolve().parent


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(short=views.short, short_peer=views.short_peer, relative=views.relative, utc=views.utc)
    return env


def render(request: Request, name: str, http_status: int = 200, **context: Any) -> HTMLResponse:
    """A page (or fragment) from ``templates/<name>``, with what every page needs in its context."""
    session = getattr(request.state, "ui_session", None)
    env: Environment = request.app.state.templates
    html = env.get_template(name).render(csrf=session.csrf if session else "", path=request.url.path, **context)
    return HTMLResponse(html, status_code=http_status)


def error_page(request: Request, status: int, message: str) -> Response:
    if request.headers.get("hx-request"):
        return HTMLResponse(f'<p class="error" role="alert">{_escape(message)}</p>', status_code=status)
    return render(request, "error.html", http_status=status, message=message, title="Refused")


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
