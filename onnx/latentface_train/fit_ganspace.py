"""Unsupervised directions (GANSpace, Härkönen et al. 2020): the principal components of
the generator's W, each applied to the layer range where it acts, measured with the face
judge, and written into a bundle's manifest as `pc1`, `pc2`, ...

    python -m latentface_train.fit_ganspace --bundle default --threads 1 \
        --descriptions ganspace_default.json --sheets /tmp/ganspace

1. PCA of w = mapping(z) over `n_pca` random z: the top `k` components v_i (unit
   vectors, sign fixed so that the largest coefficient is positive) and their spreads
   sigma_i (the standard deviation of (w - w_avg) . v_i), so strength 1 is 1 sigma
   (`projection_std`, the unit `edit --dir pcN=S` uses).
2. The layer range: every component is added at +-2 sigma to the coarse, the middle and
   the fine W+ rows of `n_faces` generated faces (truncation `psi`, zero noise) and the
   RMS pixel change measured. A range that makes at least `range_share` of the sum of the
   three is where the component acts, and it is applied there only (GANSpace's point:
   the same component on another range does something else); else it acts on all rows.
3. The face judge (face-api's age/gender and descriptor networks, fed as the Rust side
   feeds them) on the renders at -3..+3 sigma on that range: mean predicted age, share
   of women and identity distance to the unedited render; they go into `response` and
   `note`.
4. A sweep sheet per component (`sheets`/pcN.png: rows of faces, -3..+3 sigma, one block
   per layer range, the chosen one first) for a person to look at: what a component does
   is only known by looking. The words come from `descriptions` (a JSON file
   {"pc1": "turns the head", ...} written after looking at the sheets of this bundle); a
   component without words gets its measured figures as its description, marked as such.

Everything else in the manifest is kept as it was (other directions, graphs, hashes).
"""
import argparse
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from . import from_bundle
from .bundle import write_manifest
from .faceapi import attributes, judge_input, load_face_attributes, load_face_id
from .util import step_defaults, to_uint8

STRENGTHS = (-3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0)


def principal_components(G, *, n, k, seed, batch=2000):
    """Top-k PCA of w over n random z: (w_mean [w_dim], v [k, w_dim] unit rows, sigma [k],
    explained share [k])."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = torch.cat([G.mapping(torch.randn(min(batch, n - i), G.z_dim, generator=g))
                       for i in range(0, n, batch)]).double()
    mean = w.mean(0)
    cov = (w - mean).T @ (w - mean) / (n - 1)
    evals, evecs = torch.linalg.eigh(cov)
    order = torch.argsort(evals, descending=True)[:k]
    v = evecs[:, order].T
    # a deterministic sign: the largest coefficient positive
    v = v * torch.sign(v.gather(1, v.abs().argmax(1, keepdim=True)))
    return mean.float(), v.float(), evals[order].sqrt().float(), (evals[order] / evals.sum()).float()


def render(S, ws, batch=64):
    """W+ codes [N, num_ws, w_dim] -> renders [N, 3, R, R] in [-1, 1], zero noise."""
    out = []
    with torch.no_grad():
        for i in range(0, len(ws), batch):
            w = ws[i:i + batch]
            out.append(S(w, [torch.zeros([len(w)] + s) for s in S.noise_shapes]))
    return torch.cat(out)


def edited(ws, v, rows, amount):
    w = ws.clone()
    w[:, rows] += amount * v
    return w


def judge(face_id, attrs, img, batch=32):
    """(descriptor [N, 128], predicted age [N], is a woman [N] bool) of renders."""
    d, a, f = [], [], []
    with torch.no_grad():
        for i in range(0, len(img), batch):
            x = img[i:i + batch]
            age, logit = attributes(attrs, x)  # the whole crop, as fit() checks
            d.append(face_id(judge_input(x, 150)))
            a.append(age)
            f.append(logit > 0)
    return torch.cat(d), torch.cat(a), torch.cat(f)


def label(img, text):
    ImageDraw.Draw(img).text((3, 2), text, fill=(255, 255, 0))
    return img


def sweep_sheet(S, ws, v, sigma, ranges, path, faces=3, scale=2):
    """Rows: `faces` faces per layer range (in the order given); columns: STRENGTHS."""
    r = S.resolution * scale
    tiles = []
    for name, rows in ranges:
        for f in range(faces):
            codes = torch.stack([edited(ws[f:f + 1], v, rows, s * sigma)[0] for s in STRENGTHS])
            row = [Image.fromarray(to_uint8(x).transpose(1, 2, 0)).resize((r, r), Image.NEAREST)
                   for x in render(S, codes).numpy()]
            if f == 0:
                label(row[0], name)
            tiles.append(row)
    sheet = Image.new("RGB", (r * len(STRENGTHS), r * len(tiles) + 14), (0, 0, 0))
    d = ImageDraw.Draw(sheet)
    for j, s in enumerate(STRENGTHS):
        d.text((j * r + r // 2 - 8, 2), f"{s:+g}", fill=(255, 255, 255))
    for i, row in enumerate(tiles):
        for j, t in enumerate(row):
            sheet.paste(t, (j * r, 14 + i * r))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)


def measured_words(m):
    """A component's figures in words (its description until a person has looked)."""
    return (f"(not yet described by eye) at +2 sigma: age {m['age_change'][1]:+.1f} y, "
            f"women {100 * m['women_change'][1]:+.0f} points, identity distance {m['identity'][1]:.2f}")


