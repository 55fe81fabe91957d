"""SD-GAN discrete attribute synthesis: the prior, the synthesizer's three images, offset networks in
bundles, the accessory templates and judges, on the SD-GAN test world of sdgan_world.py (SD-GAN's
latent files and `latentedit synthesize`: test_synthesize_cli.py; `latentedit train offset`:
test_offset_training.py)."""
import shutil

import pytest
import torch

from latentedit.edit.directions import Direction
from latentedit.edit.discrete import DiscreteSynthesizer, prior_basis, resolve_kind
from latentedit.edit.imaging import resize
from latentedit.errors import FormatError, InputError
from latentedit.formats import bundle
from latentedit.formats.sdgan import read_offset_network, read_template, write_offset_network
from latentedit.world.labels import trained_labels
from latentedit.world.templates import accessory_template

from sdgan_world import signed_distance, world  # noqa: F401 (world: a fixture)

torch.set_num_threads(1)


# -- the prior and the kinds -----------------------------------------------------------------------

def test_resolve_kind():
    assert resolve_kind("glasses", normal=True) == "frame_glasses"
    assert resolve_kind("glasses") == "sunglasses"
    assert resolve_kind("mask") == "mask" and resolve_kind("frame_glasses", normal=True) == "frame_glasses"
    for kind, normal in (("mask", True), ("sunglasses", True), ("hat", False)):
        with pytest.raises(InputError):
            resolve_kind(kind, normal)


def test_prior_basis_reaches_the_target_distance(world):
    path, G, _ = world
    d = Direction.load("mask", bundle=path)
    b, target = d.provenance["intercept"], 3.0
    normal = d.vector * 7.0  # any length: the prior uses the unit normal
    w = G.sample_w(6, seed=0, truncation=0.7)
    before = signed_distance(w, normal, b)
    assert (before < target).any()
    n = normal / normal.norm()
    beyond = w[:2] + (target + 1.5 - before[:2])[:, None] * n  # already past the target
    w = torch.cat([w, beyond])
    p = prior_basis(w, normal, b, target)
    assert p.shape == w.shape
    before = signed_distance(w, normal, b)
    after = signed_distance(w + p, normal, b)
    short = before < target
    assert torch.allclose(after[short], torch.full_like(after[short], target), atol=1e-4)
    assert torch.equal(p[~short], torch.zeros_like(p[~short])) and (~short).sum() >= 2
    # p lies along n; W+ codes use the layer mean
    assert torch.allclose(p - (p @ n)[:, None] * n, torch.zeros_like(p), atol=1e-5)
    wp = G.broadcast_w(w[:3]) + 0.1 * torch.randn(3, G.num_ws, G.w_dim)
    after = signed_distance(wp + prior_basis(wp, normal, b, target)[:, None], normal, b)
    assert torch.allclose(after, torch.full_like(after, target), atol=1e-4)


def _labels(path):
    return trained_labels(bundle.read_manifest(path))


def test_label_prior_moves_along_the_generators_own_label_to_the_target_distance(world):
    """The bundled generator adds a W vector per label: label_direction is that vector (the W move of
    switching the label on, by the mapping itself), and a prior along it stops where the boundary's
    distance reaches the target, as the normal's does."""
    from latentedit.edit.discrete import check_direction, label_direction
    from latentedit.models.stylegan2 import with_class, z_from_seeds
    from latentedit.world.labels import label_names

    path, G, _ = world
    d = Direction.load("mask", bundle=path)
    b, target = d.provenance["intercept"], 3.0
    u = label_direction(G, _labels(path), "mask")
    z = z_from_seeds(range(40), G.z_dim)
    column = label_names(_labels(path)).index("mask")
    with torch.no_grad():
        own = G.mapping.labels_from_z(z)
        bare = own[:, column] == 0
        move = G.mapping(z, with_class(own, G.cfg.label_prior, column))[:, 0] - G.mapping(z, own)[:, 0]
    assert bare.sum() >= 20 and torch.allclose(move[bare], u.expand(int(bare.sum()), -1), atol=1e-4)
    w = G.sample_w(8, seed=0, truncation=0.7)
    n = d.vector.float() / d.vector.float().norm()
    p = prior_basis(w, d.vector, b, target, direction=u)
    before, after = signed_distance(w, d.vector, b), signed_distance(w + p, d.vector, b)
    short = before < target
    assert short.sum() >= 4
    assert torch.allclose(after[short], torch.full_like(after[short], target), atol=1e-3)
    assert torch.equal(p[~short], torch.zeros_like(p[~short]))
    assert torch.allclose(p - (p @ u / (u @ u))[:, None] * u, torch.zeros_like(p), atol=1e-4)  # along u, not n
    assert float((p[short] @ n).abs().div(p[short].norm(dim=1)).max()) < 0.99
    with pytest.raises(InputError, match="does not cross the boundary"):
        check_direction(-u, n)
    with pytest.raises(InputError, match="no column for mask"):
        label_direction(G, ["glasses", "beard", "hair_style", "hat"], "mask")
    from dataclasses import replace

    from latentedit.models.stylegan2 import Generator

    unconditional = Generator(replace(G.cfg, c_dim=0, label_prior=None, label_input="embed"))
    with pytest.raises(InputError, match="use the boundary prior"):
        label_direction(unconditional, _labels(path), "mask")


