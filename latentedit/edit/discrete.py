"""SD-GAN discrete attribute synthesis: put an accessory (frame glasses, sunglasses, a surgical
mask) on the face of a latent code.

The edit is decomposed as in SD-GAN: edited = G(w + p + offset), where

- p, the prior basis, is InterfaceGAN's edit for the accessory: each W code moves along the
  unit normal n of the attribute's boundary plane (w . n + b = 0) to the signed distance d, or
  not at all when it is already past it: p = max(d - (w . n + b), 0) n.  SD-GAN calls this the
  "interface" vector; a file of per-sample p (SD-GAN's interface JSON) replaces it. A generator
  trained with world labels as W offsets (`train gan --labels`) has its own vector u for the
  accessory, the move it was trained to draw it with; with that `direction` the code moves along
  u until the plane's distance reaches d: p = max(d - (w . n + b), 0) / (u . n) u
  (`label_direction`; on the 3285 kimg generator the frames prior alone came to an edit-FID of
  0.92x the generator's own frames along u, 1.80x along the normal, whose cosine with u is 0.4-0.7);
  frames along u replace sunglasses: a code past the sunglasses boundary first moves back across
  it, as far as it was past, along the generator's sunglasses label (`REPLACES`, `mirrored_back`);
- offset [num_ws, w_dim], one vector per W+ layer, is predicted by the 3D-aware fusion network
  (`latentedit.models.fusion`) from the origin image x = G(w), the accessory template image and
  the canonical 3D maps (normal, shading, albedo) of x from the 3D encoder.

    synth = DiscreteSynthesizer.load("glasses", normal=True)     # frame glasses, bundled default
    out = synth(G.sample_w(8, seed=0, truncation=0.7))
    out.origin, out.prior_image, out.image                       # [8, 3, R, R] each

With `composite` (the default) the result is composited into the origin: inside the accessory's
expected region (where the template head wears it, turned to the face's view by the 3D encoder)
the edited codes' block outputs replace the origin's, for glasses from the 16 x 16 block up,
feathered by 2 px at 64 px, so that the later layers blend the seam (`latentedit.edit.features`),
for masks as pixels with a hard edge, and frame glasses' lenses show the face behind them
(`latentedit.edit.compositing`); the face outside that region keeps the origin's features. An
offset edit kept near the face by its losses still recolours hair or shifts the face (on 400
held-out codes of the 3285 kimg bundle, the classifier's hair / age / beard heads kept 0.66 / 0.69
/ 0.79 for frames / sunglasses / the glow mask network); composited, 0.88 / 0.84 / 0.85, with all
judges 0.805 -> 0.812 and 0.975 -> 0.993 for the glasses. `out.image` is then not G(out.latents):
the latents are the edit before compositing, `out.region` the mask it used.

Noise is constant (noise_mode="const") so that the three images differ only by their latents.
"""
from dataclasses import asdict, dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F

from latentedit.edit.compositing import COMPOSITING, composited, eyes_of
from latentedit.edit.imaging import network_input, resize
from latentedit.errors import FormatError, InputError

# kind -> (classifier head, class index in that head, boundary name in the bundle)
ACCESSORY_KINDS = {
    "frame_glasses": ("glasses", 1, "frame_glasses"),
    "sunglasses": ("glasses", 2, "sunglasses"),
    "mask": ("mask", 1, "mask"),
}


# A kind that replaces another: the world's glasses are one of none / frames / sunglasses, so frames
# put on a face wearing sunglasses replace them. With a generator's own labels the prior first moves
# a code that is past the replaced kind's boundary back across it along that kind's label, as far on
# the other side as it was past (its mirror image, on the bare side; no constant that depends on the
# codes' truncation), then on to the kind's own distance: the frames were drawn over the dark lenses
# otherwise (2026-12-06, the 32 of 400 held-out codes wearing sunglasses: clear lenses and the
# classifier's frames 0.031 -> 0.906 moved onto the plane). On the 4040 kimg generator a code moved
# only onto the plane still wore half-dark lenses, which the frames' clear lenses then showed
# (2026-12-07: all judges 0.942 onto the plane, 0.975 mirrored, same networks).
REPLACES = {"frame_glasses": "sunglasses"}
# How a code leaves the replaced kind, as runs record it: folders and training runs made under
# another rule (onto the plane, before 2026-12-07) hold other images and do not resume.
REPLACING_RULE = "mirrored"

