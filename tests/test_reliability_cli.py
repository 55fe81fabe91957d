"""Hostile or mistaken command-line inputs: each is one `error:` line and exit status 2 (or works),
never a traceback, a crash or a hang (issue 16)."""
import json
import os
import shutil
import signal

import numpy as np
import pytest
import torch
from PIL import Image

from latentedit.errors import FormatError
from latentedit.formats import DEFAULT_BUNDLE, Networks, bundle, save_networks
from latentedit.formats.files import read_json

from conftest import run



def assert_refused(r, *words):
    """Exit 2 with one `error:` line that names the problem."""
    assert r.exit_code == 2, r.output
    lines = [line for line in r.output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in r.output, r.output
    for word in words:
        assert word in errors[0], errors[0]


THREAD_COMMANDS = [
    ["train", "gan", "--out", "{tmp}/run"],
    ["train", "offset", "--kind", "mask", "--out", "{tmp}/run"],
    ["train", "encoder", "--out", "{tmp}/run"],
    ["train", "evaluators", "--out", "{tmp}/run"],
    ["evaluate", "generator"],
    ["studio", "--port", "0"],
    ["generate", "--out", "{tmp}/run"],
    ["synthesize", "--kind", "mask", "--out", "{tmp}/run"],
    ["edit", "--direction", "smile", "--out", "{tmp}/run/edit.png"],
    ["invert", "{tmp}", "--out", "{tmp}/run"],
]


@pytest.mark.parametrize("threads", ["0", "-1", "100000"])
@pytest.mark.parametrize("command", THREAD_COMMANDS, ids=lambda c: " ".join(c[:2]))
def test_threads_out_of_range_refused_before_any_work(tmp_path, command, threads):
    r = run(*[a.format(tmp=tmp_path) for a in command], "--threads", threads)
    assert_refused(r, "--threads", threads)
    assert not (tmp_path / "run").exists()


RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]


@pytest.fixture
def no_hang():
    """Fails the test instead of hanging when a reader blocks on a FIFO or reads a device forever."""
    def timeout(signum, frame):
        raise TimeoutError("the command hung on a non-regular file")
    old = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _not_regular(tmp_path, kind, name):
    """A FIFO, or a symlink to /dev/zero, named like the file a command expects."""
    path = tmp_path / name
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")
    return path


@pytest.mark.parametrize("kind", ["fifo", "dev-zero-link"])
def test_non_regular_files_are_refused_up_front(tmp_path, tiny_G, kind, no_hang):
    bundle_dir = tmp_path / "bundle_dir"
    save_networks(Networks("test", "-", tiny_G), bundle_dir)
    (bundle_dir / "G.safetensors").unlink()
    _not_regular(bundle_dir, kind, "G.safetensors")  # a bundle's weight file
    model = _not_regular(tmp_path, kind, "model.pt")
    w_file = _not_regular(tmp_path, kind, "w.json")
    image = _not_regular(tmp_path, kind, "face.png")
    direction = _not_regular(tmp_path, kind, "smile.npy")
    what = "FIFO" if kind == "fifo" else "device"
    out = tmp_path / "out.png"
    cases = [
        (["generate", "--model", model, "--out", out], "model.pt"),
        (["info", model], "model.pt"),
        (["generate", "--model", bundle_dir, "--out", out], "G.safetensors"),
        (["generate", *RANDOM, "--w-file", w_file, "--out", out], "w.json"),
        (["invert", *RANDOM, image, "--out", tmp_path / "inv"], "face.png"),
        (["edit", *RANDOM, "--direction", direction, "--seeds", "0", "--out", out], "smile.npy"),
        (["synthesize", "--kind", "mask", "--n", "1", "--template", image, "--out", tmp_path / "s"], "face.png"),
    ]
    for args, name in cases:
        assert_refused(run(*args), name, what)
    assert not out.exists()


