"""Ray casting of the face world with full ground truth, batched over all pixels.

Frames: the camera frame has x right, y up, z toward the viewer; the camera sits at
(0, CAM_Y, CAM_DIST) looking down -z (perspective, TAN_HALF_FOV). The head frame is rotated
by yaw/pitch/roll and translated by (tx, ty, tz); the neck and shoulders stay in the camera
frame. Depth is camera z-distance (inf on background); normals are unit vectors in the camera
frame (0 on background). `image = albedo * shading` (clamped) on every pixel, and
`shading = ambient + diffuse * max(0, n.l)` on every opaque surface; clear lenses are
see-through: their depth and normal are the lens plane, their albedo (tinted) and shading
are those of the surface behind.
"""
from __future__ import annotations

import dataclasses
import math

import torch

from latentedit.world import head as H
from latentedit.world.decals import paint_skin
from latentedit.world.params import LABEL_ID, SHAPE_NAMES, FaceParams

CAM_DIST, CAM_Y, TAN_HALF_FOV = 6.0, -0.15, 0.253
MARCH_ROUNDS, STEPS_PER_ROUND, MARCH_GAIN, MAX_STEP = 4, 4, 0.9, 0.1
FEATURE_HEIGHT, BISECT_STEPS, MIN_STEP = 0.3, 4, 0.02
CLEAR_LENS_TINT = (0.86, 0.9, 0.95)  # RGB factor of a clear lens on the surface behind it
_SPACING = SHAPE_NAMES.index("eye_spacing")
_GLASSES_HULL = torch.tensor([(sx * 0.64, y, 1.03) for sx in (-1, 1) for y in (-0.12, 0.27)]
                             + [(sx * 0.9, 0.06, -0.12) for sx in (-1, 1)])


@dataclasses.dataclass
class WorldBatch:
    image: torch.Tensor       # [N, 3, H, W] in [-1, 1]
    depth: torch.Tensor       # [N, 1, H, W] camera z-distance, inf on background
    normal: torch.Tensor      # [N, 3, H, W] unit, camera frame; 0 on background
    albedo: torch.Tensor      # [N, 3, H, W] in [0, 1]
    shading: torch.Tensor     # [N, 1, H, W]; 1 on background
    labels: torch.Tensor      # [N, H, W] int64 ids into LABELS
    light: torch.Tensor       # [N, 5] ambient, diffuse, direction toward the light (xyz)
    view: torch.Tensor        # [N, 6] yaw, pitch, roll, tx, ty, tz
    attributes: torch.Tensor  # [N, len(ATTRIBUTES)]
    identity: torch.Tensor    # [N, len(IDENTITY_NAMES)]
    params: FaceParams


def texture_size(resolution: int) -> int:
    return 96 if resolution <= 64 else 160 if resolution <= 128 else 224


def rotation(yaw, pitch, roll) -> torch.Tensor:
    """[N, 3, 3] head-to-camera rotation Ry(yaw) @ Rx(-pitch) @ Rz(roll).

    Computed in float64 and rounded: float32 sin/cos results may depend on a value's
    position in the vector (SIMD body vs. scalar tail), i.e. on the batch size.
    """
    yaw, pitch, roll = yaw.double(), pitch.double(), roll.double()
    o, z = torch.ones_like(yaw), torch.zeros_like(yaw)
    cy, sy, cp, sp, cr, sr = yaw.cos(), yaw.sin(), pitch.cos(), pitch.sin(), roll.cos(), roll.sin()
    ry = torch.stack([cy, z, sy, z, o, z, -sy, z, cy], 1).view(-1, 3, 3)
    rx = torch.stack([o, z, z, z, cp, sp, z, -sp, cp], 1).view(-1, 3, 3)
    rz = torch.stack([cr, -sr, z, sr, cr, z, z, z, o], 1).view(-1, 3, 3)
    return (ry @ rx @ rz).float()


def _rotate(rot, x, y, z, transpose=False):
    """Rotate vectors given as components (elementwise: no BLAS, whose results can depend on
    the batch size); `rot` [..., 3, 3] broadcasts against the components."""
    r = rot.transpose(-1, -2) if transpose else rot
    return tuple(r[..., i, 0] * x + r[..., i, 1] * y + r[..., i, 2] * z for i in range(3))


