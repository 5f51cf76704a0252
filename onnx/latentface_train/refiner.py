"""The refiner: the generator's native picture -> the full-size picture users see.

A small super-resolution network (DESIGN.md's optional `refiner` graph): features at the
native resolution (residual blocks), then a sub-pixel convolution (PixelShuffle) to
`scale` times the size, added to a bicubic enlargement of the input, so an untrained or
unsure network falls back to plain bicubic.

The bundle contract: graph `refiner`, input `image` `[batch, 3, R, R]` in [-1, 1] (R the
bundle's resolution), output `refined` `[batch, 3, R*scale, R*scale]` in [-1, 1]; the
manifest's top-level `refiner` says the output resolution, the scale, the parameter count
and how it was trained. Rust reads the output size from the graph's output shape.

    python -m latentface_train.refiner --bundle tiny --random    # a random-weight refiner (tests)
    python -m latentface_train.refiner --bundle tiny --random --lpips-full   # + LPIPS at 96 px
    python -m latentface_train.refiner --bundle default --lpips-full        # + LPIPS at 192 px
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import bundle as bundle_mod
from .onnx_export import export_module, io_spec
from .util import sha256_file

FORWARD_TOL = 1e-4


class ResBlock(nn.Module):
    def __init__(self, ch):
        super().__init__()
        self.a = nn.Conv2d(ch, ch, 3, padding=1)
        self.b = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x):
        return x + self.b(F.leaky_relu(self.a(x), 0.2))


def bicubic_phase_kernels(scale):
    """[scale*scale, 1, K, K]: torch's bicubic enlargement by an integer `scale` written as
    one convolution per output phase (then PixelShuffle), K = 5 taps for scale 3, so the
    exported graph is a few plain ops rather than a decomposed Resize."""
    k = 2 * ((scale + 3) // 2) + 1  # taps i-k//2 .. i+k//2 cover every phase's 4 taps
    n = 4 * k
    taps = torch.zeros(scale, k)
    for j in range(k):  # the response of each output phase to an impulse at input tap j
        x = torch.zeros(1, 1, 1, n)
        x[..., n // 2 - k // 2 + j] = 1.0
        y = F.interpolate(x, scale_factor=(1, scale), mode="bicubic", align_corners=False)
        taps[:, j] = y[0, 0, 0, scale * (n // 2):scale * (n // 2) + scale]
    kern = torch.einsum("ai,bj->abij", taps, taps).reshape(scale * scale, 1, k, k)
    return kern


class Refiner(nn.Module):
    def __init__(self, ch=32, blocks=4, scale=3):
        super().__init__()
        self.config = dict(ch=ch, blocks=blocks, scale=scale)
        self.scale = scale
        self.head = nn.Conv2d(3, ch, 3, padding=1)
        self.body = nn.Sequential(*[ResBlock(ch) for _ in range(blocks)])
        self.tail = nn.Conv2d(ch, 3 * scale * scale, 3, padding=1)
        nn.init.zeros_(self.tail.weight)  # starts as plain bicubic
        nn.init.zeros_(self.tail.bias)
        kern = bicubic_phase_kernels(scale)
        self.register_buffer("bicubic", kern.repeat(3, 1, 1, 1), persistent=False)

    def forward(self, x):
        pad = self.bicubic.shape[-1] // 2
        # replicate padding = torch's clamped border taps
        up = F.conv2d(F.pad(x, (pad, pad, pad, pad), mode="replicate"), self.bicubic, groups=3)
        h = self.head(x)
        h = self.body(h) + h
        return F.pixel_shuffle(up + self.tail(h), self.scale)


class RefinerGraph(nn.Module):
    """What the bundle's graph computes: the refined picture, clamped to [-1, 1]."""

    def __init__(self, refiner):
        super().__init__()
        self.refiner = refiner

    def forward(self, image):
        return self.refiner(image).clamp(-1.0, 1.0)


def export_refiner(refiner, out_dir, resolution, log=print):
    """Write OUT/refiner.onnx, check it against torch in ONNX Runtime; returns the graph entry."""
    import onnxruntime as ort

    out_dir = Path(out_dir)
    path = out_dir / "refiner.onnx"
    graph = RefinerGraph(refiner).eval()
    example = torch.rand(2, 3, resolution, resolution) * 2 - 1
    model = export_module(graph, [example], ["image"], ["refined"], path)
    ins, outs = io_spec(model)
    x = (torch.rand(3, 3, resolution, resolution, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    with torch.no_grad():
        want = graph(x).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"image": x.numpy()})[0]
    err = float(np.abs(got - want).max())
    if not err < FORWARD_TOL:
        raise SystemExit(f"{path}: ONNX Runtime differs from torch by {err:.2e} (> {FORWARD_TOL})")
    log(f"exported refiner: {len(model.graph.node)} nodes, {path.stat().st_size / 1e6:.2f} MB, "
        f"max |ort - torch| {err:.1e}")
    return {"file": path.name, "sha256": sha256_file(path), "inputs": ins, "outputs": outs,
            "nodes": len(model.graph.node)}, err


