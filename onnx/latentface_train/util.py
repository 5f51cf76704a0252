"""Small helpers shared by the toolchain scripts."""
import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8(img):
    """float tensor/array [..., 3, H, W] in [-1, 1] -> uint8 HWC arrays."""
    if isinstance(img, torch.Tensor):
        img = img.detach().cpu().numpy()
    return np.clip(np.rint((img + 1) * 127.5), 0, 255).astype(np.uint8)


def save_grid(images, path, nrow=8, pad=2):
    """images [N,3,H,W] in [-1,1] -> one PNG grid, written atomically."""
    a = to_uint8(images)
    n, _, h, w = a.shape
    ncol = (n + nrow - 1) // nrow
    grid = np.full([ncol * (h + pad) + pad, nrow * (w + pad) + pad, 3], 255, np.uint8)
    for i in range(n):
        r, c = divmod(i, nrow)
        grid[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = \
            a[i].transpose(1, 2, 0)
    save_png(grid, path)


def save_png(hwc_uint8, path):
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(hwc_uint8).save(tmp, format="PNG")
    os.replace(tmp, path)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