def pixel_rays(res: int) -> torch.Tensor:
    """[res*res, 3] unit ray directions (camera frame), row-major from the top-left pixel."""
    c = ((torch.arange(res, dtype=torch.float32) + 0.5) / res * 2 - 1) * TAN_HALF_FOV
    yy, xx = torch.meshgrid(-c, c, indexing="ij")
    d = torch.stack([xx, yy, -torch.ones_like(xx)], -1).view(-1, 3)
    return d / d.norm(dim=1, keepdim=True)


def _blend(r0, coef, basis):
    """r0 + coef @ basis [N, S], summed in a fixed order so each row is exact whatever N."""
    r = r0 + coef[:, :1] * basis[0]
    for k in range(1, len(basis)):
        r = r + coef[:, k:k + 1] * basis[k]
    return r


def bake(p: FaceParams, A: H.Assets):
    """Per-face textures [N, S] (S texels): radius, layer id (uint8), height above the skin."""
    coef = torch.cat([p.shape, p.smile[:, None]], 1)                     # [N, K+1]
    r_head = _blend(A.r0, coef, A.basis)                                 # [N, S]
    cover = ((A.hair_dist[p.hair_style] - 0.07 * p.hairline[:, None]) / 0.02).clamp(0, 1)
    hair = (A.hair_thick[p.hair_style] * (0.75 + 0.5 * p.hair_volume[:, None])
            + 0.01 * A.noise) * cover
    beard = p.beard[:, None] * 0.045 * A.beard
    r = r_head + torch.maximum(hair, beard)
    layer = torch.where(hair > beard.clamp_min(0.004), H.HAIR,
                        torch.where(beard > 0.004, H.BEARD, H.SKIN)).to(torch.uint8)
    m = p.mask.nonzero()[:, 0]
    if len(m):  # cloth stretched over a smoothed face, never inside the face
        rh = r_head[m]
        tent = _blend(A.tent0, coef[m], A.tent_basis) + 0.03
        cloth = torch.maximum(torch.maximum(rh + 0.016, tent), rh + 0.5 * beard[m] + 0.016)
        cloth = cloth + A.mask_pleats
        region = A.mask_region > 0.5
        strap = (A.strap > 0.5) & (hair[m] < 0.012) & (beard[m] < 0.012)
        r[m] = torch.where(region, cloth, torch.where(strap, rh + 0.012, r[m]))
        layer[m] = torch.where(region | strap, H.MASK, layer[m])
    h = p.hat.nonzero()[:, 0]
    if len(h):  # a knitted beanie pressing the hair down
        region = A.hat_region > 0.5
        r[h] = torch.where(region, r_head[h] + 0.35 * hair[h] + 0.07 + A.hat_cuff, r[h])
        layer[h] = torch.where(region, H.HAT, layer[h])
    return r, layer, r - r_head, r_head + torch.maximum(hair, beard)


def _ellipsoid_bounds(pts: torch.Tensor):
    """Bounding ellipsoid (centre [N, 3], semi-axes [N, 3]) of points [N, S, 3]."""
    lo, hi = pts.amin(1), pts.amax(1)
    c, half = (lo + hi) / 2, (hi - lo) / 2 + 0.01
    k = ((pts - c[:, None]) / half[:, None]).norm(dim=2).amax(1)         # [N]
    return c, half * (k[:, None] + 0.01)


def _enter(o, rays, rot, centre, axes):
    """Rays (camera frame, shared by all faces) meeting each face's ellipsoid (head frame).

    Returns flat ray ids into [N*HW], their face ids, entry / exit distances and the head
    frame ray origin and direction components (each [P])."""
    hw = rays.shape[0]
    v = _rotate(rot[:, None], rays[:, 0], rays[:, 1], rays[:, 2], transpose=True)  # 3x [N, HW]
    oe = (o - centre) / axes
    ve = [v[i] / axes[:, i:i + 1] for i in range(3)]
    a = ve[0] * ve[0] + ve[1] * ve[1] + ve[2] * ve[2]
    b = ve[0] * oe[:, 0:1] + ve[1] * oe[:, 1:2] + ve[2] * oe[:, 2:3]
    disc = b * b - a * ((oe * oe).sum(1)[:, None] - 1)                   # [N, HW]
    idx = (disc > 0).view(-1).nonzero()[:, 0]
    sid = idx // hw
    sq = disc.view(-1).index_select(0, idx).sqrt()
    a, b = a.view(-1).index_select(0, idx), b.view(-1).index_select(0, idx)
    vx, vy, vz = (c.reshape(-1).index_select(0, idx) for c in v)
    ox, oy, oz = o.index_select(0, sid).unbind(1)
    return idx, sid, (-b - sq) / a, (-b + sq) / a, (ox, oy, oz), (vx, vy, vz)


