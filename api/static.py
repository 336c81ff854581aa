"""The web clients (``/app/`` for raters, ``/console/`` for auditors) served as static files.

They are plain ES modules, HTML and CSS shipped inside the package (``api/web/``, decision D31):
no build step and nothing from another origin. Every file is sent with a strict Content-Security-
Policy, so even an injected ``<script>`` or a stray third-party URL would be refused by the browser.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import RedirectResponse
from starlette.exceptions import HTTPException
from starlette.responses import PlainTextResponse, Response
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

__all__ = ["SECURITY_HEADERS", "WEB_ROOT", "mount_web_clients"]

WEB_ROOT = Path(__file__).with_name("web")

#: Same-origin only: scripts and styles from files (no inline code), images from files and from the
#: data:/blob: URLs the clients build out of authorised API responses, API calls to this origin.
_CSP = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data: blob:",
        "connect-src 'self'",
        "font-src 'none'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)

SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    # Revalidate every time (ETag / Last-Modified make that cheap) so an upgrade reaches clients at once.
    "Cache-Control": "no-cache",
}


class _WebAssets(StaticFiles):
    """StaticFiles that adds the security headers to every answer, errors included."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            response = await super().get_response(path, scope)
        except HTTPException as exc:  # missing file (404) or method (405): a plain page, same headers
            response = PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)
        response.headers.update(SECURITY_HEADERS)
        return response


def _redirect_to(target: str) -> Callable[[], RedirectResponse]:
    """An endpoint without parameters, so nothing in the request can steer the redirect."""

    def redirect() -> RedirectResponse:
        return RedirectResponse(target, status_code=308, headers=SECURITY_HEADERS)

    return redirect


def mount_web_clients(app: FastAPI) -> None:
    """Serve ``/app/``, ``/console/`` and their shared modules at ``/shared/``; ``/app`` and
    ``/console`` redirect to the trailing-slash URL so relative module imports resolve."""
    for name in ("app", "console"):
        app.add_api_route(
            f"/{name}", _redirect_to(f"/{name}/"), methods=["GET"], include_in_schema=False, name=f"{name}_redirect"
        )
    for name in ("app", "console", "shared"):
        app.mount(f"/{name}", _WebAssets(directory=WEB_ROOT / name, html=True), name=f"web_{name}")
