"""Unaligned photos: FFHQ-style face alignment in, paste-back of the edited crop out.

    photo = np.asarray(Image.open("me.jpg").convert("RGB"))
    al = align_face(photo, resolution=G.img_resolution)   # dlib landmarks -> al.crop [R, R, 3] uint8
    ...invert al.crop, edit, synthesize -> edited [R, R, 3] uint8...
    out = paste_back(photo, edited, al.quad)               # the photo with the edited face

FFHQ's crop (NVlabs' ffhq-dataset `recreate_aligned_images`) is an oriented square given by the
eyes and the mouth corners of dlib's 68 landmarks; `ffhq_quad` is that maths as a pure function.
Coordinates are pixel indices (x right, y down; pixel i's centre at i). A quad's corners are
top-left, bottom-left, bottom-right, top-right of the crop's outer edges.

Landmarks need the optional extra `latentedit[align]` (dlib-bin, and face-recognition-models for
dlib's `shape_predictor_68_face_landmarks.dat`); the maths, the warp and paste-back do not.
"""
import importlib.util
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter

from latentedit.errors import InputError

PREDICTOR = "shape_predictor_68_face_landmarks.dat"
INSTALL_HINT = "pip install 'latentedit[align]' (dlib-bin and face-recognition-models)"
_DETECT_SIDE = 1024    # photos are searched for faces at most this large (landmarks use full size)
_SUPERSAMPLE = 4       # FFHQ warps to 4x the output size, then filters down


def ffhq_quad(landmarks):
    """dlib's 68 landmarks [68, 2] (x, y) -> FFHQ's crop quad [4, 2] (float64).

    The square is centred a tenth of the way from the eyes' midpoint to the mouth's; its half-side
    is the larger of 2x the eye distance and 1.8x the eye-to-mouth distance; it is turned by the
    mean of the eye line's angle and the angle of the eye-to-mouth line (turned by 90 degrees)."""
    lm = np.asarray(landmarks, dtype=np.float64)
    if lm.shape != (68, 2) or not np.isfinite(lm).all():
        raise InputError(f"landmarks must be 68 finite (x, y) points, got shape {list(lm.shape)}")
    eyes = np.stack([lm[36:42].mean(0), lm[42:48].mean(0)])                 # image-left eye, image-right eye
    eye_mid, eye_vec = eyes.mean(0), eyes[1] - eyes[0]
    mouth_vec = (lm[48] + lm[54]) / 2 - eye_mid                             # outer mouth corners
    quarter_turn = np.array([[0.0, 1.0], [-1.0, 0.0]])                     # (x, y) -> (y, -x)
    across = eye_vec + quarter_turn @ mouth_vec                             # the crop's x axis
    length = np.linalg.norm(across)
    if length < 1e-6:
        raise InputError("degenerate landmarks: the eyes and the mouth do not span a face")
    across *= max(2.0 * np.linalg.norm(eye_vec), 1.8 * np.linalg.norm(mouth_vec)) / length
    down = -quarter_turn @ across                                           # (x, y) -> (-y, x)
    centre = eye_mid + 0.1 * mouth_vec
    return np.stack([centre - across - down, centre - across + down, centre + across + down,
                     centre + across - down])


@dataclass
class Alignment:
    """An aligned crop and where it came from: `quad` [4, 2] in the photo's pixel indices."""
    crop: np.ndarray            # [R, R, 3] uint8
    quad: np.ndarray            # [4, 2] float64
    landmarks: np.ndarray       # [68, 2]
    photo_size: tuple           # (width, height)


