"""latentedit studio in a real browser: Debian's chromium driven by chromedriver over the W3C
WebDriver HTTP protocol (a tiny client below, urllib only). Loads the page, moves a direction
slider and a layer slider, checks the image on screen changed, fetches the recipe the page would
download, replays it with `latentedit replay` and compares the PNG bytes with the page's image.

Skipped when chromium or chromedriver is missing (.ci/run installs both).

Run as a script for the screenshot and the latency figures (not part of the tests):

    python tests/test_studio_browser.py --screenshot docs/studio.png --measure 40
"""
import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BROWSERS = ("chromium", "chromium-browser", "google-chrome", "chrome")


def find_browser():
    """(browser binary, chromedriver binary) or None."""
    browser = next((shutil.which(b) for b in BROWSERS if shutil.which(b)), None)
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class WebDriverError(RuntimeError):
    pass


class WebDriver:
    """The few W3C WebDriver commands the test needs, over plain HTTP."""

    def __init__(self, browser, driver, width=1400, height=1000):
        port = free_port()
        self.profile = tempfile.mkdtemp(prefix="studio-chromium-")
        self.proc = subprocess.Popen([driver, f"--port={port}"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        self.base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status").get("ready"):
                    break
            except (OSError, WebDriverError):
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                raise WebDriverError("chromedriver did not start within 30 s")
            time.sleep(0.1)
        args = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-extensions", "--no-first-run", f"--window-size={width},{height}",
                f"--user-data-dir={self.profile}"]
        caps = {"browserName": "chrome", "goog:chromeOptions": {"binary": browser, "args": args}}
        try:
            self.session = self._call("POST", "/session", {"capabilities": {"alwaysMatch": caps}})["sessionId"]
        except Exception:
            self.proc.kill()
            raise

    def _call(self, method, path, body=None):
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.base + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                out = json.loads(r.read())
        except urllib.error.HTTPError as e:
            out = json.loads(e.read() or b"{}")
            value = out.get("value", {})
            raise WebDriverError(f"{method} {path}: {value.get('error')}: {str(value.get('message'))[:300]}") from None
        return out.get("value")

    def _session(self, method, path, body=None):
        return self._call(method, f"/session/{self.session}{path}", body)

    def get(self, url):
        self._session("POST", "/url", {"url": url})

    def execute(self, script, *args):
        return self._session("POST", "/execute/sync", {"script": script, "args": list(args)})

    def execute_async(self, script, *args):
        """script gets its arguments and then a callback: call it with the result."""
        return self._session("POST", "/execute/async", {"script": script, "args": list(args)})

    def wait_for(self, script, timeout=60, what="the condition"):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.execute(script)
            if value:
                return value
            time.sleep(0.02)
        raise WebDriverError(f"timed out waiting for {what}")

    def screenshot(self):
        return base64.b64decode(self._session("GET", "/screenshot"))

    def quit(self):
        try:
            self._call("DELETE", f"/session/{self.session}")
        except (OSError, WebDriverError):
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.profile, ignore_errors=True)


