"""The generator, discriminator and encoder of latentface's default bundle.

A StyleGAN2-style generator shaped for export to plain ONNX and for a gradient
graph that ONNX Runtime runs correctly (see RESEARCH.md §4):
- modulated convolutions are NON-fused: activations are scaled by the styles, the
  convolution weight stays a constant shared by the whole batch, and demodulation is a
  matmul `rsqrt(s^2 @ sum(W^2) + eps)`. The batch size stays symbolic.
- resampling is convolution only: bilinear x2 upsampling is a depthwise transposed
  convolution with the [1,3,3,1] kernel (no interpolate, whose gradient lowers to
  ScatterND-add).
- squares are written as `x * x` (the gradient of pow emits a slow Pow(x, 1)).
The discriminator is only used for training, so it may use anything.
"""
import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)


def lrelu(x):
    return F.leaky_relu(x, 0.2) * SQRT2


def bilinear_kernel(channels):
    """Depthwise [C,1,4,4] kernel: with stride 2 and padding 1 it is bilinear x2."""
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k2 = torch.outer(k, k) / 16.0
    return k2.expand(channels, 1, 4, 4).contiguous()


def upsample2x(x, kernel):
    return F.conv_transpose2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


class EqualLinear(nn.Module):
    """Fully connected layer with the equalised learning rate of StyleGAN."""

    def __init__(self, in_dim, out_dim, bias_init=0.0, lr_mul=1.0, act=False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_dim], float(bias_init) / lr_mul))
        self.w_gain = lr_mul / math.sqrt(in_dim)
        self.b_gain = lr_mul
        self.act = act

    def forward(self, x):
        x = F.linear(x, self.weight * self.w_gain, self.bias * self.b_gain)
        return lrelu(x) if self.act else x


class MappingNetwork(nn.Module):
    def __init__(self, z_dim, w_dim, num_layers=4, lr_mul=0.01):
        super().__init__()
        self.z_dim, self.w_dim = z_dim, w_dim
        dims = [z_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, act=True) for i in range(num_layers))

    def forward(self, z):  # z [B, z_dim] -> w [B, w_dim]
        x = z * torch.rsqrt((z * z).mean(dim=1, keepdim=True) + 1e-8)
        for layer in self.layers:
            x = layer(x)
        return x


class ModulatedConv(nn.Module):
    """Style-modulated convolution, non-fused (see module docs)."""

    def __init__(self, in_ch, out_ch, w_dim, kernel=3, up=False, demodulate=True):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.pad = kernel // 2
        self.up = up
        self.demodulate = demodulate
        if up:
            self.register_buffer("up_kernel", bilinear_kernel(in_ch), persistent=False)

    def forward(self, x, w):
        styles = self.affine(w)  # [B, in]
        weight = self.weight * self.gain
        x = x * styles[:, :, None, None]
        if self.up:
            x = upsample2x(x, self.up_kernel)
        x = F.conv2d(x, weight, padding=self.pad)
        if self.demodulate:
            wsq = (weight * weight).sum(dim=[2, 3])  # [out, in]
            d = torch.rsqrt((styles * styles) @ wsq.t() + 1e-8)  # [B, out]
            x = x * d[:, :, None, None]
        return x


class SynthesisLayer(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim, res, up=False):
        super().__init__()
        self.conv = ModulatedConv(in_ch, out_ch, w_dim, up=up)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.res = res

    def forward(self, x, w, noise):
        x = self.conv(x, w)
        x = x + noise * self.noise_strength
        return lrelu(x + self.conv.bias[None, :, None, None])


class ToRGB(nn.Module):
    def __init__(self, in_ch, w_dim):
        super().__init__()
        self.conv = ModulatedConv(in_ch, 3, w_dim, kernel=1, demodulate=False)

    def forward(self, x, w):
        return self.conv(x, w) + self.conv.bias[None, :, None, None]


