"""Find which W+ directions drive each face region (eyes, nose, mouth, face shape, hair,
skin) and write them into a bundle's manifest as `traits`, for `family --trait`.

    python -m latentface_train.fit_traits --bundle default

Regions are fixed masks in the aligned template (faces are aligned so that the eyes and
mouth sit at the manifest's `face_template` points), drawn as soft ellipses. For every
trait there is an *inside* mask and a *rest* mask (the picture away from the region).

What moves a region. For W+ codes `w` sampled from the generator (mapping, truncation
psi), the synthesis Jacobian `J = d image / d w+` is probed Hutchinson-style: with random
pixel weights `v` on a mask `M`, `g = J^T (M v)` has `E[g g^T] = J^T M^2 J`, so averaging
`g g^T` per W+ row gives the row's matrix `G_in` (how much each direction of that row
changes the region, in squared pixel change) and likewise `G_rest`. Skin is about colour,
not shape: its inside probes weight each pixel of the cheeks and forehead with one random
colour per face (the region's mean colour), its rest is the hair and background.

Which coordinates. Per row, the generalised eigenvectors of `G_in v = lambda G_rest v`
are the directions that change the region most per unit of change elsewhere: a
direction's `lambda` is its (per-pixel) change inside over its change in the rest, and
a code difference `d` splits into independent components `c_i = v_i^T G_rest d` with
inside energy `lambda_i c_i^2` and rest energy `c_i^2`. Taking the trait from parent A
adds `sum_i v_i (u_i . (a - child))` over the kept components (`u_i = G_rest v_i`):
those components of the child become A's, the others stay. This localises better than
single W coordinates or rows because the generator's W coordinates are entangled (every
coordinate of a row feeds every style channel of its layers through the affine map), and
it contains the StyleSpace channels (Wu et al. 2021) as special directions; the script
prints the same figure for the best plain W coordinates for comparison. The kept
components are the top `--k` by lambda over all rows with `lambda >= --min-ratio`.

Measured afterwards (written under `traits.X.measured`): for held-out pairs of
generated parents, the region's masked pixel RMS distance of the child to A and to B with
the trait from A and from B, and how much the rest changes.
"""
import argparse
import base64
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import from_bundle
from .util import step_defaults

# Soft ellipses (cx, cy, rx, ry) in fractions of the side, in the UTKFace template
# (eyes at (0.29, 0.30) and (0.69, 0.30), mouth at (0.49, 0.69)); other templates are
# placed by the manifest's face_template points (see `template_frame`).
FACE_OVAL = (0.49, 0.49, 0.43, 0.47)
REGIONS = {
    "eyes": {"ellipses": [(0.29, 0.285, 0.13, 0.085), (0.69, 0.285, 0.13, 0.085)],
             "what": "eyes and brows"},
    "nose": {"ellipses": [(0.49, 0.50, 0.085, 0.12)], "what": "the nose, from the bridge to the nostrils"},
    "mouth": {"ellipses": [(0.49, 0.695, 0.17, 0.075)], "what": "lips and mouth corners"},
    "face_shape": {"ring": (0.86, 1.10), "below": 0.30,
                   "what": "the outline of cheeks, jaw and chin (a ring on the face oval)"},
    "hair": {"outside": 1.08, "above": 0.75, "what": "hair and head outline above and beside the face"},
    "skin": {"ellipses": [(0.24, 0.53, 0.09, 0.09), (0.74, 0.53, 0.09, 0.09), (0.49, 0.13, 0.17, 0.05)],
             "colour": True, "what": "skin colour (cheeks and forehead)"},
}
TRAITS = list(REGIONS)


def _soft_inside(q, edge=0.15):
    """1 inside an ellipse (q < 1), 0 outside, a linear ramp of `edge` across the border."""
    return np.clip((1.0 - q) / edge + 0.5, 0.0, 1.0)


def template_frame(man):
    """Maps UTKFace-template fractions to this bundle's template (scale + shift per axis)."""
    t = man.get("face_template") or {}
    ref = {"left_eye": (0.29, 0.30), "right_eye": (0.69, 0.30), "mouth": (0.49, 0.69)}
    if not all(k in t for k in ref):
        return lambda x, y: (x, y), 1.0, 1.0
    sx = (t["right_eye"][0] - t["left_eye"][0]) / (ref["right_eye"][0] - ref["left_eye"][0])
    sy = (t["mouth"][1] - t["left_eye"][1]) / (ref["mouth"][1] - ref["left_eye"][1])
    ox = t["left_eye"][0] - sx * ref["left_eye"][0]
    oy = t["left_eye"][1] - sy * ref["left_eye"][1]
    return (lambda x, y: (ox + sx * x, oy + sy * y)), sx, sy