# -- the synthesizer ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["mask", "frame_glasses"])
def test_composited_edit_keeps_the_face_outside_the_accessorys_region(world, kind):
    """The default synthesizer composites G(w + p + offset) into the origin: inside the accessory's
    expected region (where the mask is 1) the image is the edit's, far outside it the origin's, while
    the edit as it is changes the face there (the untrained offset moves every layer). Glasses blend
    features from the 16 x 16 block, feathered; masks paste the edit's pixels, so next to the region
    too the image is the origin's, and their region keeps clear of the origin's eyes as the bundle's
    parser reads them; frames clear their lenses with a parser (the shipped network's test below), and
    without one composite and record as before."""
    from latentedit.edit.compositing import COMPOSITING, composited, eyes_of, lenses_of
    from latentedit.edit.discrete import expected_region
    from latentedit.edit.regions import clear_of

    path, G, _ = world
    w = G.sample_w(6, seed=4, truncation=0.7)
    raw = DiscreteSynthesizer.load(kind, bundle=path, G=G, composite=False)(w)
    synth = DiscreteSynthesizer.load(kind, bundle=path, G=G)
    out = synth(w)
    assert torch.equal(out.latents, raw.latents) and torch.equal(out.origin, raw.origin)
    region = expected_region(synth.face3d, kind, out.origin)
    assert synth.parser is not None
    lenses = torch.zeros_like(region)
    if kind != "mask":  # no eye clearance recorded: as folders written before it existed record it
        assert synth.compositing_record() == {"from_resolution": 16, "feather": 1 / 32, "clear_lenses": True}
        with torch.no_grad():
            drawn, _ = composited(G, G.broadcast_w(w), out.latents, region, kind)  # without a parser: as drawn
        lenses = lenses_of(synth.parser, drawn) & (out.region[:, 0] >= 0.5)  # none, untrained: see the shipped test
        synth.parser = None  # a bundle without one composites as before, and records it as before
        assert synth.compositing_record() == {"from_resolution": 16, "feather": 1 / 32}
        assert torch.equal(synth(w).image, drawn)
    if kind == "mask":
        region = clear_of(region, eyes_of(synth.parser, out.origin), COMPOSITING[kind].eye_clearance)
        assert torch.equal(out.region[:, 0] == 1, region)
    assert out.region.shape == (6, 1, G.img_resolution, G.img_resolution)
    assert bool((out.region[:, 0] >= region.float()).all())  # the region wholly inside, feathered around
    inside = out.region[:, 0] == 1
    assert int(inside.sum()) >= 6 * 40  # an accessory's region at 64 px: hundreds of pixels per face
    assert float((out.image - raw.image).abs().amax(1)[inside & ~lenses].max()) < 1e-3  # fast vs reference path
    far = torch.nn.functional.max_pool2d(out.region, 9, stride=1, padding=4)[:, 0] == 0
    moved = (raw.image - raw.origin).abs().amax(1)[far].mean()
    kept = (out.image - out.origin).abs().amax(1)[far].mean()
    assert float(moved) > 0.05 and float(kept) < 0.2 * float(moved), (float(moved), float(kept))
    outside = out.region[:, 0] == 0
    beside = float((out.image - out.origin).abs().amax(1)[outside & ~far].max())
    if kind == "mask":  # a pixel paste: the origin's pixels right up to the region
        assert beside < 1e-3 and bool(((out.region == 0) | (out.region == 1)).all())
    else:  # the blended features reach a few pixels beyond it
        assert beside > 0.01


