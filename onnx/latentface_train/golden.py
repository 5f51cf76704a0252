"""Golden vectors: inputs -> outputs of the features both languages compute, per bundle.

    python -m latentface_train.golden --bundle tiny --bundle default

Python (this toolchain) and Rust (`src/vae/score.rs`) both compute an image's `detail`,
the VAE's negative ELBO at the posterior mean, and a score's percentile and verdict in the
bundle's calibration. This writes `golden.json` into a bundle with, for a handful of
8-bit images (faces the bundle's own generator renders, a VAE sample, flat colour, noise,
a smooth ramp), the Python results; `tests/golden.rs` recomputes them in Rust and
`onnx/tests/test_golden.py` in Python, so a change on either side that alters a number
fails a test. The export writes the file (`export_bundle`, `make_tiny_bundle`);
`--bundle` adds it to an existing bundle without touching anything else in it (the file
is not in the manifest: it is a test fixture beside the contract, not part of it).

Contents (`format` latentface-golden/1):
- `images`: `{name, u8_hex}` with u8_hex the [3, R, R] uint8 image, C order, hex; the
  tensor is `u / 127.5 - 1` in float32 (both sides);
- per image: `detail`, and the scores through the bundle's `vae_encoder` and
  `vae_decoder` graphs: `recon_nll`, `kl`, `neg_elbo` (nats, [-1, 1] scale) and, for
  that neg_elbo, `percentile` and `verdict` (unusual above the 95th percentile) in the
  manifest's `vae_anomaly` calibration;
- `formula`: small synthetic (x, x_hat, mu, logvar, log_sigma) -> `log_px`, `kl`, exact
  in float64 (no graph involved);
- `calibrations`: the bundle's calibration and a synthetic one with a detail floor, each
  with scores -> percentiles, percentiles -> values (`value_at`), and (score, detail) ->
  verdicts.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from . import metrics
from .util import write_json

FILE = "golden.json"
FORMAT = "latentface-golden/1"
UNUSUAL_PERCENTILE = 95.0
# neg_elbo through the graphs: float32 networks in ONNX Runtime on both sides, sums in float64
SCORE_REL_TOL = 1e-5
# a calibration with every branch: the normal tail below the median, a detail floor
SYNTHETIC_CALIBRATION = {"score": "neg_elbo_nats",
                         "percentiles": {"50": 100.0, "90": 140.0, "95": 150.0, "99": 190.0, "100": 200.0},
                         "mean": 105.0, "std": 20.0, "threshold": 190.0, "detail": {"floor": 0.03}}


def _session(path):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def to_float(u8):
    """uint8 [N,3,R,R] -> float32 [-1, 1], as the Rust test converts (u / 127.5 - 1 in f32)."""
    return u8.astype(np.float32) / np.float32(127.5) - np.float32(1.0)


def _u8(img):
    return np.clip(np.rint((img.astype(np.float64) + 1) * 127.5), 0, 255).astype(np.uint8)


def golden_images(bundle_dir, man):
    """{name: uint8 [3, R, R]}: generator faces, a VAE sample and three non-faces."""
    r = man["resolution"]
    rs = np.random.RandomState(2027)
    out = {}
    mapping = _session(bundle_dir / man["graphs"]["mapping"]["file"])
    synth = _session(bundle_dir / man["graphs"]["synthesis"]["file"])
    w_avg = np.array(man["w_avg"], np.float32)
    z = rs.randn(2, man["z_dim"]).astype(np.float32)
    (w,) = mapping.run(None, {"z": z})
    w = w_avg + 0.7 * (w - w_avg)
    feeds = {"ws": np.repeat(w[:, None], man["num_ws"], axis=1)}
    feeds.update({f"noise_{i}": np.zeros([2] + s, np.float32) for i, s in enumerate(man["noise_shapes"])})
    (faces,) = synth.run(None, feeds)
    out["face_0"], out["face_1"] = _u8(faces[0]), _u8(faces[1])
    decoder = _session(bundle_dir / man["graphs"]["vae_decoder"]["file"])
    (sample,) = decoder.run(None, {"z": rs.randn(1, man["vae_z_dim"]).astype(np.float32)})
    out["vae_sample"] = _u8(sample[0])
    out["flat_colour"] = np.broadcast_to(rs.randint(0, 256, [3, 1, 1]), [3, r, r]).astype(np.uint8)
    out["uniform_noise"] = rs.randint(0, 256, [3, r, r]).astype(np.uint8)
    ramp = np.linspace(0.0, 1.0, r)[None, None, :] * np.ones([3, r, 1])
    out["smooth_ramp"] = _u8(ramp * 1.6 - 0.8)
    return out


def vae_scores(bundle_dir, man, x):
    """x float32 [N,3,R,R] -> {recon_nll, kl, neg_elbo} float64 [N] through the bundle's graphs."""
    (mu, logvar) = _session(bundle_dir / man["graphs"]["vae_encoder"]["file"]).run(None, {"image": x})
    (x_hat,) = _session(bundle_dir / man["graphs"]["vae_decoder"]["file"]).run(None, {"z": mu})
    t = lambda a: torch.from_numpy(np.asarray(a, np.float64))  # noqa: E731
    # log_sigma as the VAE holds it (float32), as src/vae/mod.rs reads it too
    recon = -metrics.gaussian_log_px(t(x), t(x_hat), t(np.float32(man["vae_log_sigma"])))
    kl = metrics.kl_normal(t(mu), t(logvar))
    return {"recon_nll": recon.numpy(), "kl": kl.numpy(), "neg_elbo": (recon + kl).numpy()}