def _q(xs, ys, e, frame):
    place, sx, sy = frame
    cx, cy = place(e[0], e[1])
    return np.sqrt(((xs - cx) / (e[2] * sx)) ** 2 + ((ys - cy) / (e[3] * sy)) ** 2)


def region_masks(name, res, man):
    """(inside, rest) masks [res, res] in [0, 1] of one trait."""
    spec = REGIONS[name]
    frame = template_frame(man)
    c = (np.arange(res) + 0.5) / res
    xs, ys = np.meshgrid(c, c)
    oval = _q(xs, ys, FACE_OVAL, frame)
    place = frame[0]
    if "ellipses" in spec:
        qs = [_q(xs, ys, e, frame) for e in spec["ellipses"]]
        inside = np.max([_soft_inside(q) for q in qs], axis=0)
        near = np.max([_soft_inside(q / 1.6) for q in qs], axis=0)  # a margin around it
        rest = 1.0 - near
        if spec.get("colour"):
            rest = 1.0 - _soft_inside(oval / 1.05)  # hair and background
    elif "ring" in spec:
        lo, hi = spec["ring"]
        below = ys > place(0, spec["below"])[1]
        inside = _soft_inside(oval / hi) * (1.0 - _soft_inside(oval / lo)) * below
        rest = _soft_inside(oval / (lo - 0.12))  # face interior
        rest += 1.0 - _soft_inside(oval / (hi + 0.25))  # far outside
        rest = np.clip(rest, 0, 1)
    else:  # hair: outside the face oval, above the mouth line
        above = ys < place(0, spec["above"])[1]
        inside = (1.0 - _soft_inside(oval / spec["outside"])) * above
        rest = _soft_inside(oval / 0.85)
    return inside.astype(np.float32), rest.astype(np.float32)


def b64(a, dtype):
    return base64.b64encode(np.ascontiguousarray(a, dtype=dtype).tobytes()).decode()


def sample_ws(G, n, psi, seed):
    """n W+ codes from the mapping (one W per code, every row), truncated by psi."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w = G.mapping(torch.randn(n, G.z_dim, generator=g))
        w = G.w_avg + psi * (w - G.w_avg)
    return w[:, None].repeat(1, G.num_ws, 1)


def render(S, ws, batch=64):
    out = []
    with torch.no_grad():
        for i in range(0, len(ws), batch):
            w = ws[i:i + batch]
            out.append(S(w, [torch.zeros([len(w)] + s) for s in S.noise_shapes]))
    return torch.cat(out)


def row_energies(S, ws, masks, colour, probes, batch, log):
    """Per mask, per W+ row: E[J^T M^2 J] [num_ws, w_dim, w_dim], averaged over codes and
    normalised per unit of mask area."""
    L, W = ws.shape[1], ws.shape[2]
    G = {k: torch.zeros(L, W, W, dtype=torch.float64) for k in masks}
    gen = torch.Generator().manual_seed(1)
    t0 = time.time()
    for i in range(0, len(ws), batch):
        w = ws[i:i + batch].clone().requires_grad_(True)
        img = S(w, [torch.zeros([len(w)] + s) for s in S.noise_shapes])
        for k, m in masks.items():
            mt = torch.from_numpy(m)[None, None]
            for _ in range(probes):
                if colour[k]:  # one random colour per face, the same at every pixel
                    v = torch.randn(len(w), 3, 1, 1, generator=gen).expand_as(img) / float(m.sum()) ** 0.5
                else:
                    v = torch.randn(img.shape, generator=gen)
                (g,) = torch.autograd.grad(img, w, v * mt, retain_graph=True)
                g = g.double()
                G[k] += torch.einsum("brw,brv->rwv", g, g)
        log(f"  {min(i + batch, len(ws))}/{len(ws)} codes ({time.time() - t0:.0f} s)")
    for k, m in masks.items():
        area = 1.0 if colour[k] else float(m.sum())
        G[k] /= len(ws) * probes * area
    return G


def components(G_in, G_rest, k, min_ratio):
    """The top-k generalised eigenvectors over all rows: [(row, lambda, v, u)], u = G_rest' v."""
    found = []
    for r in range(G_in.shape[0]):
        A, B = G_in[r].numpy(), G_rest[r].numpy()
        B = B + 1e-3 * np.trace(B) / len(B) * np.eye(len(B))  # directions that move nothing stay out
        Lc = np.linalg.cholesky(B)
        Li = np.linalg.inv(Lc)
        lam, Y = np.linalg.eigh(Li @ A @ Li.T)
        V = Li.T @ Y  # V^T B V = I, V^T A V = diag(lam)
        for j in np.argsort(lam)[::-1][:k]:
            if lam[j] >= min_ratio:
                v = V[:, j]
                found.append((r, float(lam[j]), v, B @ v))
    found.sort(key=lambda c: -c[1])
    return found[:k]