# The second judge of an edit: the face parser must label at least this share of the accessory's
# expected region (where the template head wears it, turned to the face's view) as the accessory,
# the region moved by up to VIEW_SLACK (a share of the side) where that reads more of it: the face3d
# evaluator reads a face's view a pixel or two off, and the world's own thin frames failed 4.5% of
# 400 renders (6.5% of 200) where they sat a pixel beside the region (2026-12-06); with a pixel's
# slack 0.7% (1.0%), while frames drawn 6 px low still fail 84% (80%; 95% and 92.5% without).
VISIBLE_SHARE = 0.3
VIEW_SLACK = 1 / 64


def resolve_kind(kind, normal=False):
    """SD-GAN's names -> ours: `glasses` with `normal` is frame glasses, without it sunglasses;
    `mask` is the surgical mask. Our own names (frame_glasses, sunglasses, mask) pass through."""
    if kind == "glasses":
        return "frame_glasses" if normal else "sunglasses"
    if kind in ACCESSORY_KINDS:
        if normal and kind != "frame_glasses":
            raise InputError(f"--normal (frame glasses) does not apply to kind {kind!r}")
        return kind
    raise InputError(f"unknown kind {kind!r} (known: glasses [--normal], {', '.join(ACCESSORY_KINDS)})")


def _unit(normal, device):
    n = torch.as_tensor(normal, dtype=torch.float32).reshape(-1).to(device)
    return n / n.norm()


def signed_distance(w, normal, intercept):
    """[N] signed distance of codes w [N, w_dim] (W+ [N, L, w_dim]: their layer mean) from the
    boundary plane w . n + intercept = 0, n the unit normal."""
    centre = w.mean(1) if w.ndim == 3 else w
    return centre @ _unit(normal, w.device) + float(intercept)


def conditioned_plane(boundary, conditioned, anchor, intercept):
    """InterfaceGAN's conditional manipulation for the prior: the plane whose unit normal is
    `conditioned` (the boundary made orthogonal to other boundaries, `Direction.orthogonal_to`),
    tilted about the point of the boundary plane w . n + intercept = 0 nearest to `anchor`
    (w_avg), so that near the average face it separates where the plain plane does.
    -> (normal, intercept)."""
    n = _unit(boundary.vector, "cpu")
    n_cond = _unit(conditioned.vector, "cpu")
    anchor = torch.as_tensor(anchor, dtype=torch.float32).reshape(-1)
    foot = anchor - (anchor @ n + float(intercept)) * n
    return n_cond, float(-(foot @ n_cond))


def prior_basis(w, normal, intercept, distance, direction=None):
    """InterfaceGAN prior p [N, w_dim] for codes w [N, w_dim] (or W+ [N, L, w_dim]: the layer
    mean decides the distance): moves each code to signed distance `distance` from the plane
    w . n + intercept = 0 along its unit normal n (or along `direction` u [w_dim], as far as
    reaches that distance), or leaves it where it is if already past."""
    gap = (float(distance) - signed_distance(w, normal, intercept)).clamp(min=0)
    n = _unit(normal, w.device)
    if direction is None:
        return gap[:, None] * n
    u = torch.as_tensor(direction, dtype=torch.float32).reshape(-1).to(w.device)
    return (gap / check_direction(u, n))[:, None] * u


def mirrored_back(w, plane):
    """[N, w_dim]: the move along plane's direction u that brings codes w [N, w_dim] (or W+: the layer
    mean decides) past the plane (signed distance t > 0) back across it to distance -t; zero for the
    others. plane: (normal, intercept, u)."""
    normal, intercept, direction = plane
    over = 2 * signed_distance(w, normal, intercept).clamp(min=0)
    u = torch.as_tensor(direction, dtype=torch.float32).reshape(-1).to(w.device)
    return -(over / check_direction(u, _unit(normal, w.device)))[:, None] * u


def replaced_plane(G, bundle, kind):
    """(normal, intercept, label vector) of what accessory `kind` replaces (`REPLACES`): that kind's
    boundary in `bundle` and G's own label for it; None where nothing is replaced, or the bundle has
    no such boundary or G no labels for it (then the prior is the kind's alone)."""
    from latentedit.edit.directions import Direction
    from latentedit.formats.bundle import read_manifest
    from latentedit.world.labels import trained_labels

    other = REPLACES.get(kind)
    if other is None:
        return None
    try:
        boundary = Direction.load(ACCESSORY_KINDS[other][2], bundle=bundle).check(G, space="w")
        u = label_direction(G, trained_labels(read_manifest(bundle)), other)
    except (InputError, FormatError):
        return None
    return boundary.vector.float(), float(boundary.provenance.get("intercept", 0.0)), u