def _surface_normal(dx, dy, dz, u, v, tex: H.QuadTexture, base):
    """Normal [P, 3] (head frame) of r = R(uv) at unit direction d with octahedral (u, v)."""
    h = 1.0 / tex.size  # half a texel: central differences over one texel
    R = tex.sample(base, u, v)
    ru = (tex.sample(base, u + h, v) - tex.sample(base, u - h, v)) / (2 * h)
    rv = (tex.sample(base, u, v + h) - tex.sample(base, u, v - h)) / (2 * h)
    s = dx.abs() + dy.abs() + dz.abs()
    su, sv = torch.sign(u), torch.sign(v)
    back = 0.5 - 0.5 * torch.sign(dz)
    # d(w)/du and d(w)/dv of the unnormalised octahedral direction w = d / s.
    au = (1 - back, -back * su * sv, -su)
    av = (-back * su * sv, 1 - back, -sv)
    tang = []
    k = R * s
    for a, g in ((au, ru), (av, rv)):
        da = dx * a[0] + dy * a[1] + dz * a[2]
        tang.append((g * dx + k * (a[0] - dx * da), g * dy + k * (a[1] - dy * da),
                     g * dz + k * (a[2] - dz * da)))
    (ax, ay, az), (bx, by, bz) = tang
    nx, ny, nz = ay * bz - az * by, az * bx - ax * bz, ax * by - ay * bx
    norm = torch.sqrt(nx * nx + ny * ny + nz * nz).clamp_min(1e-12)
    flip = torch.sign(nx * dx + ny * dy + nz * dz) / norm   # point away from the centre
    return torch.stack([nx * flip, ny * flip, nz * flip], 1)


class _Frame:
    """Flat per-pixel buffers [N*H*W, ...] written front to back by each primitive."""

    def __init__(self, n, hw, bg):
        self.depth = torch.full((n * hw,), math.inf)
        self.normal = torch.zeros(n * hw, 3)
        self.albedo = bg.reshape(n * hw, 3).clone()
        self.shading = torch.ones(n * hw)
        self.labels = torch.zeros(n * hw, dtype=torch.int64)

    def write(self, pix, depth, normal, albedo, shading, labels):
        for buf, val in ((self.depth, depth), (self.normal, normal), (self.albedo, albedo),
                         (self.shading, shading), (self.labels, labels)):
            buf.index_copy_(0, pix, val)


def _shade(normal, sid, p: FaceParams):
    lx, ly, lz = p.light.index_select(0, sid).unbind(1)
    n_dot_l = normal[:, 0] * lx + normal[:, 1] * ly + normal[:, 2] * lz
    return p.ambient[sid] + p.diffuse[sid] * n_dot_l.clamp_min(0)


