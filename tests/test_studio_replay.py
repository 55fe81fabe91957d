"""Studio recipes and `latentedit replay`: the recipe endpoint is canonical, the API's image equals
replay's byte for byte (in this process and a fresh one, with an accessory too), and hostile recipes
get one error line without opening anything outside their folder."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from click.testing import CliRunner

from latentedit.cli import main
from latentedit.studio import recipe as rc
from latentedit.studio.server import Studio

from studio_server import REPO, SEED, Server, acc_bundle, png_of, replay, server  # noqa: F401 (server, acc_bundle: fixtures)

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------------
# Recipes: the API against `latentedit replay`


def test_recipe_endpoint_is_canonical(server):
    raw = {"start": SEED, "directions": [{"name": "smile", "strength": 1.25, "keep": ["age", "age"]},
                                         {"name": "age", "strength": 0.0}, {"name": "beard", "strength": -0.5}]}
    status, recipe = server.post("/api/recipe", {"recipe": raw})
    assert status == 200 and recipe["format"] == "latentedit-recipe" and recipe["version"] == 1
    assert recipe["model"] == {"path": "default", "generator": server.studio.ctx.generator_hash, "resolution": 64}
    assert [d["name"] for d in recipe["directions"]] == ["beard", "smile"]          # sorted, zero dropped
    assert recipe["directions"][1]["keep"] == ["age"] and len(recipe["directions"][1]["sha256"]) == 64
    assert recipe["render"] == {"noise_mode": "const", "threads": torch.get_num_threads()}
    status, again = server.post("/api/recipe", {"recipe": recipe})
    assert again == recipe                                                       # a fixed point


def test_full_recipe_round_trip_equals_replay(server, tmp_path):
    """Latent start, conditioned directions, layers with a layer and a region colour, and a
    component transfer: the API's PNG and `latentedit replay`'s are the same bytes."""
    G = server.studio.G
    w = G.sample_w(1, seed=11, truncation=0.6).numpy()[0]
    recipe = {"start": {"latents": w.tolist(), "origin": "test"},
              "directions": [{"name": "smile", "strength": 1.5, "keep": ["age", "beard"]},
                             {"name": "hair_color_red", "strength": 0.8}],
              "transfer": {"component": "hair", "source": {"seed": 6, "truncation": 0.7}},
              "layers": {"s_ref": 1.0, "strengths": {"beard": 0.7, "eyeglasses": 0.0},
                         "colours": [{"target": "beard", "rgb": [200, 40, 40]},
                                     {"target": "hair", "rgb": [30, 30, 90]}]}}
    status, out = server.post("/api/render", {"recipe": recipe})
    assert status == 200, out
    api_png = png_of(out["image"])
    assert set(out["stages"]) >= {"directions", "transfer", "layers_build", "layers_render"}
    status, canonical = server.post("/api/recipe", {"recipe": recipe})
    replayed, _ = replay(tmp_path, canonical, "--latents-out", tmp_path / "w.npy")
    assert replayed == api_png
    assert np.array_equal(np.load(tmp_path / "w.npy"),
                          rc.run_recipe(recipe, G, server.studio.bundle, server.studio.ctx).latents.numpy())
    # each stage does something: the same recipe without it renders differently
    for drop in ("transfer", "layers", "directions"):
        status, other = server.post("/api/render", {"recipe": {k: v for k, v in recipe.items() if k != drop}})
        assert png_of(other["image"]) != api_png, drop


def test_replay_command_in_a_fresh_process(server, tmp_path):
    recipe = {"start": SEED, "directions": [{"name": "age", "strength": -1.5, "keep": ["smile"]}],
              "layers": {"strengths": {"beard": 1.2}, "colours": [{"target": "beard", "rgb": [10, 200, 10]}]}}
    status, out = server.post("/api/render", {"recipe": recipe})
    status, canonical = server.post("/api/recipe", {"recipe": recipe})
    path, png = tmp_path / "r.json", tmp_path / "r.png"
    path.write_text(json.dumps(canonical))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-c", "from latentedit.cli import main; main()", "replay", str(path), "--out", str(png)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert png.read_bytes() == png_of(out["image"])


def test_replay_errors(tmp_path):
    def run(*args):
        r = CliRunner().invoke(main, ["replay", *map(str, args)])
        lines = [line for line in r.output.splitlines() if line.startswith("error:")]
        assert r.exit_code == 2 and len(lines) == 1, r.output
        return lines[0]

    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    assert "not valid JSON" in run(bad, "--out", tmp_path / "x.png")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "model": {"generator": "ab" * 32}}))
    assert "another generator" in run(other, "--out", tmp_path / "x.png")
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"start": SEED}))
    assert "not a latentedit recipe" in run(foreign, "--out", tmp_path / "x.png")
    assert "must be a .png" in run(other, "--out", tmp_path / "x.jpg")
    assert "cannot read" in run(tmp_path / "missing.json", "--out", tmp_path / "x.png")


def test_accessory_through_the_api_and_replay(acc_bundle, tmp_path):
    s = Server(Studio(acc_bundle, warm=False))
    try:
        status, _, raw = s.get("/api/info")
        acc = {a["kind"]: a for a in json.loads(raw)["accessories"]}
        assert acc["sunglasses"]["available"] and acc["sunglasses"]["reason"] is None
        assert not acc["mask"]["available"] and "no offset network" in acc["mask"]["reason"]
        recipe = {"start": SEED, "directions": [{"name": "smile", "strength": 1.0}],
                  "accessory": {"kind": "sunglasses"}}
        status, out = s.post("/api/render", {"recipe": recipe})
        assert status == 200 and "accessory" in out["stages"]
        status, plain = s.post("/api/render", {"recipe": {**recipe, "accessory": None}})
        assert png_of(plain["image"]) != png_of(out["image"])
        status, canonical = s.post("/api/recipe", {"recipe": recipe})
        assert canonical["accessory"]["kind"] == "sunglasses" and len(canonical["accessory"]["sha256"]) == 64
        assert canonical["model"]["path"] == str(Path(acc_bundle).resolve())
        replayed, _ = replay(tmp_path, canonical, "--model", acc_bundle)
        assert replayed == png_of(out["image"])
        # a relative model.path inside the recipe's folder is honoured
        inside = {**canonical, "model": {**canonical["model"], "path": Path(acc_bundle).name}}
        replayed, _ = replay(Path(acc_bundle).parent, inside)
        assert replayed == png_of(out["image"])
    finally:
        s.close()


# ---------------------------------------------------------------------------------------------
# Hostile recipes for `latentedit replay`


def replay_error(*args, seconds=60):
    """`latentedit replay ARGS` in this process -> its one error line (exit 2); an alarm turns a hang
    (a blocking open or read) into a failure."""
    import signal

    def hung(*_):
        raise TimeoutError("replay hung")

    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        r = CliRunner().invoke(main, ["replay", *map(str, args)])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = [line for line in r.output.splitlines() if line.startswith("error:")]
    assert r.exit_code == 2 and len(lines) == 1 and "Traceback" not in r.output, (args, r.output, r.exception)
    return lines[0]


def test_replay_checks_threads_before_applying_them(tmp_path):
    before = torch.get_num_threads()
    path = tmp_path / "r.json"
    for threads in (100000, 0, -1, "4", True, 2.5):
        path.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "render": {"threads": threads}}))
        assert "render.threads" in replay_error(path, "--out", tmp_path / "x.png")
        assert torch.get_num_threads() == before and not (tmp_path / "x.png").exists()
    path.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "render": {"threads": 1}}))
    for threads in (100000, 0):
        assert "--threads" in replay_error(path, "--out", tmp_path / "x.png", "--threads", threads)
    # a recipe bad elsewhere is refused before its thread count is applied
    path.write_text(json.dumps({"format": "latentedit-recipe", "start": {"seed": -1}, "render": {"threads": 3}}))
    assert "seed" in replay_error(path, "--out", tmp_path / "x.png")
    assert torch.get_num_threads() == before


def test_replay_refuses_deep_json_and_files_that_are_not_regular(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text('{"format": "latentedit-recipe", "start": ' + "[" * 100000 + "]" * 100000 + "}")
    assert "nested too deeply" in replay_error(deep, "--out", tmp_path / "x.png")
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    (tmp_path / "zero.json").symlink_to("/dev/zero")
    for path in (fifo, tmp_path / "zero.json", Path("/dev/zero")):
        assert "not a regular" in replay_error(path, "--out", tmp_path / "x.png", seconds=30)
    # the same as the model: named by the recipe (inside its folder) or by --model
    os.mkfifo(tmp_path / "model.pt")
    (tmp_path / "zero.pt").symlink_to("/dev/zero")
    for model in ("model.pt", "zero.pt"):
        recipe = tmp_path / f"r_{model}.json"
        recipe.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "model": {"path": model}}))
        replay_error(recipe, "--out", tmp_path / "x.png", seconds=30)
        recipe.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED}))
        assert "not a regular" in replay_error(recipe, "--out", tmp_path / "x.png", "--model", tmp_path / model,
                                                    seconds=30)


def test_replay_opens_no_model_outside_the_recipe_folder(tmp_path):
    """A recipe's model.path outside its folder is refused with one line that does not depend on
    what (if anything) is there, and does not name it."""
    folder = tmp_path / "recipes"
    folder.mkdir()
    (tmp_path / "secret.pt").write_bytes(b"not a model")
    (folder / "link.pt").symlink_to(tmp_path / "secret.pt")
    os.mkfifo(tmp_path / "fifo.pt")
    errors = set()
    for named in ("/etc/shadow", "/etc/passwd", "/nonexistent/file.pt", str(tmp_path / "secret.pt"),
                  "../secret.pt", "../missing.pt", "../fifo.pt", "link.pt", "/dev/zero",
                  "", "../recipes/../secret.pt"):
        path = folder / "r.json"
        path.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "model": {"path": named}}))
        line = replay_error(path, "--out", tmp_path / "x.png", seconds=30)
        assert "--model" in line and "secret" not in line and "shadow" not in line, (named, line)
        errors.add(line)
    assert len(errors) == 1, errors
    path.write_text(json.dumps({"format": "latentedit-recipe", "start": SEED, "model": {"path": "missing.pt"}}))
    assert "missing.pt" in replay_error(path, "--out", tmp_path / "x.png")   # inside its folder: named
    r = CliRunner().invoke(main, ["replay", "--help"])
    assert "inside the recipe's own folder" in " ".join(r.output.split())
