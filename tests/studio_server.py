"""The studio test server (port 0, in a thread) and the helpers test_studio.py and
test_studio_replay.py share."""
import base64
import http.client
import io
import json
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from latentedit.cli import main
from latentedit.edit.directions import Direction
from latentedit.formats import DEFAULT_BUNDLE, load_generator
from latentedit.studio.server import Studio, make_server

from sdgan_world import copy_without_offsets, small_net

REPO = Path(__file__).resolve().parents[1]


class Server:
    def __init__(self, studio):
        self.studio = studio
        self.httpd = make_server(studio, "127.0.0.1", 0)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def request(self, method, path, body=None, headers=None):
        """(status, headers, body bytes) over http.client: the path is sent exactly as given."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, dict(r.getheaders()), r.read()
        finally:
            conn.close()

    def get(self, path):
        with urllib.request.urlopen(self.url + path, timeout=60) as r:
            return r.status, r.headers, r.read()

    def post(self, path, obj=None, data=None, content_type="application/json"):
        """-> (status, parsed JSON or raw bytes)."""
        body = data if data is not None else json.dumps(obj).encode()
        req = urllib.request.Request(self.url + path, data=body, headers={"Content-Type": content_type})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                status, raw, media = r.status, r.read(), r.headers.get("Content-Type", "")
        except urllib.error.HTTPError as e:
            status, raw, media = e.code, e.read(), e.headers.get("Content-Type", "")
        return status, json.loads(raw) if media.startswith("application/json") else raw


@pytest.fixture(scope="module")
def server():
    s = Server(Studio(warm=False, invert_steps=5))
    yield s
    s.close()


@pytest.fixture(scope="module")
def acc_bundle(tmp_path_factory):
    """A copy of the bundled model with an untrained small offset network for sunglasses."""
    from latentedit.formats.sdgan import write_offset_network
    from latentedit.world.templates import accessory_template

    path = tmp_path_factory.mktemp("studio") / "bundle"
    copy_without_offsets(DEFAULT_BUNDLE, path)
    net = small_net(load_generator(path), 0)
    d = Direction.load("sunglasses", bundle=path)
    write_offset_network(path, "sunglasses", net, accessory_template("sunglasses"), d.vector,
                         d.provenance["intercept"], 3.0, boundary="sunglasses")
    return path


def png_of(data_url):
    assert data_url.startswith("data:image/png;base64,")
    return base64.b64decode(data_url.split(",", 1)[1])


def pixels(png):
    return np.asarray(Image.open(io.BytesIO(png)))


def replay(tmp_path, recipe, *extra):
    """`latentedit replay` in this process (CliRunner) -> (PNG bytes, result)."""
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(recipe))
    out = tmp_path / "replayed.png"
    r = CliRunner().invoke(main, ["replay", str(path), "--out", str(out), *map(str, extra)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return out.read_bytes(), r


SEED = {"seed": 3, "truncation": 0.7}