def default_channels(resolution, max_ch=256, base=2048):
    return {r: min(base // r, max_ch) for r in [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]}


class SynthesisNetwork(nn.Module):
    """w+ [B, num_ws, w_dim] + noise maps -> image [B, 3, H, W] in about [-1, 1]."""

    def __init__(self, w_dim, resolution, channels):
        super().__init__()
        self.w_dim, self.resolution = w_dim, resolution
        resolutions = [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]
        self.const = nn.Parameter(torch.randn(channels[4], 4, 4))
        self.layers = nn.ModuleList()
        self.torgbs = nn.ModuleList()
        self.noise_shapes = []
        # W+ bookkeeping as in StyleGAN2: each block reads its convs' rows and the next
        # row for its toRGB; the next block starts at that same row.
        self.layer_ws, self.torgb_ws = [], []
        w_idx = 0
        for res in resolutions:
            if res == 4:
                self.layers.append(SynthesisLayer(channels[4], channels[4], w_dim, 4))
                self.layer_ws.append(w_idx)
                self.noise_shapes.append([1, 4, 4])
                w_idx += 1
            else:
                self.layers.append(SynthesisLayer(channels[res // 2], channels[res], w_dim, res, up=True))
                self.layers.append(SynthesisLayer(channels[res], channels[res], w_dim, res))
                self.layer_ws += [w_idx, w_idx + 1]
                self.noise_shapes += [[1, res, res], [1, res, res]]
                w_idx += 2
            self.torgbs.append(ToRGB(channels[res], w_dim))
            self.torgb_ws.append(w_idx)
        self.num_ws = w_idx + 1
        self.register_buffer("rgb_up_kernel", bilinear_kernel(3), persistent=False)

    def make_noise(self, batch, generator=None, device="cpu"):
        return [torch.randn([batch] + s, generator=generator, device=device) for s in self.noise_shapes]

    def forward(self, ws, noise):
        x = self.const[None].expand(ws.shape[0], -1, -1, -1)
        img = None
        li = 0
        for bi, torgb in enumerate(self.torgbs):
            n_layers = 1 if bi == 0 else 2
            for _ in range(n_layers):
                x = self.layers[li](x, ws[:, self.layer_ws[li]], noise[li])
                li += 1
            y = torgb(x, ws[:, self.torgb_ws[bi]])
            img = y if img is None else upsample2x(img, self.rgb_up_kernel) + y
        return img


class Generator(nn.Module):
    def __init__(self, z_dim=256, w_dim=256, resolution=64, max_ch=256, map_layers=4, base=2048):
        super().__init__()
        self.z_dim, self.w_dim, self.resolution = z_dim, w_dim, resolution
        self.config = dict(z_dim=z_dim, w_dim=w_dim, resolution=resolution, max_ch=max_ch, map_layers=map_layers,
                           base=base)
        self.mapping = MappingNetwork(z_dim, w_dim, map_layers)
        self.synthesis = SynthesisNetwork(w_dim, resolution, default_channels(resolution, max_ch, base))
        self.num_ws = self.synthesis.num_ws
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, noise=None, psi=1.0, mix_prob=0.0, update_w_avg=False):
        w = self.mapping(z)
        if update_w_avg:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, 0.995))
        if psi != 1.0:
            w = self.w_avg.lerp(w, psi)
        ws = w[:, None].repeat(1, self.num_ws, 1)
        if mix_prob > 0:
            # style mixing: a second latent takes over from a random layer on
            w2 = self.mapping(torch.randn_like(z))
            cut = torch.randint(1, self.num_ws, [z.shape[0]], device=z.device)
            cut = torch.where(torch.rand([z.shape[0]], device=z.device) < mix_prob, cut,
                              torch.full_like(cut, self.num_ws))
            keep = (torch.arange(self.num_ws, device=z.device)[None] < cut[:, None])[:, :, None]
            ws = torch.where(keep, ws, w2[:, None].expand_as(ws))
        if noise is None:
            noise = self.synthesis.make_noise(z.shape[0], device=z.device)
        return self.synthesis(ws, noise)


# --------------------------------------------------------------------------- discriminator
class Conv(nn.Module):
    def __init__(self, in_ch, out_ch, kernel=3, act=True, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.pad, self.act = kernel // 2, act

    def forward(self, x):
        x = F.conv2d(x, self.weight * self.gain, self.bias, padding=self.pad)
        return lrelu(x) if self.act else x


class DBlock(nn.Module):
    def __init__(self, in_ch, out_ch):
        super().__init__()
        self.conv0 = Conv(in_ch, in_ch)
        self.conv1 = Conv(in_ch, out_ch)
        self.skip = Conv(in_ch, out_ch, kernel=1, act=False, bias=False)

    def forward(self, x):
        y = self.skip(F.avg_pool2d(x, 2))
        x = self.conv0(x)
        x = self.conv1(F.avg_pool2d(x, 2))
        return (x + y) / SQRT2


class Discriminator(nn.Module):
    def __init__(self, resolution=64, max_ch=256, mbstd_group=4, base=2048):
        super().__init__()
        ch = default_channels(resolution, max_ch, base)
        self.from_rgb = Conv(3, ch[resolution], kernel=1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DBlock(ch[res], ch[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.mbstd_group = mbstd_group
        self.conv = Conv(ch[4] + 1, ch[4])
        self.fc = EqualLinear(ch[4] * 16, ch[4], act=True)
        self.out = EqualLinear(ch[4], 1)

    def forward(self, img):
        x = self.blocks(self.from_rgb(img))
        b, c, h, w = x.shape
        g = min(self.mbstd_group, b)
        if b % g:
            g = 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean(dim=[1, 2, 3])
        y = y.reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        x = self.conv(torch.cat([x, y], 1))
        return self.out(self.fc(x.flatten(1)))


# --------------------------------------------------------------------------- encoder
class Encoder(nn.Module):
    """image [B,3,H,W] -> w+ [B,num_ws,w_dim], predicted as an offset from w_avg.

    A plain residual CNN: it only has to land inversion near the answer, the
    optimiser does the rest.
    """

    def __init__(self, resolution, num_ws, w_dim, max_ch=256, hidden=512):
        super().__init__()
        ch = default_channels(resolution, max_ch)
        self.num_ws, self.w_dim = num_ws, w_dim
        self.config = dict(resolution=resolution, num_ws=num_ws, w_dim=w_dim, max_ch=max_ch, hidden=hidden)
        self.from_rgb = Conv(3, ch[resolution], kernel=1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(DBlock(ch[res], ch[res // 2]))
            res //= 2
        self.blocks = nn.Sequential(*blocks)
        self.fc = EqualLinear(ch[4] * 16, hidden, act=True)
        self.head = EqualLinear(hidden, num_ws * w_dim)
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, img):
        x = self.blocks(self.from_rgb(img))
        x = self.head(self.fc(x.flatten(1)))
        return self.w_avg[None, None] + x.reshape(-1, self.num_ws, self.w_dim)


def count_params(module):
    return sum(p.numel() for p in module.parameters())


def seeded_noise(synthesis, batch, seed=0):
    g = torch.Generator().manual_seed(seed)
    return synthesis.make_noise(batch, generator=g)


if __name__ == "__main__":
    G = Generator()
    D = Discriminator()
    print("G", count_params(G), "D", count_params(D), "num_ws", G.num_ws, G.synthesis.noise_shapes)
    z = torch.randn(4, 256)
    print(G(z).shape, D(G(z)).shape)
    # bilinear check
    x = torch.randn(2, 5, 8, 8)
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    got = upsample2x(x, bilinear_kernel(5))
    print("bilinear interior err", (ref - got)[:, :, 1:-1, 1:-1].abs().max().item())
    _ = np