def warp_quad(photo, quad, resolution, pad_reflect=True):
    """The square `quad` of `photo` (uint8 [H, W, 3]) resampled to uint8 [R, R, 3] as FFHQ does:
    an integer Lanczos pre-shrink when the quad is much larger than R, reflect-padding (blurred
    and flattened towards the median) where the quad leaves the photo, a bilinear quad transform
    at 4x R and a Lanczos filter down to R."""
    img = Image.fromarray(np.ascontiguousarray(photo[..., :3]))
    quad = np.array(quad, dtype=np.float64)
    size = np.linalg.norm(quad[3] - quad[0])
    shrink = int(np.floor(size / resolution * 0.5))
    if shrink > 1:
        img = img.resize((max(1, round(img.width / shrink)), max(1, round(img.height / shrink))), Image.LANCZOS)
        quad, size = (quad + 0.5) / shrink - 0.5, size / shrink
    border = max(int(round(size * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int) - border, np.ceil(quad.max(0)).astype(int) + border
    box = (max(lo[0], 0), max(lo[1], 0), min(hi[0], img.width), min(hi[1], img.height))
    if box[2] <= box[0] or box[3] <= box[1]:
        raise InputError("the face's crop lies outside the photo")
    img, quad = img.crop(box), quad - box[:2]
    before = np.maximum([-lo[0] + box[0], -lo[1] + box[1]], 0)              # what the quad needs beyond the
    after = np.maximum([hi[0] - box[2], hi[1] - box[3]], 0)                 # photo, each side (x, y)
    if pad_reflect and max(before.max(), after.max()) > 0:
        img, offset = _pad_reflect(np.asarray(img, dtype=np.float32), before, after, size)
        quad = quad + offset
    big = _SUPERSAMPLE * resolution
    out = img.transform((big, big), Image.Transform.QUAD, tuple((quad + 0.5).flatten()), Image.BILINEAR)
    return np.array(out.resize((resolution, resolution), Image.LANCZOS), dtype=np.uint8)  # writable


def _pad_reflect(a, before, after, size):
    """Reflect-pads a float [H, W, 3] photo by at least 0.3 x the crop size where the crop needs
    it; the padding fades into a blur and then into the photo's median colour, so mirrored
    features do not read as a second face. -> (PIL image, (dx, dy) shift of coordinates)."""
    grow = int(round(size * 0.3))
    px0, py0 = [grow if b > 0 else 0 for b in before]
    px1, py1 = [grow if b > 0 else 0 for b in after]
    px0, py0, px1, py1 = max(px0, before[0]), max(py0, before[1]), max(px1, after[0]), max(py1, after[1])
    h, w = a.shape[:2]
    a = np.pad(a, ((py0, py1), (px0, px1), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")
    ys, xs = np.arange(a.shape[0], dtype=np.float32), np.arange(a.shape[1], dtype=np.float32)

    def ramp(coord, first, last, n):  # 1 at the outer edge of a pad, 0 where the photo starts
        inside_first = (first - coord) / first if first else np.zeros_like(coord)
        inside_last = (coord - (n - 1 - last)) / last if last else np.zeros_like(coord)
        return np.clip(np.maximum(inside_first, inside_last), 0, 1)

    mask = np.maximum(ramp(xs, px0, px1, a.shape[1])[None], ramp(ys, py0, py1, a.shape[0])[:, None])[..., None]
    blurred = np.asarray(Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(size) * 0.02)), dtype=np.float32)             # PIL's: ~10x scipy's speed
    a = a + (blurred - a) * np.clip(3 * mask + 1, 0, 1) * (mask > 0)
    a = a + (np.median(a.reshape(-1, 3), axis=0) - a) * mask
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8)), np.array([px0, py0], dtype=np.float64)


