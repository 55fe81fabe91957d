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
    assert set(runs) == {"transposed", "phase", "subpixel", "gemm"}
    for name, run in runs.items():
        out = run()
        assert out.shape == ref.shape, name
        assert (out - ref).abs().max() <= 1e-5 * ref.abs().max(), name
