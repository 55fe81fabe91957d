"""Unaligned photos: FFHQ's crop quad against an independent (complex-number) writing of its
formula, the warp and paste-back against a world face placed rotated and scaled in a larger
canvas with a known transform, `--align` end to end on the CLI, and dlib's landmarks when the
optional extra is installed (skipped otherwise)."""
import importlib.util
import sys

import numpy as np
import pytest
from PIL import Image

import latentedit.edit.align as align
from latentedit import world
from latentedit.edit.align import align_face, ffhq_quad, paste_back
from latentedit.errors import InputError

from conftest import run

RANDOM = ["--random-weights", "--resolution", "16", "--channel-base", "512", "--channel-max", "32"]
FACE = 128                                                 # side of the world face placed in the canvas


def ffhq_quad_oracle(lm):
    """FFHQ's recreate_aligned_images crop, in complex numbers: x = e2e - i e2m (flipud * [-1, 1]
    is a quarter turn), scaled to max(2 |e2e|, 1.8 |e2m|); y = i x; quad = c + (-x-y, -x+y, x+y, x-y)."""
    p = lm[:, 0] + 1j * lm[:, 1]
    eye_l, eye_r = p[36:42].mean(), p[42:48].mean()
    e2e, eye_avg = eye_r - eye_l, (eye_l + eye_r) / 2
    e2m = (p[48] + p[54]) / 2 - eye_avg
    x = e2e - 1j * e2m
    x = x / abs(x) * max(abs(e2e) * 2.0, abs(e2m) * 1.8)
    y = 1j * x
    c = eye_avg + 0.1 * e2m
    q = np.array([c - x - y, c - x + y, c + x + y, c + x - y])
    return np.stack([q.real, q.imag], 1)


def test_ffhq_quad_matches_the_reference_formula():
    rng = np.random.RandomState(0)
    for k in range(20):
        lm = rng.uniform(0, 1000, size=(68, 2))
        lm[36:42] = rng.uniform(200, 300, 2) + rng.randn(6, 2) * 5          # a left eye, a right eye,
        lm[42:48] = rng.uniform(400, 500, 2) + rng.randn(6, 2) * 5          # a mouth below (rotated freely)
        lm[[48, 54]] = rng.uniform(250, 450, size=(2, 2)) + [0, 250]
        angle = rng.uniform(-np.pi, np.pi)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        lm = lm @ rot.T
        assert np.allclose(ffhq_quad(lm), ffhq_quad_oracle(lm), atol=1e-9)
    with pytest.raises(InputError, match="68 finite"):
        ffhq_quad(np.zeros((5, 2)))


def canonical_landmarks(side):
    """Landmarks whose FFHQ quad is exactly the outer edges of a side x side image (eyes and
    mouth corners only: the quad uses nothing else)."""
    half, mid = side / 2, (side - 1) / 2
    mouth_drop = half / 1.8                                                 # 1.8 |e2m| = 2 |e2e| = half
    eye_y = mid - 0.1 * mouth_drop
    lm = np.zeros((68, 2))
    lm[36:42], lm[42:48] = (mid - half / 4, eye_y), (mid + half / 4, eye_y)
    lm[48], lm[54] = (mid - 10, eye_y + mouth_drop), (mid + 10, eye_y + mouth_drop)
    return lm


def place(face, degrees, scale, centre, size=(400, 300), background=(90, 110, 70)):
    """The face (uint8 [S, S, 3]) turned, scaled and centred at `centre` on a plain canvas by PIL
    (an affine map independent of latentedit's warp) -> (canvas, A [2, 2], t [2]): face pixel
    index p lands at A p + t."""
    a = np.deg2rad(degrees)
    A = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = np.asarray(centre, float) - A @ np.full(2, (face.shape[0] - 1) / 2)
    Ai = np.linalg.inv(A)
    k = Ai @ -t + 0.5 - 0.5 * Ai.sum(1)                                     # PIL samples pixel centres at +0.5
    coef = (Ai[0, 0], Ai[0, 1], k[0], Ai[1, 0], Ai[1, 1], k[1])
    warped = Image.fromarray(face).convert("RGBA").transform(size, Image.Transform.AFFINE, coef, Image.BICUBIC)
    canvas = Image.new("RGBA", size, tuple(background) + (255,))
    canvas.alpha_composite(warped)
    return np.asarray(canvas.convert("RGB")), A, t