def render(p: FaceParams, resolution: int = 64) -> WorldBatch:
    """Render faces from explicit parameters with all ground-truth maps."""
    n, res = len(p), int(resolution)
    hw = res * res
    A = H.assets(texture_size(res))
    rays = pixel_rays(res)                                               # [HW, 3]
    cam = torch.tensor([0.0, CAM_Y, CAM_DIST])
    rot = rotation(p.yaw, p.pitch, p.roll)                               # [N, 3, 3]
    trans = torch.stack([p.tx, p.ty, p.tz], 1)                           # [N, 3]
    # Background gradient.
    ca, sa = p.bg_angle.double().cos().float(), p.bg_angle.double().sin().float()
    gx = rays[:, 0] / rays[:, 2].abs() / TAN_HALF_FOV                    # [HW] in [-1, 1]
    gy = rays[:, 1] / rays[:, 2].abs() / TAN_HALF_FOV
    s = ((ca[:, None] * gx + sa[:, None] * gy) * 0.5 + 0.5).clamp(0, 1) * p.bg_gradient[:, None]
    bg = p.bg_a[:, None] + (p.bg_b - p.bg_a)[:, None] * s[..., None]     # [N, HW, 3]
    fr = _Frame(n, hw, bg)
    _body(fr, p, rays, cam, trans, res)
    c = cam - trans
    o = torch.stack(_rotate(rot, c[:, 0], c[:, 1], c[:, 2], transpose=True), 1)  # [N, 3]
    _head(fr, p, A, rays, o, rot, res)
    g = p.glasses.nonzero()[:, 0]
    if len(g):
        centre, axes = _ellipsoid_bounds(_GLASSES_HULL[None].expand(len(g), -1, -1))
        idx, sid, _, _, og, vg = _enter(o[g], rays, rot[g], centre, axes)
        face = g.index_select(0, sid)
        _glasses(fr, p, face, face * hw + idx % hw, og, vg, rot, rays, hw)
    image = (fr.albedo * fr.shading[:, None]).clamp(0, 1) * 2 - 1
    chw = lambda a: a.view(n, res, res, -1).permute(0, 3, 1, 2).contiguous()  # noqa: E731
    return WorldBatch(image=chw(image), depth=fr.depth.view(n, 1, res, res),
                      normal=chw(fr.normal), albedo=chw(fr.albedo),
                      shading=fr.shading.view(n, 1, res, res), labels=fr.labels.view(n, res, res),
                      light=p.light_vector(), view=p.view_vector(),
                      attributes=p.attribute_vector(), identity=p.identity_vector(), params=p)


def _radial_gap(tex: H.QuadTexture, rays, t):
    """|x| - R(dir x) at x = o + t v: > 0 outside the surface (a radial distance)."""
    ox, oy, oz, vx, vy, vz, base = rays
    x, y, z = ox + t * vx, oy + t * vy, oz + t * vz
    u, w = H.dir_to_uv(x, y, z)
    return torch.sqrt(x * x + y * y + z * z) - tex.sample(base, u, w)


