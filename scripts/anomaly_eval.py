"""How well `latentface vae anomaly` tells faces from non-faces, at photo sizes.

    onnx/.venv/bin/python scripts/anomaly_eval.py --faces /root/.cache/latentface-train/heldout500 \
        --out /tmp/anomaly-eval [--per-kind 40] [--bin target/release/latentface] [-- EXTRA FLAGS]

Faces: a folder of real held-out face photos (never the calibration's training faces; e.g.
`python -m latentface_train.export_heldout --n 500 --resolution 200 --out DIR`). Non-faces are
made here, at photo sizes (160 to 1024 px, square or not), kept apart from any calibration:

- noise: uniform, Gaussian and salt-and-pepper noise, colour or grey, at pixel scales 1-16
- texture: fractal (multi-octave value) noise, stripes, checkerboards, rings, plasma
- gradient: linear and radial colour ramps, some with faint noise
- drawing: line art and filled shapes on paper (lines, circles, polygons, text-like strokes)
- scene: rendered scenes of shapes (sky, ground, sun, houses, trees) with shading and grain
- photo: random crops of scikit-image's sample photos (cat, coffee, rocket, coins, bricks,
  grass, a horse, the moon, a motorcycle, ...; fetched as the PyPI wheel, never committed;
  the two pictures of people, `astronaut` and `camera`, are left out)
- mosaic: the committed generated faces of samples/ cut into 4x4 or 8x8 tiles and shuffled

Each folder is scored with `latentface vae anomaly --samples 0 --csv`; the ranking score is
the neg-ELBO percentile + 100 if too plain + 200 if no face was found or the detector is unsure
(the verdict's rules in order of strength). Prints AUROC per kind and overall, the share of faces flagged anomalous
and of each kind flagged; writes OUT/report.json.
"""
import argparse
import csv
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parent.parent
SIZES = [160, 200, 256, 320, 400, 512, 640, 800, 1024]
SKIMAGE_PHOTOS = ["brick", "cell", "chelsea", "clock_motion", "coffee", "coins", "color", "grass", "gravel",
                  "horse", "hubble_deep_field", "ihc", "logo", "moon", "motorcycle_left", "page", "retina",
                  "rocket", "text"]


def photo_size(rng):
    w = int(rng.choice(SIZES))
    h = w if rng.random() < 0.5 else int(np.clip(w * rng.uniform(0.6, 1.6), 128, 1280))
    return w, h


def up(a, w, h, smooth):
    """A small array [h0, w0, c] in [0, 1] scaled to w x h (nearest = blocky, bicubic = smooth)."""
    img = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8).squeeze())
    return img.convert("RGB").resize((w, h), Image.BICUBIC if smooth else Image.NEAREST)