@pytest.fixture(scope="module")
def face():
    return world_face(FACE)


def world_face(side, index=0):
    img = world.sample(index + 1, seed=0, resolution=side).image[index]
    return np.asarray(((img.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255), dtype=np.uint8)


@pytest.mark.parametrize("degrees,scale,centre", [(25, 1.7, (200, 150)), (-40, 0.9, (300, 120)),
                                                 (10, 1.5, (60, 150))])   # the last leaves the canvas: padded
def test_align_recovers_a_placed_face(face, degrees, scale, centre):
    canvas, A, t = place(face, degrees, scale, centre)
    al = align_face(canvas, 64, landmarks=canonical_landmarks(FACE) @ A.T + t)
    assert al.crop.shape == (64, 64, 3) and al.crop.dtype == np.uint8 and al.photo_size == (400, 300)
    expected = np.asarray(Image.fromarray(face).resize((64, 64), Image.LANCZOS), dtype=float)
    err = np.abs(al.crop - expected).mean(-1)
    inside = _inside_canvas(A, t, 64, canvas.shape)                         # crop pixels the photo holds
    # two resamplings (placing, aligning) blur edges: a few levels on average, against ~60 for a
    # crop off by a tenth of its size or turned by 10 degrees
    assert err[inside].mean() < 4.0, err[inside].mean()


def _inside_canvas(A, t, res, shape, margin=3):
    v, u = np.mgrid[0:res, 0:res]
    face_idx = (np.stack([u, v], -1) + 0.5) * FACE / res - 0.5
    p = face_idx @ A.T + t
    return ((p > margin) & (p < np.array([shape[1], shape[0]]) - 1 - margin)).all(-1)


def test_paste_back_inverts_the_alignment(face):
    canvas, A, t = place(face, 30, 1.6, (200, 150))
    quad = ffhq_quad(canonical_landmarks(FACE) @ A.T + t)
    crop = np.asarray(Image.fromarray(face).resize((96, 96), Image.LANCZOS))
    back = paste_back(canvas, crop, quad)
    # pixels deep inside the quad are the crop's, sampled where the alignment took them from
    v, u = np.mgrid[0:300, 0:400]
    st = np.linalg.solve(np.stack([quad[3] - quad[0], quad[1] - quad[0]], 1),
                         np.stack([u - quad[0, 0], v - quad[0, 1]]).reshape(2, -1)).T.reshape(300, 400, 2)
    core = ((st > 0.15) & (st < 0.85)).all(-1)
    outside = ((st < -0.01) | (st > 1.01)).any(-1)
    assert np.abs(back[core].astype(float) - canvas[core]).mean() < 4.0
    assert np.array_equal(back[outside], canvas[outside])                   # untouched beyond the quad
    grey = np.full((96, 96, 3), 200, np.uint8)
    flat = paste_back(np.zeros_like(canvas), grey, quad)
    assert (flat[core] == 200).all()
    # the feathered edge: the blend weight rises monotonically from the quad's edge inwards
    ray = [flat[int(round(p[1])), int(round(p[0])), 0] for p in
           (quad[0] + f * (quad[2] - quad[0]) for f in np.linspace(0.0, 0.1, 11))]
    assert ray[0] < 30 and ray[-1] == 200 and all(b >= a for a, b in zip(ray, ray[1:]))
    # a mask over the crop narrows the paste: its left half only
    half = np.zeros((96, 96))
    half[:, :48] = 1
    left = paste_back(np.zeros_like(canvas), grey, quad, mask=half)
    assert (left[core & (st[..., 0] < 0.4)] == 200).all() and (left[core & (st[..., 0] > 0.6)] == 0).all()



def test_cli_invert_align_end_to_end(tmp_path, face, monkeypatch):
    canvas, A, t = place(face, 20, 1.4, (220, 150))
    Image.fromarray(canvas).save(tmp_path / "me.png")
    landmarks = canonical_landmarks(FACE) @ A.T + t
    monkeypatch.setattr(align, "detect_landmarks", lambda photo, name="photo": landmarks)  # dlib-free here
    out = tmp_path / "out"
    r = run("invert", tmp_path / "me.png", *RANDOM, "--mode", "project", "--steps", 1, "--align", "--out", out)
    assert r.exit_code == 0, r.output
    crop = np.asarray(Image.open(out / "me_aligned.png"))
    assert crop.shape == (16, 16, 3)
    pasted = np.asarray(Image.open(out / "me_pasted.png"))
    assert pasted.shape == canvas.shape
    quad = ffhq_quad(landmarks)
    far = np.ones(canvas.shape[:2], bool)
    lo, hi = np.floor(quad.min(0)).astype(int) - 1, np.ceil(quad.max(0)).astype(int) + 2
    far[max(lo[1], 0):hi[1], max(lo[0], 0):hi[0]] = False
    assert np.array_equal(pasted[far], canvas[far]) and not np.array_equal(pasted, canvas)
    rec = np.asarray(Image.open(out / "me_rec.png"))
    assert np.array_equal(pasted, paste_back(canvas, rec, quad))            # the reconstruction, put back
    assert (out / "me_align.json").is_file() and (out / "me.npy").is_file()
    r = run("edit", *RANDOM, "--direction", _direction(tmp_path), "--input", tmp_path / "me.png", "--align",
            "--invert-mode", "project", "--invert-steps", 1, "--strength=-1..1", "--steps", 2, "--out",
            tmp_path / "e.png")
    assert r.exit_code == 0, r.output
    assert sorted(f.name for f in (tmp_path / "e_pasted").iterdir()) == ["me_+1.png", "me_-1.png"]
    r = run("edit", *RANDOM, "--direction", _direction(tmp_path), "--align", "--out", tmp_path / "x.png")
    assert r.exit_code == 2 and "--align applies to images given with --input" in r.output


def _direction(tmp_path):
    np.save(tmp_path / "d.npy", np.ones((1, 512), np.float32) / np.sqrt(512))
    return tmp_path / "d.npy"


def test_cli_align_without_the_extra_is_one_line_and_writes_nothing(tmp_path, face, monkeypatch):
    Image.fromarray(face).save(tmp_path / "me.png")
    monkeypatch.setitem(sys.modules, "dlib", None)                          # import dlib -> ImportError
    monkeypatch.setattr(align, "_MODELS", {})
    r = run("invert", tmp_path / "me.png", *RANDOM, "--mode", "project", "--align", "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1] == ("error: --align needs dlib: pip install 'latentedit[align]' "
                                                 "(dlib-bin and face-recognition-models)")
    assert not (tmp_path / "out").exists()


HAVE_DLIB = importlib.util.find_spec("dlib") is not None and importlib.util.find_spec("face_recognition_models")
needs_dlib = pytest.mark.skipif(not HAVE_DLIB, reason="optional extra latentedit[align] not installed")


@needs_dlib
def test_dlib_landmarks_follow_the_placed_face(tmp_path):
    """dlib finds the world face on its own and in a large canvas (searched at reduced size);
    the two quads agree through the known placement."""
    face = world_face(256)
    direct = ffhq_quad(align.detect_landmarks(face))
    canvas, A, t = place(face, 5, 1.5, (900, 500), size=(1400, 900))      # > 1024: detection runs downscaled
    found = align_face(canvas, 64, name="canvas")
    expected = direct @ A.T + t
    side = np.linalg.norm(expected[3] - expected[0])
    assert np.abs(found.quad - expected).max() < 0.08 * side, (found.quad, expected)


@needs_dlib
def test_cli_photo_without_a_face_writes_nothing(tmp_path, face):
    Image.fromarray(face).save(tmp_path / "a.png")
    Image.new("RGB", (300, 200), (120, 130, 140)).save(tmp_path / "b.png")
    r = run("invert", tmp_path / "a.png", tmp_path / "b.png", *RANDOM, "--mode", "project", "--align",
            "--out", tmp_path / "out")
    assert r.exit_code == 2
    assert r.output.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'b.png'}: no face found")
    assert not (tmp_path / "out").exists()