def _head(fr: _Frame, p: FaceParams, A: H.Assets, rays, o, rot, res):
    """March every ray that meets the face's bounding ellipsoid to its star-shaped surface."""
    n, hw, size = len(p), res * res, A.size
    r, layer, excess, r_bound = bake(p, A)                               # [N, S]
    tex = H.QuadTexture(r.view(n, size, size))
    # Which layer a hit is on: the top layer near the hit (ids are ordered so that max-pooling
    # keeps the upper one) where the surface is above the skin there, else skin. This keeps
    # the labels consistent with the interpolated geometry at layer edges.
    layer = torch.nn.functional.max_pool2d(layer.view(n, 1, size, size).float(), 3, 1, 1)
    layer = layer.to(torch.uint8).view(-1)
    excess = H.QuadTexture(excess.view(n, size, size))
    # Bounds from the head and hair plus room for any accessory, so that the march (and its
    # rounding) does not depend on which accessories a face wears.
    centre, axes = _ellipsoid_bounds((r_bound[:, :, None] + 0.1) * A.dirs)
    idx, sid, t, t_exit, (ox, oy, oz), (vx, vy, vz) = _enter(o, rays, rot, centre, axes)
    base = (sid * (size * size)).to(torch.int32)

    # Phase 1: march forward until inside, in rounds; after each round the rays that are
    # inside (bracketed) or have left the bounds are set aside, so later rounds are cheap.
    # Steps are capped (thin parts such as the nose are not jumped over) unless the ray is
    # far above the surface (nothing on the head rises more than FEATURE_HEIGHT).
    P = len(t)
    t_hit = torch.full((P,), math.inf)
    t_lo = torch.zeros(P)
    act = torch.arange(P)
    t_out = t.clone()
    ta, t_outa, t_exita = t, t_out, t_exit
    for rnd in range(MARCH_ROUNDS):
        g = lambda x: x.index_select(0, act)  # noqa: E731
        if rnd:
            ta, t_outa, t_exita = g(t), g(t_out), g(t_exit)
        sub = (g(ox), g(oy), g(oz), g(vx), g(vy), g(vz), g(base))
        for _ in range(STEPS_PER_ROUND):
            f = _radial_gap(tex, sub, ta)
            t_outa = torch.maximum(t_outa, ta + (torch.sign(f) - 1) * 1e3)   # last outside
            ta = ta + torch.maximum((MARCH_GAIN * f).clamp(MIN_STEP, MAX_STEP), f - FEATURE_HEIGHT)
        f = _radial_gap(tex, sub, ta)
        t_outa = torch.maximum(t_outa, ta + (torch.sign(f) - 1) * 1e3)
        last = rnd == MARCH_ROUNDS - 1
        done = ((f < 0) | (last & (f < 2e-3))) & (ta < t_exita)
        d = done.nonzero()[:, 0]
        t_hit.index_copy_(0, act.index_select(0, d), ta.index_select(0, d))
        t_lo.index_copy_(0, act.index_select(0, d),
                         torch.where(f < 0, t_outa, ta).index_select(0, d))
        go = (~done & (ta < t_exita)).nonzero()[:, 0]
        t.index_copy_(0, act.index_select(0, go), ta.index_select(0, go))
        t_out.index_copy_(0, act.index_select(0, go), t_outa.index_select(0, go))
        act = act.index_select(0, go)
        if not len(act):
            break
    k = torch.isfinite(t_hit).nonzero()[:, 0]
    idx, sid, base, t, lo_t = (x.index_select(0, k) for x in (idx, sid, base, t_hit, t_lo))
    ox, oy, oz, vx, vy, vz = (x.index_select(0, k) for x in (ox, oy, oz, vx, vy, vz))
    rays_h = (ox, oy, oz, vx, vy, vz, base)
    radial_gap = lambda t: _radial_gap(tex, rays_h, t)  # noqa: E731
    t_in = t
    # Phase 2: bisection in [lo_t, t_in] for the bracketed rays, then one secant step
    # (rays that converged from outside have an empty bracket).
    for _ in range(BISECT_STEPS):
        mid = 0.5 * (lo_t + t_in)
        fm = radial_gap(mid)
        out = 0.5 + 0.5 * torch.sign(fm)                                 # 1 outside
        lo_t = lo_t + out * (mid - lo_t)
        t_in = t_in + (1 - out) * (mid - t_in)
    f_lo, f_in = radial_gap(lo_t), radial_gap(t_in)
    den = f_lo - f_in
    t = torch.where(den.abs() > 1e-9, lo_t + f_lo / den.clamp_min(1e-9) * (t_in - lo_t), t_in)
    x, y, z = ox + t * vx, oy + t * vy, oz + t * vz
    rr = torch.sqrt(x * x + y * y + z * z)
    dx, dy, dz = x / rr, y / rr, z / rr
    u, w = H.dir_to_uv(x, y, z)
    normal_h = _surface_normal(dx, dy, dz, u, w, tex, base)
    normal = torch.stack(_rotate(rot.index_select(0, sid), *normal_h.unbind(1)), 1)  # [Q, 3]
    lay = H.nearest(layer, size, base, u, w) * (excess.sample(base, u, w) > 0.006)
    noise = H.nearest(A.noise, size, torch.zeros_like(base), u, w)
    albedo, labels = _head_albedo(p, sid, lay, dx, dy, dz, noise)
    depth = t * -rays[:, 2].index_select(0, idx % hw)
    closer = (depth < fr.depth.index_select(0, idx)).nonzero()[:, 0]
    sel = lambda x: x.index_select(0, closer)  # noqa: E731
    normal, sid = sel(normal), sel(sid)
    fr.write(sel(idx), sel(depth), normal, sel(albedo), _shade(normal, sid, p), sel(labels))