def test_synthesizer_images_and_batch_invariance(world):
    path, G, _ = world
    synth = DiscreteSynthesizer.load("mask", bundle=path, G=G, composite=False)
    w = G.sample_w(5, seed=3, truncation=0.7)
    out = synth(w, batch_size=5)
    with torch.no_grad():
        assert torch.equal(out.origin, G.synthesize(w))
        assert torch.allclose(out.prior_image, G.synthesize(G.broadcast_w(w) + out.prior[:, None]), atol=1e-5)
        assert torch.allclose(out.image, G.synthesize(out.latents), atol=1e-5)
    assert out.region is None
    assert out.offset.shape == (5, G.num_ws, G.w_dim) and out.offset.abs().sum() > 0
    assert torch.equal(out.prior, synth.priors(G.broadcast_w(w)))
    assert (out.image - out.prior_image).abs().max() > 1e-3  # the (untrained) offset changes the image
    small = synth(w, batch_size=2)
    # codes to float rounding; images through G's layers, whose oneDNN kernels sum in a batch-size
    # dependent order: 1.2e-5 seen on a Zen 4, bound 1e-4 (an 8-bit level is 7.8e-3)
    for name, atol in (("prior", 1e-5), ("offset", 1e-5), ("origin", 1e-4), ("prior_image", 1e-4), ("image", 1e-4)):
        diff = float((getattr(small, name) - getattr(out, name)).abs().max())
        assert diff <= atol, (name, diff)
    given = 0.3 * torch.randn(5, G.w_dim)
    with torch.no_grad():
        assert torch.allclose(synth(w, given).prior_image, G.synthesize(G.broadcast_w(w) + given[:, None]), atol=1e-5)
    with pytest.raises(InputError):
        synth(w, given[:4])
    with pytest.raises(InputError):
        synth(w, given * float("nan"))


def test_offset_network_round_trip_and_damage(world, tmp_path):
    path, G, nets = world
    net, settings = read_offset_network(path, "mask")
    ref = nets["mask"].state_dict()
    assert net.cfg == nets["mask"].cfg and set(net.state_dict()) == set(ref)
    assert all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())
    d = Direction.load("mask", bundle=path)
    assert torch.equal(settings["normal"], d.vector.float())
    assert settings["intercept"] == d.provenance["intercept"] and settings["distance"] == 3.0
    assert settings["boundary"] == "mask" and settings["template"] == "templates/mask.png"
    template = read_template((path, settings["template"]), 64)
    assert (template - accessory_template("mask")).abs().max() <= 1 / 127.5 + 1e-6
    with pytest.raises(FormatError, match="inside the bundle"):
        read_template((path, "../bundle/templates/mask.png"), 64)
    with pytest.raises(FormatError, match="no offset network for 'sunglasses'"):
        read_offset_network(path, "sunglasses")
    assert settings["direction"] is None  # a prior along the normal, as every network before label priors
    # a bundle holding only an offset network: tampered weights, then a missing prior normal
    b = tmp_path / "b"
    write_offset_network(b, "mask", nets["mask"], accessory_template("mask"), d.vector, 0.5, 2.0)
    data = bytearray((b / "offset_mask.safetensors").read_bytes())
    data[-5] ^= 0xFF
    (b / "offset_mask.safetensors").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="sha256"):
        read_offset_network(b, "mask")
    config = bundle.read_manifest(path)["networks"]["offset_mask"]["config"]
    bundle.write_bundle(b, {"offset_mask": ("fusion", config, nets["mask"].state_dict())}, merge=True)
    with pytest.raises(FormatError, match="prior.normal"):
        read_offset_network(b, "mask")


