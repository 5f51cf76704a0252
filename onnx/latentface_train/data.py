"""UTKFace loading: the aligned 200x200 crops, resized once and cached as uint8 arrays.

The images carry a non-commercial licence: they are read from ../shared and the cache
lives in the git-ignored onnx/.cache folder, never in the repository.
"""
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
ONNX_DIR = HERE.parent
DEFAULT_DATA = ONNX_DIR.parent.parent / "shared" / "datasets" / "utkface" / "images"
CACHE_DIR = ONNX_DIR / ".cache"


def data_dir(path=None):
    p = Path(path or os.environ.get("LATENTFACE_DATA", DEFAULT_DATA))
    if not p.is_dir():
        raise SystemExit(f"training images not found: {p} (set --data or LATENTFACE_DATA)")
    return p


def parse_labels(name):
    """'AGE_GENDER_RACE_TIME.jpg.chip.jpg' -> (age, gender, race), or None when malformed."""
    parts = name.split("_")
    try:
        age, gender, race = int(parts[0]), int(parts[1]), int(parts[2])
    except (ValueError, IndexError):
        return None
    if not (0 <= gender <= 1 and 0 <= race <= 4 and 0 < age < 130):
        return None
    return age, gender, race


def load_faces(resolution, path=None):
    """-> (uint8 [N, 3, R, R], names list, labels int32 [N, 3] with -1 for unknown)."""
    src = data_dir(path)
    names = sorted(n for n in os.listdir(src) if n.lower().endswith((".jpg", ".jpeg", ".png")))
    key = hashlib.sha256(("\n".join(names) + f"|{resolution}|{src}").encode()).hexdigest()[:16]
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    cache = CACHE_DIR / f"faces_{resolution}_{key}.npz"
    if cache.exists():
        d = np.load(cache)
        return d["images"], list(d["names"]), d["labels"]
    images = np.empty([len(names), 3, resolution, resolution], np.uint8)
    labels = np.full([len(names), 3], -1, np.int32)
    for i, n in enumerate(names):
        with Image.open(src / n) as im:
            im = im.convert("RGB").resize((resolution, resolution), Image.LANCZOS)
        images[i] = np.asarray(im).transpose(2, 0, 1)
        lab = parse_labels(n)
        if lab:
            labels[i] = lab
    tmp = cache.with_suffix(".tmp.npz")
    np.savez(tmp, images=images, names=np.array(names), labels=labels)
    os.replace(tmp, cache)
    return images, names, labels


def split_indices(n, holdout=500, seed=0):
    """Deterministic train / held-out split shared by every training and evaluation script."""
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[holdout:]), np.sort(perm[:holdout])


def to_float(images_u8):
    """uint8 [N,3,H,W] -> float32 in [-1, 1]."""
    return images_u8.astype(np.float32) / 127.5 - 1.0


def make_junk(held_u8, n, res, seed=0):
    """{kind: float [n,3,res,res] in [-1,1]} of images that are not faces (or not upright),
    for the anomaly scores' AUROC (eval_vae, calibrate_detail)."""
    g = torch.Generator().manual_seed(seed)
    faces = held_u8[torch.randperm(len(held_u8), generator=g)[:n]].float() / 127.5 - 1
    junk = {}
    junk["uniform_noise"] = torch.rand(n, 3, res, res, generator=g) * 2 - 1
    junk["flat_colour"] = (torch.rand(n, 3, 1, 1, generator=g) * 2 - 1).expand(n, 3, res, res).contiguous()
    perm = torch.stack([torch.randperm(res * res, generator=g) for _ in range(n)])
    flat = faces.reshape(n, 3, res * res)
    junk["shuffled_pixels"] = torch.gather(flat, 2, perm[:, None].expand(n, 3, -1)).reshape(n, 3, res, res)
    junk["upside_down"] = faces.flip(2)
    t = torch.linspace(-1, 1, res)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    ang = torch.rand(n, generator=g) * 2 * math.pi
    ramp = (torch.cos(ang)[:, None, None] * xx + torch.sin(ang)[:, None, None] * yy) / math.sqrt(2) * 0.5 + 0.5
    c0 = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    c1 = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    junk["smooth_gradient"] = c0 + (c1 - c0) * ramp[:, None]
    return junk