def _head_albedo(p, sid, lay, dx, dy, dz, noise):
    """Albedo [Q, 3] and labels [Q] of head points from their layer and face coordinates."""
    lay = lay.long()
    albedo = torch.empty(len(sid), 3)
    labels = torch.empty(len(sid), dtype=torch.int64)
    grey = torch.tensor([0.72, 0.72, 0.72])
    hair_col = p.hair_color + (grey - p.hair_color) * (0.9 * ((p.age - 0.45) / 0.55).clamp(0, 1))[:, None]
    strands = (0.8 + 0.3 * noise)[:, None]
    for layer_id, label, colour, tex in (
            (H.HAIR, "hair", hair_col, strands), (H.BEARD, "beard", hair_col * 0.9, strands),
            (H.MASK, "mask", p.mask_color, 0.96 + 0.06 * noise[:, None]),
            (H.HAT, "hat", p.hat_color, 0.85 + 0.25 * noise[:, None])):
        j = (lay == layer_id).nonzero()[:, 0]
        albedo[j] = colour[sid[j]] * tex[j]
        labels[j] = LABEL_ID[label]
    j = (lay == H.SKIN).nonzero()[:, 0]
    js = sid[j]
    rows = {f: getattr(p, f)[js] for f in ("skin", "age", "smile", "blush", "shape", "mouth_width",
                                           "lip_thick", "lip_color", "iris", "brow_y",
                                           "brow_arch", "brow_thick", "eye_size")}
    rows["hair_color"] = p.hair_color[js]
    labels[j], albedo[j] = paint_skin(dx[j], dy[j], dz[j], rows)
    return albedo.clamp(0, 1), labels


def _body(fr: _Frame, p: FaceParams, rays, cam, trans, res):
    """Neck (vertical cylinder) and shoulders (ellipsoid), in the camera frame."""
    row0 = res // 3  # neither reaches the top third of the image
    pix_rows = torch.arange(row0 * res, res * res)
    v = rays[pix_rows]                                                   # [M, 3]
    # Neck: x^2 + z^2 = r^2 around (tx, tz - 0.12), from the shoulders up into the head.
    neck_r = 0.46
    c = cam[None] - trans - torch.tensor([0.0, 0.0, -0.12])              # [N, 3]
    a = v[:, 0] ** 2 + v[:, 2] ** 2
    b = c[:, 0:1] * v[:, 0] + c[:, 2:3] * v[:, 2]                        # [N, M]
    cc = (c[:, 0] ** 2 + c[:, 2] ** 2 - neck_r ** 2)[:, None]
    disc = b * b - a * cc
    t_neck = (-b - disc.clamp_min(0).sqrt()) / a
    y = c[:, 1:2] + t_neck * v[:, 1]                                     # relative to the head
    neck = (disc > 0) & (y < -0.3) & (y > -2.2)
    # Shoulders: ellipsoid centred below the head.
    rad = torch.tensor([1.55, 1.0, 0.62])
    oc = (cam[None] - trans - torch.tensor([0.0, -2.3, -0.3])) / rad     # [N, 3]
    vs = v / rad                                                         # [M, 3]
    a2 = (vs * vs).sum(1)
    b2 = oc[:, 0:1] * vs[:, 0] + oc[:, 1:2] * vs[:, 1] + oc[:, 2:3] * vs[:, 2]  # [N, M]
    disc2 = b2 * b2 - a2 * ((oc * oc).sum(1)[:, None] - 1)
    t_body = (-b2 - disc2.clamp_min(0).sqrt()) / a2
    body = disc2 > 0
    for mask, t, kind in ((neck, t_neck, "neck"), (body, t_body, "cloth")):
        nz = mask.nonzero()
        sid, m = nz[:, 0], nz[:, 1]
        tt = t[sid, m]
        pt = cam + tt[:, None] * v[m]                                     # camera frame
        if kind == "neck":
            q = pt - trans[sid] - torch.tensor([0.0, 0.0, -0.12])
            normal = torch.stack([q[:, 0], torch.zeros_like(tt), q[:, 2]], 1) / neck_r
            # Slightly darker neck albedo under the jaw, where real necks are in shadow.
            shade = (0.78 + 0.12 * ((-0.5 - q[:, 1]) / 0.6).clamp(0, 1))[:, None]
            albedo = p.skin[sid] * shade
        else:
            q = (pt - trans[sid] - torch.tensor([0.0, -2.3, -0.3])) / rad ** 2
            normal = q / q.norm(dim=1, keepdim=True)
            albedo = p.cloth_color[sid]
        pix = sid * res * res + pix_rows[m]
        depth = tt * -v[m, 2]
        closer = depth < fr.depth[pix]
        pix, sid, normal = pix[closer], sid[closer], normal[closer]
        fr.write(pix, depth[closer], normal, albedo[closer], _shade(normal, sid, p),
                 torch.full_like(pix, LABEL_ID[kind]))


