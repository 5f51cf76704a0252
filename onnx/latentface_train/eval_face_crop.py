"""Choose the face crop for the face_id / face_attributes graphs (docs/faces.md).

    python -m latentface_train.eval_face_crop --package node_modules/@vladmandic/face-api

Our aligned crops hold the whole head (face_template: eyes at (0.29, 0.30) and
(0.69, 0.30), mouth at (0.49, 0.69)); face-api's networks expect a tight face. For each
centre fraction F, the 500 held-out UTKFace faces (data.split_indices, downsampled to
64 px as the bundle's models see them) are cropped to their centre F x F square, resized
bilinearly to 112 / 150 px and rounded to 8 bits (faceapi.crop_u8, what src/faces.rs does), and
scored: age MAE and correlation and gender accuracy against the file-name labels, and
for the descriptor a same-person proxy (a face against its mirror image: genuine pairs)
against its neighbour in the name-sorted list (impostor pairs; UTKFace names begin with
age, gender and race, so these are demographically matched), at the 0.6 threshold.

Caveat: face-api's age/gender model was trained on UTK among other sets (80/20 split per
set, its TUTORIAL.md); some of these held-out faces may have been in its training data,
so the absolute figures can be optimistic. They serve to compare crops.
Writes a JSON report (default runs/face_crop.json); no images are written.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from . import data, faceapi
from .util import step_defaults

FRACTIONS = (0.7, 0.8, 0.9, 1.0)


def _batches(n, b):
    for i in range(0, n, b):
        yield slice(i, min(i + b, n))


def crops(images_hwc, fraction, size):
    """uint8 [N,H,W,3] -> float32 [N,3,size,size], RGB 0..255 (8-bit, as src/faces.rs feeds them)."""
    out = np.stack([faceapi.crop_u8(im, fraction, size) for im in images_hwc])
    return torch.from_numpy(out.transpose(0, 3, 1, 2).astype(np.float32))


@torch.no_grad()
def evaluate(images_hwc, ages, genders, face_id, face_attr, fractions=FRACTIONS, batch=50, log=print):
    rows = []
    n = len(images_hwc)
    for f in fractions:
        t = time.time()
        age_pred, gender_prob, desc, desc_flip = [], [], [], []
        for sl in _batches(n, batch):
            x112 = crops(images_hwc[sl], f, faceapi.FACE_ATTRIBUTES_SIZE)
            a, g = face_attr(x112)
            age_pred.append(a.numpy())
            gender_prob.append(g.numpy())
            x150 = crops(images_hwc[sl], f, faceapi.FACE_ID_SIZE)
            desc.append(face_id(x150).numpy())
            desc_flip.append(face_id(x150.flip(3)).numpy())
        age_pred, gender_prob = np.concatenate(age_pred), np.concatenate(gender_prob)
        desc, desc_flip = np.concatenate(desc), np.concatenate(desc_flip)
        genuine = np.linalg.norm(desc - desc_flip, axis=1)
        impostor = np.linalg.norm(desc - np.roll(desc, 1, axis=0), axis=1)
        row = {
            "centre_fraction": f,
            "age_mae": float(np.abs(age_pred - ages).mean()),
            "age_corr": float(np.corrcoef(age_pred, ages)[0, 1]),
            "age_bias": float((age_pred - ages).mean()),
            "gender_acc": float((gender_prob.argmax(1) == genders).mean()),
            "id_genuine_mean": float(genuine.mean()),
            "id_impostor_mean": float(impostor.mean()),
            "id_genuine_below_0.6": float((genuine < 0.6).mean()),
            "id_impostor_above_0.6": float((impostor >= 0.6).mean()),
        }
        rows.append(row)
        log(" ".join(f"{k} {v:.3f}" for k, v in row.items()) + f"  ({time.time() - t:.0f} s)")
    return rows


def heldout_faces(path=None, resolution=64):
    images, names, labels = data.load_faces(resolution, path)
    _, held = data.split_indices(len(images))
    keep = held[(labels[held, 0] > 0) & (labels[held, 1] >= 0)]
    return images[keep].transpose(0, 2, 3, 1), labels[keep, 0].astype(np.float64), labels[keep, 1]


def choose(rows):
    """Best F: lowest age MAE among the rows within 1 point of the best gender accuracy."""
    best_g = max(r["gender_acc"] for r in rows)
    ok = [r for r in rows if r["gender_acc"] >= best_g - 0.01]
    return min(ok, key=lambda r: r["age_mae"])["centre_fraction"]


def table(rows):
    head = "| F | age MAE (y) | age corr | age bias (y) | gender acc | id genuine d | id impostor d | genuine < 0.6 | impostor >= 0.6 |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['centre_fraction']:.1f} | {r['age_mae']:.2f} | {r['age_corr']:.3f} | {r['age_bias']:+.2f} | "
                     f"{100 * r['gender_acc']:.1f}% | {r['id_genuine_mean']:.3f} | {r['id_impostor_mean']:.3f} | "
                     f"{100 * r['id_genuine_below_0.6']:.1f}% | {100 * r['id_impostor_above_0.6']:.1f}% |")
    return "\n".join(lines)


def run(*, package="node_modules/@vladmandic/face-api", data_dir=None, fractions=FRACTIONS, limit=0,
        out="runs/face_crop.json", threads=1):
    """Score every centre fraction on the held-out faces, write the report to `out`, return it."""
    torch.set_num_threads(threads)
    model = Path(package) / "model"
    face_id, face_attr = faceapi.load_face_id(model), faceapi.load_face_attributes(model)
    images, ages, genders = heldout_faces(data_dir)
    if limit:
        images, ages, genders = images[:limit], ages[:limit], genders[:limit]
    print(f"{len(images)} held-out faces, {images.shape[1]} px")
    rows = evaluate(images, ages, genders, face_id, face_attr, list(fractions))
    chosen = choose(rows)
    report = {"faces": len(images), "resolution": int(images.shape[1]), "rows": rows, "chosen": chosen,
              "rule": "lowest age MAE among fractions within 1 point of the best gender accuracy"}
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(rows))
    print(f"chosen centre_fraction: {chosen}")
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--fractions", type=float, nargs="+")
    ap.add_argument("--limit", type=int, help="first N held-out faces only (0: all)")
    ap.add_argument("--out")
    ap.add_argument("--threads", type=int)
    ap.set_defaults(**step_defaults(run))
    run(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
