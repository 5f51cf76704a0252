"""The VAE of latentface's default bundle: a convolutional Gaussian VAE on faces in [-1, 1].

    encoder q(z|x) = N(mu(x), diag(exp(logvar(x))))       (forward only: vae_encoder)
    decoder p(x|z) = N(decode(z), diag(sigma_c^2))         (vae_decoder, vae_decoder_grad)
    prior   p(z)   = N(0, I),  z_dim = 128 by default

The decoder's likelihood has a learned per-channel log-scale `log_sigma` (3 numbers,
a "calibrated decoder", Rybkin et al. 2021 sigma-VAE): the balance between the pixel
term and the KL is learned instead of hand-tuned, and the ELBO is a proper bound in
nats. `log_sigma` is not part of any ONNX graph (the graphs output the decoder mean);
a consumer that computes the neg-ELBO score needs it from the manifest.

Export rules (RESEARCH.md §4), because the decoder's gradient is exported:
- the decoder upsamples only with networks.upsample2x (depthwise conv-transpose, the
  bilinear [1,3,3,1] kernel): no F.interpolate, no pooling, no normalisation layers;
- plain equalised-lr convolutions + leaky ReLU (networks.Conv / EqualLinear);
- squares as x * x; eps constants are real ops.
The encoder runs forward only; it downsamples with avg_pool2d.

After training, `fold_prior` re-standardises the latent to the aggregate posterior of
the training faces (an exact reparametrisation folded into the two linear layers; the
prior stays N(0, I) in the new coordinates, so the bundle contract is unchanged).

Likelihood conventions (documented once here, used by eval_vae and the manifest):
- `elbo()` returns -ELBO in nats per image for the continuous density of x in [-1, 1]
  (D = 3*H*W dims).
- On the 8-bit scale u = 127.5 (x + 1) in [0, 256) the density changes by the Jacobian:
  nll_8bit = nll_[-1,1] + D * log(127.5). With uniformly dequantised data
  (u + U(-1/2, 1/2), see `dequantize`) this is an upper bound on the discrete NLL;
  bits/dim = nll_8bit / (D * ln 2).
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .metrics import bits_per_dim, gaussian_log_px, kl_normal, nats_8bit  # noqa: F401 (the VAE's conventions)
from .networks import Conv, EqualLinear, bilinear_kernel, upsample2x


def vae_channels(resolution, max_ch=128, base=1024):
    """{res: channels} for res = 4 .. resolution (base // res, capped at max_ch, >= 8)."""
    return {r: max(8, min(base // r, max_ch)) for r in [2 ** i for i in range(2, int(math.log2(resolution)) + 1)]}


class VaeDecoder(nn.Module):
    """z [B, z_dim] -> image mean [B, 3, R, R]. Export-safe (see module docs)."""

    def __init__(self, resolution, z_dim, ch):
        super().__init__()
        self.resolution, self.z_dim, self.c4 = resolution, z_dim, ch[4]
        self.fc = EqualLinear(z_dim, ch[4] * 16, act=True)
        self.conv4 = Conv(ch[4], ch[4])
        blocks = []
        res = 8
        while res <= resolution:
            blocks.append(nn.ModuleList([Conv(ch[res // 2], ch[res]), Conv(ch[res], ch[res])]))
            self.register_buffer(f"up_kernel_{res}", bilinear_kernel(ch[res // 2]), persistent=False)
            res *= 2
        self.blocks = nn.ModuleList(blocks)
        self.to_rgb = Conv(ch[resolution], 3, kernel=1, act=False)

    def forward(self, z):
        x = self.fc(z).reshape(-1, self.c4, 4, 4)
        x = self.conv4(x)
        res = 8
        for c0, c1 in self.blocks:
            x = upsample2x(x, getattr(self, f"up_kernel_{res}"))
            x = c1(c0(x))
            res *= 2
        return self.to_rgb(x)


class VaeEncoder(nn.Module):
    """image [B, 3, R, R] -> (mu, logvar) [B, z_dim] each. Forward only."""

    def __init__(self, resolution, z_dim, ch):
        super().__init__()
        self.from_rgb = Conv(3, ch[resolution], kernel=1)
        blocks = []
        res = resolution
        while res > 4:
            blocks.append(nn.ModuleList([Conv(ch[res], ch[res]), Conv(ch[res], ch[res // 2])]))
            res //= 2
        self.blocks = nn.ModuleList(blocks)
        self.conv4 = Conv(ch[4], ch[4])
        self.fc = EqualLinear(ch[4] * 16, 2 * z_dim)
        self.z_dim = z_dim

    def forward(self, img):
        x = self.from_rgb(img)
        for c0, c1 in self.blocks:
            x = F.avg_pool2d(c1(c0(x)), 2)
        x = self.conv4(x)
        h = self.fc(x.flatten(1))
        return h[:, :self.z_dim], h[:, self.z_dim:]


class VAE(nn.Module):
    def __init__(self, resolution=64, z_dim=128, max_ch=128, base=1024, init_log_sigma=-1.5):
        super().__init__()
        self.resolution, self.z_dim = resolution, z_dim
        self.config = dict(resolution=resolution, z_dim=z_dim, max_ch=max_ch, base=base)
        ch = vae_channels(resolution, max_ch, base)
        self.encoder = VaeEncoder(resolution, z_dim, ch)
        self.decoder = VaeDecoder(resolution, z_dim, ch)
        # per-channel decoder log standard deviation (the data scale is [-1, 1])
        self.log_sigma = nn.Parameter(torch.full([3], float(init_log_sigma)))

    @property
    def dims(self):
        return 3 * self.resolution * self.resolution

    def encode(self, image):
        return self.encoder(image)

    def decode(self, z):
        return self.decoder(z)

    def log_sigma_clamped(self):
        # floor at sigma = 1/255 (about a half 8-bit level): keeps the density finite
        return self.log_sigma.clamp(min=math.log(1.0 / 255.0))

    def log_px(self, x, mean):
        """log N(x; mean, sigma^2) summed over pixels -> [B] nats ([-1,1] scale)."""
        return gaussian_log_px(x, mean, self.log_sigma_clamped())

    def forward(self, x, gen=None):
        """Training pass -> (recon_nll [B], kl [B], mean image) for one posterior sample."""
        mu, logvar = self.encode(x)
        eps = torch.randn(mu.shape, generator=gen, dtype=mu.dtype, device=mu.device)
        z = mu + torch.exp(0.5 * logvar) * eps
        mean = self.decode(z)
        return -self.log_px(x, mean), kl_normal(mu, logvar), mean


@torch.no_grad()
def elbo(vae, x, n_samples=1, gen=None):
    """Per-image negative ELBO in nats, continuous density of x in [-1, 1] -> [B].

    -ELBO = E_q[-log p(x|z)] + KL(q(z|x) || p(z)); the expectation is a Monte-Carlo mean
    over `n_samples` posterior samples, the KL is analytic. Use `nats_8bit` /
    `bits_per_dim` for the 8-bit convention (module docs).
    """
    mu, logvar = vae.encode(x)
    std = torch.exp(0.5 * logvar)
    rec = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    for _ in range(n_samples):
        z = mu + std * torch.randn(mu.shape, generator=gen, dtype=mu.dtype, device=mu.device)
        rec -= vae.log_px(x, vae.decode(z))
    return rec / n_samples + kl_normal(mu, logvar)


@torch.no_grad()
def neg_elbo_at_mean(vae, x):
    """Deterministic anomaly score: -log p(x | decode(mu)) + KL(q||p), nats, [-1,1] scale.

    What a consumer can reproduce exactly from vae_encoder + vae_decoder + log_sigma:
      sum_{c,h,w} [ 0.5 ((x - x_hat) / sigma_c)^2 + log sigma_c + 0.5 log(2 pi) ]
      + 0.5 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j),   x_hat = vae_decoder(mu).
    """
    mu, logvar = vae.encode(x)
    return -vae.log_px(x, vae.decode(mu)) + kl_normal(mu, logvar)


@torch.no_grad()
def recon_prob(vae, x, L=16, gen=None):
    """Monte-Carlo reconstruction log-probability (An & Cho 2015), per image [B], nats.

    An & Cho's reconstruction probability is (1/L) sum_l p(x | z_l), z_l ~ q(z|x); its
    log is computed stably as a log-mean-exp. Higher = more normal; the anomaly score
    is its negative.
    """
    mu, logvar = vae.encode(x)
    std = torch.exp(0.5 * logvar)
    lps = []
    for _ in range(L):
        z = mu + std * torch.randn(mu.shape, generator=gen, dtype=mu.dtype, device=mu.device)
        lps.append(vae.log_px(x, vae.decode(z)))
    lps = torch.stack(lps, 0)
    return torch.logsumexp(lps, 0) - math.log(L)


def dequantize(images_u8, gen=None):
    """uint8 [N,3,H,W] tensor -> float in [-1,1] with uniform noise within each 8-bit bin."""
    u = images_u8.float() + torch.rand(images_u8.shape, generator=gen) - 0.5
    return u / 127.5 - 1.0


@torch.no_grad()
def aggregate_posterior_moments(vae, x_batches):
    """Per-dim mean and std of the aggregate posterior q(z) = E_x q(z|x) over the batches."""
    n, s1, s2, sv = 0, 0.0, 0.0, 0.0
    for x in x_batches:
        mu, logvar = vae.encode(x)
        mu, logvar = mu.double(), logvar.double()
        n += len(x)
        s1 = s1 + mu.sum(0)
        s2 = s2 + (mu * mu).sum(0)
        sv = sv + logvar.exp().sum(0)
    m = s1 / n
    var = s2 / n - m * m + sv / n
    return m, var.sqrt()


@torch.no_grad()
def fold_prior(vae, m, s):
    """Re-express the latent as z_new = (z - m) / s, exactly, by folding the affine map into
    the encoder's and decoder's linear layers.

    The decoder computes the same image for z = m + s z_new; the posterior stays diagonal
    (mu_new = (mu - m)/s, logvar_new = logvar - 2 log s). With the fixed N(0, I) prior in the
    new coordinates this is the old model with the prior N(m, diag s^2): with (m, s) the
    moments of the aggregate posterior (`aggregate_posterior_moments` over the training
    faces), that Gaussian minimises the average KL term, so the training ELBO can only
    improve, and prior samples land where the decoder was trained (empirical-Bayes prior fit).
    """
    z = vae.z_dim
    m, s = m.double(), s.double()
    enc, dec = vae.encoder.fc, vae.decoder.fc
    We, be = enc.weight.double(), enc.bias.double() * enc.b_gain
    We[:z] = We[:z] / s[:, None]
    be[:z] = (be[:z] - m) / s
    be[z:] = be[z:] - 2.0 * torch.log(s)
    enc.weight.copy_(We.float())
    enc.bias.copy_((be / enc.b_gain).float())
    Wd, bd = dec.weight.double(), dec.bias.double() * dec.b_gain
    bd = bd + (Wd * dec.w_gain) @ m
    dec.weight.copy_((Wd * s[None, :]).float())
    dec.bias.copy_((bd / dec.b_gain).float())


if __name__ == "__main__":
    from .networks import count_params
    for cfg in [dict(), dict(resolution=16, z_dim=8, max_ch=16), dict(resolution=32, z_dim=16, max_ch=32)]:
        v = VAE(**cfg)
        x = torch.rand(2, 3, v.resolution, v.resolution) * 2 - 1
        print(cfg, count_params(v.encoder), count_params(v.decoder), elbo(v, x).shape, recon_prob(v, x, 4).shape)