def single_coordinates(G_in, G_rest, k):
    """The k best plain W coordinates by the same inside/rest ratio (for comparison)."""
    a = torch.diagonal(G_in, dim1=1, dim2=2).numpy()
    b = torch.diagonal(G_rest, dim1=1, dim2=2).numpy()
    ratio = a / (b + 1e-3 * b.mean())
    idx = np.argsort(ratio.ravel())[::-1][:k]
    return ratio.ravel()[idx]


def transfer(ws, src, comps):
    """ws + sum_i v_i (u_i . (src - ws)) on each component's row (the Rust rule)."""
    out = ws.clone()
    for r, _, v, u in comps:
        v, u = torch.from_numpy(v).float(), torch.from_numpy(u).float()
        out[:, r] += ((src[:, r] - ws[:, r]) @ u)[:, None] * v[None]
    return out


def masked_rms(x, y, m):
    m = torch.from_numpy(m)[None, None]
    return (((x - y) ** 2 * m).sum((1, 2, 3)) / (3 * m.sum())).sqrt()


def evaluate(S, comps, inside, rest, pairs, psi_seed, G, psi):
    """Figures of one trait on `pairs` held-out pairs of generated parents."""
    a = sample_ws(G, pairs, psi, psi_seed)
    b = sample_ws(G, pairs, psi, psi_seed + 1)
    mid = 0.5 * (a + b)
    # each pair's comps in float32 through the rendered images
    imgs = render(S, torch.cat([a, b, mid, transfer(mid, a, comps), transfer(mid, b, comps),
                                transfer(b, a, comps), transfer(a, b, comps)]))
    A, B, M, MA, MB, BA, AB = imgs.split(pairs)
    d = lambda x, y, m: masked_rms(x, y, m).numpy()  # noqa: E731
    f = {
        # child = the plain blend, trait from A / from B
        "a_to_a": d(MA, A, inside), "a_to_b": d(MA, B, inside),
        "b_to_a": d(MB, A, inside), "b_to_b": d(MB, B, inside),
        "blend_to_a": d(M, A, inside), "blend_to_b": d(M, B, inside),
        # how much the rest changed (vs the blend), and the parents' own difference there
        "rest_change": 0.5 * (d(MA, M, rest) + d(MB, M, rest)),
        "parents_rest": d(A, B, rest), "parents_inside": d(A, B, inside),
        # the rest from B (mix 1) with the trait from A
        "swap_to_a": d(BA, A, inside), "swap_to_b": d(BA, B, inside),
        "swap_rest_change": d(BA, B, rest),
        "swap2_to_a": d(AB, A, inside), "swap2_to_b": d(AB, B, inside),
    }
    wins = float(np.mean((f["a_to_a"] < f["a_to_b"]) & (f["b_to_b"] < f["b_to_a"])))
    swap_wins = float(np.mean(f["swap_to_a"] < f["swap_to_b"]))
    r3 = lambda x: round(float(np.mean(x)), 4)  # noqa: E731
    return {
        "pairs": pairs,
        "blend_child": {"trait_a": {"to_a": r3(f["a_to_a"]), "to_b": r3(f["a_to_b"])},
                        "trait_b": {"to_a": r3(f["b_to_a"]), "to_b": r3(f["b_to_b"])},
                        "none": {"to_a": r3(f["blend_to_a"]), "to_b": r3(f["blend_to_b"])},
                        "both_right": round(wins, 3),
                        "rest_change": r3(f["rest_change"])},
        "rest_from_b": {"to_a": r3(f["swap_to_a"]), "to_b": r3(f["swap_to_b"]),
                        "closer_to_a": round(swap_wins, 3), "rest_change": r3(f["swap_rest_change"])},
        "parents": {"inside": r3(f["parents_inside"]), "rest": r3(f["parents_rest"])},
    }


