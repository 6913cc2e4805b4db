"""The tenant console: a few static files at ``/console/`` that talk to ``/graphql`` only.

No build step and no third-party code: one HTML page, one script module and one stylesheet,
read once when the app is made and served with a strict Content-Security-Policy (scripts and
styles from this origin only, nothing inline, no frames, requests to this origin only). The
token the page signs in with lives in the tab's session storage, never in a URL or a cookie.
Every page of it is built on the public GraphQL API, so the console obeys the same auth, rate
limits and complexity rules as any client."""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

ASSETS = Path(__file__).with_name("console_assets")
FILES = {
    "": ("index.html", "text/html; charset=utf-8"),
    "app.js": ("app.js", "text/javascript; charset=utf-8"),
    "style.css": ("style.css", "text/css; charset=utf-8"),
}
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-cache",
}


def mount_console(app: object) -> None:
    """``/console/`` and its two assets on ``app`` (a FastAPI app); ``/console`` redirects."""
    bodies = {name: ((ASSETS / file).read_bytes(), kind) for name, (file, kind) in FILES.items()}

    async def page(request: Request) -> Response:
        name = request.path_params.get("name", "")
        if name not in bodies:
            return Response("Not found", status_code=404, headers=HEADERS)
        body, kind = bodies[name]
        return Response(body, media_type=kind, headers=HEADERS)

    async def bare(_request: Request) -> Response:
        # Relative, so it holds behind any route prefix (the Serve app's included).
        return RedirectResponse("console/", status_code=308)

    app.add_route("/console", bare, methods=["GET"])  # type: ignore[attr-defined]
    app.add_route("/console/", page, methods=["GET"])  # type: ignore[attr-defined]
    app.add_route("/console/{name}", page, methods=["GET"])  # type: ignore[attr-defined]