def test_json_that_cannot_be_parsed_is_one_line(tmp_path):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp_path / "latin1.json").write_bytes(b'{"0": [1.0], "caf\xe9": 1}')
    (tmp_path / "digits.json").write_text('{"0": [' + "9" * 5000 + "]}")
    (tmp_path / "broken.json").write_text('{"0": [1.0, ')
    for name, words in [("deep", ["nested too deeply"]), ("latin1", ["not UTF-8"]), ("digits", ["not valid JSON"]),
                        ("broken", ["not valid JSON"])]:
        r = run("generate", *RANDOM, "--w-file", tmp_path / f"{name}.json", "--out", tmp_path / "o.png")
        assert_refused(r, f"{name}.json", *words)


def test_read_json_refuses_an_oversized_file_before_reading_it(tmp_path):
    (tmp_path / "big.json").write_text("[" + "0," * 600 + "0]")
    assert read_json(tmp_path / "big.json", max_bytes=2000) == [0] * 601
    with pytest.raises(FormatError, match="big.json: 1,203 bytes, more than the 1,000"):
        read_json(tmp_path / "big.json", "latent file", max_bytes=1000)


def test_counts_are_bounded_before_any_work(tmp_path):
    cases = [
        (["synthesize", "--kind", "mask", "--n", "100000000", "--out", tmp_path / "s"], ["--n", "1,000,000"]),
        (["generate", *RANDOM, "--seeds", "0-4294967295", "--out", tmp_path / "g"], ["--seeds", "1,000,000"]),
        (["generate", *RANDOM, "--seeds", ",".join(["0-999999", "5"]), "--out", tmp_path / "g"], ["1,000,000"]),
        (["boundary", "train", *RANDOM, "--attribute", "smile", "--n", "0", "--out", tmp_path / "b.npy"], ["--n"]),
        (["evaluate", "generator", "--n", "2000000"], ["--n", "1,000,000"]),
    ]
    for args, words in cases:
        assert_refused(run(*args), *words)
    assert not any(tmp_path.iterdir())
    assert "1,000,000" in run("synthesize", "--help").output and "1,000,000" in run("generate", "--help").output


def test_out_of_range_scales_and_options_name_the_option(tmp_path):
    out = tmp_path / "o.png"
    np.save(tmp_path / "zero.npy", np.zeros([1, 512], np.float32))
    cases = [
        (["generate", *RANDOM, "--truncation", "1e30", "--out", out], "--truncation"),
        (["generate", *RANDOM, "--truncation", "nan", "--out", out], "--truncation"),
        (["generate", *RANDOM, "--truncation-cutoff", "-5", "--out", out], "--truncation-cutoff"),
        (["generate", *RANDOM, "--mapping-lr-mul", "0", "--out", out], "--mapping-lr-mul"),
        (["convert", tmp_path / "x.pt", tmp_path / "y", "--mapping-lr-mul", "-1"], "--mapping-lr-mul"),
        (["edit", *RANDOM, "--direction", "smile", "--strength", "1e30", "--out", out], "--strength"),
        (["edit", *RANDOM, "--direction", "smile", "--strength", "-2..inf", "--out", out], "--strength"),
        (["edit", *RANDOM, "--direction", tmp_path / "zero.npy", "--out", out], "all zeros"),
        (["layers", *RANDOM, "--direction", tmp_path / "zero.npy", "--out", out], "all zeros"),
        (["synthesize", "--kind", "mask", "--truncation", "-1e30", "--out", tmp_path / "s"], "--truncation"),
        (["layers", *RANDOM, "--direction", "smile", "--strengths", "-1e30..2", "--out", out], "--strengths"),
        (["mask", *RANDOM, "--direction", "smile", "--strength", "1e30", "--out", tmp_path / "m"], "--strength"),
    ]
    for args, word in cases:
        assert_refused(run(*args), word)
    assert not out.exists()
    assert run("generate", *RANDOM, "--seeds", "0", "--truncation", "-100", "--truncation-cutoff", "0",
               "--out", out).exit_code == 0  # the bounds themselves are accepted


