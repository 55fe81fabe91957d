"""LPIPS (VGG16 / AlexNet): distances equal the paper's formula, written here independently of
latentedit.models.lpips, on random trunks saved in torchvision's state-dict layout."""
import importlib.util

import pytest
import torch
import torch.nn.functional as F

from latentedit.errors import FormatError, InputError
from latentedit.formats.lpips import load_lpips, package_lin_path, split_spec

torch.set_num_threads(1)

# torchvision's features: (index, out channels, kernel, stride, padding) of each conv; pools by index.
VGG_CONVS = [(0, 64), (2, 64), (5, 128), (7, 128), (10, 256), (12, 256), (14, 256), (17, 512), (19, 512),
             (21, 512), (24, 512), (26, 512), (28, 512)]
ALEX_CONVS = [(0, 64, 11, 4, 2), (3, 192, 5, 1, 2), (6, 384, 3, 1, 1), (8, 256, 3, 1, 1), (10, 256, 3, 1, 1)]


def trunk_state(variant, seed=0):
    """A random ImageNet trunk in torchvision's layout (classifier included, as the real files are)."""
    g = torch.Generator().manual_seed(seed)
    convs = [(i, c, 3, 1, 1) for i, c in VGG_CONVS] if variant == "vgg" else ALEX_CONVS
    state, cin = {}, 3
    for i, c, k, _, _ in convs:
        state[f"features.{i}.weight"] = torch.randn([c, cin, k, k], generator=g) * (2 / (cin * k * k)) ** 0.5
        state[f"features.{i}.bias"] = torch.randn([c], generator=g) * 0.1
        cin = c
    state["classifier.6.weight"] = torch.randn([1000, 4096], generator=g)
    return state, convs


def lin_state(variant, seed=1):
    g = torch.Generator().manual_seed(seed)
    chans = (64, 128, 256, 512, 512) if variant == "vgg" else (64, 192, 384, 256, 256)
    return {f"lin{k}.model.1.weight": torch.rand([1, c, 1, 1], generator=g) for k, c in enumerate(chans)}


