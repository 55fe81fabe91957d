"""`latentedit studio`: a local page and a small JSON API over the editing library, served by the
standard library's ThreadingHTTPServer (no dependency beyond latentedit's own).

Endpoints (JSON in and out unless said; errors are {"error": "one line"} with a 4xx status):

    GET  /                      the page (static/index.html); GET /static/NAME: its assets
    GET  /api/info              model, directions, accessories (available or why not), regions, limits
    POST /api/render            {recipe, seq, client, stream} -> {seq, image (PNG data URL), ms, stages}
    POST /api/mask              {recipe, mask: "edit" | region, seq, client} -> {seq, image (RGBA PNG), area}
    POST /api/recipe            {recipe} -> the canonical recipe (what `latentedit replay` reads)
    POST /api/latents?format=json|npy   {recipe} -> the edited code [1, L, D] as a file
    POST /api/upload/latents?filename=F&index=I   raw .json / .npy body -> {start, count}
    POST /api/upload/image?filename=F             raw image body -> {start} (encoder, else projection)

Stale work and the compute lock: see app.py (Studio, the HTTP-free state behind the API).

Safety: bound to 127.0.0.1 by default; on every bind, requests whose Host (or Origin, when sent)
does not name the server are refused with 403 (DNS rebinding, cross-site POSTs): the names allowed
are the bound address (and the loopback names when it is loopback or all interfaces) plus those
passed as `allow_hosts` (`latentedit studio --allow-host NAME`), on the server's port; bodies are
size-limited (uploads: 8 MB; JSON: 4 MB) and JSON nested too deeply is a 400;
uploads are validated (type, pixel size, decodability, latent shapes); static files are served
only from inside static/ (the resolved path must lie in it); responses carry a restrictive
Content-Security-Policy, so the page can load nothing from outside.
"""
import json
import os
import sys
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from latentedit.errors import LatentEditError
from latentedit.studio.app import JSON_LIMIT, HTTPError, Studio, _one_line
from latentedit.studio.hosts import allowed_hosts, host_allowed

__all__ = ["STATIC", "Handler", "Studio", "make_server", "static_file"]

STATIC = Path(__file__).resolve().parent / "static"
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def static_file(path):
    """The file under static/ that `path` (the percent-decoded rest of the URL path) names, or
    None for an absolute path, a NUL or backslash, or anything that resolves outside static/
    (../ in any spelling, links)."""
    if not path or "\x00" in path or "\\" in path or os.path.isabs(path):
        return None
    root = STATIC.resolve()
    try:
        target = (root / path).resolve()
    except (OSError, RuntimeError, ValueError):
        return None
    if root not in target.parents or not target.is_file():
        return None
    return target


