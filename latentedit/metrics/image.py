"""Per-image metrics for images in [-1, 1], one value per sample: PSNR, SSIM, identity similarity."""
import torch
import torch.nn.functional as F


def psnr(a, b):
    """PSNR [N] in dB of images [N, C, H, W] in [-1, 1] (peak-to-peak 2); inf where they are equal."""
    mse = (a.float() - b.float()).square().mean(dim=(1, 2, 3))
    return 10 * torch.log10(4.0 / mse)


def _gaussian_window(size, sigma, device):
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma ** 2))
    return g / g.sum()


def ssim(a, b, window=11, sigma=1.5):
    """SSIM [N] of images [N, C, H, W] in [-1, 1] (Wang et al. 2004: Gaussian window 11 / sigma 1.5,
    K1 0.01, K2 0.03 on the [0, 1] range, valid-region means, averaged over the channels)."""
    x, y = (a.float() + 1) / 2, (b.float() + 1) / 2
    C = x.shape[1]
    g = _gaussian_window(window, sigma, x.device)
    kh = g.reshape(1, 1, 1, -1).repeat(C, 1, 1, 1)  # separable: rows, then columns
    kv = g.reshape(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, kh, groups=C), kv, groups=C)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(1, 2, 3))


@torch.no_grad()
def identity_similarity(a, b, net):
    """Cosine [N] of the identity embeddings of images a and b [N, 3, H, W] in [-1, 1] (clamped):
    `net` is any identity network of the loss protocol (latentedit.edit.losses): the identity
    embedder, ArcFace IR-SE-50, or a path to model_ir_se50.pth."""
    from latentedit.edit.losses import identity_loss

    loss = identity_loss(net, a.device)
    return 1 - loss.distance(loss.embed(a.clamp(-1, 1)), loss.embed(b.clamp(-1, 1)))