def _copy_default_bundle(dst):
    """bundle.json, G, D and one more network (the parser, the smallest) of the bundled model."""
    dst.mkdir()
    for name in ("bundle.json", "G.safetensors", "D.safetensors", "parser.safetensors"):
        shutil.copy(DEFAULT_BUNDLE / name, dst / name)
    return dst


def test_convert_into_an_existing_bundle_keeps_its_other_networks(tmp_path, tiny_G):
    src = _copy_default_bundle(tmp_path / "src")
    before = json.loads((src / "bundle.json").read_text())
    copy = tmp_path / "copy"
    shutil.copytree(src, copy)
    for args in ([src, src, "--fp16"], [src, copy], [src, src]):  # into itself (fp16, then back), into a copy
        r = run("convert", *args)
        assert r.exit_code == 0, r.output
        for folder in {args[1]}:
            after = json.loads((folder / "bundle.json").read_text())
            assert set(after["networks"]) == set(before["networks"]), r.output
            assert after["networks"]["parser"] == before["networks"]["parser"]
            assert after["figures"] == before["figures"]
            assert "parser" in r.output
            on_disk = {p.name for p in folder.glob("[GD].*safetensors")}
            assert on_disk == {after["networks"][n]["file"] for n in ("G", "D")}  # nothing orphaned
    assert json.loads((src / "bundle.json").read_text())["networks"]["G"]["dtype"] == "float32"
    assert run("info", src).exit_code == 0
    # a generator of another model is refused: the parser was made for the one already there
    save_networks(Networks("test", "-", tiny_G), tmp_path / "other.pt")
    manifest = (copy / "bundle.json").read_bytes()
    assert_refused(run("convert", tmp_path / "other.pt", copy), "copy", "parser", "another generator")
    assert (copy / "bundle.json").read_bytes() == manifest


def test_write_errors_name_the_output_not_the_temporary_file(tmp_path, monkeypatch):
    (tmp_path / "grid.png").mkdir()  # the output path is taken by a folder: the final rename fails
    r = run("generate", *RANDOM, "--seeds", "0", "--out", tmp_path / "grid.png")
    assert_refused(r, "grid.png")
    assert ".tmp" not in r.output
    from latentedit.formats import atomic

    def disk_full(self, data):
        raise OSError(28, "No space left on device", str(self))
    monkeypatch.setattr(atomic.Path, "write_bytes", disk_full)
    with pytest.raises(OSError) as e:
        atomic.write_text(tmp_path / "report.json", "{}")
    assert e.value.filename == str(tmp_path / "report.json") and e.value.errno == 28
    assert not list(tmp_path.glob(".report.json*"))  # the temporary file is gone too


def test_layers_writes_both_outputs_or_neither(tmp_path):
    np.save(tmp_path / "d.npy", np.random.default_rng(0).standard_normal([1, 512]).astype(np.float32))
    args = ["layers", *RANDOM, "--direction", tmp_path / "d.npy", "--seeds", "0", "--steps", "2"]
    assert run(*args, "--out", tmp_path / "ok.png").exit_code == 0
    assert (tmp_path / "ok.png").exists() and (tmp_path / "ok.json").exists()
    (tmp_path / "layers.json").mkdir()  # the report cannot be written: the grid must not be either
    assert_refused(run(*args, "--out", tmp_path / "layers.png"), "layers.json")
    assert not (tmp_path / "layers.png").exists()


def test_invert_refuses_an_out_folder_inside_its_input_folder(tmp_path):
    faces = tmp_path / "faces"
    faces.mkdir()
    Image.new("RGB", (16, 16), (200, 100, 50)).save(faces / "a.png")
    for out in (faces, faces / "inverted"):
        assert_refused(run("invert", *RANDOM, faces, "--out", out), "inside the input folder")
    assert sorted(p.name for p in faces.iterdir()) == ["a.png"]


