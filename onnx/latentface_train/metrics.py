"""Scores and statistics shared by the toolchain's steps, and the ones Rust computes too.

Three features are computed in both languages: the image's `detail`, the VAE's negative
ELBO at the posterior mean (`gaussian_log_px` + `kl_normal`, see vae.neg_elbo_at_mean),
and the percentile of a score in a bundle's calibration (`Calibration`, which mirrors
`src/vae/score.rs`). `golden.py` writes inputs -> outputs of all three into each bundle
(`golden.json`), and both `onnx/tests/test_golden.py` and the Rust `tests/golden.rs` assert
them, so neither side can drift from the other.
"""
import io
import math

import numpy as np
import torch

LOG_2PI = math.log(2.0 * math.pi)
LOG_127_5 = math.log(127.5)
# the calibration percentiles every bundle states (manifest `vae_anomaly.percentiles`)
PCTS = [50, 90, 95, 99, 100]


# ----------------------------------------------------------------------------- likelihood
def gaussian_log_px(x, mean, log_sigma):
    """log N(x; mean, diag(sigma_c^2)) summed over [3, H, W] -> [B] nats.

    x, mean: [B, 3, H, W]; log_sigma: [3] per-channel log standard deviation.
    """
    ls = log_sigma[None, :, None, None]
    d = (x - mean) * torch.exp(-ls)
    return -(0.5 * d * d + ls + 0.5 * LOG_2PI).sum(dim=[1, 2, 3])


def kl_normal(mu, logvar):
    """KL(N(mu, exp(logvar)) || N(0, I)) summed over latent dims -> [B] nats."""
    return 0.5 * (mu * mu + torch.exp(logvar) - 1.0 - logvar).sum(dim=1)


def nats_8bit(nll, dims):
    """nats/image on the [-1,1] scale -> nats/image for u = 127.5 (x + 1) in [0, 256)."""
    return nll + dims * LOG_127_5


def bits_per_dim(nll, dims):
    """nats/image on the [-1,1] scale -> bits/dim on the 8-bit scale."""
    return nats_8bit(nll, dims) / (dims * math.log(2.0))


# ----------------------------------------------------------------------------- image features
def detail(x):
    """How much detail an image has: (mean |dx| + mean |dy|) / 2 of neighbouring pixels.

    x: [N, 3, R, R] in [-1, 1] at model resolution -> [N] float64 numpy. Flat colour: 0.
    `src/vae/score.rs::detail` computes exactly this (golden vectors: golden.py).
    """
    x = x.double()
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=[1, 2, 3])
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=[1, 2, 3])
    return ((dx + dy) / 2).numpy()


def psnr_u8(a_u8, b_u8):
    """PSNR in dB of two 8-bit images (inf when identical)."""
    mse = np.mean((a_u8.astype(np.float64) - b_u8.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def png_bits(x):
    """Lossless PNG size in bits of each [-1,1] image (a generic complexity estimate)."""
    from PIL import Image

    from .util import to_uint8
    out = []
    for a in to_uint8(x):
        buf = io.BytesIO()
        Image.fromarray(a.transpose(1, 2, 0)).save(buf, format="PNG", compress_level=9)
        out.append(8.0 * len(buf.getvalue()))
    return np.array(out)


def complexity_corrected(neg_elbo_nats, x, dims):
    """Serra et al. 2020 score: -log2 p(x) (8-bit scale, bits) - PNG bits; higher = more anomalous."""
    return nats_8bit(neg_elbo_nats, dims) / math.log(2.0) - png_bits(x)


# ----------------------------------------------------------------------------- score statistics
def score_stats(scores, pcts=PCTS):
    """{percentiles: {"50": x, ...}, mean, std, n} of a score over a set of images."""
    s = np.asarray(scores, np.float64)
    return dict(percentiles={str(p): float(np.percentile(s, p)) for p in pcts},
                mean=float(s.mean()), std=float(s.std()), n=int(len(s)))


def auroc(neg, pos):
    """P(score(pos) > score(neg)) with ties counted half (Mann-Whitney U / n_neg n_pos)."""
    neg, pos = np.asarray(neg, np.float64), np.asarray(pos, np.float64)
    allv = np.concatenate([neg, pos])
    order = allv.argsort(kind="mergesort")
    ranks = np.empty(len(allv))
    ranks[order] = np.arange(1, len(allv) + 1)
    # average ranks over ties
    sv = allv[order]
    i = 0
    while i < len(sv):
        j = i
        while j + 1 < len(sv) and sv[j + 1] == sv[i]:
            j += 1
        if j > i:
            ranks[order[i:j + 1]] = (i + j + 2) / 2.0
        i = j + 1
    r_pos = ranks[len(neg):].sum()
    return float((r_pos - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def percentile_of(sorted_ref, v):
    """Empirical CDF of the (sorted) reference scores at v, in percent."""
    return 100.0 * np.searchsorted(sorted_ref, v, side="right") / len(sorted_ref)


def normal_cdf(x):
    """Standard normal CDF with Abramowitz & Stegun 7.1.26's erf (|error| < 1.5e-7), as Rust has it."""
    z = abs(x) / math.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = 1.0 - poly * math.exp(-z * z)
    return 0.5 * (1.0 + erf) if x >= 0 else 0.5 * (1.0 - erf)


class Calibration:
    """A score's distribution over the calibration faces (manifest `vae_anomaly`), as the
    Rust program reads it (`src/vae/score.rs::Calibration`): score -> percentile by
    piecewise-linear interpolation between the stored percentiles, a normal fitted to the
    stored mean and std below the lowest one (capped at it), the highest above the top."""

    def __init__(self, cal):
        self.points = sorted((float(p), float(v)) for p, v in cal["percentiles"].items())
        self.mean, self.std, self.threshold = float(cal["mean"]), float(cal["std"]), float(cal["threshold"])
        self.detail_floor = float(cal["detail"]["floor"]) if "detail" in cal else None

    def percentile(self, s):
        p0, v0 = self.points[0]
        if s <= v0:
            if s == v0:
                return p0
            tail = 100.0 * normal_cdf((s - self.mean) / self.std) if self.std > 0 else 0.0
            return min(tail, p0)
        for (pa, va), (pb, vb) in zip(self.points, self.points[1:]):
            if s <= vb:
                return pb if vb == va else pa + (pb - pa) * (s - va) / (vb - va)
        return self.points[-1][0]

    def value_at(self, p):
        """The score at percentile p, interpolated (clamped to the stored range)."""
        if p <= self.points[0][0]:
            return self.points[0][1]
        for (pa, va), (pb, vb) in zip(self.points, self.points[1:]):
            if p <= pb:
                return va + (vb - va) * (p - pa) / (pb - pa)
        return self.points[-1][1]

    def verdict(self, s, detail=None, unusual_percentile=95.0):
        """'anomalous' above the threshold or below the detail floor, 'unusual' above the
        `unusual_percentile` score, else 'normal'."""
        too_plain = self.detail_floor is not None and detail is not None and detail < self.detail_floor
        if too_plain or s > self.threshold:
            return "anomalous"
        return "unusual" if s > self.value_at(unusual_percentile) else "normal"