def check_direction(direction, normal):
    """u . n of a prior's direction u and the boundary's unit normal n; u must cross the plane
    towards the accessory (u . n at least a tenth of |u|), or a prior along it could never get there."""
    along = float(direction @ normal)
    if not along >= 0.1 * float(direction.norm()):
        raise InputError(f"the prior's direction does not cross the boundary towards the accessory (cosine with its "
                         f"normal {along / max(float(direction.norm()), 1e-12):.2f}, at least 0.1 needed)")
    return along


# accessory kind -> the column of a world-label vector (`latentedit.world.labels.label_names`)
LABEL_COLUMNS = {"frame_glasses": "frame", "sunglasses": "sun", "mask": "mask"}


def label_direction(G, labels, kind):
    """The W vector [w_dim] that generator G adds for accessory `kind`'s label: G trained with world
    label groups `labels` (the bundle's provenance config "labels") as W offsets (label_input
    "w_offset"), so that w + u is how G itself draws the accessory on the face of w."""
    if not getattr(G, "c_dim", 0) or not hasattr(G.mapping, "label_offset"):
        raise InputError("a label prior needs a generator trained with world labels as W offsets "
                         "(train gan --labels); this one has none: use the boundary prior")
    with torch.no_grad():
        return G.mapping.label_offset(kind_label(G.c_dim, labels, kind).to(G.w_avg.device))[0].float()


def kind_label(c_dim, labels, kind):
    """[1, c_dim] the label vector of world label groups `labels` with accessory `kind`'s column set
    and every other column clear."""
    from latentedit.world.labels import label_names

    columns = label_names(list(labels or []))
    if len(columns) != c_dim or LABEL_COLUMNS[kind] not in columns:
        raise InputError(f"the network's labels {list(labels or [])} ({c_dim} columns) have no column for {kind}")
    onehot = torch.zeros(1, c_dim)
    onehot[0, columns.index(LABEL_COLUMNS[kind])] = 1
    return onehot


def fixed_template_features(fusion, templates, cache):
    """fusion.template_features(templates) for inference, computed once and reused from `cache` (a
    dict the caller keeps) until the template branch's weights or buffers, or the templates, change
    (an offset trainer's sample snapshots run between its steps)."""
    from latentedit.models.layers import version_key

    tensors = [templates, *fusion.masknet.parameters(), *fusion.masknet.buffers()]
    key = (id(templates), *(version_key(t) for t in tensors))
    if None in key:  # inference tensors keep no version: nothing is cached
        return fusion.template_features(templates)
    if cache.get("key") != key:
        cache.update(key=key, features=fusion.template_features(templates))
    return cache["features"]


def prior_alignment(priors, normal):
    """Mean |cosine| between the non-zero priors [N, w_dim] and the boundary normal (1: InterfaceGAN
    priors of this boundary; near 0: priors made for another attribute); None when all are zero."""
    p = torch.as_tensor(priors, dtype=torch.float32)
    p = p[p.norm(dim=1) > 0]
    if not len(p):
        return None
    return float((p @ _unit(normal, p.device)).abs().div(p.norm(dim=1)).mean())


def accessory_present(clf, images, kind):
    """[N] bool: the attribute classifier's top class for the kind's head is the kind."""
    head, index, _ = ACCESSORY_KINDS[kind]
    return clf(network_input(images, clf.cfg.image_size))[head].argmax(1) == index


# The classifier's heads that say who the face is rather than what it wears: an accessory edit
# should leave them as they were (world faces keep 0.93-0.97 of them when they put glasses on, by
# the bundled classifier).
KEPT_HEADS = ("hair_color", "hair_style", "beard", "age")


def attributes_kept(clf, origins, edits, heads=KEPT_HEADS):
    """[N] share of the classifier's `heads` whose top class is the same on each edit as on its
    origin: an identity check independent of the identity embedder (which rates a hair change
    mildly)."""
    a, b = (clf(network_input(x, clf.cfg.image_size)) for x in (origins, edits))
    return torch.stack([(a[h].argmax(1) == b[h].argmax(1)).float() for h in heads], 1).mean(1)


