"""Add the "too plain to be a face" guard to the VAE's anomaly calibration.

    python -m latentface_train.calibrate_detail --eval runs/vae/eval.json

A VAE's likelihood rates simple pictures as MORE likely than faces (Nalisnick et al.
2019): a flat colour scores below most training faces and would pass as "normal". So
the verdict also looks at how much detail an image has:

    detail(x) = (mean |x[:, :, w+1] - x[:, :, w]| + mean |x[:, h+1, :] - x[:, h, :]|) / 2

on the model-resolution tensor in [-1, 1] (src/vae/score.rs computes exactly this). The
training faces' percentiles of it go into `vae_anomaly.detail`, and an image whose detail
is below `vae_anomaly.detail.floor` (the 0.5th percentile) is anomalous whatever its
likelihood. The combined score used for the AUROC is max(neg-ELBO percentile,
100 - detail percentile), both against the training faces.

Rewrites the eval JSON in place (the export copies `vae_anomaly` into the manifest).
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from . import data
from .eval_vae import PCTS, auroc, batched, make_junk, neg_elbo_at_mean
from .vae import load_vae

FLOOR_PERCENTILE = 0.5


def detail(x):
    """x [N,3,R,R] in [-1, 1] -> [N] float64."""
    x = x.double()
    dx = (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().mean(dim=[1, 2, 3])
    dy = (x[:, :, 1:, :] - x[:, :, :-1, :]).abs().mean(dim=[1, 2, 3])
    return ((dx + dy) / 2).numpy()


def percentile_of(sorted_ref, v):
    """Empirical CDF of the reference, in percent."""
    return 100.0 * np.searchsorted(sorted_ref, v, side="right") / len(sorted_ref)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", default="runs/vae/ckpt.pt")
    ap.add_argument("--eval", default="runs/vae/eval.json")
    ap.add_argument("--data", default=None)
    ap.add_argument("--calib-n", type=int, default=3000)
    ap.add_argument("--junk-n", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rep = json.loads(Path(args.eval).read_text())
    vae, _ = load_vae(args.ckpt)
    R = vae.resolution
    images, _, _ = data.load_faces(R, args.data)
    train_idx, held_idx = data.split_indices(len(images))
    train = torch.from_numpy(images[train_idx])
    held = torch.from_numpy(images[held_idx])
    sel = torch.randperm(len(train), generator=torch.Generator().manual_seed(args.seed + 1))[:args.calib_n]
    xt = train[sel].float() / 127.5 - 1
    d_train = detail(xt)
    floor = float(np.percentile(d_train, FLOOR_PERCENTILE))
    cal = dict(percentiles={str(p): float(np.percentile(d_train, p)) for p in [FLOOR_PERCENTILE] + PCTS},
               mean=float(d_train.mean()), std=float(d_train.std()), n=int(len(d_train)),
               floor=floor, floor_rule=f"{FLOOR_PERCENTILE}th percentile of training faces",
               definition="(mean |dx| + mean |dy|) / 2 of the [-1,1] tensor at model resolution; "
                          "below the floor = too plain to be a face photo (anomalous)")

    # AUROC of the combined score, held-out faces vs the eval's junk kinds
    e_train = np.sort(batched(lambda b: neg_elbo_at_mean(vae, b), xt, 100).double().numpy())
    d_sorted = np.sort(d_train)

    def combined(x):
        e = batched(lambda b: neg_elbo_at_mean(vae, b), x, 100).double().numpy()
        return np.maximum(percentile_of(e_train, e), 100.0 - percentile_of(d_sorted, detail(x)))

    x_held = held.float() / 127.5 - 1
    real = combined(x_held)
    junk = make_junk(held, args.junk_n, R, seed=args.seed + 3)
    au, flagged, all_j = {}, {}, []
    threshold = rep["vae_anomaly"]["threshold"]
    for kind, xj in junk.items():
        c = combined(xj)
        all_j.append(c)
        au[kind] = round(auroc(real, c), 4)
        e = batched(lambda b: neg_elbo_at_mean(vae, b), xj, 100).double().numpy()
        flagged[kind] = float(((e > threshold) | (detail(xj) < floor)).mean())
    au["all"] = round(auroc(real, np.concatenate(all_j)), 4)
    e_real = batched(lambda b: neg_elbo_at_mean(vae, b), x_held, 100).double().numpy()
    rep["vae_anomaly"]["detail"] = cal
    rep["auroc"]["combined"] = au
    rep["auroc"]["combined_definition"] = ("max(neg-ELBO percentile, 100 - detail percentile) against training faces "
                                           "(latentface_train.calibrate_detail)")
    rep["auroc"]["combined_flagged"] = flagged
    rep["auroc"]["held_out_real_flagged_combined"] = float(((e_real > threshold) | (detail(x_held) < floor)).mean())
    print(f"detail floor {floor:.4f} (training faces: median {np.median(d_train):.4f})")
    print("AUROC combined:", json.dumps(au))
    print("flagged anomalous:", json.dumps(flagged), "held-out real:", rep["auroc"]["held_out_real_flagged_combined"])
    tmp = Path(args.eval + ".tmp")
    tmp.write_text(json.dumps(rep, indent=1))
    os.replace(tmp, args.eval)


if __name__ == "__main__":
    main()
