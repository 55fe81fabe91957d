"""benchmarks/winograd_conv.py: both Winograd forms it times are the 3x3 conv, forward and backward,
so its comparison with the direct conv is between equals."""
import torch
import torch.nn.functional as F

from conftest import load_benchmark

winograd = load_benchmark("winograd_conv")


def test_every_form_is_the_conv_and_its_gradients():
    torch.manual_seed(0)
    x = torch.randn(3, 6, 8, 6, requires_grad=True)  # H != W: tile rows and columns kept apart
    w = torch.randn(5, 6, 3, 3, requires_grad=True)  # O != C: the transforms keep inputs and outputs apart
    grad = torch.randn(3, 5, 8, 6)
    ref = F.conv2d(x, w, padding=1)
    ref_gx, ref_gw = torch.autograd.grad(ref, (x, w), grad)
    for name, form in winograd.FORMS.items():
        out = form(x, w)
        gx, gw = torch.autograd.grad(out, (x, w), grad)
        assert out.shape == ref.shape, name
        for got, want in ((out, ref), (gx, ref_gx), (gw, ref_gw)):
            assert (got - want).abs().max() <= 1e-5 * want.abs().max(), name
