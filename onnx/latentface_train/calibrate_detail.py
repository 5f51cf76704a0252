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
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, data
from .metrics import PCTS, auroc, detail, percentile_of
from .util import batched, step_defaults, write_json
from .vae import neg_elbo_at_mean

FLOOR_PERCENTILE = 0.5


def detail_calibration(d_train):
    """The `vae_anomaly.detail` section: percentiles of the training faces' detail and the floor."""
    floor = float(np.percentile(d_train, FLOOR_PERCENTILE))
    return dict(percentiles={str(p): float(np.percentile(d_train, p)) for p in [FLOOR_PERCENTILE] + PCTS},
                mean=float(d_train.mean()), std=float(d_train.std()), n=int(len(d_train)),
                floor=floor, floor_rule=f"{FLOOR_PERCENTILE}th percentile of training faces",
                definition="(mean |dx| + mean |dy|) / 2 of the [-1,1] tensor at model resolution; "
                           "below the floor = too plain to be a face photo (anomalous)")


def calibrate(*, ckpt="runs/vae/ckpt.pt", eval_path="runs/vae/eval.json", data_dir=None, calib_n=3000, junk_n=100,
              threads=2, seed=0):
    """Add `vae_anomaly.detail` and the combined score's AUROC to the eval report at `eval_path`."""
    torch.set_num_threads(threads)
    rep = json.loads(Path(eval_path).read_text())
    vae, _ = checkpoint.load_vae(ckpt)
    R = vae.resolution
    images, _, _ = data.load_faces(R, data_dir)
    train_idx, held_idx = data.split_indices(len(images))
    train = torch.from_numpy(images[train_idx])
    held = torch.from_numpy(images[held_idx])
    sel = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))[:calib_n]
    xt = train[sel].float() / 127.5 - 1
    d_train = detail(xt)
    cal = detail_calibration(d_train)
    floor = cal["floor"]

    # AUROC of the combined score, held-out faces vs the eval's junk kinds
    scores = lambda x: batched(lambda b: neg_elbo_at_mean(vae, b), x, 100).double().numpy()  # noqa: E731
    e_train = np.sort(scores(xt))
    d_sorted = np.sort(d_train)

    def combined(x):
        return np.maximum(percentile_of(e_train, scores(x)), 100.0 - percentile_of(d_sorted, detail(x)))

    x_held = held.float() / 127.5 - 1
    real = combined(x_held)
    junk = data.make_junk(held, junk_n, R, seed=seed + 3)
    au, flagged, all_j = {}, {}, []
    threshold = rep["vae_anomaly"]["threshold"]
    for kind, xj in junk.items():
        c = combined(xj)
        all_j.append(c)
        au[kind] = round(auroc(real, c), 4)
        flagged[kind] = float(((scores(xj) > threshold) | (detail(xj) < floor)).mean())
    au["all"] = round(auroc(real, np.concatenate(all_j)), 4)
    e_real = scores(x_held)
    rep["vae_anomaly"]["detail"] = cal
    rep["auroc"]["combined"] = au
    rep["auroc"]["combined_definition"] = ("max(neg-ELBO percentile, 100 - detail percentile) against training faces "
                                           "(latentface_train.calibrate_detail)")
    rep["auroc"]["combined_flagged"] = flagged
    rep["auroc"]["held_out_real_flagged_combined"] = float(((e_real > threshold) | (detail(x_held) < floor)).mean())
    print(f"detail floor {floor:.4f} (training faces: median {np.median(d_train):.4f})")
    print("AUROC combined:", json.dumps(au))
    print("flagged anomalous:", json.dumps(flagged), "held-out real:", rep["auroc"]["held_out_real_flagged_combined"])
    write_json(eval_path, rep)
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt")
    ap.add_argument("--eval", dest="eval_path", help="eval_vae's report, rewritten in place")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--calib-n", type=int)
    ap.add_argument("--junk-n", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.set_defaults(**step_defaults(calibrate))
    calibrate(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
