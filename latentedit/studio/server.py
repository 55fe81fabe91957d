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

Stale work: every request carries a client id, a stream ("main", "mask", ...) and a sequence
number. The newest sequence number seen per (client, stream) is recorded when a request
arrives; a request that is older than it is answered {"superseded": true} as soon as it is
noticed (before waiting for the compute lock, after getting it, and between the stages of the
recipe), so only the newest request's work runs to the end. Compute runs one request at a time
(one lock: the generator's feature hooks are not re-entrant).

Safety: bound to 127.0.0.1 by default; on every bind, requests whose Host (or Origin, when sent)
does not name the server are refused with 403 (DNS rebinding, cross-site POSTs): the names allowed
are the bound address (and the loopback names when it is loopback or all interfaces) plus those
passed as `allow_hosts` (`latentedit studio --allow-host NAME`), on the server's port; bodies are
size-limited (uploads: 8 MB; JSON: 4 MB) and JSON nested too deeply is a 400;
uploads are validated (type, pixel size, decodability, latent shapes); static files are served
only from inside static/ (the resolved path must lie in it); responses carry a restrictive
Content-Security-Policy, so the page can load nothing from outside.
"""
import base64
import copy
import json
import os
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections import OrderedDict
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import torch

from latentedit.errors import FormatError, InputError, LatentEditError
from latentedit.studio import recipe as rc
from latentedit.studio.hosts import allowed_hosts, host_allowed

STATIC = Path(__file__).resolve().parent / "static"
UPLOAD_LIMIT = 8 * 1024 * 1024
JSON_LIMIT = 4 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
IMAGE_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM"}
INVERT_STEPS = 100
MEDIA = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
         ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml", ".ico": "image/x-icon"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class HTTPError(Exception):
    def __init__(self, status, message):
        super().__init__(message)
        self.status = int(status)


class Superseded(Exception):
    """A newer request of the same client and stream has arrived."""


def _one_line(text):
    return " ".join(str(text).split())[:500]


def _data_url(png):
    return "data:image/png;base64," + base64.b64encode(png).decode()


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


class Studio:
    """The state behind the API: the model, its recipe context (stage caches) and the staleness
    bookkeeping. HTTP-free, so tests and other front ends can call it directly."""

    def __init__(self, model_path=None, warm=True, invert_steps=INVERT_STEPS, upload_limit=UPLOAD_LIMIT):
        from latentedit.formats import DEFAULT_BUNDLE, bundle, load_generator

        path = Path(model_path) if model_path is not None else DEFAULT_BUNDLE
        self.G = load_generator(path).eval()
        self.bundle = path if bundle.is_bundle(path) else None
        self.invert_steps, self.upload_limit = int(invert_steps), int(upload_limit)
        self._components = None
        self._components_ready = threading.Event()
        self._components_error = None
        self.ctx = rc.RecipeContext(self.G, self.bundle, model_path, components=self._wait_components)
        self.lock = threading.Lock()          # compute: one request at a time
        self._meta = threading.Lock()         # the staleness table
        self._latest = OrderedDict()          # (client, stream) -> newest seq seen
        self._warm_thread = None
        with torch.no_grad():  # the first pass of a process is slow (allocations, imports): not the user's
            rc.encode_png(rc.run_recipe({"start": {"seed": 0}}, self.G, self.bundle, self.ctx).image)
        if warm:
            self.start_warm()

    # -- part clusters (fitted once, in the background, on a copy of G) ---------------------
    def start_warm(self):
        """Starts fitting the part clusters in a thread. Call it when no request uses G (at start, or
        under the compute lock): the copy must not catch another request's temporary feature hooks."""
        if self._warm_thread is None:
            G = copy.deepcopy(self.G)
            self._warm_thread = threading.Thread(target=self._fit_components, args=(G,), name="studio-components",
                                                 daemon=True)
            self._warm_thread.start()

    def warm_thread_alive(self):
        return self._warm_thread is not None and self._warm_thread.is_alive()

    def _fit_components(self, G):
        from latentedit.edit.regions import default_components

        try:
            self._components = default_components(G)
        except Exception as e:  # reported to the request that needs them
            self._components_error = _one_line(f"{type(e).__name__}: {e}")
        finally:
            self._components_ready.set()

    def _wait_components(self):
        self.start_warm()  # called by the recipe context, under the compute lock
        if not self._components_ready.wait(timeout=300):
            raise InputError("the part clusters are still being fitted; try again in a moment")
        if self._components_error:
            raise InputError(f"fitting the part clusters failed: {self._components_error}")
        return self._components

    def components_status(self):
        if self._components_ready.is_set():
            return "failed" if self._components_error else "ready"
        return "fitting" if self._warm_thread is not None else "not started"

    # -- staleness -----------------------------------------------------------------------------
    def _ticket(self, body, default_stream="main"):
        """(key, seq) of a request; records seq as the newest of its key when it is."""
        client, seq = body.get("client"), body.get("seq")
        if not isinstance(client, str) or not isinstance(seq, int) or isinstance(seq, bool):
            return None, None
        key = (client[:64], str(body.get("stream", default_stream))[:32])
        with self._meta:
            if seq > self._latest.get(key, -1):
                self._latest[key] = seq
            self._latest.move_to_end(key)
            while len(self._latest) > 1024:
                self._latest.popitem(last=False)
        return key, seq

    def _checker(self, key, seq):
        def check():
            if key is not None and self._latest.get(key, seq) > seq:
                raise Superseded()
        return check

    def _compute(self, body, work, default_stream="main"):
        """Runs work(check) under the compute lock unless superseded -> (result, timings)."""
        key, seq = self._ticket(body, default_stream)
        check = self._checker(key, seq)
        t0 = time.perf_counter()
        check()
        with self.lock:
            t1 = time.perf_counter()
            check()
            out = work(check)
        t2 = time.perf_counter()
        return out, {"wait": round(1000 * (t1 - t0), 2), "compute": round(1000 * (t2 - t1), 2)}

    # -- endpoints -----------------------------------------------------------------------------
    def info(self):
        from latentedit.edit.regions import REGIONS
        from latentedit.formats.encoder import has_encoder

        with self.lock:
            dirs = self.ctx.directions()
            accessories = self.ctx.accessories()
            model = self.ctx.model_identity()
        return {
            "model": model, "num_ws": self.G.num_ws, "w_dim": self.G.w_dim,
            "directions": [{"name": n, "available": not isinstance(d, str),
                            "reason": d if isinstance(d, str) else None,
                            "space": None if isinstance(d, str) else d.space} for n, d in dirs.items()],
            "accessories": accessories, "regions": list(REGIONS),
            "components": self.components_status(),
            "encoder": bool(self.bundle is not None and has_encoder(self.bundle)),
            "invert": {"mode": "encoder" if self.bundle is not None and has_encoder(self.bundle) else "project",
                       "steps": self.invert_steps},
            "limits": {"upload_bytes": self.upload_limit, "image_side": MAX_IMAGE_SIDE, "json_bytes": JSON_LIMIT},
            "threads": torch.get_num_threads(), "format": rc.FORMAT, "version": rc.VERSION,
        }

    def _recipe_of(self, body):
        if not isinstance(body, dict) or "recipe" not in body:
            raise InputError("the request needs a JSON object with a \"recipe\"")
        return body["recipe"]

    def render(self, body):
        recipe = self._recipe_of(body)
        try:
            res, ms = self._compute(body, lambda check: rc.run_recipe(recipe, self.G, self.bundle, self.ctx, check))
        except Superseded:
            return {"seq": body.get("seq"), "superseded": True}
        t = time.perf_counter()
        png = rc.encode_png(res.image)
        ms["png"] = round(1000 * (time.perf_counter() - t), 2)
        return {"seq": body.get("seq"), "image": _data_url(png), "ms": ms, "stages": res.stages_ms}

    def mask(self, body):
        recipe = self._recipe_of(body)
        name = body.get("mask", "edit")
        if not isinstance(name, str):
            raise InputError("mask must be \"edit\" or a region name")
        try:
            m, ms = self._compute(body, lambda check: rc.recipe_mask(recipe, self.G, self.bundle, name, self.ctx,
                                                                       check), default_stream="mask")
        except Superseded:
            return {"seq": body.get("seq"), "superseded": True}
        return {"seq": body.get("seq"), "mask": name, "image": _data_url(rc.mask_png(m)),
                "area": round(float(m.mean()), 5), "ms": ms}

    def recipe(self, body):
        recipe = self._recipe_of(body)
        with self.lock:
            return rc.dump_recipe(self.ctx.normalize(recipe))

    def latents(self, body, fmt):
        recipe = self._recipe_of(body)
        with self.lock:
            res = rc.run_recipe(recipe, self.G, self.bundle, self.ctx)
        data, media, name = rc.latents_bytes(res.latents, fmt)
        r = res.recipe
        note = None
        if r["transfer"] is not None or r["layers"] is not None:
            note = "the image also has image-space stages (transfer / layers) that latents cannot hold"
        return data, media, name, note

    def upload_latents(self, data, filename, index):
        from latentedit.formats.latents import read_latents

        suffix = Path(filename or "").suffix.lower()
        if suffix not in (".json", ".npy"):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"wrong type: latent files are .json (SD-GAN) or .npy, got {filename!r}")
        with tempfile.TemporaryDirectory(prefix="studio-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(data)
            try:
                arr = read_latents(path, w_dim=self.G.w_dim, num_ws=self.G.num_ws)
            except LatentEditError as e:
                raise InputError(str(e).replace(str(path), filename or "upload")) from None
        if not 0 <= index < len(arr):
            raise InputError(f"index {index} is outside the file's {len(arr)} codes")
        code = arr[index]
        start = {"latents": rc.float32_list(code),
                 "origin": f"{Path(filename).name} #{index} ({'W+' if code.ndim == 2 else 'W'})"}
        return {"start": start, "count": int(len(arr)), "index": index}

    def upload_image(self, data, filename, body_check=None):
        import io

        from PIL import Image, UnidentifiedImageError

        from latentedit.edit.inversion import invert, load_encoder
        from latentedit.formats.encoder import has_encoder
        from latentedit.formats.image_input import read_image, to_tensor

        try:
            with Image.open(io.BytesIO(data)) as im:
                fmt, size = im.format, im.size
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"not an image: {filename or 'the upload'} is not a file PIL can read") from None
        if fmt not in IMAGE_FORMATS:
            raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                            f"wrong type: {fmt} images are not accepted (use {', '.join(sorted(IMAGE_FORMATS))})")
        if max(size) > MAX_IMAGE_SIDE:
            raise HTTPError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                            f"image too large: {size[0]}x{size[1]} px (at most {MAX_IMAGE_SIDE} px a side)")
        notes = []
        with tempfile.TemporaryDirectory(prefix="studio-") as tmp:
            path = Path(tmp) / f"upload.{fmt.lower()}"
            path.write_bytes(data)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    arr = read_image(path, self.G.img_resolution)
                except FormatError:
                    raise HTTPError(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                                    f"not an image: {filename or 'the upload'} could not be decoded") from None
            notes += [str(w.message).replace(str(path), filename or "upload") for w in caught]
        images = to_tensor([arr])
        mode = "encoder" if self.bundle is not None and has_encoder(self.bundle) else "project"
        t0 = time.perf_counter()
        with self.lock:
            encoder = load_encoder(self.bundle, self.G) if mode == "encoder" else None
            codes = invert(images, mode=mode, G=self.G, encoder=encoder, steps=self.invert_steps, space="w+")
        ms = round(1000 * (time.perf_counter() - t0), 1)
        how = "encoder" if mode == "encoder" else f"projection, {self.invert_steps} steps"
        if mode == "project":
            notes.append(f"no encoder in this bundle: inverted by projection ({self.invert_steps} steps)")
        start = {"latents": rc.float32_list(codes[0].cpu().numpy()),
                 "origin": f"{Path(filename or 'image').name} ({how})"}
        return {"start": start, "mode": mode, "ms": ms, "notes": notes, "input": _data_url(rc.encode_png(arr))}


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
