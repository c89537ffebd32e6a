"""The web dashboard at `/`: the built front end (web/, built by `make run` into
energy_tracker/dashboard/), served from memory with the headers that make it fast and closed.

Vite names every asset after a hash of its content, so an asset never changes under its URL:
it is cached for a year (`immutable`) and `index.html`, which names the current ones, is never
cached. Each file is read and gzipped once, at start. The Content-Security-Policy allows
scripts, styles, images and connections from this origin only: no inline script, no CDN.
"""

from __future__ import annotations

import gzip
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import Response

from energy_tracker.core.http import error_response

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_IMMUTABLE = "public, max-age=31536000, immutable"
_COMPRESSIBLE = ("text/", "application/javascript", "application/json", "image/svg+xml")


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str


def load_assets(directory: Path) -> dict[str, Asset]:
    """Every file of the built dashboard by its URL path, with its gzip form where that pays."""
    assets = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        packed = gzip.compress(body, 9, mtime=0) if media_type.startswith(_COMPRESSIBLE) else None
        url = "/" + path.relative_to(directory).as_posix()
        assets[url] = Asset(
            body, packed if packed and len(packed) < len(body) else None, media_type
        )
    return assets


def install_dashboard(app: FastAPI, directory: Path = DASHBOARD_DIR) -> None:
    """Serve the dashboard at `/` and its assets under `/assets/`; when it was never built,
    `/` says how to build it."""
    assets = load_assets(directory) if (directory / "index.html").is_file() else {}

    def send(request: Request, url: str, cache: str) -> Response:
        asset = assets.get(url)
        if asset is None:
            if not assets:
                return error_response(
                    404, "not_found", "the dashboard is not built: run `make web` (or make run)"
                )
            return error_response(404, "not_found", f"no such file: {url}")
        headers = {
            "Cache-Control": cache,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
        }
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body, headers["Content-Encoding"] = asset.gzipped, "gzip"
        if asset.media_type == "text/html":
            headers["Content-Security-Policy"] = CSP
            headers["Referrer-Policy"] = "no-referrer"
            headers["X-Frame-Options"] = "DENY"
        return Response(body, media_type=asset.media_type, headers=headers)

    @app.get("/", include_in_schema=False)
    async def index(request: Request) -> Response:
        return send(request, "/index.html", "no-cache")

    @app.get("/assets/{name:path}", include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        return send(request, "/assets/" + name, _IMMUTABLE)
