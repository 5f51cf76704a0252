"""Fit `age` and `gender` directions that the generator really responds to, judged by
face-api's age/gender network, and write them into a bundle's manifest.

    python -m latentface_train.fit_directions_judged --bundle default \
        --model-dir node_modules/@vladmandic/face-api/model

Directions fitted to the encoder's codes against the dataset's labels (`fit_directions`)
correlate with age but the generator hardly responds to them: moving a face along them
changes its predicted age by a year or two. Here the direction is where the renders'
*predicted* attribute rises fastest: for N encoded training faces, the gradient of the
attribute network's output (age in years; the logit of "woman") through the synthesis
network with respect to the edited W+ rows (tied), each normalised, averaged (the mean
steepest-ascent direction, as in InterFaceGAN but measured on the generator itself).
Age is then made orthogonal to gender so that ageing does not change the gender.

The groups (`child`, `senior`, `female`, ...) are calibrated on the response: the
projection at which the renders' mean predicted age reaches each group's typical age
(or the share of predicted women reaches 90% / 10%), so `family --age child` asks the
generator for a face the age network sees as a child. `projection_std` stays the spread
of the codes' projections (an edit of 1 unit is one standard deviation of real faces).
"""
import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch

from . import data, from_bundle
from .faceapi import attributes, load_face_attributes
from .util import step_defaults

AGE_TARGETS = {"child": 7.0, "teen": 16.0, "young": 26.0, "adult": 45.0, "senior": 70.0}


def mean_gradient(G, net, ws, layers, which, batch=32):
    """Mean of the per-face unit gradients of attribute `which` (0 age, 1 woman-logit)."""
    S = G.synthesis
    total = torch.zeros(ws.shape[-1])
    for i in range(0, len(ws), batch):
        w = ws[i:i + batch].clone().requires_grad_(True)
        noise = [torch.zeros([len(w)] + s) for s in S.noise_shapes]
        out = attributes(net, S(w, noise))[which]
        (g,) = torch.autograd.grad(out.sum(), w)
        g = g[:, layers].sum(1)
        total += (g / g.norm(dim=1, keepdim=True).clamp_min(1e-12)).sum(0)
    return total / total.norm()


@torch.no_grad()
def response(G, net, ws, layers, v, strengths, batch=64):
    """Mean predicted age and share of women after moving every code by each strength."""
    S = G.synthesis
    ages, women = [], []
    for t in strengths:
        a, f = [], []
        for i in range(0, len(ws), batch):
            w = ws[i:i + batch].clone()
            w[:, layers] += t * v
            noise = [torch.zeros([len(w)] + s) for s in S.noise_shapes]
            age, logit = attributes(net, S(w, noise))
            a.append(age)
            f.append(logit > 0)
        ages.append(float(torch.cat(a).mean()))
        women.append(float(torch.cat(f).float().mean()))
    return np.array(ages), np.array(women)


def solve(strengths, curve, target):
    """Strength at which a (roughly monotone) response curve crosses `target`."""
    order = np.argsort(curve)
    c, s = curve[order], np.asarray(strengths)[order]
    return float(np.interp(target, c, s))


def fit(*, bundle="default", model_dir="node_modules/@vladmandic/face-api/model", n=384, layers=None, threads=1, seed=0,
        data_path=None, log=print):
    """Fit both directions on `n` encoded training faces and write them into the bundle's manifest."""
    torch.set_num_threads(threads)
    bundle = Path(bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    G = from_bundle.load_generator(bundle, log=log).requires_grad_(False)
    E = from_bundle.load_encoder(bundle, G, log=log).requires_grad_(False)
    net = load_face_attributes(model_dir)
    images, _, _ = data.load_faces(G.resolution, data_path)
    train_idx, _ = data.split_indices(len(images))
    pick = np.random.RandomState(seed).choice(train_idx, n, replace=False)
    with torch.no_grad():
        ws = torch.cat([E(torch.from_numpy(images[pick[i:i + 128]]).float() / 127.5 - 1)
                        for i in range(0, n, 128)])
    old = man["directions"]
    layers = old["age"]["layers"] if layers is None else list(layers)
    w_avg = torch.tensor(man["w_avg"])
    proj_of = lambda v: ((ws[:, layers] - w_avg) @ v).mean(1)  # noqa: E731

    v_gender = mean_gradient(G, net, ws, layers, 1)
    v_age = mean_gradient(G, net, ws, layers, 0)
    v_age = v_age - (v_age @ v_gender) * v_gender
    v_age = v_age / v_age.norm()
    log(f"cos(age, gender) after orthogonalising: {float(v_age @ v_gender):.2e}")

    result = {}
    strengths = np.arange(-8.0, 8.01, 0.5)
    for name, v in (("age", v_age), ("gender", v_gender)):
        proj = proj_of(v)
        sd = float(proj.std())
        ages, women = response(G, net, ws, layers, v, strengths * sd)
        base = float(proj.mean())
        entry = {"vector": [round(float(x), 6) for x in v], "layers": layers, "fitted": "judged",
                 "projection_std": round(sd, 4),
                 "response": {"strength_units": strengths.tolist(), "age_mean": np.round(ages, 2).tolist(),
                              "women_share": np.round(women, 3).tolist()}}
        if name == "age":
            entry["groups"] = {g: round(base + solve(strengths, ages, a) * sd, 4) for g, a in AGE_TARGETS.items()}
            entry["group_ages"] = AGE_TARGETS
            mid = np.abs(strengths) <= 2
            entry["years_per_unit"] = round(float(np.polyfit(strengths[mid], ages[mid], 1)[0]), 3)
        else:
            entry["groups"] = {"female": round(base + solve(strengths, women, 0.9) * sd, 4),
                               "male": round(base + solve(strengths, women, 0.1) * sd, 4)}
        log(f"{name}: projection_std {sd:.4f}, groups {entry['groups']}, "
            f"mean age at -2/0/+2 units {np.interp([-2, 0, 2], strengths, ages).round(1).tolist()}, "
            f"women at -2/0/+2 {np.interp([-2, 0, 2], strengths, women).round(2).tolist()}")
        result[name] = entry
    for k, d in old.items():  # keep any other direction as it was
        result.setdefault(k, d)
    man["directions"] = result
    path = bundle / "manifest.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(man, indent=1, ensure_ascii=False) + ("\n" if path.read_text().endswith("\n") else ""))
    os.replace(tmp, path)
    log(f"wrote the directions into {path}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--model-dir", help="face-api's model folder (scripts/setup_node.sh)")
    ap.add_argument("--n", type=int, help="encoded training faces to average over")
    ap.add_argument("--layers", type=int, nargs="+",
                    help="W+ rows the directions act on [default: the bundle's current ones]")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--data", dest="data_path")
    ap.set_defaults(**step_defaults(fit))
    fit(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