def accessory_seen(labels, kind, view=None):
    """[N] bool: parser label maps [N, R, R] show accessory `kind` on >= VISIBLE_SHARE of its
    expected region: where the template head wears it at each face's `view` [N, 6] (the face3d
    evaluator's, `face_view`), or on the frontal, centred head when view is None."""
    from latentedit.world.templates import accessory_region

    return seen_in_region(labels, kind, accessory_region(kind, labels.shape[-1], view))


def seen_in_region(labels, kind, expected, slack=VIEW_SLACK):
    """[N] bool: label maps [N, R, R] show accessory `kind` on >= VISIBLE_SHARE of the expected
    region (bool [R, R] or [N, R, R]) moved by up to `slack` (a share of the side, a pixel at least
    where > 0) in each direction, at its best placement; `accessory_seen` with the region already
    rendered."""
    from latentedit.world.templates import on_accessory

    expected = expected.to(labels.device).bool().expand_as(labels)
    on = on_accessory(labels, kind)
    px = max(1, round(slack * labels.shape[-1])) if slack > 0 else 0
    padded = F.pad(expected.float(), (px,) * 4)
    side = labels.shape[-1]
    shares = [(on & (padded[:, px + dy:px + dy + side, px + dx:px + dx + side] > 0)).sum((-2, -1))
              for dy in range(-px, px + 1) for dx in range(-px, px + 1)]
    return torch.stack(shares).amax(0) >= VISIBLE_SHARE * expected.sum((-2, -1))


def world_views(face3d):
    """True when the face3d evaluator's views are the world's (yaw, pitch, roll, tx, ty, tz), as the
    bundled one's; an unsup3d checkpoint's are in its own frame."""
    from latentedit.world.templates import VIEW_FIELDS

    return tuple(face3d.cfg.view_names) == VIEW_FIELDS


def read_face(face3d, images):
    """The face3d evaluator's outputs ({"view", "maps", ...}) for faces [N, 3, R, R]: one pass that
    both the offset network's 3D maps and the expected region's view are read from."""
    return face3d(network_input(images, face3d.cfg.image_size))


def face_view(face3d, images, read=None):
    """[N, 6] yaw, pitch, roll, tx, ty, tz of faces [N, 3, R, R] by a face3d evaluator in the
    world's frame (`world_views`); `read`: its `read_face` outputs for them, when the caller has them."""
    from latentedit.world.templates import VIEW_FIELDS

    if not world_views(face3d):
        raise InputError(f"the face3d evaluator's views are {list(face3d.cfg.view_names)}, not the world's "
                         f"{list(VIEW_FIELDS)}")
    return (read_face(face3d, images) if read is None else read)["view"]


def expected_region(face3d, kind, images, read=None):
    """Bool [N, R, R]: where accessory `kind` belongs on faces [N, 3, R, R]: where the template head
    wears it turned to each face's view by the face3d evaluator, or on the frontal, centred head
    with a face3d not in the world's frame (unsup3d's, for aligned photos, whose eyes sit at fixed
    places); `read` as for `face_view`."""
    from latentedit.world.templates import accessory_region

    view = face_view(face3d, images, read) if world_views(face3d) else None
    return accessory_region(kind, images.shape[-1], view).to(images.device).expand(len(images), -1, -1)


@dataclass
class SynthesisResult:
    w: torch.Tensor             # [N, num_ws, w_dim] the input codes (W broadcast to W+)
    prior: torch.Tensor         # [N, w_dim] p
    offset: torch.Tensor        # [N, num_ws, w_dim] the fusion network's offset
    origin: torch.Tensor        # [N, 3, R, R] G(w)
    prior_image: torch.Tensor   # [N, 3, R, R] G(w + p), InterfaceGAN alone
    image: torch.Tensor         # [N, 3, R, R] G(w + p + offset), composited into the origin
    region: Optional[torch.Tensor] = None  # [N, 1, R, R] the compositing mask; None: not composited

    @property
    def latents(self):
        """[N, num_ws, w_dim] the edited codes (the image is G of them where not composited)."""
        return self.w + self.prior[:, None] + self.offset


