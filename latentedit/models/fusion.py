"""The SD-GAN semantic fusion network: (face, accessory template, 3D maps) -> W+ offsets.

Four parts, named as in the released SD-GAN checkpoints so that their state dicts load with
strict=True (after stripping DataParallel's `module.`):

- `arcfacenet`: identity branch on the face, an SE-ResNet-18 (ArcFace's IR blocks), /16.
- `masknet`:    template branch on the accessory template image, a plain ResNet-18, /16.
- `encoder`:    the canonical 3D branch on the 9-channel maps (normal, shading, albedo), pooled
                into one style code per face channel.
- `fusion`:     ACE (SPADE + per-region style codes): the template features are instance
                normalised and modulated by the identity features and the 3D style codes.
- `regre`:      two locally connected layers (one weight per spatial position, then one per
                channel) and an affine InstanceNorm -> one w_dim offset per W+ layer.

The caller adds the offset to the latents: the edited image is G(w + p + offset), where w is
repeated over the num_ws layers and p is the InterfaceGAN prior (broadcast over layers).
Size is configuration: `FusionConfig.sdgan()` is the released network (256 px, 14 W+ layers),
`FusionConfig.small()` the one for the bundled 64 px world generator.
"""
import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from latentedit.errors import InputError

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16}


@dataclass
class FusionConfig:
    resolution: int = 256                 # face and template size; features are resolution/16
    id_widths: tuple = (64, 128, 256, 512)   # identity branch, 4 stages (stem = id_widths[0])
    id_depths: tuple = (2, 2, 2, 2)
    tpl_widths: tuple = (64, 128, 256, 512)  # template branch, 4 stages (stem = tpl_widths[0])
    tpl_depths: tuple = (2, 2, 2, 2)
    se_reduction: int = 16                # squeeze-excitation hidden = width / se_reduction
    maps_channels: int = 9                # normal (3) + shading (3) + albedo (3)
    maps_ngf: int = 32                    # 3D branch base width
    maps_down: int = 2                    # 3D branch downsamplings (then one 2x upsampling)
    style_dim: int = 512                  # 3D style code length (ACE's style_length)
    num_style_fc: int = 19                # ACE fc_mu{j} layers; only the first 3 (one per face
                                          # RGB channel) are used, the rest exist in the file
    spade_hidden: int = 512               # SPADE's shared conv width
    ace_kernel: int = 5                   # kernel of the ACE / SPADE convs
    num_ws: int = 14                      # W+ layers of the generator the offsets are for
    w_dim: int = 512

    def __post_init__(self):
        self.id_widths, self.id_depths = tuple(self.id_widths), tuple(self.id_depths)
        self.tpl_widths, self.tpl_depths = tuple(self.tpl_widths), tuple(self.tpl_depths)
        for name in ("id_widths", "id_depths", "tpl_widths", "tpl_depths"):
            if len(getattr(self, name)) != 4:
                raise InputError(f"FusionConfig.{name} needs 4 stages, got {getattr(self, name)}")
        if self.resolution % 16 or self.resolution < 16:
            raise InputError(f"FusionConfig.resolution must be a multiple of 16, got {self.resolution}")
        if self.num_style_fc < 3:
            raise InputError("FusionConfig.num_style_fc must be >= 3 (one per face RGB channel)")

    @property
    def feature_size(self):
        return self.resolution // 16

    @classmethod
    def sdgan(cls):
        """The released SD-GAN network (StyleGAN2 256 px, W+ of 14 layers)."""
        return cls()

    @classmethod
    def small(cls):
        """For the bundled 64 px world generator (10 W+ layers): 4x4 features, narrow branches."""
        return cls(resolution=64, id_widths=(16, 32, 64, 128), tpl_widths=(16, 32, 64, 128),
                   se_reduction=8, maps_ngf=16, style_dim=128, num_style_fc=3, spade_hidden=128,
                   ace_kernel=3, num_ws=10, w_dim=512)


def conv3x3(cin, cout, stride=1):
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def shortcut(cin, cout, stride):
    """1x1 projection when the shape changes, else None (identity)."""
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


# ----------------------------------------------------------------------------------------------
# Identity branch: SE-ResNet with IR blocks.

