"""The studio's state behind its JSON API, HTTP-free (server.py serves it): the model, its recipe
context (stage caches) and the staleness bookkeeping, so tests and other front ends can call it
directly.

Stale work: every request carries a client id, a stream ("main", "mask", ...) and a sequence
number. The newest sequence number seen per (client, stream) is recorded when a request
arrives; a request that is older than it is answered {"superseded": true} as soon as it is
noticed (before waiting for the compute lock, after getting it, and between the stages of the
recipe), so only the newest request's work runs to the end. Compute runs one request at a time
(one lock: the generator's feature hooks are not re-entrant).
"""
import base64
import copy
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from http import HTTPStatus
from pathlib import Path

import torch

from latentedit.errors import FormatError, InputError, LatentEditError
from latentedit.studio import recipe as rc
from latentedit.studio.context import RecipeContext

UPLOAD_LIMIT = 8 * 1024 * 1024
JSON_LIMIT = 4 * 1024 * 1024
MAX_IMAGE_SIDE = 4096
IMAGE_FORMATS = {"PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF", "PPM"}
INVERT_STEPS = 100


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


class Studio:
    """The state behind the API: the model, its recipe context (stage caches) and the staleness
    bookkeeping. HTTP-free, so tests and other front ends can call it directly."""

    def __init__(self, model_path=None, warm=True, invert_steps=INVERT_STEPS, upload_limit=UPLOAD_LIMIT):
        """model_path: a bundle folder, a rosinality .pt or an NVlabs .pkl (None: the bundled
        model), or a `Model` (le.load_model(path, parts=...))."""
        from latentedit.model import Model, load_model

        self.model = model_path if isinstance(model_path, Model) else load_model(model_path)
        self.G, self.bundle = self.model.G.eval(), self.model.parts
        self.invert_steps, self.upload_limit = int(invert_steps), int(upload_limit)
        self._components = None
        self._components_ready = threading.Event()
        self._components_error = None
        self.ctx = RecipeContext(self.model, components=self._wait_components)
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
        from latentedit.model import Model

        try:  # the model's components, fitted through the copy of G (named by the model's parser)
            self._components = Model(G, parts=self.model.parts, source=self.model.source).components()
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

        with self.lock:
            dirs = self.ctx.directions()
            accessories = self.ctx.accessories()
            model = self.ctx.model_identity()
        encoder = self.model.has("encoder")
        return {
            "model": model, "num_ws": self.G.num_ws, "w_dim": self.G.w_dim,
            "directions": [{"name": n, "available": not isinstance(d, str),
                            "reason": d if isinstance(d, str) else None,
                            "space": None if isinstance(d, str) else d.space} for n, d in dirs.items()],
            "accessories": accessories, "regions": list(REGIONS),
            "components": self.components_status(),
            "encoder": encoder,
            "invert": {"mode": "encoder" if encoder else "project",
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
        if r["accessory"] is not None or r["transfer"] is not None or r["layers"] is not None:
            note = ("the image also has image-space stages (the accessory composited into the face, transfer, "
                    "layers) that latents cannot hold")
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

    def upload_image(self, data, filename):
        import io

        from PIL import Image, UnidentifiedImageError

        from latentedit.edit.inversion import invert
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
        mode = "encoder" if self.model.has("encoder") else "project"
        t0 = time.perf_counter()
        with self.lock:
            encoder = self.model.encoder() if mode == "encoder" else None
            codes = invert(images, mode=mode, G=self.G, encoder=encoder, steps=self.invert_steps, space="w+")
        ms = round(1000 * (time.perf_counter() - t0), 1)
        how = "encoder" if mode == "encoder" else f"projection, {self.invert_steps} steps"
        if mode == "project":
            notes.append(f"no encoder in this bundle: inverted by projection ({self.invert_steps} steps)")
        start = {"latents": rc.float32_list(codes[0].cpu().numpy()),
                 "origin": f"{Path(filename or 'image').name} ({how})"}
        return {"start": start, "mode": mode, "ms": ms, "notes": notes, "input": _data_url(rc.encode_png(arr))}