def test_offset_network_keeps_its_label_direction_and_the_synthesizer_moves_along_it(world, tmp_path):
    from latentedit.edit.discrete import label_direction

    path, G, nets = world
    d = Direction.load("mask", bundle=path)
    u = label_direction(G, _labels(path), "mask")
    b = tmp_path / "b"
    shutil.copytree(path, b)
    write_offset_network(b, "mask", nets["mask"], accessory_template("mask"), d.vector, d.provenance["intercept"], 3.0,
                         dtype=torch.float16, direction=u)
    _, settings = read_offset_network(b, "mask")
    assert settings["direction"].dtype == torch.float32 and torch.equal(settings["direction"], u)  # exact, not fp16
    synth = DiscreteSynthesizer.load("mask", bundle=b, G=G)
    w = G.sample_w(6, seed=1, truncation=0.7)
    want = prior_basis(w, d.vector, d.provenance["intercept"], 3.0, direction=u)
    assert want.abs().sum() > 0 and torch.equal(synth.priors(w), want) and torch.equal(synth.prior_direction, u)
    config = bundle.read_manifest(b)["networks"]["offset_mask"]["config"]
    state = {**nets["mask"].state_dict(), "prior.normal": d.vector.float()}
    for bad, message in ((u[:7], "has 7 values"), (torch.zeros_like(u), "finite, non-zero")):
        bundle.write_bundle(b, {"offset_mask": ("fusion", config, {**state, "prior.direction": bad})}, merge=True)
        with pytest.raises(FormatError, match=message):
            read_offset_network(b, "mask")


def test_frames_with_a_label_prior_replace_sunglasses(world, tmp_path):
    """Frame glasses along the generator's label replace sunglasses (REPLACES): a code past the
    sunglasses boundary first moves back across it along the sunglasses label, as far as it was past
    (to the bare side), then the frames prior as before; other codes get the frames prior alone, and
    `behind` is their own face. Sunglasses, and frames along the boundary's normal (no labels used),
    replace nothing, and record no rule."""
    from latentedit.edit.discrete import label_direction, mirrored_back, replaced_plane

    path, G, nets = world
    frames, sun = (Direction.load(k, bundle=path) for k in ("frame_glasses", "sunglasses"))
    u_frames, u_sun = (label_direction(G, _labels(path), k) for k in ("frame_glasses", "sunglasses"))
    b = tmp_path / "b"
    shutil.copytree(path, b)
    write_offset_network(b, "frame_glasses", nets["frame_glasses"], accessory_template("frame_glasses"), frames.vector,
                         frames.provenance["intercept"], 3.0, dtype=torch.float16, direction=u_frames)
    synth = DiscreteSynthesizer.load("frame_glasses", bundle=b, G=G)
    assert synth.replaced is not None
    w = G.sample_w(6, seed=2, truncation=0.7)
    n_sun, b_sun = sun.vector, sun.provenance["intercept"]
    # the first three wear sunglasses: moved along the label to distance 2 past the boundary
    lift = ((2.0 - signed_distance(w[:3], n_sun, b_sun)) / (u_sun @ (n_sun / n_sun.norm())))[:, None] * u_sun
    w = torch.cat([w[:3] + lift, w[3:]])
    w[3:] = torch.where((signed_distance(w[3:], n_sun, b_sun) > 0)[:, None], w[3:] - 5 * u_sun, w[3:])
    assert bool((signed_distance(w[:3], n_sun, b_sun) > 1.9).all() and (signed_distance(w[3:], n_sun, b_sun) <= 0).all())
    back = mirrored_back(w, synth.replaced)
    mirrored = signed_distance(w[:3] + back[:3], n_sun, b_sun)  # the three were at distance 2
    assert float((mirrored + 2.0).abs().max()) < 1e-3 and bool((back[3:] == 0).all())
    p = synth.priors(w)
    frames_prior = prior_basis(w + back, frames.vector, frames.provenance["intercept"], 3.0, direction=u_frames)
    assert torch.allclose(p, back + frames_prior) and torch.equal(p[3:], frames_prior[3:])
    assert float(signed_distance(w + p, frames.vector, frames.provenance["intercept"]).min()) > 3 - 1e-3
    with torch.no_grad():
        behind, own = synth.behind(w), G.synthesis(G.broadcast_w(w), noise_mode="const")
    assert torch.equal(behind[3:], own[3:]) and float((behind[:3] - own[:3]).abs().mean()) > 1e-3
    assert replaced_plane(G, b, "sunglasses") is None and replaced_plane(G, b, "mask") is None
    assert DiscreteSynthesizer.load("frame_glasses", bundle=path, G=G).replaced is None  # the normal's prior
    assert synth.replacing_record() == {"sunglasses": "mirrored"}
    assert DiscreteSynthesizer.load("frame_glasses", bundle=path, G=G).replacing_record() is None