def _glasses(fr, p, sid, pix, o, v, rot, rays, hw):
    """Frame, lenses and temples as thin planes in the head frame, on candidate rays.

    `sid` face ids, `pix` flat pixel ids, `o`, `v` head-frame ray components (each [P])."""
    ox, oy, oz = o
    vx, vy, vz = v
    sun = p.glasses[sid] == 2
    size = 1 + 0.1 * p.glasses_size[sid]
    a = torch.where(sun, 0.15, 0.13) * size
    b = torch.where(sun, 0.115, 0.092) * size
    wid = torch.where(sun, 0.05, 0.042)
    round_ = p.glasses_round[sid]
    gx = H.EYE[0] * (1 + 0.08 * p.shape[sid, _SPACING])
    gy = H.EYE[1] + 0.01
    zg = 1.0
    best = torch.full_like(ox, math.inf)
    kind = torch.zeros_like(sid)                     # 0 none, 1 frame, 2 lens
    nrm = torch.zeros(len(sid), 3)
    # Front plane z = zg: lenses, rims, bridge.
    t = (zg - oz) / vz
    px, py = ox + t * vx, oy + t * vy
    qx, qy = (px.abs() - gx).abs(), (py - gy).abs()

    def se(ea, eb):  # ellipse (round) blended with a squircle (square): exact arithmetic only
        x2, y2 = (qx / ea) ** 2, (qy / eb) ** 2
        return round_ * (x2 + y2) + (1 - round_) * (x2 * x2 + y2 * y2)

    lens = se(a, b) < 1
    rim = (se(a + wid, b + wid) < 1) & ~lens
    bridge = (px.abs() < gx - 0.6 * a) & ((py - gy - 0.35 * b).abs() < wid * 0.6)
    front = (t > 0) & (lens | rim | bridge)
    best = torch.where(front, t, best)
    kind = torch.where(front, torch.where(lens & ~bridge, 2, 1), kind)
    nrm[front] = torch.tensor([0.0, 0.0, 1.0])
    # Temples: vertical planes from the rim's outer edge back to above the ears.
    for sx in (-1.0, 1.0):
        ax_, az_ = sx * (gx + a + wid * 0.5), torch.full_like(ox, zg)
        bx_, bz_ = torch.full_like(ox, sx * 0.86), torch.full_like(ox, -0.1)
        ay_, by_ = gy + 0.3 * b, 0.03
        ex, ez = bx_ - ax_, bz_ - az_
        nx, nz = ez, -ex
        t = (nx * (ax_ - ox) + nz * (az_ - oz)) / (nx * vx + nz * vz)
        px, py, pz = ox + t * vx, oy + t * vy, oz + t * vz
        sp = ((px - ax_) * ex + (pz - az_) * ez) / (ex * ex + ez * ez)
        on = (t > 0) & (sp > 0) & (sp < 1) & ((py - (ay_ + sp * (by_ - ay_))).abs() < wid * 0.55)
        on = on & (t < best)
        best = torch.where(on, t, best)
        kind = torch.where(on, 1, kind)
        ln = torch.stack([nx, torch.zeros_like(nx), nz], 1)
        ln = ln / ln.norm(dim=1, keepdim=True) * torch.where(nx * vx + nz * vz > 0, -1.0, 1.0)[:, None]
        nrm = torch.where(on[:, None], ln, nrm)
    depth = best * -rays[pix % hw, 2]
    keep = (kind > 0) & (depth < fr.depth[pix])
    pix, sid, kind, depth, sun = pix[keep], sid[keep], kind[keep], depth[keep], sun[keep]
    normal = torch.stack(_rotate(rot[sid], *nrm[keep].unbind(1)), 1)
    clear = (kind == 2) & ~sun
    albedo = torch.where((kind == 1)[:, None], p.glasses_color[sid], p.lens_color[sid])
    albedo = torch.where(clear[:, None], fr.albedo[pix] * torch.tensor(CLEAR_LENS_TINT), albedo)
    shading = torch.where(clear, fr.shading[pix], _shade(normal, sid, p))
    labels = torch.where(kind == 1, LABEL_ID["glasses_frame"], LABEL_ID["lens"])
    fr.write(pix, depth, normal, albedo, shading, labels)