def fit(*, bundle="default", n=512, psi=0.7, probes=2, k=64, k_for=None, min_ratio=2.0, pairs=64, batch=32,
        threads=1, seed=0, traits=None, dry_run=False, log=print):
    """Fit every trait on `n` sampled codes, measure it on `pairs` held-out pairs, write the manifest."""
    torch.set_num_threads(threads)
    bundle = Path(bundle)
    man = json.loads((bundle / "manifest.json").read_text())
    G = from_bundle.load_generator(bundle, log=log).requires_grad_(False)
    S = G.synthesis
    res = G.resolution
    traits = list(traits or TRAITS)
    k_for = dict(k_for or {})  # per-trait overrides of k, e.g. {"eyes": 128}
    masks, colour = {}, {}
    for t in traits:
        inside, rest = region_masks(t, res, man)
        masks[t + ":in"], masks[t + ":rest"] = inside, rest
        colour[t + ":in"], colour[t + ":rest"] = bool(REGIONS[t].get("colour")), False
    ws = sample_ws(G, n, psi, seed)
    log(f"probing {len(masks)} masks on {n} codes ({probes} probes each)")
    energy = row_energies(S, ws, masks, colour, probes, batch, log)
    out = {}
    for t in traits:
        G_in, G_rest = energy[t + ":in"], energy[t + ":rest"]
        comps = components(G_in, G_rest, k_for.get(t, k), min_ratio)
        coords = single_coordinates(G_in, G_rest, k_for.get(t, k))
        if not comps:
            log(f"{t}: no direction with ratio >= {min_ratio}: left out")
            continue
        rows = sorted({c[0] for c in comps})
        tr = torch.diagonal(G_in, dim1=1, dim2=2).sum(1)
        row_share = [round(float(x), 4) for x in tr / tr.sum()]
        inside, rest = masks[t + ":in"], masks[t + ":rest"]
        m = evaluate(S, comps, inside, rest, pairs, seed + 1000, G, psi)
        log(f"{t}: {len(comps)} components on rows {rows}, ratio {comps[0][1]:.1f} .. {comps[-1][1]:.1f} "
            f"(best single W coordinates: {coords[0]:.1f} .. {coords[-1]:.1f}); {json.dumps(m)}")
        V = np.stack([c[2] for c in comps])
        U = np.stack([c[3] for c in comps])
        norm = np.linalg.norm(V, axis=1, keepdims=True)
        out[t] = {
            "description": REGIONS[t]["what"],
            "rows": [c[0] for c in comps],
            # component i: child[rows[i]] += basis[i] * (dual[i] . (parent - child)[rows[i]])
            "basis": b64(V / norm, "<f2"),
            "dual": b64(U * norm, "<f2"),
            "ratio": [round(c[1], 2) for c in comps],
            "row_energy": row_share,
            "mask": b64(np.rint(inside * 255), "u1"),
            "rest_mask": b64(np.rint(rest * 255), "u1"),
            "measured": m,
        }
    if dry_run:
        return out
    man = json.loads((bundle / "manifest.json").read_text())
    man["traits"] = out
    line = (f".venv/bin/python -m latentface_train.fit_traits --bundle {bundle.name} --n {n} --k {k} "
            + "".join(f"--k-for {t}={v} " for t, v in sorted(k_for.items()))
            + f"--min-ratio {min_ratio} --probes {probes}")
    man["rebuild"] = [r for r in man.get("rebuild", []) if "fit_traits" not in r] + [line]
    path = bundle / "manifest.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(man, indent=1, ensure_ascii=False) + ("\n" if path.read_text().endswith("\n") else ""))
    os.replace(tmp, path)
    log(f"wrote {len(out)} traits into {path}")
    return out


def _trait_k(text):
    name, _, k = text.partition("=")
    if name not in TRAITS or not k.isdigit() or int(k) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected TRAIT=K with TRAIT one of {', '.join(TRAITS)}")
    return name, int(k)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--n", type=int, help="sampled codes the Jacobian energies average over")
    ap.add_argument("--psi", type=float, help="truncation of the sampled codes")
    ap.add_argument("--probes", type=int, help="random probes per code and mask")
    ap.add_argument("--k", type=int, help="components kept per trait (over all rows)")
    ap.add_argument("--k-for", action="append", type=_trait_k, metavar="TRAIT=K",
                    help="a trait that keeps K components instead of --k (repeatable)")
    ap.add_argument("--min-ratio", type=float, help="smallest inside/rest energy ratio kept")
    ap.add_argument("--pairs", type=int, help="held-out parent pairs the traits are measured on")
    ap.add_argument("--traits", nargs="+", choices=TRAITS)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--dry-run", action="store_true", help="measure, write nothing")
    ap.set_defaults(**step_defaults(fit))
    args = vars(ap.parse_args())
    args["k_for"] = dict(args["k_for"] or [])
    fit(**args)


if __name__ == "__main__":
    main()