def fit(*, bundle="default", model_dir="node_modules/@vladmandic/face-api/model", k=10, n_pca=20000, n_faces=64,
        psi=0.7, range_share=0.6, seed=0, threads=1, descriptions=None, sheets="/tmp/ganspace", write=True,
        log=print):
    """Fit, measure and (with `write`) store the components; -> {name: direction entry}."""
    torch.set_num_threads(threads)
    bundle = Path(bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    words = json.loads(Path(descriptions).read_text()) if descriptions else {}
    G = from_bundle.load_generator(bundle, log=log).requires_grad_(False)
    S = G.synthesis
    face_id, attrs = load_face_id(model_dir), load_face_attributes(model_dir)
    fraction = man.get("faces", {}).get("crop", {}).get("centre_fraction", 1.0)
    if fraction != 1.0:  # faceapi.attributes feeds the whole crop
        raise ValueError(f"{bundle}: the face judge's centre_fraction is {fraction}; this step assumes 1.0")

    mean, V, sigma, share = principal_components(G, n=n_pca, k=k, seed=seed)
    w_avg = torch.tensor(man["w_avg"], dtype=torch.float32)
    log(f"PCA of {n_pca} w: top {k} explain {100 * float(share.sum()):.1f}% of the variance; "
        f"|mean - manifest w_avg| = {float((mean - w_avg).norm()):.3f}")

    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        w = G.mapping(torch.randn(n_faces, G.z_dim, generator=g))
    w = w_avg + psi * (w - w_avg)
    ws = w[:, None].expand(-1, G.num_ws, -1).clone()
    base = render(S, ws)
    d0, age0, fem0 = judge(face_id, attrs, base)

    groups = [(name, list(range(a, b))) for name, (a, b) in man["layers"].items()]
    every = ("all", list(range(G.num_ws)))
    result = {}
    for i in range(k):
        name, v, sd = f"pc{i + 1}", V[i], float(sigma[i])
        rms = {}
        for gname, rows in groups:
            per = [((render(S, edited(ws, v, rows, s * sd)) - base) / 2).square().mean().sqrt()
                   for s in (-2.0, 2.0)]
            rms[gname] = float(sum(per) / 2)
        total = sum(rms.values())
        top = max(rms, key=rms.get)
        chosen = (top, dict(groups)[top]) if rms[top] >= range_share * total else every
        cname, rows = chosen

        ages, women, ident, pix = [], [], [], []
        for s in STRENGTHS:
            img = base if s == 0 else render(S, edited(ws, v, rows, s * sd))
            d, a, f = (d0, age0, fem0) if s == 0 else judge(face_id, attrs, img)
            ages.append(float(a.mean()))
            women.append(float(f.float().mean()))
            ident.append(float((d - d0).norm(dim=1).mean()))
            pix.append(float(((img - base) / 2).square().mean().sqrt()))
        at = {s: j for j, s in enumerate(STRENGTHS)}
        m = {"age_change": [ages[at[-2.0]] - ages[at[0.0]], ages[at[2.0]] - ages[at[0.0]]],
             "women_change": [women[at[-2.0]] - women[at[0.0]], women[at[2.0]] - women[at[0.0]]],
             "identity": [ident[at[-2.0]], ident[at[2.0]]]}
        shares = ", ".join(f"{n} {100 * r / total:.0f}%" for n, r in rms.items())
        note = (f"GANSpace PC{i + 1} of W ({100 * float(share[i]):.1f}% of the variance, sigma {sd:.4f}), on the "
                f"{cname} rows (pixel change at +-2 sigma by range: {shares}). Judged on {n_faces} generated faces "
                f"(psi {psi}) at -2 / +2 sigma: age {m['age_change'][0]:+.1f} / {m['age_change'][1]:+.1f} y, "
                f"women {100 * m['women_change'][0]:+.0f} / {100 * m['women_change'][1]:+.0f} points "
                f"(from {100 * women[at[0.0]]:.0f}%), identity distance to the unedited face "
                f"{m['identity'][0]:.2f} / {m['identity'][1]:.2f} (same person < "
                f"{man.get('faces', {}).get('id_threshold', 0.6)})")
        entry = {"vector": [round(float(x), 6) for x in v], "layers": rows, "fitted": "ganspace",
                 "projection_std": round(sd, 4),
                 "description": words.get(name) or measured_words(m),
                 "note": note,
                 "response": {"strength_units": list(STRENGTHS), "age_mean": np.round(ages, 2).tolist(),
                              "women_share": np.round(women, 3).tolist(),
                              "identity_distance": np.round(ident, 3).tolist(),
                              "pixel_rms": np.round(pix, 4).tolist(), "faces": n_faces, "psi": psi,
                              "layer_range": cname, "range_pixel_rms": {n: round(r, 4) for n, r in rms.items()},
                              "variance_share": round(float(share[i]), 4)}}
        result[name] = entry
        log(f"{name}: {cname} {rows}; {note}")
        if name not in words:
            log(f"  {name} has no words yet: look at its sheet and add them to the descriptions file")
        if sheets:
            order = [chosen] + [r for r in groups + [every] if r[0] != cname]
            sweep_sheet(S, ws, v, sd, order, Path(sheets) / f"{name}.png")
    if write:
        dirs = {n: d for n, d in man["directions"].items() if not (n.startswith("pc") and n[2:].isdigit())}
        dirs.update(result)
        man["directions"] = dirs
        write_manifest(bundle, man, extra_files=list(man.get("files", {})))
        log(f"wrote {', '.join(result)} into {bundle / 'manifest.json'}")
    return result


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--model-dir", help="face-api's model folder (scripts/setup_node.sh)")
    ap.add_argument("--k", type=int, help="components to keep")
    ap.add_argument("--n-pca", type=int, help="random z whose w the PCA is taken over")
    ap.add_argument("--n-faces", type=int, help="generated faces each component is measured on")
    ap.add_argument("--psi", type=float, help="truncation of the measured faces")
    ap.add_argument("--range-share", type=float,
                    help="share of the pixel change a layer range must make to be the component's range")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--descriptions", help="JSON {\"pc1\": \"what it does\", ...}, written after looking at the sheets")
    ap.add_argument("--sheets", help="folder for the sweep sheets (pcN.png); '' for none")
    ap.add_argument("--no-write", dest="write", action="store_false", help="measure only, leave the manifest")
    ap.set_defaults(**step_defaults(fit))
    fit(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
