"""Fit the `age` and `gender` directions in W from the dataset's labels.

    python -m latentface_train.fit_directions --gan runs/gan/ckpt.pt --encoder runs/encoder/ckpt.pt \
        --out runs/directions.json

Every labelled training face is encoded to w+; the rows the edits act on are averaged
into one W vector per face, and a ridge regression against the label (log age; gender
0/1) gives the direction (unit length). The manifest also gets, per direction, where
each label group sits along it (mean projection relative to w_avg), so the program can
move a face to "child" or "female" rather than by an abstract amount, and the held-out
fit quality (correlation for age, accuracy for gender) to say how much to trust it.
"""
import argparse

import numpy as np
import torch

from . import checkpoint, data
from .bundle import layer_groups, w_stats
from .util import step_defaults, write_json

AGE_GROUPS = {"child": (0, 12), "teen": (13, 19), "young": (20, 35), "adult": (36, 59), "senior": (60, 200)}


def ridge(x, y, lam=1.0):
    """Least squares with an L2 penalty; x [N,D] centred, y [N] centred -> coef [D]."""
    d = x.shape[1]
    return np.linalg.solve(x.T @ x + lam * np.eye(d), x.T @ y)


def encode_all(E, images, batch=256):
    out = []
    with torch.no_grad():
        for i in range(0, len(images), batch):
            x = torch.from_numpy(images[i:i + batch]).float() / 127.5 - 1
            out.append(E(x).numpy())
    return np.concatenate(out)


def fit(*, gan="runs/gan/ckpt.pt", encoder="runs/encoder/ckpt.pt", out="runs/directions.json", data_dir=None,
        threads=2):
    """Fit both directions and write them (the manifest's `directions`) to `out`."""
    torch.set_num_threads(threads)
    G, _ = checkpoint.load_generator(gan)
    w_avg, _ = w_stats(G)
    E, _ = checkpoint.load_encoder(encoder)
    images, _, labels = data.load_faces(G.resolution, data_dir)
    train_idx, hold_idx = data.split_indices(len(images))
    ws = encode_all(E, images)
    groups = layer_groups(G.num_ws)
    edit_layers = list(range(groups["coarse"][0], groups["middle"][1]))
    w = ws[:, edit_layers].mean(1) - w_avg.numpy()[None]

    result = {}
    for name in ("age", "gender"):
        col = 0 if name == "age" else 1
        ok = labels[:, col] >= 0
        tr, ho = train_idx[ok[train_idx]], hold_idx[ok[hold_idx]]
        y = np.log1p(labels[:, 0].astype(np.float64)) if name == "age" else labels[:, 1].astype(np.float64)
        mu_x, mu_y = w[tr].mean(0), y[tr].mean()
        coef = ridge(w[tr] - mu_x, y[tr] - mu_y, lam=10.0)
        direction = coef / np.linalg.norm(coef)
        proj = w @ direction
        entry = {"vector": [round(float(v), 6) for v in direction], "layers": edit_layers, "fitted": True,
                 "projection_std": round(float(proj[tr].std()), 4)}
        pred_ho = (w[ho] - mu_x) @ coef + mu_y
        if name == "age":
            r = np.corrcoef(pred_ho, y[ho])[0, 1]
            entry["holdout_corr_log_age"] = round(float(r), 3)
            entry["groups"] = {}
            for g, (lo, hi) in AGE_GROUPS.items():
                sel = tr[(labels[tr, 0] >= lo) & (labels[tr, 0] <= hi)]
                entry["groups"][g] = round(float(proj[sel].mean()), 4)
            entry["group_ages"] = {g: list(v) for g, v in AGE_GROUPS.items()}
            # years along the direction near the middle of the data: for a signed --age strength
            slope = np.polyfit(proj[tr], labels[tr, 0].astype(np.float64), 1)[0]
            entry["years_per_unit"] = round(float(slope), 3)
        else:
            acc = ((pred_ho > 0.5) == (y[ho] > 0.5)).mean()
            entry["holdout_accuracy"] = round(float(acc), 3)
            entry["groups"] = {"male": round(float(proj[tr][y[tr] == 0].mean()), 4),
                               "female": round(float(proj[tr][y[tr] == 1].mean()), 4)}
        result[name] = entry
        print(name, {k: v for k, v in entry.items() if k != "vector"}, flush=True)
    write_json(out, result)
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", help="train_gan checkpoint")
    ap.add_argument("--encoder", help="train_encoder checkpoint")
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--threads", type=int)
    ap.set_defaults(**step_defaults(fit))
    fit(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
