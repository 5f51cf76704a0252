"""Write the tiny random-weight bundle the Rust tests run on (same contract, 32 px).

    python -m latentface_train.make_tiny_bundle --out tiny

Deterministic: the same seed gives the same weights, so the toolchain test can rebuild
the torch modules and check the committed graphs against them. The perceptual term is
an LPIPS of the same maths with a slim random backbone (the real LPIPS-alex weights
would be 10 MB per graph); the directions are random unit vectors; face_id and
face_attributes are narrow random-weight versions of face-api's networks (same inputs and
outputs, face_graphs.convert(tiny=True)). Nothing in it was
trained: pictures from it are noise-like, which is all the tests need. Last, golden.json:
the Python side's detail, neg-ELBO and percentiles on a few images (golden.py), which
tests/golden.rs asserts the Rust side against.
"""
import argparse
import json
import time
from pathlib import Path

import torch

from . import bundle, face_graphs, golden, refiner
from .lpips import LPIPS, tiny_lpips_weights
from .networks import Encoder, Generator
from .util import save_grid
from .vae import VAE, neg_elbo_at_mean

TINY = dict(z_dim=32, w_dim=32, resolution=32, max_ch=32, map_layers=2)


def tiny_models(seed=0):
    torch.manual_seed(seed)
    G = Generator(**TINY).eval()
    # a random generator's w spread is tiny; keep the default w_avg at zero
    enc = Encoder(TINY["resolution"], G.num_ws, TINY["w_dim"], max_ch=16, hidden=64).eval()
    vae = VAE(resolution=TINY["resolution"], z_dim=16, max_ch=32).eval()
    lp = LPIPS(weights=tiny_lpips_weights(seed), resize=1).eval()
    for m in (G, enc, vae, lp):
        m.requires_grad_(False)
    return G, enc, vae, lp


def tiny_directions(G, seed=0):
    g = torch.Generator().manual_seed(seed + 11)
    out = {}
    for name in ("age", "gender"):
        v = torch.randn(G.w_dim, generator=g)
        v = v / v.norm()
        out[name] = {"vector": [round(float(x), 6) for x in v], "layers": list(range(0, bundle.layer_groups(G.num_ws)["middle"][1])),
                     "fitted": False, "note": "random unit vector (tiny test bundle)"}
    out["age"]["groups"] = {"child": -2.0, "young": -0.5, "adult": 0.5, "senior": 2.0}
    out["gender"]["groups"] = {"male": -1.5, "female": 1.5}
    return out


def build(out_dir, *, seed=0, verify=True, log=print):
    out_dir = Path(out_dir)
    G, enc, vae, lp = tiny_models(seed)
    w_avg, w_std = bundle.w_stats(G, n=2000, seed=seed)
    enc.w_avg.copy_(w_avg)
    specs = bundle.graph_specs(G, w_avg, w_std, encoder=enc, vae=vae, lpips=lp)
    entries = bundle.export_graphs(out_dir, specs, log=log)
    bundle.pack_shared_weights(out_dir, entries, log=log)
    bundle.refresh_hashes(out_dir, entries)
    report = bundle.verify_graphs(out_dir, specs, log=log) if verify else {"ok": None}
    with torch.no_grad():
        z = torch.randn(16, G.z_dim, generator=torch.Generator().manual_seed(seed))
        save_grid(G(z, noise=G.synthesis.make_noise(16, generator=torch.Generator().manual_seed(1))),
                  out_dir / "samples.png", nrow=8)
    manifest = bundle.base_manifest(
        "tiny-random", "Random-weight 32 px test bundle: same contract as the default bundle, nothing trained.",
        G, w_avg, w_std, entries, vae=vae)
    manifest["directions"] = tiny_directions(G, seed)
    # calibration over the tiny generator's own pictures (there is no training set)
    with torch.no_grad():
        z = torch.randn(256, G.z_dim, generator=torch.Generator().manual_seed(seed + 2))
        faces = G(z, noise=G.synthesis.make_noise(256, generator=torch.Generator().manual_seed(3)))
        scores = neg_elbo_at_mean(vae, faces.clamp(-1, 1))
    manifest["vae_anomaly"] = bundle.anomaly_calibration(scores)
    manifest["vae_anomaly"]["data"] = "256 samples of the tiny generator"
    manifest["vae_log_sigma"] = [round(float(x), 6) for x in vae.log_sigma_clamped()]
    manifest["training"] = {"data": "none (random weights, seed %d)" % seed, "licence": "MIT (project code)"}
    manifest["verification"] = report
    manifest["rebuild"] = [f"cd onnx && .venv/bin/python -m latentface_train.make_tiny_bundle --out tiny --seed {seed}"]
    bundle.write_manifest(out_dir, manifest, extra_files=["samples.png", "weights.bin"])
    # face_id / face_attributes: narrow random-weight versions of face-api's networks
    faces = face_graphs.convert(bundle_dir=out_dir, tiny=True, seed=seed, verify=verify, log=log)
    if verify and not faces["verification"]["ok"]:
        report["ok"] = False
    # the optional refiner (32 -> 96 px), random weights like the rest
    refiner.add_random(out_dir, seed=seed, log=log)
    refiner.add_lpips_full(out_dir, lp, log=log)  # LPIPS at the refined size (the same weights)
    # detail, neg-ELBO and percentiles as Python computes them, for tests/golden.rs
    golden.write(out_dir, vae=vae, log=log)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tiny")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-verify", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(1)
    t = time.time()
    report = build(args.out, seed=args.seed, verify=not args.no_verify)
    print(json.dumps({"ok": report.get("ok"), "seconds": round(time.time() - t, 1)}))
    if report.get("ok") is False:
        raise SystemExit("verification failed")


if __name__ == "__main__":
    main()