def start_server(model=None, warm=False):
    """(httpd, url) of a studio server on a free port, serving from a thread of this process."""
    from latentedit.studio.server import Studio, make_server

    httpd = make_server(Studio(model, warm=warm), "127.0.0.1", 0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/"


# ---- page actions (what a user does; each waits until the new image is on screen) ----------

SHOWN = "return window.studio && window.studio.state.shown.main"
IDLE = "return window.studio && window.studio.idle() && window.studio.state.shown.main > 0"


def open_page(wd, url):
    wd.get(url)
    wd.wait_for(IDLE, what="the first image")


def view_src(wd):
    return wd.execute("return document.getElementById('view').src")


def move_slider(wd, element_id, value):
    """Sets a range input and fires its input event, as a drag does; waits for the image."""
    before = wd.execute(SHOWN)
    wd.execute("const s = document.getElementById(arguments[0]); s.value = String(arguments[1]);"
               "s.dispatchEvent(new Event('input', {bubbles: true}));", element_id, value)
    wd.wait_for(f"return window.studio.idle() && window.studio.state.shown.main > {before}", what=f"{element_id}")


def page_recipe(wd):
    """The text the page's "recipe .json" button saves (POST /api/recipe of the shown state)."""
    out = wd.execute_async("const done = arguments[arguments.length - 1];"
                           "window.studio.recipeText().then(done, (e) => done('ERROR ' + e.message));")
    assert not out.startswith("ERROR"), out
    return out


def replay_cli(recipe_text, workdir):
    """`latentedit replay` in a fresh process -> PNG bytes."""
    path, out = Path(workdir) / "recipe.json", Path(workdir) / "replayed.png"
    path.write_text(recipe_text)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    r = subprocess.run([sys.executable, "-c", "from latentedit.cli import main; main()", "replay", str(path),
                        "--out", str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out.read_bytes()


def data_url_bytes(src):
    assert src.startswith("data:image/png;base64,"), src[:40]
    return base64.b64decode(src.split(",", 1)[1])


# ---- the test ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser():
    found = find_browser()
    if found is None:
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver); "
                    ".ci/run installs them")
    wd = WebDriver(*found)
    yield wd
    wd.quit()


@pytest.fixture(scope="module")
def server():
    import torch

    torch.set_num_threads(1)
    httpd, url = start_server()
    yield httpd, url
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def page_url(server):
    return server[1]


def test_slider_layers_download_and_replay(browser, page_url, tmp_path):
    wd = browser
    open_page(wd, page_url)
    # the bundled model ships an offset network for every accessory: no button is disabled
    disabled = wd.execute("return [...document.querySelectorAll('input[name=accessory]')]"
                          ".filter(r => r.disabled).map(r => r.value)")
    assert disabled == []
    assert "no offset network" not in wd.execute("return document.getElementById('accessories').textContent")
    first = view_src(wd)

    move_slider(wd, "dir-smile", 2.0)
    after_slider = view_src(wd)
    assert after_slider != first
    wd.execute("document.getElementById('keep-age').click()")
    wd.wait_for("return window.studio.idle() && window.studio.state.shownRecipe.directions[0].keep.length == 1",
                what="keep age")

    wd.execute("window.studio.addLayer('beard')")
    wd.wait_for("return window.studio.idle() && window.studio.state.shownRecipe.layers !== null", what="the layer")
    move_slider(wd, "layer-beard", 2.5)
    after_layer = view_src(wd)
    assert after_layer != after_slider
    assert wd.execute("return document.getElementById('error').classList.contains('hidden')")

    text = page_recipe(wd)
    recipe = json.loads(text)
    assert recipe["directions"] == [{"name": "smile", "strength": 2.0, "keep": ["age"],
                                     "sha256": recipe["directions"][0]["sha256"]}]
    assert recipe["layers"]["strengths"] == {"beard": 2.5}
    assert data_url_bytes(after_layer) == replay_cli(text, tmp_path)


def test_newest_wins_and_latency(browser, server):
    import statistics

    wd = browser
    httpd, page_url = server
    open_page(wd, page_url)
    # a burst of 30 input events on one slider: one request goes out, the rest only mark the control
    # pending, and one more request carries the last value when the first answer is in
    before = wd.execute("return window.studio.state.seq")
    wd.execute("const s = document.getElementById('dir-age');"
               "for (let i = 0; i < 30; i++) { s.value = String(-1.5 + 0.1 * i);"
               " s.dispatchEvent(new Event('input', {bubbles: true})); }")
    wd.wait_for(IDLE, what="the burst to settle")
    sent = wd.execute("return window.studio.state.seq") - before
    shown = wd.execute("return window.studio.state.shownRecipe.directions")
    assert sent == 2, sent
    assert shown == [{"name": "age", "strength": 1.4, "keep": []}]
    # latency from the input event to the image on screen, medians of 10 moves
    wd.execute("window.studio.addLayer('smile')")
    wd.wait_for(IDLE, what="the layer")
    first = wd.execute("return window.studio.state.detail.length")
    for i in range(10):
        move_slider(wd, "dir-beard", 0.3 * (i + 1))
        move_slider(wd, "layer-smile", -1.0 + 0.25 * i)
    rows = wd.execute("return window.studio.state.detail")[first:]
    slider = [r for r in rows if r["kind"] == "slider"]
    layer = sorted(r["total"] for r in rows if r["kind"] == "layer")
    total = statistics.median(r["total"] for r in slider)
    # what the page and HTTP add to the server's time (decode, JSON, base64): ~10 ms when quiet
    overhead = statistics.median(r["total"] - r["server"] for r in slider)
    # the same work without the browser, in this process, right after: the machine's speed now
    studio, recipe = httpd.RequestHandlerClass.studio, wd.execute("return window.studio.state.shownRecipe")
    passes = []
    for k in range(5):  # a new strength each time: the server caches stages of a seen code
        recipe["directions"][0]["strength"] = 2.0 + 0.1 * k
        t = time.perf_counter()
        assert "image" in studio.render({"recipe": recipe})
        passes.append(1000 * (time.perf_counter() - t))
    one_pass = statistics.median(passes)
    detail = f"slider to screen {sorted(r['total'] for r in slider)} ms, server {[r['server'] for r in slider]}, " \
             f"one pass alone {one_pass:.0f} ms"
    assert overhead <= 100, detail
    # issue 10's budget (~50 ms a pass when quiet, 300 on screen); a machine slowed by other load
    # holds the page to three passes, which a queue of stale requests would exceed
    assert total <= max(300, 3 * one_pass), detail
    assert layer[len(layer) // 2] <= 50, f"layer latencies {layer} ms"


def test_bad_upload_error_is_shown_on_the_page(browser, page_url):
    """A file that is not an image: the server's error JSON appears in the page's error box."""
    wd = browser
    open_page(wd, page_url)
    message = wd.execute_async(
        "const done = arguments[arguments.length - 1];"
        "const input = document.getElementById('image-file');"
        "const dt = new DataTransfer(); dt.items.add(new File(['not an image'], 'notes.png', {type: 'image/png'}));"
        "input.files = dt.files; input.dispatchEvent(new Event('change'));"
        "const box = document.getElementById('error');"
        "const t0 = Date.now(); (function poll() { if (!box.classList.contains('hidden')) done(box.textContent);"
        " else if (Date.now() - t0 > 20000) done('no error shown'); else setTimeout(poll, 20); })();")
    assert message.startswith("not an image: notes.png"), message


# ---- screenshot and latencies (run as a script) --------------------------------------------------


def _percentiles(values):
    v = sorted(values)
    if not v:
        return "no samples"
    pick = lambda q: v[min(len(v) - 1, int(round(q * (len(v) - 1))))]  # noqa: E731
    return f"n={len(v)} median {pick(0.5):.1f} ms, p90 {pick(0.9):.1f} ms, max {v[-1]:.1f} ms"


def measure(wd, n):
    """Latency from the input event to the new image decoded on screen (and to the response, and
    the server's own time), for n moves of: a direction slider alone, a direction slider with an
    attribute layer on (rebuilt for every new code), and a layer strength (recomposited only)."""
    import random

    rng = random.Random(0)

    def phase(label, element_id):
        first = wd.execute("return window.studio.state.detail.length")
        for _ in range(n):
            move_slider(wd, element_id, round(rng.uniform(-3, 3), 2))
        rows = wd.execute("return window.studio.state.detail")[first:]
        print(f"{label}:")
        print("   input -> image on screen:  ", _percentiles([d["total"] for d in rows]))
        print("   input -> response received:", _percentiles([d["answered"] for d in rows]))
        print("   server (wait+compute+png): ", _percentiles([d["server"] for d in rows]))

    phase("direction slider, no layers (one generator pass)", "dir-smile")
    wd.execute("window.studio.addLayer('beard')")
    wd.wait_for(IDLE, what="the layer")
    phase("direction slider with a layer on (generator pass + layer rebuilt)", "dir-smile")
    phase("layer strength (recomposited, no generator)", "layer-beard")
    # a fast drag: 60 input events 4 ms apart; count what reaches the server and the screen
    before = wd.execute("return [window.studio.state.seq, window.studio.state.stats.slider.length]")
    wd.execute_async("const done = arguments[arguments.length - 1]; const s = document.getElementById('dir-age');"
                     "let i = 0; const t = setInterval(() => { s.value = String(-3 + 0.1 * i);"
                     "s.dispatchEvent(new Event('input', {bubbles: true}));"
                     "if (++i == 60) { clearInterval(t); done(); } }, 4);")
    wd.wait_for(IDLE, what="the drag to settle")
    after = wd.execute("return [window.studio.state.seq, window.studio.state.stats.slider.length,"
                       " window.studio.state.shownRecipe.directions.find(d => d.name == 'age').strength]")
    print(f"fast drag: 60 input events -> {after[0] - before[0]} requests, {after[1] - before[1]} images shown; "
          f"final age strength on screen {after[2]} (last value set 2.9)")


def main(argv=None):
    import argparse

    import torch

    p = argparse.ArgumentParser(description="Screenshot of the studio page and its latencies (headless chromium).")
    p.add_argument("--screenshot", default=None, help="PNG to write (e.g. docs/studio.png)")
    p.add_argument("--measure", type=int, default=0, help="slider / layer moves to time (0: none)")
    p.add_argument("--model", default=None)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    found = find_browser()
    if found is None:
        sys.exit("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    httpd, url = start_server(args.model)
    wd = WebDriver(*found)
    try:
        open_page(wd, url)
        if args.measure:
            measure(wd, args.measure)
        if args.screenshot:
            open_page(wd, url)
            wd.execute("const s = document.getElementById('seed'); s.value = '2';"
                       "s.dispatchEvent(new Event('change'));")
            wd.wait_for(IDLE, what="seed 2")
            move_slider(wd, "dir-smile", 1.5)
            move_slider(wd, "dir-hair_color_blond", 1.0)
            wd.execute("document.getElementById('keep-age').click()")
            wd.execute("window.studio.addLayer('beard')")
            wd.wait_for(IDLE, what="the layer")
            move_slider(wd, "layer-beard", 1.8)
            wd.execute("const o = document.getElementById('overlay'); o.value = 'edit';"
                       "o.dispatchEvent(new Event('change'));")
            wd.wait_for("return window.studio.idle() && window.studio.state.shown.mask > 0", what="the mask",
                        timeout=120)
            time.sleep(0.3)
            Path(args.screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(args.screenshot).write_bytes(wd.screenshot())
            print(f"wrote {args.screenshot}")
    finally:
        wd.quit()
        httpd.shutdown()
        httpd.server_close()


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