def test_shipped_frames_show_the_face_behind_their_lenses():
    """The shipped frames network draws frames whose lenses the bundle's parser finds enclosed; there
    the delivered image is the face behind them (sunglasses taken off, for origins wearing them),
    tinted; elsewhere it is the edit as composited."""
    from latentedit.edit.compositing import clear_lenses, composited, lenses_of
    from latentedit.edit.discrete import expected_region
    from latentedit.formats import DEFAULT_BUNDLE, load_generator

    G = load_generator(DEFAULT_BUNDLE)
    synth = DiscreteSynthesizer.load("frame_glasses", bundle=DEFAULT_BUNDLE, G=G)
    w = G.sample_w(24, seed=5_000_000, truncation=0.7)[[0, 1, 2, 3, 17, 21]]  # 17, 21: sunglasses
    with torch.no_grad():
        out, behind = synth(w), synth.behind(w)
        region = expected_region(synth.face3d, "frame_glasses", out.origin)
        drawn, mask = composited(G, G.broadcast_w(w), out.latents, region, "frame_glasses")
    lenses = lenses_of(synth.parser, drawn) & (mask[:, 0] >= 0.5)
    assert int((lenses.flatten(1).sum(1) >= 10).sum()) >= 5  # both lenses of a frame: ~50 px at 64 px
    assert float((behind - out.origin).abs().amax((1, 2, 3))[4:].min()) > 0.1  # their sunglasses taken off
    assert float((out.image - clear_lenses(drawn, behind, lenses)).abs().max()) < 1e-5


def test_shipped_frames_take_the_sunglasses_off_the_faces_behind():
    """Codes past the shipped sunglasses boundary (held-out, truncation 0.7: 27 of the first 200, about
    two thirds of them wearing sunglasses by the classifier) are mirrored back across it, so the face
    their frames' lenses show wears none: 0 of 27 by the classifier, where moving them only onto the
    plane left 3 of 27 wearing them (and half-dark lenses on more)."""
    from latentedit.edit.discrete import accessory_present
    from latentedit.edit.discrete import signed_distance as distance
    from latentedit.formats import DEFAULT_BUNDLE, load_generator
    from latentedit.formats.evaluators import load_evaluators

    G = load_generator(DEFAULT_BUNDLE)
    synth = DiscreteSynthesizer.load("frame_glasses", bundle=DEFAULT_BUNDLE, G=G)
    classifier = load_evaluators(DEFAULT_BUNDLE, ["attributes"])["attributes"]
    w = G.sample_w(200, seed=5_000_000, truncation=0.7)
    past = w[distance(w, *synth.replaced[:2]) > 0]
    with torch.no_grad():
        wearing = accessory_present(classifier, G.synthesize(past), "sunglasses")
        behind = accessory_present(classifier, synth.behind(past), "sunglasses")
    assert len(past) >= 15 and int(wearing.sum()) >= len(past) // 2
    assert int(behind.sum()) <= 1



