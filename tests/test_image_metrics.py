"""PSNR / SSIM of latentedit.metrics.image against direct numpy computations of their definitions."""
import math

import numpy as np
import torch

from latentedit.metrics.image import psnr, ssim


def naive_ssim(a, b, size=11, sigma=1.5):
    """Wang et al.'s SSIM with an explicit 2-D Gaussian window, pixel by pixel (valid region)."""
    x, y = (a.astype(np.float64) + 1) / 2, (b.astype(np.float64) + 1) / 2
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g)
    w /= w.sum()
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    out = []
    for c in range(x.shape[0]):
        H, W = x.shape[1:]
        for i in range(H - size + 1):
            for j in range(W - size + 1):
                px, py = x[c, i:i + size, j:j + size], y[c, i:i + size, j:j + size]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * px * px).sum() - mx ** 2, (w * py * py).sum() - my ** 2
                cxy = (w * px * py).sum() - mx * my
                out.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(out))


def test_ssim_matches_the_definition():
    g = torch.Generator().manual_seed(0)
    a = torch.rand([2, 3, 20, 18], generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn([2, 3, 20, 18], generator=g)).clamp(-1, 1)
    got = ssim(a, b)
    for i in range(2):
        assert abs(float(got[i]) - naive_ssim(a[i].numpy(), b[i].numpy())) < 1e-5
    assert torch.allclose(ssim(a, a), torch.ones(2), atol=1e-6)
    assert float(ssim(a, b)[0]) < float(ssim(a, (a + 0.05 * (b - a)))[0]) < 1


def test_psnr_is_per_sample_on_the_two_unit_range():
    a = torch.zeros([2, 3, 4, 4])
    b = a.clone()
    b[0] += 0.2  # mse 0.04 -> 10 log10(4 / 0.04) = 20 dB
    got = psnr(b, a)
    assert abs(float(got[0]) - 20.0) < 1e-4 and math.isinf(float(got[1]))
