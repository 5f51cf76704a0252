"""Small helpers shared by the toolchain scripts."""
import hashlib
import inspect
import json
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


def write_json(path, obj, indent=1):
    """Write `obj` as JSON to `path` atomically (temporary file + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=indent))
    os.replace(tmp, path)


def batched(fn, x, batch):
    """torch.cat of fn over consecutive slices of `batch` rows of x."""
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def step_defaults(fn):
    """{parameter: default} of a step's keyword-only function, for `ArgumentParser.set_defaults`:
    the function's signature is the one place a step's defaults live."""
    return {k: p.default for k, p in inspect.signature(fn).parameters.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty
            and k != "log"}


class RunLog:
    """Prints a training run's progress lines and appends them to OUT/log.txt."""

    def __init__(self, path):
        self.file = open(path, "a")

    def __call__(self, line):
        print(line, flush=True)
        self.file.write(line + "\n")
        self.file.flush()
