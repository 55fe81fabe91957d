"""The SD-GAN test world of test_discrete.py, test_synthesize_cli.py and test_offset_training.py (the
`world` fixture: a copy of the bundled default whose trained offset networks are replaced by untrained
small ones for "mask" and "frame_glasses") and its helpers: signed_distance, and copy_without_offsets / small_net,
which the studio's accessory fixture and test_encoder_cli.py build their bundles with."""
import json
import shutil
from dataclasses import asdict

import pytest
import torch

from latentedit.edit.directions import Direction
from latentedit.formats import DEFAULT_BUNDLE, load_generator
from latentedit.formats.sdgan import write_offset_network
from latentedit.models.fusion import FusionConfig, FusionNet
from latentedit.world.templates import accessory_template

KINDS = ("mask", "frame_glasses")


def copy_without_offsets(src, dst):
    """The bundled default without its trained offset networks (tests add untrained ones)."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("offset_*", "templates"))
    manifest = json.loads((dst / "bundle.json").read_text())
    manifest["networks"] = {k: v for k, v in manifest["networks"].items() if not k.startswith("offset_")}
    (dst / "bundle.json").write_text(json.dumps(manifest))


def small_net(G, seed):
    torch.manual_seed(seed)
    return FusionNet(FusionConfig(**{**asdict(FusionConfig.small()), "num_ws": G.num_ws})).eval()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(bundle copy with untrained offset networks, G, {kind: net})."""
    path = tmp_path_factory.mktemp("discrete") / "bundle"
    copy_without_offsets(DEFAULT_BUNDLE, path)
    G = load_generator(path)
    nets = {}
    for seed, kind in enumerate(KINDS):
        nets[kind] = small_net(G, seed)
        d = Direction.load(kind, bundle=path)
        write_offset_network(path, kind, nets[kind], accessory_template(kind), d.vector,
                             d.provenance["intercept"], 3.0, boundary=kind)
    return path, G, nets


def signed_distance(w, normal, intercept):
    n = normal / normal.norm()
    return (w.mean(1) if w.ndim == 3 else w) @ n + intercept
