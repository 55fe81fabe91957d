"""benchmarks/upconv_forms.py: every form of the 2x up-conv it times computes the generator's
conv2d_resample(x, w, f, up=2, padding=1) + bias, so its speed comparison is between equals."""
import torch

from latentedit.models.layers import conv2d_resample
from latentedit.ops import setup_filter

from conftest import load_benchmark

forms_module = load_benchmark("upconv_forms")


def test_every_form_is_the_up_conv():
    x, w, bias = forms_module.random_up_conv(6, 5, 7)
    runs = forms_module.forms(x, w, bias, torch.float32)
    ref = conv2d_resample(x, w, f=setup_filter([1, 3, 3, 1]), up=2, padding=1) + bias.reshape(1, -1, 1, 1)
    assert set(runs) == {"ours", "phase", "sub-pixel", "gemm"}
    for name, run in runs.items():
        out = run()
        assert out.shape == ref.shape, name
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max(), name


def test_sub_pixel_weight_places_each_tap_in_its_phase():
    """A kernel with one non-zero tap reaches only the output phase of that tap's parity."""
    for ky in range(3):
        for kx in range(3):
            w = torch.zeros(1, 1, 3, 3)
            w[0, 0, ky, kx] = 1.0
            x = torch.randn(1, 1, 4, 4)
            out = forms_module.sub_pixel_transposed(x, forms_module.sub_pixel_weight(w))
            ref = torch.nn.functional.conv_transpose2d(x, w.transpose(0, 1), stride=2)
            assert torch.allclose(out, ref, atol=1e-6), (ky, kx)
            assert out[..., (ky + 1) % 2::2, :].abs().max() == 0 and out[..., :, (kx + 1) % 2::2].abs().max() == 0
            assert out[..., ky % 2::2, kx % 2::2].abs().max() > 0