def noise(rng):
    w, h = photo_size(rng)
    s = int(rng.choice([1, 1, 2, 3, 4, 8, 16]))
    c = 3 if rng.random() < 0.7 else 1
    sh = (max(1, h // s), max(1, w // s), c)
    k = rng.integers(3)
    if k == 0:
        a = rng.random(sh)
    elif k == 1:
        a = 0.5 + rng.uniform(0.05, 0.3) * rng.standard_normal(sh)
    else:
        a = (rng.random(sh) < 0.5).astype(float) * rng.uniform(0.5, 1) + rng.uniform(0, 0.3)
    return up(a, w, h, smooth=False)


def fractal(rng, w, h):
    a = np.zeros((h, w, 3))
    amp, total = 1.0, 0.0
    base = int(rng.choice([2, 4, 8]))
    octaves = int(rng.integers(3, 8))
    for o in range(octaves):
        n = base * 2 ** o
        layer = np.asarray(up(rng.random((n, n, 3)), w, h, smooth=True), float) / 255
        a += amp * layer
        total += amp
        amp *= rng.uniform(0.4, 0.8)
    a /= total
    a = (a - a.mean()) / (a.std() + 1e-6) * rng.uniform(0.1, 0.25) + rng.uniform(0.3, 0.7, 3)
    return a


def texture(rng):
    w, h = photo_size(rng)
    k = rng.integers(5)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    if k == 0:
        a = fractal(rng, w, h)
    elif k == 1:
        th, period = rng.uniform(0, np.pi), rng.uniform(4, 60)
        v = 0.5 + 0.5 * np.sin(2 * np.pi * (xx * np.cos(th) + yy * np.sin(th)) / period)
        c0, c1 = rng.random(3), rng.random(3)
        a = c0 + (c1 - c0) * v[..., None]
    elif k == 2:
        s = rng.uniform(4, 80)
        v = ((xx // s + yy // s) % 2)[..., None]
        c0, c1 = rng.random(3), rng.random(3)
        a = c0 + (c1 - c0) * v
    elif k == 3:
        cx, cy, period = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(5, 40)
        r = np.hypot(xx - cx, yy - cy) + 8 * fractal(rng, w, h)[..., 0]
        v = 0.5 + 0.5 * np.sin(2 * np.pi * r / period)
        a = np.stack([0.35 + 0.3 * v, 0.2 + 0.2 * v, 0.1 + 0.1 * v], -1)
    else:
        f = [rng.uniform(0.005, 0.05) for _ in range(4)]
        v = (np.sin(xx * f[0]) + np.sin(yy * f[1]) + np.sin((xx + yy) * f[2]) + np.sin(np.hypot(xx, yy) * f[3])) / 4
        a = np.stack([0.5 + 0.5 * np.sin(np.pi * v + p) for p in rng.uniform(0, 6, 3)], -1)
    return up(a, w, h, smooth=True) if a.shape[:2] != (h, w) else Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))


def gradient(rng):
    w, h = photo_size(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(float)
    c0, c1 = rng.random(3), rng.random(3)
    if rng.random() < 0.5:
        th = rng.uniform(0, 2 * np.pi)
        t = xx * np.cos(th) + yy * np.sin(th)
    else:
        t = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
    t = (t - t.min()) / (np.ptp(t) + 1e-9)
    a = c0 + (c1 - c0) * t[..., None]
    if rng.random() < 0.5:
        a = a + rng.uniform(0.005, 0.03) * rng.standard_normal(a.shape)
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))


def colour(rng, dark=False):
    c = rng.integers(0, 120 if dark else 256, 3)
    return tuple(int(v) for v in c)


def drawing(rng):
    w, h = photo_size(rng)
    paper = tuple(int(v) for v in rng.integers(215, 256, 3))
    img = Image.new("RGB", (w, h), paper)
    d = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 30))):
        k = rng.integers(4)
        x0, y0, x1, y1 = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0, h)
        box = [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)]
        lw = int(rng.integers(1, max(2, w // 60)))
        fill = colour(rng) if rng.random() < 0.4 else None
        if k == 0:
            d.line([x0, y0, x1, y1], fill=colour(rng, True), width=lw)
        elif k == 1:
            d.ellipse(box, outline=colour(rng, True), fill=fill, width=lw)
        elif k == 2:
            d.rectangle(box, outline=colour(rng, True), fill=fill, width=lw)
        else:
            pts = [(rng.uniform(0, w), rng.uniform(0, h)) for _ in range(int(rng.integers(3, 7)))]
            d.polygon(pts, outline=colour(rng, True), fill=fill)
    if rng.random() < 0.3:  # text-like strokes
        y = rng.uniform(0, h / 2)
        while y < h:
            x = rng.uniform(5, w / 8)
            while x < w * 0.9:
                n = rng.uniform(4, 40)
                d.line([x, y, x + n, y], fill=(30, 30, 30), width=max(1, h // 120))
                x += n + rng.uniform(4, 12)
            y += rng.uniform(12, 30)
    return img


def scene(rng):
    w, h = photo_size(rng)
    yy = np.linspace(0, 1, h)[:, None, None]
    sky0, sky1 = np.array([0.3, 0.5, 0.9]) * rng.uniform(0.6, 1.1), np.array([0.8, 0.9, 1.0])
    a = np.broadcast_to(sky0 + (sky1 - sky0) * yy, (h, w, 3)).copy()
    hz = int(h * rng.uniform(0.4, 0.75))
    g = np.array([0.2, 0.5, 0.2]) * rng.uniform(0.5, 1.3) + rng.uniform(-0.1, 0.1, 3)
    a[hz:] = g + 0.08 * fractal(rng, w, h - hz) - 0.04
    img = Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    if rng.random() < 0.7:
        r = rng.uniform(0.03, 0.1) * w
        cx, cy = rng.uniform(0, w), rng.uniform(0, hz * 0.6)
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(255, 230, 120))
    for _ in range(int(rng.integers(1, 6))):
        bw = rng.uniform(0.08, 0.25) * w
        bx = rng.uniform(-bw / 2, w)
        by = hz + rng.uniform(0, (h - hz) * 0.5)
        bh = rng.uniform(0.1, 0.3) * h
        wall = colour(rng)
        if rng.random() < 0.6:  # a house
            d.rectangle([bx, by - bh, bx + bw, by], fill=wall)
            d.polygon([(bx - bw * 0.1, by - bh), (bx + bw * 1.1, by - bh), (bx + bw / 2, by - bh * 1.6)],
                      fill=colour(rng, True))
            for k in range(int(rng.integers(1, 4))):
                wx = bx + bw * (0.15 + 0.3 * k)
                d.rectangle([wx, by - bh * 0.7, wx + bw * 0.18, by - bh * 0.45], fill=(60, 80, 120))
        else:  # a tree
            d.rectangle([bx + bw * 0.45, by - bh * 0.5, bx + bw * 0.55, by], fill=(90, 60, 30))
            d.ellipse([bx, by - bh * 1.3, bx + bw, by - bh * 0.4],
                      fill=tuple(int(v) for v in (np.array([40, 120, 40]) * rng.uniform(0.6, 1.3))))
    img = img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.5)))
    a = np.asarray(img, float) / 255 + rng.uniform(0, 0.03) * rng.standard_normal((h, w, 3))
    return Image.fromarray((np.clip(a, 0, 1) * 255).astype(np.uint8))


def skimage_photos(cache):
    """scikit-image's sample photos from its PyPI wheel (downloaded once with pip)."""
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("scikit_image-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "scikit-image==0.26.0", "-d", str(cache)], check=True)
        wheels = sorted(cache.glob("scikit_image-*.whl"))
    out = []
    with zipfile.ZipFile(wheels[-1]) as z:
        for name in SKIMAGE_PHOTOS:
            member = next(n for n in z.namelist() if n.startswith(f"skimage/data/{name}."))
            with z.open(member) as f:
                out.append(Image.open(f).convert("RGB"))
    return out


def photo_crop(rng, photos):
    p = photos[int(rng.integers(len(photos)))]
    W, H = p.size
    side = int(rng.uniform(0.35, 1.0) * min(W, H))
    cw = min(W, int(side * rng.uniform(0.8, 1.25)))
    x, y = int(rng.integers(0, W - cw + 1)), int(rng.integers(0, H - side + 1))
    crop = p.crop((x, y, x + cw, y + side))
    w, h = photo_size(rng)
    return crop.resize((w, int(w * side / cw)), Image.LANCZOS)


def mosaic(rng, faces):
    f = faces[int(rng.integers(len(faces)))]
    n = int(rng.choice([4, 8]))
    a = np.asarray(f)
    t = a.shape[0] // n
    a = a[: t * n, : t * n]
    tiles = [a[i * t:(i + 1) * t, j * t:(j + 1) * t] for i in range(n) for j in range(n)]
    order = rng.permutation(len(tiles))
    rows = [np.concatenate([tiles[order[i * n + j]] for j in range(n)], 1) for i in range(n)]
    w, _ = photo_size(rng)
    return Image.fromarray(np.concatenate(rows, 0)).resize((w, w), Image.LANCZOS)


def make_nonfaces(out, per_kind, seed, cache):
    photos = skimage_photos(cache)
    faces = [Image.open(p).convert("RGB") for p in sorted((ROOT / "samples").glob("*.png"))]
    kinds = dict(noise=noise, texture=texture, gradient=gradient, drawing=drawing, scene=scene,
                 photo=lambda r: photo_crop(r, photos), mosaic=lambda r: mosaic(r, faces))
    for k, (name, fn) in enumerate(kinds.items()):
        d = out / name
        d.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng([seed, k])
        for i in range(per_kind):
            fn(rng).save(d / f"{name}_{i:03d}.png")
    return list(kinds)


def score(binary, folder, csv_path, extra):
    cmd = [str(binary), "--device", "cpu", "--threads", "1", "vae", "anomaly", str(folder), "--samples", "0",
           "--csv", str(csv_path), *extra]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{r.stderr}")
    rows = list(csv.DictReader(open(csv_path)))
    return rows, r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


def rank(r):
    s = float(r["neg_elbo_percentile"])
    s += 100.0 * (r["too_plain"] == "true")
    s += 200.0 * (r.get("face_found") == "false" or "unsure" in r.get("reason", ""))
    return s


def auroc(neg, pos):
    neg, pos = np.asarray(neg), np.asarray(pos)
    gt = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(gt / (len(neg) * len(pos)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--per-kind", type=int, default=40)
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--bin", type=Path, default=ROOT / "target/release/latentface")
    ap.add_argument("--cache", type=Path, default=Path.home() / ".cache/latentface-eval")
    ap.add_argument("extra", nargs="*", help="flags passed on to `vae anomaly` (after --)")
    a = ap.parse_args()
    kinds = make_nonfaces(a.out / "nonfaces", a.per_kind, a.seed, a.cache)
    face_rows, face_line = score(a.bin, a.faces, a.out / "faces.csv", a.extra)
    real = [rank(r) for r in face_rows]
    flagged_faces = float(np.mean([r["verdict"] == "anomalous" for r in face_rows]))
    report = dict(faces=len(face_rows), faces_flagged=flagged_faces, faces_summary=face_line,
                  faces_no_face=int(sum(r.get("face_found") == "false" for r in face_rows)), kinds={})
    every = []
    for k in kinds:
        rows, line = score(a.bin, a.out / "nonfaces" / k, a.out / f"{k}.csv", a.extra)
        s = [rank(r) for r in rows]
        every += s
        report["kinds"][k] = dict(n=len(rows), auroc=round(auroc(real, s), 4),
                                  flagged=float(np.mean([r["verdict"] == "anomalous" for r in rows])),
                                  no_face=float(np.mean([r.get("face_found") == "false" for r in rows])))
    report["auroc_all"] = round(auroc(real, every), 4)
    (a.out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"faces: {len(face_rows)}, flagged anomalous {100 * flagged_faces:.1f}% "
          f"(no face found in {report['faces_no_face']})")
    for k, v in report["kinds"].items():
        print(f"{k:9s} n={v['n']:4d} AUROC {v['auroc']:.4f} flagged {100 * v['flagged']:5.1f}% "
              f"no face {100 * v['no_face']:5.1f}%")
    print(f"all       AUROC {report['auroc_all']:.4f}")


if __name__ == "__main__":
    main()