def add_to_bundle(bundle_dir, refiner, info, log=print):
    """Export `refiner` into a bundle and record it in the manifest (graph entry + `refiner`)."""
    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    res = int(manifest["resolution"])
    entry, err = export_refiner(refiner, bundle_dir, res, log=log)
    manifest["graphs"]["refiner"] = entry
    manifest["refiner"] = {
        "resolution": res * refiner.scale,
        "scale": refiner.scale,
        "config": refiner.config,
        "params": sum(p.numel() for p in refiner.parameters()),
        "verification": {"max_abs_ort_vs_torch": err, "tolerance": FORWARD_TOL},
        **info,
    }
    bundle_mod.write_manifest(bundle_dir, manifest, extra_files=list(manifest.get("files", {})))
    return manifest


def add_lpips_full(bundle_dir, lpips, share_weights=False, log=print):
    """Export `lpips` (the bundle's own LPIPS network: the same weights as its `lpips` graph)
    at the refiner's output size as graph `lpips_full` (a, b [batch, 3, S, S] -> distance
    [batch]), checked against torch in ONNX Runtime: what full-size inversion reports use.
    `share_weights`: repack the bundle's `weights.bin` so the new graph stores no copy of
    the LPIPS weights (the command line does; the tiny bundle's build keeps its layout)."""
    import onnxruntime as ort
    from .graphs import LpipsGraph

    bundle_dir = Path(bundle_dir)
    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    side = int(manifest["refiner"]["resolution"])
    path = bundle_dir / "lpips_full.onnx"
    graph = LpipsGraph(lpips.eval()).eval()
    g = torch.Generator().manual_seed(2)
    example = [torch.rand(2, 3, side, side, generator=g) * 2 - 1 for _ in range(2)]
    model = export_module(graph, example, ["a", "b"], ["distance"], path)
    ins, outs = io_spec(model)
    a = torch.rand(3, 3, side, side, generator=g) * 2 - 1
    b = (a + 0.3 * torch.randn(3, 3, side, side, generator=g)).clamp(-1, 1)
    with torch.no_grad():
        want = graph(a, b).numpy()
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"a": a.numpy(), "b": b.numpy()})[0]
    err = float(np.abs(got - want).max() / max(np.abs(want).max(), 1e-12))
    if not err < FORWARD_TOL:
        raise SystemExit(f"{path}: ONNX Runtime differs from torch by {err:.2e} (relative, > {FORWARD_TOL})")
    log(f"exported lpips_full at {side} px: {len(model.graph.node)} nodes, relative |ort - torch| {err:.1e}")
    manifest["graphs"]["lpips_full"] = {"file": path.name, "sha256": sha256_file(path), "inputs": ins,
                                        "outputs": outs, "nodes": len(model.graph.node)}
    if share_weights and (bundle_dir / "weights.bin").exists():
        # share the LPIPS weights with the other graphs rather than store them twice
        keys = [k for k in manifest["graphs"] if k not in bundle_mod.FACE_GRAPHS]
        bundle_mod.repack(bundle_dir, keys, log=log)
        bundle_mod.refresh_hashes(bundle_dir, {k: manifest["graphs"][k] for k in keys})
    manifest["refiner"]["lpips_full"] = {"verification": {"max_rel_ort_vs_torch": err, "tolerance": FORWARD_TOL}}
    bundle_mod.write_manifest(bundle_dir, manifest, extra_files=list(manifest.get("files", {})))
    return manifest


def add_random(bundle_dir, *, seed=0, ch=8, blocks=1, log=print):
    """A random-weight refiner (not bicubic, so a test can tell the graph ran) for test bundles."""
    torch.manual_seed(seed)
    r = Refiner(ch=ch, blocks=blocks).eval()
    for p in r.parameters():
        nn.init.normal_(p, std=0.05)
    return add_to_bundle(bundle_dir, r, {"training": "none: random weights (test bundle)"}, log=log)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", required=True, help="bundle folder to add the refiner to")
    ap.add_argument("--random", action="store_true", help="random weights (for the tiny test bundle)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ch", type=int, default=8)
    ap.add_argument("--blocks", type=int, default=1)
    ap.add_argument("--lpips-full", action="store_true",
                    help="only add the `lpips_full` graph (LPIPS at the refiner's size) to a bundle that "
                         "has a refiner: the official alex weights, or the tiny test weights with --random")
    args = ap.parse_args()
    if args.lpips_full:
        from .lpips import LPIPS, tiny_lpips_weights
        lp = LPIPS(weights=tiny_lpips_weights(args.seed), resize=1) if args.random else LPIPS()
        add_lpips_full(args.bundle, lp, share_weights=not args.random)
        return
    if not args.random:
        raise SystemExit("only --random is built here; train_refiner exports trained weights")
    t = time.time()
    add_random(args.bundle, seed=args.seed, ch=args.ch, blocks=args.blocks)
    print(f"refiner added to {args.bundle} in {time.time() - t:.1f} s")


if __name__ == "__main__":
    main()