def _folder_bytes(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resumed_synthesize_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    args = ["synthesize", "--kind", "mask", "--n", "5", "--seed", "3", "--batch-size", "3"]
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    assert run(*args, "--out", whole).exit_code == 0
    assert run(*args, "--out", resumed).exit_code == 0
    # an interruption: samples 1 and 4 lost their results (1 shares its batch with 0 and 2)
    for name in ("0001", "0004"):
        (resumed / "records" / f"{name}.npy").unlink()
        (resumed / "predict_images" / f"{name}.png").unlink()
    (resumed / "origins" / "0004.png").unlink()
    r = run(*args, "--out", resumed)
    assert r.exit_code == 0 and "synthesizing 2 of 5" in r.output, r.output
    expected, got = _folder_bytes(whole), _folder_bytes(resumed)
    assert set(got) == set(expected)
    assert [name for name in expected if got[name] != expected[name]] == []


def test_convert_into_a_bundle_without_a_generator_adds_one(tmp_path, tiny_G):
    bundle.write_bundle(tmp_path / "b", {"parser": ("parser", {}, {"t": torch.ones(2)})})
    save_networks(Networks("test", "-", tiny_G), tmp_path / "g.pt")
    assert run("convert", tmp_path / "g.pt", tmp_path / "b").exit_code == 0
    assert set(bundle.read_manifest(tmp_path / "b")["networks"]) == {"G", "parser"}


@pytest.mark.parametrize("args,words", [
    (["generate", "--no-such-flag", "--out", "x"], ["No such option", "--no-such-flag", "generate --help"]),
    (["generate", "--truncation", "abc", "--out", "x"], ["--truncation", "abc"]),
    (["generate", "--noise-mode", "bogus", "--out", "x"], ["--noise-mode", "bogus"]),
    (["no-such-command"], ["No such command"]),
    (["synthesize", "--kind", "mask"], ["--out"]),
])
def test_click_usage_errors_are_one_line(args, words):
    """click's own parse errors (unknown option or command, bad value, missing option) are one
    `error:` line and exit 2 too, not its usage block."""
    r = run(*args)
    assert_refused(r, *words)
    assert len([line for line in r.output.splitlines() if line.strip()]) == 1, r.output


def test_priors_of_another_kind_are_warned_about(tmp_path):
    """An interface file written by a frame-glasses run, given to a mask run, is used (the user may
    mean it) but said to point away from the mask prior's direction; the same kind's priors pass silently."""
    from latentedit.edit.discrete import prior_alignment

    n = torch.randn(512)
    assert prior_alignment(torch.stack([2 * n, -n, torch.zeros(512)]), n) == pytest.approx(1.0)
    assert prior_alignment(torch.zeros(2, 512), n) is None
    r = run("synthesize", "--kind", "glasses", "--normal", "--n", 4, "--out", tmp_path / "g")
    assert r.exit_code == 0, r.output
    args = ["--w-file", tmp_path / "g" / "latents.json", "--interface-file", tmp_path / "g" / "interface.json"]
    same = run("synthesize", "--kind", "glasses", "--normal", *args, "--out", tmp_path / "g2")
    other = run("synthesize", "--kind", "mask", *args, "--out", tmp_path / "m")
    assert same.exit_code == 0 and "warning" not in same.output, same.output
    assert other.exit_code == 0 and "point away from the mask prior's direction" in other.output, other.output


def test_an_output_folder_that_is_a_file_is_named_as_such(tmp_path, tiny_G):
    """The OS says only "File exists" / "Not a directory" when a folder to write is a file or lies
    inside one; the line says which path is the file in the way."""
    save_networks(Networks("ours", "-", G=tiny_G), tmp_path / "g.pt")
    taken = tmp_path / "taken"
    taken.write_text("")
    for dst, said in ((taken, f"{taken}: is a file, not a folder"),
                      (taken / "sub" / "bundle", f"{taken / 'sub' / 'bundle'}: {taken} is a file, not a folder")):
        assert_refused(run("convert", tmp_path / "g.pt", dst), said)
    assert taken.read_text() == ""
