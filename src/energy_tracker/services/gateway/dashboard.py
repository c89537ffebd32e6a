"""The web dashboard at `/`: the built front end (web/, built by `make run` into
energy_tracker/dashboard/), served from memory with the headers that make it fast and closed.

Vite names every asset after a hash of its content, so an asset never changes under its URL:
it is cached for a year (`immutable`) and `index.html`, which names the current ones, is never
cached without asking: each file has an ETag (a hash of its bytes, one per encoding), so a
revalidation (`If-None-Match`) costs a 304 with no body. Every file answers HEAD too (its headers
and length, no body). Each file is read, hashed and gzipped once, at start. The
Content-Security-Policy allows scripts, styles, images and connections from this origin only: no
inline script, no CDN.
"""

from __future__ import annotations

import gzip
import hashlib
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
    etag: str  # of the identity encoding; the gzip one is derived from it

    def tag(self, gzipped: bool) -> str:
        return f'"{self.etag}-gzip"' if gzipped else f'"{self.etag}"'


def load_assets(directory: Path) -> dict[str, Asset]:
    """Every file of the built dashboard by its URL path, with its gzip form where that pays."""
    assets = {}
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        body = path.read_bytes()
        media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        packed = gzip.compress(body, 9, mtime=0) if media_type.startswith(_COMPRESSIBLE) else None
        url = "/" + path.relative_to(directory).as_posix()
        assets[url] = Asset(
            body,
            packed if packed and len(packed) < len(body) else None,
            media_type,
            hashlib.sha256(body).hexdigest()[:32],
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
        body = asset.body
        gzipped = asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", "")
        headers = {
            "Cache-Control": cache,
            "Vary": "Accept-Encoding",
            "X-Content-Type-Options": "nosniff",
            "ETag": asset.tag(gzipped),
        }
        if gzipped:
            body, headers["Content-Encoding"] = asset.gzipped or b"", "gzip"
        if asset.media_type == "text/html":
            headers["Content-Security-Policy"] = CSP
            headers["Referrer-Policy"] = "no-referrer"
            headers["X-Frame-Options"] = "DENY"
        if _matches(request.headers.get("if-none-match"), headers["ETag"]):
            return Response(status_code=304, headers=headers)
        if request.method == "HEAD":  # the headers of the GET, its length, no body
            headers["Content-Length"] = str(len(body))
            return Response(media_type=asset.media_type, headers=headers)
        return Response(body, media_type=asset.media_type, headers=headers)

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def index(request: Request) -> Response:
        return send(request, "/index.html", "no-cache")

    @app.api_route("/assets/{name:path}", methods=["GET", "HEAD"], include_in_schema=False)
    async def asset(name: str, request: Request) -> Response:
        return send(request, "/assets/" + name, _IMMUTABLE)


def _matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison of If-None-Match against this representation's ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(t.strip().removeprefix("W/") == etag for t in if_none_match.split(","))