def test_phone_photos_are_aligned_upright(tmp_path, face, monkeypatch):
    """A JPEG whose EXIF says 'turn 90 degrees' is searched for a face the way it is shown."""
    from latentedit.cli.inputs import read_aligned_inputs

    canvas, A, t = place(face, 0, 1.0, (150, 200), size=(300, 400))           # upright: 300 wide, 400 high
    stored = Image.fromarray(canvas).transpose(Image.Transpose.ROTATE_90)     # as the camera stored it
    exif = stored.getexif()
    exif[0x0112] = 6                                                          # "rotate 90 CW to display"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    seen = []

    def landmarks(photo, name="photo"):
        seen.append(photo.shape)
        return canonical_landmarks(FACE) @ A.T + t

    monkeypatch.setattr(align, "detect_landmarks", landmarks)
    files, crops, alignments, photos = read_aligned_inputs([tmp_path / "phone.jpg"], 32)
    assert seen == [(400, 300, 3)] and photos[0].shape == (400, 300, 3) and crops.shape == (1, 3, 32, 32)
    expected = np.asarray(Image.fromarray(face).resize((32, 32), Image.LANCZOS), dtype=float)
    assert np.abs(alignments[0].crop - expected).mean() < 6.0                 # JPEG on top of resampling


def test_cli_synthesize_align_writes_aligned_and_pasted(tmp_path, face, monkeypatch):
    canvas, A, t = place(face, -15, 1.2, (200, 150))
    Image.fromarray(canvas).save(tmp_path / "me.png")
    landmarks = canonical_landmarks(FACE) @ A.T + t
    monkeypatch.setattr(align, "detect_landmarks", lambda photo, name="photo": landmarks)
    out = tmp_path / "out"
    r = run("synthesize", "--kind", "mask", "--input", tmp_path / "me.png", "--align", "--out", out)
    assert r.exit_code == 0, r.output
    result = np.asarray(Image.open(out / "predict_images" / "0000.png"))
    pasted = np.asarray(Image.open(out / "pasted" / "0000.png"))
    assert np.array_equal(pasted, paste_back(canvas, result, ffhq_quad(landmarks)))
    aligned = np.asarray(Image.open(out / "aligned" / "0000.png"))
    assert np.array_equal(aligned, align_face(canvas, result.shape[0], landmarks=landmarks).crop)
    import json
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["align"] is True and manifest["images"][0]["files"]["pasted"] == "pasted/0000.png"


