"""latentedit studio: every API endpoint over real HTTP (server on port 0 in a thread, urllib /
http.client), bad uploads and bad JSON, path traversal on the static route, stale-request
handling, masks and latent downloads (recipes and `latentedit replay`: test_studio_replay.py)."""
import io
import json
import shutil
import socket
import threading

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from latentedit.cli import main
from latentedit.edit.directions import Direction
from latentedit.formats import DEFAULT_BUNDLE
from latentedit.formats.latents import read_latents
from latentedit.studio import recipe as rc
from latentedit.studio.hosts import allowed_hosts
from latentedit.studio.server import STATIC, Studio, static_file

from studio_server import SEED, Server, png_of, pixels, server  # noqa: F401 (server: a fixture)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Page and static files


def test_index_and_static_assets(server):
    status, headers, body = server.get("/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert b"/static/app.js" in body and b"/static/style.css" in body
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    for name, media in (("app.js", "text/javascript"), ("style.css", "text/css"), ("index.html", "text/html")):
        status, headers, body = server.get(f"/static/{name}")
        assert status == 200 and headers["Content-Type"].startswith(media)
        assert body == (STATIC / name).read_bytes()
    # every asset is local: no URL with a scheme in the page's files
    for name in ("index.html", "app.js", "style.css"):
        text = (STATIC / name).read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


@pytest.mark.parametrize("path", [
    "/static/../server.py", "/static/../../setup.py", "/static/%2e%2e/server.py", "/static/%2E%2E/recipe.py",
    "/static/%2e%2e%2fserver.py", "/static/..%2f..%2fsetup.py", "/static/..%5cserver.py",
    "/static//etc/passwd", "/static/%2fetc%2fpasswd", "/static/%2f%2fetc/passwd", "/static/.%2e/server.py",
    "/static/app.js%00.png", "/static/", "/static/.", "/static/nonexistent.js", "/static/%252e%252e/server.py",
])
def test_static_route_cannot_leave_its_folder(server, path):
    status, headers, body = server.request("GET", path)
    assert status == 404, (path, status)
    assert json.loads(body)["error"].startswith("not found")
    assert b"import" not in body and b"root:" not in body


def test_static_file_resolution():
    assert static_file("app.js") == (STATIC / "app.js").resolve()
    for bad in ("../server.py", "/etc/passwd", str(STATIC / "app.js"), "..", "a/../../server.py",
                "app.js\x00", "..\\server.py", ""):
        assert static_file(bad) is None, bad


# ---------------------------------------------------------------------------------------------
# Info, render, staleness


def test_info(server):
    status, _, body = server.get("/api/info")
    info = json.loads(body)
    assert status == 200
    assert info["model"]["path"] == "default" and info["model"]["resolution"] == 64
    assert len(info["model"]["generator"]) == 64
    names = {d["name"] for d in info["directions"] if d["available"]}
    assert {"smile", "age", "beard", "eyeglasses", "hat", "hair_color_red"} <= names
    acc = {a["kind"]: a for a in info["accessories"]}
    assert set(acc) == {"mask", "sunglasses", "frame_glasses"}
    for a in acc.values():  # the bundled model ships an offset network for every kind
        assert a["available"] and a["reason"] is None
    assert "left_eye" in info["regions"] and "hair" in info["regions"]
    assert info["encoder"] is True and info["invert"] == {"mode": "encoder", "steps": 5}  # the bundled encoder
    assert info["limits"]["upload_bytes"] == 8 * 1024 * 1024


def test_render_returns_the_png_of_the_recipe(server):
    recipe = {"start": SEED, "directions": [{"name": "smile", "strength": 2.0}]}
    status, out = server.post("/api/render", {"recipe": recipe})
    assert status == 200 and set(out["ms"]) == {"wait", "compute", "png"}
    png = png_of(out["image"])
    G = server.studio.G
    expected = G.synthesis(G.broadcast_w(G.sample_w(seeds=[3], truncation=0.7)) + 2.0 * Direction.load("smile").vector,
                           noise_mode="const", fast=False)
    assert png == rc.encode_png(expected.detach())
    assert pixels(png).shape == (64, 64, 3)
    status, plain = server.post("/api/render", {"recipe": {"start": SEED}})
    assert png_of(plain["image"]) != png


def test_stale_requests_are_skipped(server):
    studio = server.studio
    recipe = {"start": SEED, "directions": [{"name": "age", "strength": 1.0}]}
    status, out = server.post("/api/render", {"recipe": recipe, "seq": 10, "client": "c1"})
    assert status == 200 and "image" in out
    # older than the newest seen for this client and stream: answered without work
    status, out = server.post("/api/render", {"recipe": recipe, "seq": 9, "client": "c1"})
    assert out == {"seq": 9, "superseded": True}
    # other clients and streams are independent
    assert "image" in server.post("/api/render", {"recipe": recipe, "seq": 1, "client": "c2"})[1]
    assert "image" in server.post("/api/render", {"recipe": recipe, "seq": 1, "client": "c1", "stream": "source"})[1]
    # work waiting for the compute lock is dropped when a newer request arrives meanwhile
    results = {}

    def call(seq):
        results[seq] = server.post("/api/render", {"recipe": recipe, "seq": seq, "client": "c3"})[1]

    with studio.lock:
        first = threading.Thread(target=call, args=(1,))
        first.start()
        while studio._latest.get(("c3", "main")) != 1:
            pass
        second = threading.Thread(target=call, args=(2,))
        second.start()
        while studio._latest.get(("c3", "main")) != 2:
            pass
    first.join()
    second.join()
    assert results[1] == {"seq": 1, "superseded": True}
    assert "image" in results[2]
    # and between stages: a check that fails after the first stage stops the recipe there
    calls = []

    def check():
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("superseded")

    with pytest.raises(RuntimeError):
        rc.run_recipe({"start": SEED, "layers": {"strengths": {"beard": 1.0}}}, studio.G, studio.bundle, studio.ctx,
                      check)
    assert len(calls) == 2


# ---------------------------------------------------------------------------------------------
# Bad requests


def test_bad_requests_get_one_line_errors(server):
    for body in (b"{not json", b"\xff\xfe", b"[1, 2"):
        status, headers, raw = server.request("POST", "/api/render", body, {"Content-Type": "application/json"})
        err = json.loads(raw)["error"]
        assert status == 400 and err.startswith("bad JSON") and "\n" not in err
    cases = [
        ({"recipe": {"start": SEED, "directions": [{"name": "nope", "strength": 1}]}}, "unknown direction 'nope'"),
        ({"recipe": {"start": SEED, "directions": [{"name": "smile", "strength": "x"}]}}, "finite number"),
        ({"recipe": {"start": SEED, "directions": [{"name": "smile", "strength": 1e9}]}}, "must be in"),
        ({"recipe": {"start": SEED, "directions": [{"name": "smile", "strength": 1, "keep": ["smile"]}]}},
         "cannot keep itself"),
        ({"recipe": {"start": {"seed": -1}}}, "seed"),
        ({"recipe": {"start": {"latents": [1.0, 2.0]}}}, "latents must be"),
        ({"recipe": {"start": SEED, "bogus": 1}}, "unknown key"),
        ({"recipe": {"start": SEED, "accessory": "hat"}}, "hat"),
        ({"recipe": {"start": SEED, "transfer": {"component": "tail", "source": SEED}}}, "unknown component"),
        ({"recipe": {"start": SEED, "layers": {"strengths": {"beard": 1}, "colours": [{"target": "beard",
                                                                                      "rgb": [300, 0, 0]}]}}},
         "0..255"),
        ({"recipe": {"start": SEED, "model": {"generator": "0" * 64}}}, "another generator"),
        ({"nothing": 1}, "needs a JSON object with a \"recipe\""),
    ]
    for body, words in cases:
        status, out = server.post("/api/render", body)
        assert status == 400 and words in out["error"] and "\n" not in out["error"], (body, out)
    status, out = server.post("/api/mask", {"recipe": {"start": SEED}, "mask": "elbow"})
    assert status == 400 and "unknown mask" in out["error"]
    status, out = server.post("/api/latents?format=png", {"recipe": {"start": SEED}})
    assert status == 400 and "format" in out["error"]
    status, headers, raw = server.request("GET", "/api/render")
    assert status == 405 and headers["Allow"] == "POST"
    status, headers, raw = server.request("GET", "/api/nothing")
    assert status == 404
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:  # no Content-Length
        sock.sendall(f"POST /api/render HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())
        answer = sock.makefile("rb").read()
    assert answer.startswith(b"HTTP/1.1 411") and b"Content-Length" in answer


def test_foreign_host_and_origin_are_refused(server):
    status, _, raw = server.request("GET", "/api/info", headers={"Host": "evil.example:80"})
    assert status == 403 and "forbidden" in json.loads(raw)["error"]
    body = json.dumps({"recipe": {"start": SEED}}).encode()
    status, _, raw = server.request("POST", "/api/render", body, {"Content-Type": "application/json",
                                                                   "Origin": "http://evil.example"})
    assert status == 403
    status, _, raw = server.request("POST", "/api/render", body, {"Content-Type": "application/json",
                                                                   "Origin": server.url})
    assert status == 200


def test_host_and_origin_are_checked_on_a_network_bind(server):
    """Bound to a LAN address (simulated: the socket stays on loopback), only the bound address and
    the --allow-host names are answered; a rebinding page's Host / Origin and other sites are not."""
    port, httpd = server.port, server.httpd
    saved = httpd.allowed_hosts
    httpd.allowed_hosts = allowed_hosts("192.0.2.10", ["studio.lan"])
    body = json.dumps({"recipe": {"start": SEED}}).encode()
    try:
        for host, want in ((f"192.0.2.10:{port}", 200), (f"studio.lan:{port}", 200), (f"STUDIO.lan:{port}", 200),
                           (f"evil.example:{port}", 403), (f"studio.lan:{port + 1}", 403), ("studio.lan", 403),
                           (f"127.0.0.1:{port}", 403), (f"studio.lan.evil.example:{port}", 403), ("", 403)):
            status, _, raw = server.request("GET", "/api/info", headers={"Host": host})
            assert status == want, (host, raw[:200])
            if want == 403:
                assert "forbidden" in json.loads(raw)["error"]
        for host, origin, want in ((f"studio.lan:{port}", f"http://studio.lan:{port}", 200),
                                   (f"studio.lan:{port}", f"http://192.0.2.10:{port}", 200),
                                   (f"studio.lan:{port}", "http://evil.example", 403),
                                   (f"studio.lan:{port}", "null", 403),
                                   (f"studio.lan:{port}", f"https://studio.lan:{port}", 403),
                                   (f"evil.example:{port}", f"http://evil.example:{port}", 403)):  # DNS rebinding
            status, _, raw = server.request("POST", "/api/render", body, {"Content-Type": "application/json",
                                                                           "Host": host, "Origin": origin})
            assert status == want, (host, origin, raw[:200])
    finally:
        httpd.allowed_hosts = saved
    status, _, _ = server.request("GET", "/api/info")                  # the loopback bind again
    assert status == 200
    assert {"localhost", "127.0.0.1", "::1"} <= allowed_hosts("0.0.0.0") and "evil.example" not in allowed_hosts("::")


def test_studio_allow_host_option_is_checked():
    for bad in ("studio.lan:8000", "http://studio.lan", "a b", ""):
        r = CliRunner().invoke(main, ["studio", "--host", "0.0.0.0", "--allow-host", bad, "--port", "0"])
        lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(lines) == 1 and "--allow-host" in lines[0], (bad, r.output)


def test_deep_json_and_oversized_npy_headers_are_400(server):
    deep = b"[" * 100000 + b"]" * 100000
    status, _, raw = server.request("POST", "/api/render", deep, {"Content-Type": "application/json"})
    assert status == 400 and "nested too deeply" in json.loads(raw)["error"]
    status, out = server.post("/api/render", data=b'{"recipe": {"start": {"latents": ' + deep + b"}}}")
    assert status == 400 and "nested too deeply" in out["error"]
    status, out = server.post("/api/upload/latents?filename=w.json", data=deep, content_type="application/octet-stream")
    assert status == 400 and "nested too deeply" in out["error"]
    status, out = server.post("/api/upload/latents?filename=w.json", data=b'{"0": ' + deep + b"}",
                              content_type="application/octet-stream")
    assert status == 400 and "nested too deeply" in out["error"]
    # a header that claims far more data than is sent: refused before anything is allocated
    for shape, words in (((10 ** 12, 512), "at most"), ((3, 512), "truncated")):
        buf = io.BytesIO()
        np.lib.format.write_array_header_1_0(buf, {"descr": "<f4", "fortran_order": False, "shape": shape})
        status, out = server.post("/api/upload/latents?filename=w.npy", data=buf.getvalue() + bytes(64),
                                  content_type="application/octet-stream")
        assert status == 400 and words in out["error"] and "/tmp/" not in out["error"], (shape, out)


# ---------------------------------------------------------------------------------------------
# Uploads


def test_upload_latents(server, tmp_path):
    G = server.studio.G
    w = G.sample_w(3, seed=7, truncation=0.7).numpy()                       # [3, 512] W codes
    sdgan = json.dumps({str(i): row.tolist() for i, row in enumerate(w)}).encode()
    status, out = server.post("/api/upload/latents?filename=w.json&index=2", data=sdgan,
                              content_type="application/octet-stream")
    assert status == 200 and out["count"] == 3 and out["index"] == 2
    assert np.array_equal(np.asarray(out["start"]["latents"], np.float32), w[2])
    wp = np.stack([G.broadcast_w(torch.from_numpy(w))[0].numpy()])          # [1, L, 512] W+
    buf = io.BytesIO()
    np.save(buf, wp)
    status, out = server.post("/api/upload/latents?filename=codes.npy", data=buf.getvalue(),
                              content_type="application/octet-stream")
    assert status == 200 and np.array_equal(np.asarray(out["start"]["latents"], np.float32), wp[0])
    # the start renders as the code it holds
    status, r = server.post("/api/render", {"recipe": {"start": out["start"]}})
    status, s = server.post("/api/render", {"recipe": {"start": {"seed": 7, "truncation": 0.7}}})
    # the seed's code comes from a batch of 1, the uploaded one from a batch of 3: the mapping
    # network's sums may round differently (they did on a Zen 4), so pixels, not PNG bytes
    assert np.abs(pixels(png_of(r["image"])).astype(int) - pixels(png_of(s["image"])).astype(int)).max() <= 1
    bad = [("w.json&index=5", sdgan, 400, "outside the file's 3 codes"),
           ("w.txt", sdgan, 415, "wrong type"),
           ("w.json", b'{"0": [1, 2, 3]}', 400, "has 3 values, expected 512"),
           ("w.json", b"{oops", 400, "not valid JSON"),
           ("w.npy", b"\x93NUMPY garbage", 400, "not a readable .npy"),
           ("w.json&index=x", sdgan, 400, "index must be an integer")]
    for name, data, code, words in bad:
        status, out = server.post(f"/api/upload/latents?filename={name}", data=data,
                                  content_type="application/octet-stream")
        assert status == code and words in out["error"], (name, out)
        assert str(tmp_path) not in out["error"] and "/tmp/" not in out["error"]  # no server paths leak


def png_bytes(size, colour=(120, 90, 60), fmt="PNG"):
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format=fmt)
    return buf.getvalue()


def test_upload_image_inverts_with_the_bundled_encoder(server):
    from latentedit.edit.inversion import encode_images, load_encoder

    status, out = server.post("/api/upload/image?filename=me.png", data=png_bytes((80, 60)),
                              content_type="image/png")
    assert status == 200 and out["mode"] == "encoder" and "(encoder)" in out["start"]["origin"]
    codes = np.asarray(out["start"]["latents"], np.float32)
    G = server.studio.G
    shown = torch.from_numpy(pixels(png_of(out["input"])).copy()).permute(2, 0, 1)[None].float() / 127.5 - 1
    expected = encode_images(load_encoder(DEFAULT_BUNDLE, G), G, shown)[0].numpy()
    np.testing.assert_allclose(codes, expected, atol=1e-5)  # the encoder's code of the (cropped) upload
    assert "centre-cropped 80x60" in " ".join(out["notes"])


def test_upload_image_inverts_by_projection_without_an_encoder(tmp_path):
    bundle = tmp_path / "no_encoder"
    shutil.copytree(DEFAULT_BUNDLE, bundle, ignore=shutil.ignore_patterns("encoder.*"))
    manifest = json.loads((bundle / "bundle.json").read_text())
    del manifest["networks"]["encoder"]
    (bundle / "bundle.json").write_text(json.dumps(manifest))
    s = Server(Studio(model_path=bundle, warm=False, invert_steps=5))
    try:
        status, out = s.post("/api/upload/image?filename=me.png", data=png_bytes((80, 60)),
                             content_type="image/png")
        assert status == 200 and out["mode"] == "project"
        codes = np.asarray(out["start"]["latents"], np.float32)
        assert codes.shape == (s.studio.G.num_ws, 512) and np.isfinite(codes).all()
        assert "projection, 5 steps" in out["start"]["origin"]
        notes = " ".join(out["notes"])
        assert "centre-cropped 80x60" in notes and "no encoder" in notes
        assert pixels(png_of(out["input"])).shape == (64, 64, 3)
        status, r = s.post("/api/render", {"recipe": {"start": out["start"], "directions": {"smile": 1.0}}})
        assert status == 200 and "image" in r
    finally:
        s.close()


def test_bad_image_uploads(server):
    cases = [
        (b"hello, not an image", "image/png", 415, "not an image"),
        (png_bytes((64, 64))[:40], "image/png", 415, "not an image"),          # truncated
        (png_bytes((5000, 8)), "image/png", 413, "image too large: 5000x8"),
        (png_bytes((64, 64)), "text/plain", 415, "wrong type: text/plain"),
        (png_bytes((32, 32), fmt="ICO"), "image/x-icon", 415, "wrong type: ICO"),
    ]
    for data, media, code, words in cases:
        status, out = server.post("/api/upload/image?filename=x", data=data, content_type=media)
        assert status == code and words in out["error"], (words, status, out)
    big = b"\0" * (8 * 1024 * 1024 + 1)
    for path in ("/api/upload/image?filename=big.png", "/api/upload/latents?filename=big.npy"):
        status, out = server.post(path, data=big, content_type="application/octet-stream")
        assert status == 413 and "too large" in out["error"] and "8 MB" in out["error"]
    status, out = server.post("/api/render", data=b" " * (4 * 1024 * 1024 + 1))
    assert status == 413


# ---------------------------------------------------------------------------------------------
# Masks and latent downloads


def test_masks(server):
    recipe = {"start": SEED, "directions": [{"name": "smile", "strength": 2.5}]}
    status, out = server.post("/api/mask", {"recipe": recipe, "mask": "edit"})
    assert status == 200 and 0 < out["area"] < 0.6
    rgba = pixels(png_of(out["image"]))
    assert rgba.shape == (64, 64, 4) and rgba[..., 3].max() > 200
    status, none = server.post("/api/mask", {"recipe": {"start": SEED}, "mask": "edit"})
    assert none["area"] == 0                                                  # no edit, no mask
    status, out = server.post("/api/mask", {"recipe": recipe, "mask": "skin"})     # fits the clusters once
    assert status == 200 and 0.05 < out["area"] < 0.9
    status, eyes = server.post("/api/mask", {"recipe": recipe, "mask": "eyes"})
    assert status == 200 and 0 < eyes["area"] < out["area"]
    assert server.studio.components_status() == "ready"


def test_latents_download(server, tmp_path):
    recipe = {"start": SEED, "directions": [{"name": "beard", "strength": 1.5}]}
    res = rc.run_recipe(recipe, server.studio.G, server.studio.bundle, server.studio.ctx)
    for fmt in ("json", "npy"):
        status, raw = server.post(f"/api/latents?format={fmt}", {"recipe": recipe})
        assert status == 200 and isinstance(raw, (bytes, dict))
        f = tmp_path / f"w.{fmt}"
        f.write_bytes(raw if isinstance(raw, bytes) else json.dumps(raw).encode())
        w = read_latents(f, w_dim=512, num_ws=server.studio.G.num_ws)
        assert w.shape == (1, server.studio.G.num_ws, 512)
        assert np.array_equal(w, res.latents.numpy())