def formula_cases(seed=5):
    """Synthetic inputs of the likelihood formulas (3 x 2 x 2 pixels, 4 latent dims)."""
    rs = np.random.RandomState(seed)
    f32 = lambda a: a.astype(np.float32).astype(np.float64)  # noqa: E731  (the tensors are float32 on both sides)
    cases = []
    for k in range(3):
        x, x_hat = f32(rs.uniform(-1, 1, [3, 2, 2])), f32(rs.uniform(-1, 1, [3, 2, 2]))
        mu, logvar = f32(rs.randn(4)), f32(rs.randn(4) - 1.0)
        log_sigma = rs.uniform(-3, 0, 3)
        t = lambda a: torch.from_numpy(np.asarray(a, np.float64))[None]  # noqa: E731
        cases.append({"x": x.ravel().tolist(), "x_hat": x_hat.ravel().tolist(), "mu": mu.tolist(),
                      "logvar": logvar.tolist(), "log_sigma": log_sigma.tolist(),
                      "log_px": float(metrics.gaussian_log_px(t(x), t(x_hat), torch.from_numpy(log_sigma))[0]),
                      "kl": float(metrics.kl_normal(t(mu), t(logvar))[0])})
    return cases


def calibration_cases(name, cal):
    c = metrics.Calibration(cal)
    lo, hi = c.points[0][1], c.points[-1][1]
    span = max(hi - lo, 1e-6)
    scores = sorted({lo - 3 * span, lo - 0.1 * span, lo, *[v for _, v in c.points],
                     *[lo + f * span for f in (0.13, 0.5, 0.77, 0.99)], hi + span})
    details = [0.0, 0.01, 0.05, 0.5]
    return {"name": name, "calibration": cal,
            "scores": scores, "percentiles": [c.percentile(s) for s in scores],
            "at_percentiles": [0.0, 25.0, 50.0, 75.0, 92.5, 97.0, 100.0],
            "values": [c.value_at(p) for p in (0.0, 25.0, 50.0, 75.0, 92.5, 97.0, 100.0)],
            "verdicts": [{"score": s, "detail": d, "verdict": c.verdict(s, d, UNUSUAL_PERCENTILE)}
                         for s in scores for d in details]}


def compute(bundle_dir):
    """The golden vectors of a bundle with a VAE and a `vae_anomaly` calibration."""
    bundle_dir = Path(bundle_dir)
    man = json.loads((bundle_dir / "manifest.json").read_text())
    imgs = golden_images(bundle_dir, man)
    names = list(imgs)
    u8 = np.stack([imgs[n] for n in names])
    x = to_float(u8)
    scores = vae_scores(bundle_dir, man, x)
    detail = metrics.detail(torch.from_numpy(x))
    cal = metrics.Calibration(man["vae_anomaly"])
    images = []
    for i, n in enumerate(names):
        e = float(scores["neg_elbo"][i])
        images.append({"name": n, "u8_hex": u8[i].tobytes().hex(), "detail": float(detail[i]),
                       "recon_nll": float(scores["recon_nll"][i]), "kl": float(scores["kl"][i]), "neg_elbo": e,
                       "percentile": cal.percentile(e), "verdict": cal.verdict(e, float(detail[i]),
                                                                                UNUSUAL_PERCENTILE)})
    return {"format": FORMAT, "bundle": man["name"], "resolution": man["resolution"],
            "about": "inputs -> outputs of detail, neg-ELBO, percentiles and verdicts as the Python toolchain "
                     "computes them (latentface_train.golden); tests/golden.rs asserts the Rust side agrees",
            "image_tensor": "u8_hex: [3,R,R] uint8, C order; x = u / 127.5 - 1 (float32)",
            "unusual_percentile": UNUSUAL_PERCENTILE, "score_rel_tol": SCORE_REL_TOL,
            "log_sigma": man["vae_log_sigma"], "images": images, "formula": formula_cases(),
            "calibrations": [calibration_cases("vae_anomaly", man["vae_anomaly"]),
                             calibration_cases("synthetic", SYNTHETIC_CALIBRATION)]}


def check_against_torch(golden, vae):
    """Raise if the torch VAE's own `neg_elbo_at_mean` disagrees with the graphs' scores."""
    from .vae import neg_elbo_at_mean
    u8 = np.stack([np.frombuffer(bytes.fromhex(im["u8_hex"]), np.uint8) for im in golden["images"]])
    r = golden["resolution"]
    x = torch.from_numpy(to_float(u8.reshape(-1, 3, r, r)))
    got = neg_elbo_at_mean(vae, x).double().numpy()
    want = np.array([im["neg_elbo"] for im in golden["images"]])
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    if rel > SCORE_REL_TOL:
        raise AssertionError(f"torch neg_elbo_at_mean and the exported graphs differ by {rel:.2e} (relative)")
    return rel


def has_vae(man):
    return all(k in man.get("graphs", {}) for k in ("vae_encoder", "vae_decoder")) and bool(man.get("vae_anomaly"))


def write(bundle_dir, vae=None, log=print):
    """Compute and write BUNDLE/golden.json; with the torch `vae`, check it against the graphs first.
    A bundle without a VAE (or its calibration) gets no file; returns the vectors or None."""
    if not has_vae(json.loads((Path(bundle_dir) / "manifest.json").read_text())):
        log(f"golden vectors: {bundle_dir} has no VAE and calibration, nothing to write")
        return None
    golden = compute(bundle_dir)
    if vae is not None:
        log(f"golden vectors: torch VAE vs graphs, max relative difference {check_against_torch(golden, vae):.1e}")
    path = Path(bundle_dir) / FILE
    write_json(path, golden)
    log(f"golden vectors: {len(golden['images'])} images -> {path}")
    return golden


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", action="append", required=True, help="bundle folder (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    for b in args.bundle:
        write(b)


if __name__ == "__main__":
    main()
