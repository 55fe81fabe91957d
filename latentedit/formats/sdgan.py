"""SD-GAN fusion checkpoints: `{"model": state dict of DataParallel(Semantic_Fusion_Network)}`,
keys prefixed `module.` -> (FusionConfig, FusionNet), and back.

Read with `torch.load(weights_only=True)`: such a file holds dicts, tensors and numbers only
(OrderedDict is allowed by torch itself), so nothing is added to the allow-list. The
architecture is read from the weight shapes; input resolution from the regressor's positions.
"""
import re
from collections import OrderedDict
from pathlib import Path

import torch

from latentedit.errors import FormatError, InputError
from latentedit.formats.files import regular_file
from latentedit.formats.torch_file import load_torch_file
from latentedit.models.fusion import FusionConfig, FusionNet

PREFIX = "module."


def _shape(sd, key, what):
    if key not in sd:
        raise FormatError(f"{what}: not an SD-GAN fusion checkpoint, missing {key!r}")
    if not torch.is_tensor(sd[key]):
        raise FormatError(f"{what}: {key} is not a tensor")
    return tuple(sd[key].shape)


def _count(sd, pattern):
    """How many distinct integers fill the `(\\d+)` of pattern among the keys."""
    return len({m.group(1) for k in sd if isinstance(k, str) for m in [re.fullmatch(pattern, k)] if m})


