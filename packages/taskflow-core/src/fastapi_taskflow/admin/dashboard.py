"""The live dashboard: one HTML page and its static assets, served by the admin router.

The page is plain HTML + ES modules + CSS shipped inside the package (``admin/static/``):
no build step, no CDN, works offline. Every URL in the page is relative to the page, so
the dashboard works under any mount path or proxy prefix. Responses carry a strict
Content-Security-Policy (no inline script, no third-party origin): task data is only ever
inserted as text by the scripts, and the policy is the second line of defence.
"""

from __future__ import annotations

import hashlib
import html
from importlib import resources
from typing import Final

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

__all__ = ["CONTENT_SECURITY_POLICY", "dashboard_routes"]

CONTENT_SECURITY_POLICY: Final = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "font-src 'self'",
        "manifest-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
"""The policy sent with the page and its assets: only this origin's own files run."""

_MEDIA_TYPES: Final = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_TEMPLATE: Final = "dashboard.html"
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _none_match(header: str | None, etag: str) -> bool:
    """True when an ``If-None-Match`` header names ``etag``: ``*``, or a list of tags
    compared weakly (RFC 9110 13.1.2: a proxy that compresses the asset, nginx's gzip
    for one, hands the browser ``W/"..."`` for our strong tag)."""
    if header is None:
        return False
    tags = [tag.strip() for tag in header.split(",")]
    return "*" in tags or any(tag.removeprefix("W/") == etag for tag in tags)


def _static_files() -> dict[str, bytes]:
    """Read every asset once: the names a request may ask for and their bytes."""
    folder = resources.files(__package__ or "fastapi_taskflow.admin").joinpath("static")
    files: dict[str, bytes] = {}
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _MEDIA_TYPES:
            files[entry.name] = entry.read_bytes()
    return files


def _page(title: str) -> str:
    folder = resources.files(__package__ or "fastapi_taskflow.admin").joinpath("static")
    template = folder.joinpath(_TEMPLATE).read_text(encoding="utf-8")
    return template.replace("{{title}}", html.escape(title, quote=True))


def dashboard_routes(router: APIRouter, *, title: str) -> None:
    """Add the dashboard page and its assets to the admin router.

    Adds ``GET /dashboard`` (the page) and ``GET /dashboard/static/{name}`` (its scripts,
    stylesheet and icon) relative to the router's prefix, so they share whatever auth
    dependency guards the router. The page finds the API with URLs relative to itself
    (``api/tasks``, ``api/events``, ...), so it works wherever the router is mounted.

    Args:
        router: the admin router (``TaskAdmin.router``); its prefix is the admin path.
        title: shown in the page's title and header; inserted as escaped text.
    """
    page = _page(title)
    assets = _static_files()
    etags = {name: f'"{hashlib.sha256(body).hexdigest()[:20]}"' for name, body in assets.items()}

    @router.get(
        "/dashboard",
        response_class=HTMLResponse,
        summary="The live dashboard (HTML)",
        responses={200: {"content": {"text/html": {}}, "description": "The dashboard page"}},
    )
    async def dashboard() -> HTMLResponse:
        """The dashboard page: a live task table, filters, a detail panel and charts."""
        return HTMLResponse(page, headers={**_SECURITY_HEADERS, "Cache-Control": "no-cache"})

    @router.get("/dashboard/static/{name}", include_in_schema=False)
    async def dashboard_static(name: str, request: Request) -> Response:
        """One of the dashboard's own assets; anything else is 404.

        Browsers revalidate each load (``no-cache``) and get a 304 while the asset is
        unchanged, so an upgraded package is picked up at once.
        """
        body = assets.get(name)
        if body is None:
            raise HTTPException(status_code=404, detail="no such dashboard asset")
        headers = {**_SECURITY_HEADERS, "Cache-Control": "no-cache", "ETag": etags[name]}
        if _none_match(request.headers.get("if-none-match"), etags[name]):
            return Response(status_code=304, headers=headers)
        media_type = _MEDIA_TYPES["." + name.rsplit(".", 1)[-1]]
        return Response(body, media_type=media_type, headers=headers)