def reference(x, y, variant, trunk, convs, lins):
    """LPIPS v0.1 by its definition: scale, trunk activations at the tapped ReLUs, unit-normalise
    over channels, squared difference, 1x1 linear layer, spatial mean, sum over layers."""
    shift = torch.tensor([-.030, -.088, -.188]).reshape(1, 3, 1, 1)
    scale = torch.tensor([.458, .448, .450]).reshape(1, 3, 1, 1)

    def taps(h):
        h, out = (h - shift) / scale, []
        for n, (i, _, _, stride, pad) in enumerate(convs):
            if variant == "vgg" and i in (5, 10, 17, 24):
                h = F.max_pool2d(h, 2)
            if variant == "alex" and i in (3, 6):
                h = F.max_pool2d(h, 3, 2)
            w, b = trunk[f"features.{i}.weight"].double(), trunk[f"features.{i}.bias"].double()
            h = F.relu(F.conv2d(h, w, b, stride, pad))
            if variant == "alex" or i in (2, 7, 14, 21, 28):
                out.append(h)
        return out

    total = 0
    for k, (a, b) in enumerate(zip(taps(x.double()), taps(y.double()))):
        a = a / (a.square().sum(1, keepdim=True).sqrt() + 1e-10)
        b = b / (b.square().sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((a - b) ** 2, lins[f"lin{k}.model.1.weight"].double()).mean((2, 3))[:, 0]
    return total


@pytest.mark.parametrize("variant,size", [("vgg", 32), ("vgg", 40), ("alex", 64), ("alex", 35)])
def test_distance_equals_the_formula(tmp_path, variant, size):
    trunk, convs = trunk_state(variant)
    lins = lin_state(variant)
    torch.save(trunk, tmp_path / "trunk.pth")
    torch.save(lins, tmp_path / "lin.pth")
    net = load_lpips(tmp_path / "trunk.pth", lin_path=tmp_path / "lin.pth")
    assert net.variant == variant
    g = torch.Generator().manual_seed(2)
    x = torch.rand([3, 3, size, size], generator=g) * 2 - 1
    y = (x + 0.3 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    y[0] = x[0]  # identical images: distance 0
    with torch.no_grad():
        ours = net(x, y)
        ref = reference(x, y, variant, trunk, convs, lins)
    assert ref[1:].min() > 1e-3  # a distance the check can see
    assert torch.allclose(ours.double(), ref, rtol=1e-5, atol=1e-5), (ours, ref)
    assert float(ours[0]) == 0.0
    # the embedding: squared feature distance is the distance, so targets are embedded once
    with torch.no_grad():
        fx, fy = net.features(x), net.features(y)
    assert torch.allclose((fx - fy).square().sum(1).double(), ref, rtol=1e-5, atol=1e-5)


def test_large_images_are_downsampled_as_nvlabs_does(tmp_path):
    trunk, _ = trunk_state("vgg")
    torch.save(trunk, tmp_path / "t.pth")
    torch.save(lin_state("vgg"), tmp_path / "l.pth")
    net = load_lpips(f"{tmp_path / 't.pth'}:vgg", lin_path=tmp_path / "l.pth", max_size=32)
    x, y = torch.rand(2, 2, 3, 64, 64).mul(2).sub(1)
    small = [F.interpolate(t, size=(32, 32), mode="area") for t in (x, y)]
    with torch.no_grad():
        assert torch.allclose(net(x, y), net(*small), atol=1e-6)
    x.requires_grad_(True)
    net(x, y).sum().backward()  # differentiable in the images, the metric itself frozen
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in net.parameters())


def test_bad_files_and_inputs(tmp_path):
    trunk, _ = trunk_state("alex")
    torch.save(trunk, tmp_path / "alex.pth")
    torch.save(lin_state("alex"), tmp_path / "lin.pth")
    with pytest.raises(InputError, match="holds a alex trunk, not vgg"):
        load_lpips(f"{tmp_path / 'alex.pth'}:vgg", lin_path=tmp_path / "lin.pth")
    torch.save(lin_state("vgg"), tmp_path / "vgg_lin.pth")
    with pytest.raises(FormatError, match=r"lin1.model.1.weight should be \[1, 192, 1, 1\]"):
        load_lpips(tmp_path / "alex.pth", lin_path=tmp_path / "vgg_lin.pth")
    negative = lin_state("alex")
    negative["lin2.model.1.weight"][0, 5] = -1
    torch.save(negative, tmp_path / "neg.pth")
    with pytest.raises(FormatError, match="non-negative"):
        load_lpips(tmp_path / "alex.pth", lin_path=tmp_path / "neg.pth")
    del trunk["features.8.weight"]
    torch.save(trunk, tmp_path / "cut.pth")
    with pytest.raises(FormatError, match="lacks features.8.weight"):
        load_lpips(tmp_path / "cut.pth", lin_path=tmp_path / "lin.pth")
    torch.save({"g_ema": {}}, tmp_path / "other.pth")
    with pytest.raises(FormatError, match="not a torchvision VGG16 / AlexNet"):
        load_lpips(tmp_path / "other.pth", lin_path=tmp_path / "lin.pth")
    net = load_lpips(tmp_path / "alex.pth", lin_path=tmp_path / "lin.pth")
    with pytest.raises(InputError, match="at least 31 px"):
        net(torch.zeros(1, 3, 16, 16), torch.zeros(1, 3, 16, 16))
    assert split_spec("C:/w/vgg16.pth") == (split_spec("C:/w/vgg16.pth:vgg")[0], None)
    assert split_spec("a.pth:alex")[1] == "alex"


@pytest.mark.skipif(importlib.util.find_spec("lpips") is None, reason="the lpips package is not installed")
@pytest.mark.parametrize("variant", ["vgg", "alex"])
def test_loads_the_package_linear_weights(tmp_path, variant):
    trunk, _ = trunk_state(variant)
    torch.save(trunk, tmp_path / "trunk.pth")
    shipped = torch.load(package_lin_path(variant), map_location="cpu", weights_only=True)
    net = load_lpips(tmp_path / "trunk.pth")  # linear weights found in the installed package
    for k, w in enumerate(net.lins):
        assert torch.equal(w, shipped[f"lin{k}.model.1.weight"].flatten())