def config_from_state(sd, what="checkpoint"):
    """FusionConfig read from the shapes of an (unprefixed) SD-GAN fusion state dict."""
    id_w, id_d, tpl_w, tpl_d = [], [], [], []
    for i in range(1, 5):
        id_w.append(_shape(sd, f"arcfacenet.layer{i}.0.conv2.weight", what)[0])
        id_d.append(_count(sd, rf"arcfacenet\.layer{i}\.(\d+)\.conv1\.weight"))
        tpl_w.append(_shape(sd, f"masknet.layer{i}.0.conv1.weight", what)[0])
        tpl_d.append(_count(sd, rf"masknet\.layer{i}\.(\d+)\.conv1\.weight"))
    se_hidden = _shape(sd, "arcfacenet.layer1.0.se.fc.0.weight", what)[0]
    maps = _shape(sd, "encoder.model.1.weight", what)               # [ngf, 9, 3, 3]
    n_convs = _count(sd, r"encoder\.model\.(\d+)\.weight")           # stem + downs + up + last
    lc1 = _shape(sd, "regre.tree_connect_1.0.weight", what)          # [1, w_dim, C, P, 1]
    lc2 = _shape(sd, "regre.tree_connect_2.0.weight", what)          # [1, num_ws, P, w_dim, 1]
    side = round(lc1[3] ** 0.5) if len(lc1) == 5 else 0
    if len(lc1) != 5 or len(lc2) != 5 or side * side != lc1[3] or n_convs < 3:
        raise FormatError(f"{what}: unexpected regressor / encoder shapes {list(lc1)}, {list(lc2)}")
    try:
        return FusionConfig(
            resolution=16 * side, id_widths=id_w, id_depths=id_d, tpl_widths=tpl_w, tpl_depths=tpl_d,
            se_reduction=max(1, id_w[0] // se_hidden), maps_channels=maps[1], maps_ngf=maps[0],
            maps_down=n_convs - 3, style_dim=_shape(sd, "fusion.fc_mu0.weight", what)[0],
            num_style_fc=_count(sd, r"fusion\.fc_mu(\d+)\.weight"),
            spade_hidden=_shape(sd, "fusion.Spade.mlp_shared.0.weight", what)[0],
            ace_kernel=_shape(sd, "fusion.conv_gamma.weight", what)[-1], num_ws=lc2[1], w_dim=lc1[1])
    except ValueError as e:  # InputError from the config's own checks
        raise FormatError(f"{what}: inconsistent SD-GAN fusion shapes ({e})") from None


def fusion_from_state(sd, what="checkpoint"):
    """Unprefixed SD-GAN fusion state dict -> (FusionConfig, FusionNet in eval mode)."""
    cfg = config_from_state(sd, what)
    with torch.device("meta"):  # no 128 M random numbers only to overwrite them
        net = FusionNet(cfg)
    expected = net.state_dict()
    sd = dict(sd)
    for k in expected:  # pre-1.0 torch checkpoints lack the BatchNorm step counters
        if k.endswith("num_batches_tracked") and k not in sd:
            sd[k] = torch.tensor(0, dtype=torch.long)
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    if missing:
        raise FormatError(f"{what}: missing {len(missing)} tensors, e.g. {missing[:3]}")
    if unexpected:
        raise FormatError(f"{what}: unexpected tensors, e.g. {unexpected[:3]}")
    state = {}
    for k, ref in expected.items():
        v = sd[k]
        if not torch.is_tensor(v):
            raise FormatError(f"{what}: {k} is not a tensor")
        if tuple(v.shape) != tuple(ref.shape):
            raise FormatError(f"{what}: {k} has shape {list(v.shape)}, expected {list(ref.shape)}")
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise FormatError(f"{what}: {k} contains NaN or infinite values")
        state[k] = v.to(device="cpu", dtype=ref.dtype)
    net.load_state_dict(state, strict=True, assign=True)
    return cfg, net.eval()


def load_sdgan_fusion(path):
    """An SD-GAN fusion checkpoint file -> (FusionConfig, FusionNet in eval mode)."""
    path = Path(path)
    ckpt = load_torch_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        found = sorted(map(str, ckpt))[:8] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise FormatError(f"{path}: not an SD-GAN fusion checkpoint (no 'model' state dict; found {found})")
    sd = {(k[len(PREFIX):] if isinstance(k, str) and k.startswith(PREFIX) else k): v
          for k, v in ckpt["model"].items()}
    return fusion_from_state(sd, str(path))


def fusion_state_dict_for_sdgan(net):
    """FusionNet -> {"model": OrderedDict("module.<key>": tensor)}, the released layout."""
    return {"model": OrderedDict((PREFIX + k, v.detach().clone()) for k, v in net.state_dict().items())}


# ----------------------------------------------------------------------------------------------
# Offset networks inside our own bundles: network "offset_<kind>" (kind "fusion") whose config
# holds the FusionConfig ("net"), the prior ("prior": boundary name, intercept, distance), the
# template's path inside the bundle and training figures; the boundary normal the network was
# trained with is stored next to its weights as tensor "prior.normal", so a later re-training of
# the bundle's boundaries cannot silently change an offset network's prior; a prior that moves
# along another W vector (the generator's label for the kind) stores it as "prior.direction".

OFFSET_PREFIX = "offset_"
PRIOR_NORMAL = "prior.normal"
PRIOR_DIRECTION = "prior.direction"


def offset_network_name(kind):
    return OFFSET_PREFIX + kind


def read_offset_network(path, kind):
    """-> (FusionNet in eval mode, settings {"normal", "intercept", "distance", "template", ...})."""
    from latentedit.formats import bundle

    path = Path(path)
    name = offset_network_name(kind)
    manifest = bundle.read_manifest(path)
    if name not in manifest["networks"]:
        have = sorted(n[len(OFFSET_PREFIX):] for n in manifest["networks"] if n.startswith(OFFSET_PREFIX))
        raise FormatError(f"{path}: bundle has no offset network for {kind!r} (has {have or 'none'}); "
                          f"train one with `latentedit train offset --kind {kind}`")
    entry, sd = bundle.read_network(path, name)
    cfg = entry.get("config", {})
    what = f"{path} [{name}]"
    try:
        net_cfg = FusionConfig(**cfg["net"])
        prior = cfg["prior"]
        settings = {"intercept": float(prior["intercept"]), "distance": float(prior["distance"]),
                    "boundary": prior.get("boundary"), "template": str(cfg["template"]),
                    "generator": cfg.get("generator")}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{what}: bad offset-network config ({type(e).__name__}: {e})") from None
    if PRIOR_NORMAL not in sd:
        raise FormatError(f"{what}: missing tensor {PRIOR_NORMAL!r}")
    settings["normal"], settings["direction"] = sd.pop(PRIOR_NORMAL), sd.pop(PRIOR_DIRECTION, None)
    for key, name in (("normal", PRIOR_NORMAL), ("direction", PRIOR_DIRECTION)):
        vector = settings[key]
        if vector is None:
            continue
        if vector.numel() != net_cfg.w_dim:
            raise FormatError(f"{what}: {name} has {vector.numel()} values, expected {net_cfg.w_dim}")
        if not torch.isfinite(vector).all() or not vector.norm() > 0:
            raise FormatError(f"{what}: {name} must be a finite, non-zero vector")
    from latentedit.formats.weights import load_weights

    return load_weights(FusionNet(net_cfg), sd, what).eval(), settings


def write_offset_network(path, kind, net, template, normal, intercept, distance, boundary=None,
                         generator=None, figures=None, provenance=None, dtype=torch.float32, direction=None):
    """Writes the offset network for `kind` and its template PNG (templates/<kind>.png) into
    bundle folder `path`, keeping everything else there. Template [3, R, R] in [-1, 1].
    dtype: storage of the weights (the prior's normal and direction are always float32);
    direction: the W vector the prior moves along (None: the normal)."""
    from dataclasses import asdict

    from latentedit.formats import bundle
    from latentedit.formats.images import save_png, to_uint8

    path = Path(path)
    rel = f"templates/{kind}.png"
    save_png(path / rel, to_uint8(template[None])[0])
    sd = dict(net.state_dict())
    sd[PRIOR_NORMAL] = torch.as_tensor(normal, dtype=torch.float32).reshape(-1)
    if direction is not None:
        sd[PRIOR_DIRECTION] = torch.as_tensor(direction, dtype=torch.float32).reshape(-1)
    config = {"net": asdict(net.cfg), "accessory": kind, "template": rel, "generator": generator,
              "prior": {"boundary": boundary, "intercept": float(intercept), "distance": float(distance)},
              "figures": figures or {}, "provenance": provenance or {}}
    return bundle.write_bundle(path, {offset_network_name(kind): ("fusion", config, sd)}, merge=True, dtype=dtype,
                               keep_fp32=(PRIOR_NORMAL, PRIOR_DIRECTION))


def read_template(source, resolution, alpha="white"):
    """A template image -> [3, R, R] in [-1, 1]; source: a path, or (bundle folder, path inside it).
    alpha: how transparent pixels are read (`latentedit.formats.image_input.read_image`)."""
    from latentedit.formats.image_input import read_image, to_tensor

    if isinstance(source, tuple):
        folder, rel = Path(source[0]), Path(source[1])
        if rel.is_absolute() or ".." in rel.parts:
            raise FormatError(f"{folder}: template path {str(rel)!r} must stay inside the bundle")
        source = folder / rel
    source = regular_file(source, "template image")
    return to_tensor([read_image(source, resolution, alpha, purpose="the fusion network's template")])[0]


# ----------------------------------------------------------------------------------------------
# SD-GAN's released set converted into one bundle: network "sdgan_<kind>" (kind "sdgan-fusion")
# holds a released fusion checkpoint's weights; its config the FusionConfig ("net"), the template
# PNGs copied byte for byte into templates/<kind>/ and how to read them, and test.py's settings
# (truncation, mean latent). The unsup3d encoder is the bundle's "face3d" evaluator, configured as
# SD-GAN's Demo runs it (`Face3DConfig.sdgan_demo()`). SD-GAN ships no boundary, so these networks
# carry no prior: priors come from interface files.

SDGAN_PREFIX = "sdgan_"
# our kind -> (names a user may give it on the command line, SD-GAN's template folder)
SDGAN_KINDS = {"mask": (("mask",), "mask"), "sunglasses": (("sunglasses", "glasses"), "glasses"),
               "frame_glasses": (("frame_glasses",), "frame_glasses")}
# SD-GAN's data loader read the RGBA templates with a 3-channel transform, which needs the alpha
# channel gone: PIL's convert("RGB") and cv2.imread both drop it and keep the colours under it.
TEMPLATE_ALPHA = "drop"


def sdgan_kind(name):
    """A command-line kind name (mask | sunglasses | glasses | frame_glasses) -> our kind."""
    for kind, (names, _) in SDGAN_KINDS.items():
        if name in names:
            return kind
    known = sorted(n for names, _ in SDGAN_KINDS.values() for n in names)
    raise InputError(f"unknown SD-GAN kind {name!r} (known: {', '.join(known)})")


def sdgan_kinds(path):
    """The kinds a bundle folder holds SD-GAN fusion networks for (empty for other paths)."""
    from latentedit.formats import bundle

    if not bundle.is_bundle(path):
        return []
    return sorted(n[len(SDGAN_PREFIX):] for n in bundle.read_manifest(path)["networks"] if n.startswith(SDGAN_PREFIX))


def write_sdgan_network(path, kind, net, templates, source=None, truncation=0.5, mean_latent="latent_avg",
                        mean_samples=4096):
    """Writes the fusion network for `kind` and copies its template files into bundle `path`."""
    from dataclasses import asdict

    from latentedit.formats import bundle
    from latentedit.formats.atomic import write_bytes

    path = Path(path)
    rels = []
    for i, file in enumerate(templates):
        rel = f"templates/{kind}/{i:02d}_{Path(file).name}"
        write_bytes(path / rel, Path(file).read_bytes())
        rels.append(rel)
    config = {"net": asdict(net.cfg), "accessory": kind, "templates": rels, "template_alpha": TEMPLATE_ALPHA,
              "truncation": float(truncation), "mean_latent": mean_latent, "mean_samples": int(mean_samples),
              "source": None if source is None else Path(str(source)).name}
    return bundle.write_bundle(path, {SDGAN_PREFIX + kind: ("sdgan-fusion", config, net.state_dict())}, merge=True)


def read_sdgan_network(path, kind):
    """-> (FusionNet in eval mode, settings {"templates": [K, 3, R, R], "truncation", "mean_latent",
    "mean_samples", "template_files"})."""
    from latentedit.formats import bundle
    from latentedit.formats.weights import load_weights

    path = Path(path)
    name = SDGAN_PREFIX + kind
    manifest = bundle.read_manifest(path)
    if name not in manifest["networks"]:
        have = sdgan_kinds(path) or "none"
        raise FormatError(f"{path}: bundle has no SD-GAN fusion network for {kind!r} (has {have}); "
                          "add one with `latentedit convert ... --sdgan-fusion KIND=PATH`")
    entry, sd = bundle.read_network(path, name)
    cfg = entry.get("config", {})
    try:
        net_cfg = FusionConfig(**cfg["net"])
        settings = {"truncation": float(cfg["truncation"]), "mean_latent": str(cfg["mean_latent"]),
                    "mean_samples": int(cfg["mean_samples"]), "template_files": [str(r) for r in cfg["templates"]],
                    "template_alpha": str(cfg.get("template_alpha", TEMPLATE_ALPHA))}
    except (KeyError, TypeError, ValueError) as e:
        raise FormatError(f"{path} [{name}]: bad SD-GAN network config ({type(e).__name__}: {e})") from None
    if not settings["template_files"]:
        raise FormatError(f"{path} [{name}]: lists no template images")
    settings["templates"] = torch.stack([read_template((path, rel), net_cfg.resolution, settings["template_alpha"])
                                         for rel in settings["template_files"]])
    return load_weights(FusionNet(net_cfg), sd, f"{path} [{name}]").eval(), settings


def read_sdgan_release(unsup3d, fusions, templates, G_cfg):
    """Reads and checks every part of SD-GAN's released set before anything is written, so that a
    bad part leaves no half-made bundle: the unsup3d checkpoint (-> Face3D run as SD-GAN's Demo),
    per {kind name: fusion checkpoint} the network (its W+ size against the generator's config
    G_cfg) and the image files of templates/<SD-GAN's folder for the kind>/, each read once.
    -> {"face3d": Face3D, "source": unsup3d, "fusions": {kind: (net, [template files], checkpoint)}}"""
    from latentedit.formats.image_input import list_images
    from latentedit.formats.unsup3d import config_from_state, face3d_from_state, read_checkpoint
    from latentedit.models.face3d import Face3DConfig

    if not Path(templates).is_dir():
        raise InputError(f"{templates}: no such folder (--sdgan-templates is SD-GAN's templates/ folder, "
                         f"holding {', '.join(folder + '/' for _, folder in SDGAN_KINDS.values())})")
    kinds = {sdgan_kind(name): file for name, file in fusions.items()}
    images = {}
    for kind in kinds:
        folder = Path(templates) / SDGAN_KINDS[kind][1]
        if not folder.is_dir():
            raise InputError(f"{templates}: no template folder {SDGAN_KINDS[kind][1]}/ for {kind}")
        images[kind] = list_images(folder)
    ckpt = read_checkpoint(unsup3d)
    sizes = config_from_state(ckpt, str(unsup3d))
    cfg = Face3DConfig.sdgan_demo()
    cfg.nf, cfg.zdim, cfg.nf_encoder = sizes.nf, sizes.zdim, sizes.nf_encoder
    release = {"face3d": face3d_from_state(ckpt, str(unsup3d), cfg), "source": unsup3d, "fusions": {}}
    for kind, file in kinds.items():
        _, net = load_sdgan_fusion(file)
        if (net.cfg.num_ws, net.cfg.w_dim) != (G_cfg.num_ws, G_cfg.w_dim):
            raise InputError(f"{file}: predicts {net.cfg.num_ws} x {net.cfg.w_dim} offsets, the generator "
                             f"has {G_cfg.num_ws} x {G_cfg.w_dim} W+ codes")
        for image in images[kind]:  # copied byte for byte: a file no reader opens is refused now
            read_template(image, net.cfg.resolution, TEMPLATE_ALPHA)
        release["fusions"][kind] = (net, images[kind], file)
    return release


def convert_sdgan_release(dst, release):
    """Adds SD-GAN's released parts, read by `read_sdgan_release`, to bundle folder `dst` (which
    holds the converted generator): the unsup3d encoder as "face3d" and each kind's fusion network
    with copies of its template images. -> the kinds written."""
    from latentedit.formats.evaluators import add_evaluators

    add_evaluators(dst, {"face3d": release["face3d"]},
                   provenance={"face3d": {"converted_from": Path(str(release["source"])).name,
                                          "as": "SD-GAN's unsup3d Demo"}})
    for kind, (net, images, file) in release["fusions"].items():
        write_sdgan_network(dst, kind, net, images, source=file)
    return list(release["fusions"])