def paste_back(photo, crop, quad, feather=0.1, mask=None):
    """The crop (uint8 [R, R, 3], e.g. an edited face) put back where `quad` took it from in
    `photo` (uint8 [H, W, 3]): each photo pixel inside the quad samples the crop (bicubic) at its
    inverse-transformed position; the mask is 1 inside and falls to 0 over the outer `feather`
    share of the crop's side (smoothstep), so no seam shows. `mask` (optional, [R', R'] in [0, 1]
    over the crop, e.g. a face-part mask) narrows it further. -> uint8 [H, W, 3]."""
    photo = np.asarray(photo)[..., :3]
    quad = np.asarray(quad, dtype=np.float64)
    if not 0 < feather <= 0.5:
        raise InputError(f"feather must be in (0, 0.5], got {feather}")
    lo = np.maximum(np.floor(quad.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(quad.max(0)).astype(int) + 1, [photo.shape[1], photo.shape[0]])
    out = photo.copy()
    if (hi <= lo).any():
        return out                                                         # the quad misses the photo
    # photo index p = q0 + s (q3 - q0) + t (q1 - q0) with s, t in [0, 1] over the crop's outer edges
    axes = np.stack([quad[3] - quad[0], quad[1] - quad[0]], 1)              # [2, 2]: columns s, t
    ys, xs = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]]
    st = np.linalg.solve(axes, np.stack([xs - quad[0, 0], ys - quad[0, 1]]).reshape(2, -1)).T
    st = st.reshape(*xs.shape, 2)                                           # [h, w, (s, t)]
    edge = np.minimum(st, 1 - st).min(-1) / feather                         # 0 at the edge, 1 at feather
    ramp = np.clip(edge, 0, 1)
    mask_edge = (ramp * ramp * (3 - 2 * ramp))[..., None]
    src = torch.from_numpy(np.array(crop[..., :3], dtype=np.float32)).permute(2, 0, 1)[None]
    grid = torch.from_numpy((2 * st - 1).astype(np.float32))[None]  # align_corners=False: s=0 outer edge
    sampled = F.grid_sample(src, grid, mode="bicubic", padding_mode="border", align_corners=False)
    sampled = sampled[0].permute(1, 2, 0).numpy().clip(0, 255)
    if mask is not None:
        m = torch.as_tensor(np.asarray(mask, dtype=np.float32))
        if m.ndim != 2:
            raise InputError(f"mask must be [H, W] over the crop, got {list(m.shape)}")
        m = F.grid_sample(m[None, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
        mask = mask_edge * m[0, 0].numpy().clip(0, 1)[..., None]
    else:
        mask = mask_edge
    region = out[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
    out[lo[1]:hi[1], lo[0]:hi[0]] = np.rint(region + (sampled - region) * mask).astype(np.uint8)
    return out


# -- landmarks (optional extra) ------------------------------------------------------------------

def predictor_path():
    """dlib's 68-point predictor as face-recognition-models ships it (found without importing that
    package, whose __init__ needs pkg_resources); InputError with the install line when absent."""
    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        spec = None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "models" / PREDICTOR
        if path.is_file():
            return path
    raise InputError(f"--align needs dlib's {PREDICTOR}: {INSTALL_HINT}")


_MODELS = {}


def _dlib_models():
    if "detector" not in _MODELS:
        try:
            import dlib
        except ImportError:
            raise InputError(f"--align needs dlib: {INSTALL_HINT}") from None
        path = predictor_path()
        _MODELS.update(detector=dlib.get_frontal_face_detector(), predictor=dlib.shape_predictor(str(path)),
                       rectangle=dlib.rectangle)
    return _MODELS


def detect_landmarks(photo, name="photo"):
    """uint8 [H, W, 3] -> dlib's 68 landmarks [68, 2] of the largest face (a warning when there are
    several); InputError when no face is found."""
    m = _dlib_models()
    photo = np.ascontiguousarray(photo[..., :3])
    scale = min(1.0, _DETECT_SIDE / max(photo.shape[:2]))
    small = photo if scale == 1.0 else np.asarray(Image.fromarray(photo).resize(
        (max(1, round(photo.shape[1] * scale)), max(1, round(photo.shape[0] * scale))), Image.LANCZOS))
    faces = list(m["detector"](small, 1)) or list(m["detector"](small, 0))  # upsampling can lose large faces
    if not faces:
        raise InputError(f"{name}: no face found (dlib's frontal face detector); pass an aligned crop without --align")
    if len(faces) > 1:
        warnings.warn(f"{name}: {len(faces)} faces found; aligning the largest", stacklevel=2)
    f = max(faces, key=lambda r: r.width() * r.height())
    rect = m["rectangle"](*(int(round(v / scale)) for v in (f.left(), f.top(), f.right(), f.bottom())))
    shape = m["predictor"](photo, rect)
    return np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)


def align_face(photo, resolution, landmarks=None, name="photo"):
    """An unaligned photo (uint8 [H, W, 3]) -> Alignment: FFHQ's crop at `resolution`, its quad and
    the landmarks (detected with dlib unless given)."""
    photo = np.asarray(photo)
    if photo.ndim != 3 or photo.shape[2] < 3 or photo.dtype != np.uint8:
        raise InputError(f"{name}: expected an RGB uint8 image [H, W, 3], got {photo.dtype} {list(photo.shape)}")
    if landmarks is None:
        landmarks = detect_landmarks(photo, name)
    quad = ffhq_quad(landmarks)
    return Alignment(warp_quad(photo, quad, resolution), quad, np.asarray(landmarks, dtype=np.float64),
                     (photo.shape[1], photo.shape[0]))