class SEBlock(nn.Module):
    def __init__(self, channels, reduction):
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction), nn.PReLU(),
                                nn.Linear(channels // reduction, channels), nn.Sigmoid())

    def forward(self, x):                                   # [N, C, H, W]
        return x * self.fc(x.mean((2, 3)))[:, :, None, None]


class IRBlock(nn.Module):
    """BN -> conv -> BN -> PReLU -> strided conv -> BN -> SE, plus shortcut; PReLU after the sum
    (one PReLU module, used twice, as in the released layout)."""

    def __init__(self, cin, cout, stride, se_reduction):
        super().__init__()
        self.bn0 = nn.BatchNorm2d(cin)
        self.conv1 = conv3x3(cin, cin)
        self.bn1 = nn.BatchNorm2d(cin)
        self.prelu = nn.PReLU()
        self.conv2 = conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = shortcut(cin, cout, stride)
        self.se = SEBlock(cout, se_reduction)

    def forward(self, x):
        out = self.prelu(self.bn1(self.conv1(self.bn0(x))))
        out = self.se(self.bn2(self.conv2(out)))
        res = x if self.downsample is None else self.downsample(x)
        return self.prelu(out + res)


class IdentityNet(nn.Module):
    """Face [N, 3, R, R] -> [N, widths[-1], R/16, R/16]: stem conv, 2x max pool, stages at
    strides 1, 2, 2, 2."""

    def __init__(self, widths, depths, se_reduction):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.prelu = nn.PReLU()
        self.maxpool = nn.MaxPool2d(2, 2)
        cin = widths[0]
        for i, (cout, depth) in enumerate(zip(widths, depths)):
            stride = 1 if i == 0 else 2
            blocks = [IRBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1, se_reduction)
                      for b in range(depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):
        x = self.maxpool(self.prelu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ----------------------------------------------------------------------------------------------
# Template branch: plain ResNet (basic blocks), no pooling stem, every stage strided.

class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.conv2 = conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = shortcut(cin, cout, stride)

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TemplateNet(nn.Module):
    """Template [N, 3, R, R] -> [N, widths[-1], R/16, R/16]: stem conv, 4 stages at stride 2."""

    def __init__(self, widths, depths):
        super().__init__()
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        cin = widths[0]
        for i, (cout, depth) in enumerate(zip(widths, depths)):
            blocks = [BasicBlock(cin if b == 0 else cout, cout, 2 if b == 0 else 1) for b in range(depth)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# ----------------------------------------------------------------------------------------------
# Canonical 3D branch.

class MapsEncoder(nn.Module):
    """Maps [N, 9, H, W] -> style codes [N, C_face, style_dim]: a conv encoder (/2^down, then
    one 2x transposed conv, tanh) whose output is averaged over the pixels where each face
    channel is non-zero (the face image, resized nearest, acts as a 3-channel region map)."""

    def __init__(self, cin, style_dim, ngf, down):
        super().__init__()
        act = lambda: nn.LeakyReLU(0.2)  # noqa: E731
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(cin, ngf, 3), nn.InstanceNorm2d(ngf), act()]
        for i in range(down):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), nn.InstanceNorm2d(2 * c), act()]
        top = ngf * 2 ** down
        # SD-GAN declares this norm with top // 2 features; without affine parameters the
        # count is unused, so the correct count gives the same numbers without a warning.
        layers += [nn.ConvTranspose2d(top, 2 * top, 3, stride=2, padding=1, output_padding=1),
                   nn.InstanceNorm2d(2 * top), act()]
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(2 * top, style_dim, 3), nn.Tanh()]
        self.model = nn.Sequential(*layers)  # indices matter: they are the checkpoint keys

    def forward(self, maps, face):
        codes = self.model(maps)                                            # [N, S, h, w]
        region = (F.interpolate(face, size=codes.shape[2:], mode="nearest") != 0).to(codes.dtype)
        area = region.sum((2, 3))                                           # [N, C_face]
        sums = torch.einsum("nshw,njhw->njs", codes, region)                # [N, C_face, S]
        # Empty regions give a zero code (as in SD-GAN), not a division by zero.
        return torch.where(area[..., None] > 0, sums / area.clamp(min=1)[..., None], torch.zeros_like(sums))


# ----------------------------------------------------------------------------------------------
# ACE fusion.

