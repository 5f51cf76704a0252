"""Does an identity term help inversion? A measurement to decide the default.

    python -m latentface_train.identity_loss_study --bundle default --n 24 --steps 200 \
        --id-weights 0 0.5 --out runs/identity_loss.json

Inverts held-out faces with the bundle's own loss (pixel MSE + LPIPS-alex at 64 px, the
`synthesis_grad` graph's) from the bundle's encoder start, W+, NVIDIA's schedule, once
per identity weight: loss += w_id * |d(G(w)) - d(target)|^2 with d the face_id network
(dlib's descriptor, face-api's weights) on the crop the Rust judge uses. Reports the
identity distance, same-person rate and |Δ predicted age| of the results, judged by the
same networks, and the seconds per step. Autograd in PyTorch: the ONNX gradient graph
gets the term only if this shows it is worth its cost.
"""
import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch

from . import data, from_bundle
from .faceapi import judge_input, load_face_attributes, load_face_id
from .graphs import reconstruction_loss
from .lpips import LPIPS
from .util import step_defaults, write_json


def judge(face_id, attrs, img):
    age, gender = attrs(judge_input(img, 112))
    return face_id(judge_input(img, 150)), age, gender[:, 1]


def invert(G, E, lpips, face_id, target, *, steps, id_weight, lr=0.1):
    S = G.synthesis
    with torch.no_grad():
        ws0 = E(target)
        d_target = face_id(judge_input(target, 150))
    ws = ws0.clone().requires_grad_(True)
    opt = torch.optim.Adam([ws], betas=(0.9, 0.999), eps=1e-8)
    noise = [torch.zeros([len(target)] + s) for s in S.noise_shapes]
    ones = torch.ones(len(target), 1, *target.shape[-2:])
    weights = torch.ones(len(target), 2)
    for step in range(steps):
        t = step / steps
        opt.param_groups[0]["lr"] = lr * min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / 0.25)))
        img = S(ws, noise)
        loss = reconstruction_loss(img, target, ones, weights, lpips)
        if id_weight > 0:
            loss = loss + id_weight * (face_id(judge_input(img, 150)) - d_target).square().sum(1)
        opt.zero_grad(set_to_none=True)
        loss.sum().backward()
        opt.step()
    with torch.no_grad():
        return S(ws, noise)


def study(*, bundle="default", model_dir="node_modules/@vladmandic/face-api/model", n=24, steps=200,
          id_weights=(0.0, 0.5), batch=8, threads=1, data_path=None, log=print):
    """Invert n held-out faces once per identity weight; -> the report (see the module docs)."""
    torch.set_num_threads(threads)
    G = from_bundle.load_generator(bundle, log=log).requires_grad_(False)
    E = from_bundle.load_encoder(bundle, G, log=log).requires_grad_(False)
    lpips = LPIPS().eval().requires_grad_(False)
    face_id, attrs = load_face_id(model_dir), load_face_attributes(model_dir)
    images, _, _ = data.load_faces(G.resolution, data_path)
    _, hold = data.split_indices(len(images))
    pick = np.random.RandomState(1).choice(hold, n, replace=False)  # all ages, not the sorted start
    targets = torch.from_numpy(images[pick]).float() / 127.5 - 1
    with torch.no_grad():
        d_t, age_t, fem_t = judge(face_id, attrs, targets)
    out = {}
    for w in id_weights:
        t0 = time.time()
        recon = torch.cat([invert(G, E, lpips, face_id, targets[i:i + batch], steps=steps, id_weight=w)
                           for i in range(0, n, batch)])
        secs = (time.time() - t0) / (n * steps) * batch
        with torch.no_grad():
            d_r, age_r, fem_r = judge(face_id, attrs, recon)
            lp = lpips(recon, targets)
        dist = (d_r - d_t).norm(dim=1)
        mse = ((recon - targets) / 2).square().mean(dim=[1, 2, 3])
        row = {"identity_distance_mean": float(dist.mean()), "same_person_rate": float((dist < 0.6).float().mean()),
               "age_abs_change_mean": float((age_r - age_t).abs().mean()),
               "gender_flip_rate": float(((fem_r > 0.5) != (fem_t > 0.5)).float().mean()),
               "psnr_db": float((-10 * torch.log10(mse)).mean()), "lpips": float(lp.mean()),
               "seconds_per_step_per_batch": round(secs, 3)}
        log(f"id weight {w}: {row}")
        out[str(w)] = row
    return {"faces": n, "steps": steps, "batch": batch, "results": out}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--model-dir", help="face-api's model folder (scripts/setup_node.sh)")
    ap.add_argument("--n", type=int)
    ap.add_argument("--steps", type=int)
    ap.add_argument("--id-weights", type=float, nargs="+")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--data", dest="data_path")
    ap.add_argument("--out", default="runs/identity_loss.json")
    ap.set_defaults(**step_defaults(study))
    a = vars(ap.parse_args())
    out = Path(a.pop("out"))
    r = study(**a)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, r)


if __name__ == "__main__":
    main()