def test_one_command_photo_to_edited_photo_with_an_e4e_checkpoint(tmp_path, face, monkeypatch):
    """`edit --encoder e4e.pt --input photo --align --direction age.pt`: the released-layout e4e file
    (random weights) brings encoder and generator; each pasted-back photo is the e4e code of the
    aligned crop, moved along the direction, synthesized and put back where the crop came from."""
    import torch

    from latentedit.edit.inversion import encode_images
    from latentedit.formats.images import to_uint8
    from latentedit.formats.psp import load_psp_encoder
    from test_psp_encoders import SMALL, tiny_generator, write_checkpoint

    G = tiny_generator(w_dim=32)
    write_checkpoint(tmp_path / "e4e.pt", SMALL, "Encoder4Editing", G)
    direction = torch.randn(1, 32, generator=torch.Generator().manual_seed(3))
    torch.save(direction, tmp_path / "age.pt")                                # e4e's interfacegan_directions layout
    canvas, A, t = place(face, 12, 1.3, (200, 150))
    Image.fromarray(canvas).save(tmp_path / "photo.png")
    landmarks = canonical_landmarks(FACE) @ A.T + t
    monkeypatch.setattr(align, "detect_landmarks", lambda photo, name="photo": landmarks)
    r = run("edit", "--encoder", tmp_path / "e4e.pt", "--input", tmp_path / "photo.png", "--align",
            "--direction", tmp_path / "age.pt", "--strength=-2..2", "--steps", 2, "--out", tmp_path / "age.png")
    assert r.exit_code == 0, r.output
    crop = align_face(canvas, G.img_resolution, landmarks=landmarks).crop
    x = torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 127.5 - 1
    codes = encode_images(load_psp_encoder(tmp_path / "e4e.pt"), G, x)        # [1, num_ws, 32]
    for s in (-2, 2):
        with torch.no_grad():
            edited = to_uint8(G.synthesize(codes + s * direction))[0]
        got = np.asarray(Image.open(tmp_path / "age_pasted" / f"photo_{s:+g}.png"))
        expected = paste_back(canvas, edited, ffhq_quad(landmarks))
        assert np.abs(got.astype(int) - expected).max() <= 2                  # uint8 rounding of a float path
        assert not np.array_equal(got, canvas)