class SPADE(nn.Module):
    """Region map [N, label_nc, h, w] -> (gamma, beta) [N, norm_nc, h, w]."""

    def __init__(self, norm_nc, label_nc, hidden, ks):
        super().__init__()
        self.mlp_shared = nn.Sequential(nn.Conv2d(label_nc, hidden, ks, padding=ks // 2), nn.ReLU())
        self.mlp_gamma = nn.Conv2d(hidden, norm_nc, ks, padding=ks // 2)
        self.mlp_beta = nn.Conv2d(hidden, norm_nc, ks, padding=ks // 2)

    def forward(self, segmap):
        actv = self.mlp_shared(segmap)
        return self.mlp_gamma(actv), self.mlp_beta(actv)


class ACE(nn.Module):
    """x [N, norm_nc, h, w] (template features) is instance normalised and modulated by a blend
    of SPADE on segmap [N, label_nc, h', w'] (identity features) and convolutions of a map that
    paints each style code j (after fc_mu{j} + ReLU) where segmap channel j is non-zero."""

    def __init__(self, norm_nc, label_nc, style_dim, num_fc, hidden, ks):
        super().__init__()
        self.blending_gamma = nn.Parameter(torch.zeros(1))
        self.blending_beta = nn.Parameter(torch.zeros(1))
        self.noise_var = nn.Parameter(torch.zeros(norm_nc))  # in the checkpoints, unused at inference
        self.Spade = SPADE(norm_nc, label_nc, hidden, ks)
        for j in range(num_fc):  # separate names (not a ModuleList): the checkpoint keys
            self.add_module(f"fc_mu{j}", nn.Linear(style_dim, style_dim))
        self.conv_gamma = nn.Conv2d(style_dim, norm_nc, ks, padding=ks // 2)
        self.conv_beta = nn.Conv2d(style_dim, norm_nc, ks, padding=ks // 2)
        self.num_fc = num_fc

    def forward(self, x, segmap, style_codes):     # style_codes [N, J, style_dim], J <= num_fc
        if style_codes.shape[1] > self.num_fc:
            raise InputError(f"ACE has {self.num_fc} style fc layers, got {style_codes.shape[1]} codes")
        normalized = F.instance_norm(x)
        segmap = F.interpolate(segmap, size=x.shape[2:], mode="nearest")
        num = style_codes.shape[1]
        mus = torch.stack([F.relu(getattr(self, f"fc_mu{j}")(style_codes[:, j])) for j in range(num)], 1)  # [N, J, S]
        # The painted map holds mu_j where segmap channel j is non-zero, later regions overwriting
        # earlier ones: region j keeps the pixels no later region claims.
        inside = segmap[:, :num] != 0                                       # [N, J, h, w]
        claimed_later = inside.flip(1).cumsum(1).flip(1) > inside.to(torch.int64)
        regions = inside & ~claimed_later
        gamma_spade, beta_spade = self.Spade(segmap)
        a_gamma, a_beta = torch.sigmoid(self.blending_gamma), torch.sigmoid(self.blending_beta)
        gamma = a_gamma * conv_of_painted(self.conv_gamma, mus, regions) + (1 - a_gamma) * gamma_spade
        beta = a_beta * conv_of_painted(self.conv_beta, mus, regions) + (1 - a_beta) * beta_spade
        return normalized * (1 + gamma) + beta


def conv_of_painted(conv, values, regions):
    """conv(painted) for the map painted with values [N, J, C_in] on disjoint regions [N, J, h, w]
    (zero elsewhere), without painting it: each region's mask is convolved with the taps already
    multiplied by its value, J input channels instead of C_in (~C_in / J times fewer operations:
    the painted map is constant per region)."""
    n, num, h, w = regions.shape
    c_out, c_in, kh, kw = conv.weight.shape
    # A matrix product over the weight as [C_out, k, k, C_in]: a view, not a 26 MB copy per call,
    # when the weight is in channels_last memory (as FusionNet.for_inference keeps it).
    taps = conv.weight.permute(0, 2, 3, 1).reshape(-1, c_in) @ values.transpose(1, 2)   # [N, C_out*k*k, J]
    taps = taps.reshape(n, c_out, kh, kw, num).permute(0, 1, 4, 2, 3)     # [N, C_out, J, k, k]
    out = F.conv2d(regions.to(taps.dtype).reshape(1, n * num, h, w), taps.flatten(0, 1),
                   padding=conv.padding, groups=n)                           # one group per sample
    out = out.reshape(n, -1, h, w)
    return out if conv.bias is None else out + conv.bias[:, None, None]


# ----------------------------------------------------------------------------------------------
# Regressor.

class LocallyConnected1d(nn.Module):
    """A 1D convolution with unshared weights: weight [1, out, in, L, k] (the released layout;
    the leading 1 was a broadcast dimension there), optional bias [1, out, L].

    out[n, o, l] = sum_{c, k} x[n, c, l * stride + k] * weight[0, o, c, l, k] (+ bias[0, o, l]).
    SD-GAN computes this as (x.unfold(...)[:, None] * weight).sum([2, -1]), which materialises
    an [N, out, in, L, k] product (256 MiB per sample for the first regressor layer); the einsum
    below contracts c and k directly, the same sum without the temporary. The weight's memory is
    laid out [L, in, k, out] (the released shape is a view of it): the layout of the batched
    matrix product einsum runs, which otherwise copied the whole weight (0.5 GB) on every call.
    """

    def __init__(self, in_channels, out_channels, output_size, kernel_size=1, stride=1, bias=False):
        super().__init__()
        w = torch.randn(output_size, in_channels, kernel_size, out_channels)   # memory [L, in, k, out]
        # SD-GAN starts from unit normals; scaling by 1/sqrt(fan_in) keeps activations O(1).
        w = (w / (in_channels * kernel_size) ** 0.5).permute(3, 1, 0, 2).unsqueeze(0)  # [1, out, in, L, k]
        self.weight = nn.Parameter(w)
        self.bias = nn.Parameter(torch.zeros(1, out_channels, output_size)) if bias else None
        self.kernel_size, self.stride = kernel_size, stride

    def forward(self, x):                                          # [N, in, H]
        x = x.unfold(2, self.kernel_size, self.stride)             # [N, in, L, k]
        out = torch.einsum("nclk,oclk->nol", x, self.weight[0])    # [N, out, L]
        return out if self.bias is None else out + self.bias


class Regressor(nn.Module):
    """Fused features [N, C, h, w] -> offsets [N, num_ws, w_dim]: per-position C -> w_dim, then
    per-channel (h*w positions) -> num_ws, each with ReLU, then an affine InstanceNorm over w_dim."""

    def __init__(self, channels, positions, num_ws, w_dim):
        super().__init__()
        self.tree_connect_1 = nn.Sequential(LocallyConnected1d(channels, w_dim, positions), nn.ReLU())
        self.tree_connect_2 = nn.Sequential(LocallyConnected1d(positions, num_ws, w_dim), nn.ReLU())
        self.in3 = nn.InstanceNorm1d(num_ws, affine=True)

    def forward(self, x):
        x = self.tree_connect_1(x.flatten(2))                  # [N, w_dim, h*w]
        x = self.tree_connect_2(x.permute(0, 2, 1))            # [N, num_ws, w_dim]
        return self.in3(x)


# ----------------------------------------------------------------------------------------------

class FusionNet(nn.Module):
    """forward(face [N,3,R,R], template [N,3,R,R], maps9 [N,9,H,W]) -> offsets [N, num_ws, w_dim].
    Images in [-1, 1]; maps9 is `face3d.canonical_maps` (any size: it is pooled)."""

    def __init__(self, cfg: FusionConfig):
        super().__init__()
        self.cfg = cfg
        self.compute_dtype = torch.float32  # of all but the regressor; see for_inference
        self.arcfacenet = IdentityNet(cfg.id_widths, cfg.id_depths, cfg.se_reduction)
        self.masknet = TemplateNet(cfg.tpl_widths, cfg.tpl_depths)
        self.fusion = ACE(cfg.tpl_widths[-1], cfg.id_widths[-1], cfg.style_dim, cfg.num_style_fc,
                          cfg.spade_hidden, cfg.ace_kernel)
        self.regre = Regressor(cfg.tpl_widths[-1], cfg.feature_size ** 2, cfg.num_ws, cfg.w_dim)
        self.encoder = MapsEncoder(cfg.maps_channels, cfg.style_dim, cfg.maps_ngf, cfg.maps_down)

    def template_features(self, template):
        """The template branch alone: templates [K, 3, R, R] -> features [K, C_tpl, R/16, R/16]. A
        kind's template is fixed, so inference computes them once and passes `template_feat`.
        Always float32: in bf16 this branch moved the offsets ~10x more than bf16 in all the other
        parts together (released size, random weights: 2-6% vs 0.2-0.4%), and it runs once a kind."""
        r = self.cfg.resolution
        if template.ndim != 4 or tuple(template.shape[1:]) != (3, r, r):
            raise InputError(f"FusionNet: template must be [K, 3, {r}, {r}], got {list(template.shape)}")
        with torch.autocast(template.device.type, enabled=False):
            return self.masknet(template.float())

    def _compute(self, x):
        """The context the convolutional parts run in: autocast to compute_dtype unless fp32."""
        return torch.autocast(x.device.type, dtype=self.compute_dtype, enabled=self.compute_dtype != torch.float32)

    def for_inference(self, precision="fp32"):
        """An eval copy for inference without gradients, same maths: each BatchNorm that follows a
        convolution folded into it, the convolutional parts in channels_last memory and, with
        precision "bf16", their weights and arithmetic in bfloat16 (about 2x faster convolutions
        on CPUs with AVX-512 BF16 or AMX; tests/test_fusion.py bounds the offsets' change) except
        the template branch (float32 always, see template_features). Parts it does not change are
        shared with this network, not copied: the regressor (most of the parameters, float32
        always) and, in fp32, the 3D branch (no BatchNorm to fold, no layout gain)."""
        if precision not in PRECISIONS:
            raise InputError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        changed = {"arcfacenet", "masknet", "fusion"} | ({"encoder"} if precision != "fp32" else set())
        dtype = lambda name: torch.float32 if name == "masknet" else PRECISIONS[precision]  # noqa: E731
        fast = copy.copy(self)
        fast._modules = {name: _folded(m).to(dtype(name)) if name in changed else m
                         for name, m in self._modules.items()}
        fast.compute_dtype, fast.training = PRECISIONS[precision], False
        return fast

    def forward(self, face, template, maps9, template_feat=None):
        """template_feat: `template_features` of the templates ([N or 1, ...]; template unused)."""
        r, n = self.cfg.resolution, face.shape[0]
        given = (("face", face, 3),) if template_feat is not None else (("face", face, 3), ("template", template, 3))
        for name, t, c in given:
            if tuple(t.shape) != (n, c, r, r):
                raise InputError(f"FusionNet: {name} must be [{n}, {c}, {r}, {r}], got {list(t.shape)}")
        if maps9.ndim != 4 or maps9.shape[:2] != (n, self.cfg.maps_channels):
            raise InputError(f"FusionNet: maps9 must be [{n}, {self.cfg.maps_channels}, H, W], "
                             f"got {list(maps9.shape)}")
        tpl_feat = (self.template_features(template) if template_feat is None   # [N, C_tpl, R/16, R/16]
                    else template_feat.expand(n, -1, -1, -1))
        with self._compute(face):
            face_feat = self.arcfacenet(face)                  # [N, C_id, R/16, R/16]
            codes = self.encoder(maps9, face)                  # [N, 3, style_dim]
            fused = self.fusion(tpl_feat, face_feat, codes)    # [N, C_tpl, R/16, R/16]
        return self.regre(fused.float())                       # [N, num_ws, w_dim]


def _folded(module):
    """An eval copy of module with every BatchNorm that directly follows a convolution (the
    blocks' conv1/bn1, conv2/bn2, the shortcuts' projections) folded into that convolution, in
    channels_last memory. IRBlock's bn0 comes before its padded convolution: it stays."""
    module = copy.deepcopy(module).eval()
    for m in list(module.modules()):
        for conv, bn in (("conv1", "bn1"), ("conv2", "bn2")):
            if isinstance(getattr(m, conv, None), nn.Conv2d) and isinstance(getattr(m, bn, None), nn.BatchNorm2d):
                setattr(m, conv, fuse_conv_bn_eval(getattr(m, conv), getattr(m, bn)))
                setattr(m, bn, nn.Identity())
        if isinstance(getattr(m, "downsample", None), nn.Sequential):
            m.downsample = fuse_conv_bn_eval(*m.downsample)
    return module.to(memory_format=torch.channels_last)