# ---------------------------------------------------------------------------------------------
# HTTP


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True   # headers and body are two writes: Nagle + delayed ACK would add ~40 ms
    server_version = "latentedit-studio"
    sys_version = ""
    studio: Studio = None      # set by make_server
    quiet = True

    # -- plumbing ------------------------------------------------------------------------------
    def log_message(self, fmt, *args):
        if not self.quiet:
            super().log_message(fmt, *args)

    def _send(self, status, body, media, extra=None):
        self.send_response(int(status))
        self.send_header("Content-Type", media)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Content-Security-Policy", CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status, obj, extra=None):
        self._send(status, json.dumps(obj, allow_nan=False).encode(), "application/json; charset=utf-8", extra)

    def _error(self, status, message):
        self._json(status, {"error": _one_line(message)})

    def _origin_ok(self):
        """The Host must name this server (refuses DNS rebinding); an Origin, when sent (POSTs
        from pages), must be http:// and name it too (refuses cross-site requests)."""
        allowed, port = self.server.allowed_hosts, self.server.server_address[1]
        if not host_allowed(self.headers.get("Host", ""), allowed, port):
            return False
        origin = self.headers.get("Origin")
        return origin is None or (origin.startswith("http://") and host_allowed(origin[7:], allowed, port))

    def _body(self, limit):
        length = self.headers.get("Content-Length")
        if length is None:
            self.close_connection = True
            raise HTTPError(HTTPStatus.LENGTH_REQUIRED, "the request needs a Content-Length")
        try:
            n = int(length)
        except ValueError:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length") from None
        if n < 0:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad Content-Length")
        if n > limit:
            self.close_connection = True
            if n <= 8 * limit:  # read it away, so the client gets to read the answer
                left = n
                while left > 0:
                    chunk = self.rfile.read(min(1 << 20, left))
                    if not chunk:
                        break
                    left -= len(chunk)
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"too large: {int(length)} bytes (at most {limit / (1024 * 1024):g} MB)")
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            raise HTTPError(HTTPStatus.BAD_REQUEST, "the request body ended early")
        return data

    def _json_body(self):
        data = self._body(JSON_LIMIT)
        try:
            return json.loads(data.decode("utf-8"))
        except RecursionError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "bad JSON: nested too deeply") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "not UTF-8"
            where = f" at line {e.lineno} column {e.colno}" if isinstance(e, json.JSONDecodeError) else ""
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"bad JSON: {msg}{where}") from None

    def _dispatch(self, routes):
        url = urlsplit(self.path)
        try:
            if not self._origin_ok():
                raise HTTPError(HTTPStatus.FORBIDDEN, "forbidden: this server answers its own page only "
                                                      "(Host / Origin is not the server's)")
            handler = routes.get(url.path)
            if handler is None:
                if self.command in ("GET", "HEAD") and url.path.startswith("/static/"):
                    return self._static(unquote(url.path[len("/static/"):]))
                allowed = [m for m, table in (("GET", _GET), ("POST", _POST)) if url.path in table]
                if allowed:
                    self._send(HTTPStatus.METHOD_NOT_ALLOWED,
                               json.dumps({"error": f"use {' or '.join(allowed)} for {url.path}"}).encode(),
                               "application/json; charset=utf-8", {"Allow": ", ".join(allowed)})
                    return
                raise HTTPError(HTTPStatus.NOT_FOUND, f"not found: {url.path}")
            handler(self, parse_qs(url.query))
        except HTTPError as e:
            self.close_connection = self.close_connection or self.command == "POST"
            self._error(e.status, str(e))
        except LatentEditError as e:
            self._error(HTTPStatus.BAD_REQUEST, str(e))
        except RecursionError:  # a body or an uploaded file nested too deeply for the parsers
            self._error(HTTPStatus.BAD_REQUEST, "input nested too deeply")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # a bug: say so in one line, log the traceback
            traceback.print_exc(file=sys.stderr)
            self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"internal error: {type(e).__name__}: {e}")

    def do_GET(self):
        self._dispatch(_GET)

    def do_HEAD(self):
        self._dispatch(_GET)

    def do_POST(self):
        self._dispatch(_POST)

    # -- routes --------------------------------------------------------------------------------
    def _static(self, rel):
        target = static_file(rel)
        if target is None:
            raise HTTPError(HTTPStatus.NOT_FOUND, "not found")
        self._send(HTTPStatus.OK, target.read_bytes(), MEDIA.get(target.suffix, "application/octet-stream"))

    def _index(self, query):
        self._static("index.html")

    def _info(self, query):
        self._json(HTTPStatus.OK, self.studio.info())

    def _render(self, query):
        self._json(HTTPStatus.OK, self.studio.render(self._json_body()))

    def _mask(self, query):
        self._json(HTTPStatus.OK, self.studio.mask(self._json_body()))

    def _recipe(self, query):
        self._json(HTTPStatus.OK, self.studio.recipe(self._json_body()),
                   {"Content-Disposition": 'attachment; filename="recipe.json"'})

    def _latents(self, query):
        fmt = query.get("format", ["json"])[0]
        if fmt not in ("json", "npy"):
            raise HTTPError(HTTPStatus.BAD_REQUEST, f"format must be json or npy, got {fmt!r}")
        data, media, name, note = self.studio.latents(self._json_body(), fmt)
        extra = {"Content-Disposition": f'attachment; filename="{name}"'}
        if note:
            extra["X-Latents-Note"] = note
        self._send(HTTPStatus.OK, data, media, extra)

    def _filename(self, query):
        name = query.get("filename", [""])[0]
        return Path(name.replace("\\", "/")).name[:200]

    def _upload_latents(self, query):
        try:
            index = int(query.get("index", ["0"])[0])
        except ValueError:
            raise HTTPError(HTTPStatus.BAD_REQUEST, "index must be an integer") from None
        data = self._body(self.studio.upload_limit)
        self._json(HTTPStatus.OK, self.studio.upload_latents(data, self._filename(query), index))

    def _upload_image(self, query):
        data = self._body(self.studio.upload_limit)
        media = self.headers.get("Content-Type", "application/octet-stream").split(";")[0].strip().lower()
        if media and not (media.startswith("image/") or media == "application/octet-stream"):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, f"wrong type: {media} is not an image")
        self._json(HTTPStatus.OK, self.studio.upload_image(data, self._filename(query)))


_GET = {"/": Handler._index, "/index.html": Handler._index, "/api/info": Handler._info}
_POST = {"/api/render": Handler._render, "/api/mask": Handler._mask, "/api/recipe": Handler._recipe,
         "/api/latents": Handler._latents, "/api/upload/latents": Handler._upload_latents,
         "/api/upload/image": Handler._upload_image}


def make_server(studio, host="127.0.0.1", port=8000, quiet=True, allow_hosts=()):
    """A ThreadingHTTPServer serving `studio` (port 0: any free port; see server_address).
    allow_hosts: names (or addresses) besides the bound address that clients may reach it by."""
    handler = type("StudioHandler", (Handler,), {"studio": studio, "quiet": quiet})
    server = ThreadingHTTPServer((host, port), handler)
    server.daemon_threads = True
    server.allowed_hosts = allowed_hosts(host, allow_hosts)
    return server