@pytest.mark.slow
def test_shipped_frames_over_sunglasses_pass_the_judges_as_the_rest_do():
    """The 120 first held-out codes of benchmarks/synthesize_world.py (truncation 0.7), frames edits by the
    shipped bundle judged by all its judges: the codes past the sunglasses boundary (16) pass at the
    issue's 0.95 bar like the others (measured: 16 of 16 mirrored, 13 of 16 moved onto the plane; the
    rest 102 of 104 either way)."""
    from latentedit.edit.discrete import expected_region
    from latentedit.edit.discrete import signed_distance as distance
    from latentedit.formats import DEFAULT_BUNDLE, load_networks

    from conftest import load_benchmark

    bench = load_benchmark("synthesize_world")
    nets = load_networks(DEFAULT_BUNDLE)
    G, D = nets.G.eval(), nets.D.eval()
    ev = bench.world_evaluators(DEFAULT_BUNDLE)
    synth = DiscreteSynthesizer.load("frame_glasses", bundle=DEFAULT_BUNDLE, G=G)
    w = G.sample_w(120, seed=5_000_000, truncation=0.7)
    passed = []
    with torch.no_grad():
        for c in w.split(40):
            out = synth(c, batch_size=40)
            judged = bench.measure(out.origin, out.image, "frame_glasses", ev, D,
                                   expected=expected_region(ev["face3d"], "frame_glasses", out.origin),
                                   behind=synth.behind(c, out.origin))
            passed.append(judged["all_judges"] > 0.5)
    passed, past = torch.cat(passed), distance(w, *synth.replaced[:2]) > 0
    assert int(past.sum()) >= 10
    assert float(passed[past].float().mean()) >= 0.95 and float(passed[~past].float().mean()) >= 0.95

def test_accessory_templates_hold_only_the_accessory():
    from latentedit.world.templates import ACCESSORIES, accessory_region, accessory_template

    for kind in ACCESSORIES:
        t = accessory_template(kind, 64)
        drawn = (t < 1).any(0)
        assert t.shape == (3, 64, 64) and 20 < int(drawn.sum()) < 64 * 64 // 3, kind
        rows = drawn.any(1).nonzero()
        if kind == "mask":  # the lower face
            assert rows.float().mean() > 36
        else:  # the eye line
            assert 20 < rows.float().mean() < 40
        # the expected region (frame + lenses for glasses) holds every drawn pixel of the template
        region = accessory_region(kind, 64)
        assert region.dtype == torch.bool and bool(region[drawn].all()), kind
    # frame glasses draw the frame only: fewer pixels than sunglasses (frame + lenses)
    assert (accessory_template("frame_glasses") < 1).any(0).sum() < (accessory_template("sunglasses") < 1).any(0).sum()
    with pytest.raises(InputError, match="unknown accessory"):
        accessory_template("hat")


def test_the_seen_judge_allows_the_face3d_views_pixel_of_slack():
    """The judge as edits meet it: the region at the bundled face3d evaluator's view of the bare face,
    the world's frames read by the bundled parser. Its reading of the view is a pixel or two off, and
    frames are thin: a pixel's slack passes the world's own frames (0.990 of these 200; 0.935 without
    it), while frames drawn 6 px low still fail (0.205 pass; 0.075 without) and bare faces are never seen."""
    from latentedit.edit.discrete import expected_region, seen_in_region
    from latentedit.formats import DEFAULT_BUNDLE
    from latentedit.formats.evaluators import load_evaluators
    from latentedit.world.templates import world_wearing

    ev = load_evaluators(DEFAULT_BUNDLE, ["parser", "face3d"])
    worn, bare = (world_wearing(k, 200, 9_100_000).image for k in ("frame_glasses", None))
    with torch.no_grad():
        region = expected_region(ev["face3d"], "frame_glasses", bare)
        labels, bare_labels = (ev["parser"](x).argmax(1) for x in (worn, bare))
    seen = seen_in_region(labels, "frame_glasses", region)
    assert float(seen.float().mean()) >= 0.97
    assert float(seen_in_region(labels, "frame_glasses", region, slack=0).float().mean()) < float(seen.float().mean())
    low = torch.roll(labels, 6, 1)  # everything drawn 6 px lower
    assert float(seen_in_region(low, "frame_glasses", region).float().mean()) <= 0.3
    assert not seen_in_region(bare_labels, "frame_glasses", region).any()