class DiscreteSynthesizer:
    """G + fusion network + 3D encoder + template + prior for one accessory kind."""

    def __init__(self, G, fusion, face3d, template, kind, normal, intercept, distance, direction=None,
                 composite=True, replaced=None, parser=None):
        if kind not in ACCESSORY_KINDS:
            raise InputError(f"unknown kind {kind!r} (known: {', '.join(ACCESSORY_KINDS)})")
        if fusion.cfg.num_ws != G.num_ws or fusion.cfg.w_dim != G.w_dim:
            raise InputError(f"the {kind} offset network predicts {fusion.cfg.num_ws} x {fusion.cfg.w_dim} offsets, "
                             f"the generator has {G.num_ws} x {G.w_dim} W+ codes")
        self.G, self.fusion, self.face3d = G.eval(), fusion.eval(), face3d.eval()
        self.kind, self.distance, self.intercept = kind, float(distance), float(intercept)
        self.normal = torch.as_tensor(normal, dtype=torch.float32).reshape(-1)
        # None: along the normal; else a W vector (e.g. the generator's label for the kind)
        self.direction = None if direction is None else torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
        if self.direction is not None:
            check_direction(self.direction, _unit(self.normal, "cpu"))
        self.composite = bool(composite)
        self.replaced = replaced  # (normal, intercept, u) of the kind this one replaces (`replaced_plane`)
        # reads the origins' eyes and the edits' frames (COMPOSITING)
        self.parser = None if parser is None else parser.eval()
        self.template = self.check_template(template)
        self._template_feat = {}  # fixed_template_features' cache

    def check_template(self, template):
        """Template [3, r, r] (or [1, 3, r, r]) in [-1, 1] -> [1, 3, R, R] at the network's size."""
        t = torch.as_tensor(template, dtype=torch.float32)
        t = t[None] if t.ndim == 3 else t
        if t.ndim != 4 or t.shape[:2] != (1, 3):
            raise InputError(f"template must be an RGB image [3, H, W], got shape {list(template.shape)}")
        if not torch.isfinite(t).all():
            raise InputError("template contains NaN or infinite values")
        return resize(t, self.fusion.cfg.resolution)

    @classmethod
    def load(cls, kind, normal=False, bundle=None, template=None, G=None, generator_hash=None, composite=True):
        """The synthesizer for `kind` (mask | glasses [normal] | frame_glasses | sunglasses) from a
        bundle folder (default: the bundled default); `template` overrides the bundled template
        (an image path or a [3, H, W] tensor in [-1, 1]); `G` a generator already loaded;
        `composite` False: the result is G(w + p + offset) as it is."""
        from latentedit.formats.evaluators import evaluator_names, load_evaluators
        from latentedit.formats.sdgan import read_offset_network, read_template
        from latentedit.model import default_parts, load_model

        kind = resolve_kind(kind, normal)
        if G is None:
            model = load_model(bundle or None)  # None: the bundled default
            bundle, G = bundle or model.parts, model.G
        bundle = bundle or default_parts()
        net, settings = read_offset_network(bundle, kind)
        if settings.get("generator"):
            from latentedit.formats.directions import made_for

            if not made_for(G, settings["generator"], generator_hash):
                raise InputError(f"the {kind} offset network in {bundle} was trained through another generator; "
                                 "train one for this generator with `latentedit train offset`")
        # the face parser where the kind's compositing reads faces and the bundle has one
        wanted = ["face3d"] + (["parser"] if COMPOSITING[kind].reads_faces and composite
                               and "parser" in evaluator_names(bundle) else [])
        ev = load_evaluators(bundle, wanted)
        if template is None or isinstance(template, (str, bytes)) or hasattr(template, "__fspath__"):
            template = read_template(template or (bundle, settings["template"]), net.cfg.resolution)
        # a labelled prior (the generator's own label for the kind) replaces what REPLACES says, as trained
        replaced = replaced_plane(G, bundle, kind) if settings.get("direction") is not None else None
        return cls(G, net, ev["face3d"], template, kind, settings["normal"], settings["intercept"],
                   settings["distance"], settings.get("direction"), composite, replaced, ev.get("parser"))

    @property
    def compositing(self):
        """The `Compositing` this synthesizer applies (COMPOSITING[kind], without what reads faces
        where it has no parser); None where it does not composite."""
        if not self.composite:
            return None
        how = COMPOSITING[self.kind]
        return how if self.parser is not None else replace(how, eye_clearance=None, clear_lenses=False)

    def compositing_record(self):
        """`compositing` as a run records it: eye_clearance and clear_lenses only where set, so that
        folders written before they existed (and runs without a parser) resume."""
        how = asdict(self.compositing)
        return {k: v for k, v in how.items() if not (k in ("eye_clearance", "clear_lenses") and not v)}

    def replacing_record(self):
        """{replaced kind: REPLACING_RULE} where this kind replaces another, else None: how a run records
        the prior's first move (only where there is one, so that other kinds' folders resume)."""
        return None if self.replaced is None else {REPLACES[self.kind]: REPLACING_RULE}

    @property
    def prior_direction(self):
        """[w_dim] the way every prior points: the direction, or the boundary's normal."""
        return self.normal if self.direction is None else self.direction

    def priors(self, w):
        """InterfaceGAN prior p [N, w_dim] for codes w [N, w_dim] or [N, L, w_dim] (first back across
        the boundary of the kind this one replaces, where past it: `mirrored_back`)."""
        if self.replaced is None:
            return prior_basis(w, self.normal, self.intercept, self.distance, self.direction)
        back = mirrored_back(w, self.replaced)
        moved = w + (back[:, None] if w.ndim == 3 else back)
        return back + prior_basis(moved, self.normal, self.intercept, self.distance, self.direction)

    @torch.no_grad()
    def behind(self, w, origin=None):
        """[N, 3, R, R] the faces the accessory goes on as its lenses should show them: G(w) with what
        this kind replaces taken off (frames over sunglasses show the eyes, not the dark lenses); G(w),
        or `origin` when the caller has it, where nothing is replaced."""
        ws = self.G.broadcast_w(w)
        if self.replaced is None:
            return origin if origin is not None else self.G.synthesis(ws, noise_mode="const")
        return self.G.synthesis(ws + mirrored_back(ws, self.replaced)[:, None], noise_mode="const")

    def offsets(self, origin, read=None):
        """Origin images [N, 3, R, R] -> offsets [N, num_ws, w_dim] (differentiable); `read`: the
        face3d evaluator's `read_face` outputs for them, when the caller has them."""
        maps = (read_face(self.face3d, origin) if read is None else read)["maps"].detach()
        face = resize(origin, self.fusion.cfg.resolution)
        if torch.is_grad_enabled() or self.fusion.training:  # training: the template branch learns
            return self.fusion(face, self.template.expand(len(face), -1, -1, -1).to(face), maps)
        self.template = self.template.to(face.device)  # moved once: a copy per call would miss the cache
        feat = fixed_template_features(self.fusion, self.template, self._template_feat)
        return self.fusion(face, None, maps, template_feat=feat)

    @torch.no_grad()
    def __call__(self, w, prior=None, batch_size=16, progress=None):
        """w [N, w_dim] or [N, num_ws, w_dim]; prior [N, w_dim] (default: from the boundary)."""
        ws = self.G.broadcast_w(w)
        if prior is None:
            prior = self.priors(ws)
        prior = torch.as_tensor(prior, dtype=torch.float32).to(ws.device)
        if prior.shape != (len(ws), self.G.w_dim):
            raise InputError(f"prior must be [{len(ws)}, {self.G.w_dim}] (one vector per code), got {list(prior.shape)}")
        if not torch.isfinite(prior).all():
            raise InputError("prior contains NaN or infinite values")
        parts = []
        for i in range(0, len(ws), batch_size):
            c, p = ws[i:i + batch_size], prior[i:i + batch_size]
            origin = self.G.synthesis(c, noise_mode="const")
            with_prior = c + p[:, None]
            read = read_face(self.face3d, origin)
            offset = self.offsets(origin, read)
            if self.composite:
                region = expected_region(self.face3d, self.kind, origin, read)
                how = self.compositing
                eyes = eyes_of(self.parser, origin) if how.eye_clearance is not None else None
                behind = self.behind(c, origin) if how.clear_lenses else None
                image, region = composited(self.G, c, with_prior + offset, region, self.kind, eyes,
                                           self.parser, behind)
            else:
                image, region = self.G.synthesis(with_prior + offset, noise_mode="const"), None
            parts.append((c, p, offset, origin, self.G.synthesis(with_prior, noise_mode="const"), image, region))
            if progress:
                progress(min(i + batch_size, len(ws)), len(ws))
        return SynthesisResult(*[torch.cat(t) if t[0] is not None else None for t in zip(*parts)])