def test_the_seen_judges_slack_is_a_pixel():
    """A made-up region and accessory: seen placed 1 px off the region in any direction, not 3 px off;
    without slack, only in place."""
    from latentedit.edit.discrete import seen_in_region
    from latentedit.world.params import LABEL_ID

    region = torch.zeros(64, 64, dtype=torch.bool)
    region[31, 20:44] = True  # a thin band, as frames are
    for (dy, dx), seen, without in (((0, 0), True, True), ((1, 0), True, False), ((-1, 1), True, False),
                                    ((3, 0), False, False), ((0, -3), True, True)):
        labels = torch.zeros(1, 64, 64, dtype=torch.long)
        labels[0, 31 + dy, 20 + dx:44 + dx] = LABEL_ID["glasses_frame"]
        assert bool(seen_in_region(labels, "frame_glasses", region)) == seen, (dy, dx)
        assert bool(seen_in_region(labels, "frame_glasses", region, slack=0)) == without, (dy, dx)


def test_accessory_seen_on_world_ground_truth():
    """The parser-side judge, fed exact world label maps and views: faces wearing the accessory are
    seen at every pose the world draws, the same faces without it are not. The frontal region alone
    (view None) misses most turned faces: the judge needs the face's view."""
    from latentedit import world
    from latentedit.edit.discrete import accessory_seen
    from latentedit.world.templates import _template_head, accessory_region

    for kind, on, off in (("mask", {"mask": 1}, {"mask": 0}),
                          ("sunglasses", {"glasses": "sun"}, {"glasses": "none"}),
                          ("frame_glasses", {"glasses": "frame"}, {"glasses": "none"})):
        with_it = world.sample(32, seed=3, hat=0, **on)
        without = world.sample(32, seed=3, hat=0, **off)
        assert accessory_seen(with_it.labels, kind, with_it.view).float().mean() >= 0.9, kind
        assert not accessory_seen(without.labels, kind, without.view).any(), kind
        if kind != "mask":  # a mask covers the lower face at any pose; glasses are small and move
            assert accessory_seen(with_it.labels, kind).float().mean() <= 0.7, kind
    frontal = accessory_region("frame_glasses", 64)
    own = _template_head("frame_glasses").view_vector()  # frontal, the seed's position
    assert torch.equal(accessory_region("frame_glasses", 64, own.repeat(2, 1)), frontal.expand(2, -1, -1))
    turned = accessory_region("frame_glasses", 64, own + torch.tensor([0.5, 0, 0, 0, 0, 0]))[0]
    assert (turned & frontal).sum() < 0.7 * frontal.sum()
    with pytest.raises(InputError, match="view must be"):
        accessory_region("mask", 64, torch.zeros(3))


def test_face_view_needs_world_views():
    """face_view reads the face3d evaluator's view; a network whose views are in another frame
    (unsup3d's rx / ry / rz) is refused by name."""
    from latentedit.edit.discrete import face_view, world_views
    from latentedit.models.face3d import Face3D, Face3DConfig
    from latentedit.train.evaluators import world_face3d_config

    x = torch.zeros(2, 3, 64, 64)
    assert face_view(Face3D(world_face3d_config()).eval(), x).shape == (2, 6)
    unsup3d = Face3D(Face3DConfig(nf=16, zdim=64, nf_encoder=16)).eval()
    assert world_views(Face3D(world_face3d_config())) and not world_views(unsup3d)
    with pytest.raises(InputError, match="not the world"):
        face_view(unsup3d, x)


def test_cached_template_features_follow_the_weights(world):
    """Inference reuses the template branch's features, but not after the branch's weights change
    (an offset trainer's sample snapshots run between its steps)."""
    path, G, _ = world
    synth = DiscreteSynthesizer.load("mask", bundle=path, G=G)
    origin = G.synthesize(G.sample_w(2, seed=4))
    with torch.no_grad():
        before = synth.offsets(origin)
        assert torch.equal(synth.offsets(origin), before)  # served from the cache
        next(synth.fusion.masknet.parameters()).mul_(1.5)  # an optimiser step, in place
        after = synth.offsets(origin)
        full = synth.fusion(resize(origin, synth.fusion.cfg.resolution),
                            synth.template.expand(2, -1, -1, -1),
                            synth.face3d(resize(origin, synth.face3d.cfg.image_size).clamp(-1, 1))["maps"])
    assert not torch.allclose(after, before, atol=1e-4)
    assert torch.allclose(after, full, atol=1e-5 * full.abs().max())
