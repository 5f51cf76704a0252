"""Evaluate the refiner on the 500 held-out UTKFace faces (data.split_indices(seed=0)) at 192 px.

Rows (each against the real face at 192 px, Lanczos from the 200 px crop):
* real64 -> bicubic / lanczos / refiner: the real face at 64 px (data.load_faces(64)) enlarged;
* recon -> bicubic / refiner: the generator's rendering (zero noise) of the bundle encoder's code
  of the face, the 64 px picture users get for a photo before any inversion steps, enlarged.
Columns: PSNR (dB, 8-bit pictures), LPIPS-alex, and the face judge's identity distance
(face-api's face_id descriptor on the 150 px judge input, as src/faces) to the real 192 px face,
with the share under the bundle's id_threshold ("same person").

The refiner is the bundle's refiner.onnx run in ONNX Runtime (what users get), or with
--ckpt the EMA weights of a train_refiner checkpoint. Sheets (bicubic | refined | real, of
held-out faces: dataset crops, so they go to --out, outside the repository) and one of
random generator samples (psi 0.7, zero noise; bicubic | refined; renders only, may be committed: --samples-png).

    python -m latentface_train.eval_refiner --bundle default --out ~/.cache/latentface-train/refiner/eval
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from . import data
from .faceapi import judge_input, load_face_id
from .lpips import LPIPS
from .checkpoint import load as load_ckpt
from .util import save_grid, step_defaults, to_uint8

HERE = Path(__file__).resolve().parent
ONNX_DIR = HERE.parent


def quantize(x):
    """float [-1,1] -> the 8-bit picture a user sees, back as float [-1,1]."""
    return torch.from_numpy(to_uint8(x).astype(np.float32) / 127.5 - 1.0)


def psnr(a, b):
    mse = ((a - b) / 2).square().mean(dim=(1, 2, 3))  # [0,1] scale
    return 10 * torch.log10(1.0 / mse.clamp(min=1e-12))


def lanczos_up(u8, size):
    out = np.empty([len(u8), 3, size, size], np.uint8)
    for i, a in enumerate(u8):
        out[i] = np.asarray(Image.fromarray(a.transpose(1, 2, 0)).resize((size, size), Image.LANCZOS)).transpose(2, 0, 1)
    return torch.from_numpy(out.astype(np.float32) / 127.5 - 1.0)


def bicubic(x, scale=3):
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(-1, 1)


def make_refine(bundle, ckpt, threads):
    """-> (callable float [B,3,64,64] -> [B,3,192,192], description)."""
    if ckpt:
        from .refiner import Refiner
        ck = load_ckpt(ckpt)
        net = Refiner(**ck["config"]).eval()
        net.load_state_dict(ck["ema"])

        def run(x):
            with torch.no_grad():
                return net(x).clamp(-1, 1)
        return run, f"{ckpt} (EMA, step {ck['step']})"
    import onnxruntime as ort
    path = Path(bundle) / "refiner.onnx"
    if not path.exists():
        raise SystemExit(f"{path}: no refiner in the bundle (pass --ckpt to evaluate a checkpoint)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run(x):
        return torch.from_numpy(sess.run(None, {"image": x.numpy()})[0])
    return run, str(path)


def batched(fn, x, batch=50):
    return torch.cat([fn(x[i:i + batch]) for i in range(0, len(x), batch)])


def speed(refine, n=32, reps=3):
    x = torch.rand(n, 3, 64, 64) * 2 - 1
    refine(x[:4])
    best = 1e9
    for _ in range(reps):
        t = time.time()
        refine(x)
        best = min(best, time.time() - t)
    return n / best


def evaluate(*, bundle=str(ONNX_DIR / "default"), ckpt=None,
             model_dir=str(ONNX_DIR / "node_modules/@vladmandic/face-api/model"), data_dir=None, n=500, threads=2,
             out=str(Path.home() / ".cache/latentface-train/refiner/eval"), samples_png=None, log=print):
    """The table of the module docstring on the first `n` held-out faces; writes OUT/eval.json
    and the sheets; -> the report dict."""
    torch.set_num_threads(threads)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    in64, _, _ = data.load_faces(64, data_dir)
    tgt192, _, _ = data.load_faces(192, data_dir)
    _, held = data.split_indices(len(in64))
    held = held[:n]
    x64 = torch.from_numpy(data.to_float(in64[held]))
    real = torch.from_numpy(data.to_float(tgt192[held]))
    refine, what = make_refine(bundle, ckpt, threads)

    from .from_bundle import load_encoder, load_generator
    G = load_generator(bundle, log=log).requires_grad_(False)
    E = load_encoder(bundle, G, log=log).requires_grad_(False)
    S = G.synthesis

    def recon_fn(x):
        with torch.no_grad():
            return S(E(x), [torch.zeros([len(x)] + s) for s in S.noise_shapes]).clamp(-1, 1)
    recon = quantize(batched(recon_fn, x64))  # the 8-bit picture the app would show / refine

    pics = {
        "real64 -> bicubic": bicubic(x64),
        "real64 -> lanczos": lanczos_up(in64[held], 192),
        "real64 -> refiner": batched(refine, x64),
        "recon -> bicubic": bicubic(recon),
        "recon -> refiner": batched(refine, recon),
    }
    pics = {k: quantize(v) for k, v in pics.items()}
    lpips = LPIPS().eval()
    face_id = load_face_id(model_dir)
    man = json.loads((Path(bundle) / "manifest.json").read_text())
    thr = float(man.get("faces", {}).get("id_threshold", 0.6))
    with torch.no_grad():
        d_real = batched(lambda x: face_id(judge_input(x, 150)), real)
        rows = {}
        for k, v in pics.items():
            lp = torch.cat([lpips(v[i:i + 50], real[i:i + 50]) for i in range(0, len(v), 50)])
            d = batched(lambda x: face_id(judge_input(x, 150)), v)
            dist = (d - d_real).norm(dim=1)
            rows[k] = {"psnr_db": round(float(psnr(v, real).mean()), 3), "lpips": round(float(lp.mean()), 4),
                       "id_distance": round(float(dist.mean()), 4),
                       "same_person": round(float((dist < thr).float().mean()), 4)}
    fps = {f"{t}_threads": round(speed(refine), 1) for t in [threads]}

    log(f"refiner: {what}; {len(held)} held-out faces; identity threshold {thr}")
    log(f"{'':20s} {'PSNR dB':>8s} {'LPIPS':>7s} {'id dist':>8s} {'same %':>7s}")
    for k, r in rows.items():
        log(f"{k:20s} {r['psnr_db']:8.2f} {r['lpips']:7.4f} {r['id_distance']:8.4f} {100 * r['same_person']:7.1f}")
    log(f"refiner speed (ORT/torch, batch 32, {threads} threads): {fps} pictures/s")

    k = 8
    save_grid(torch.cat([pics["real64 -> bicubic"][:k], pics["real64 -> refiner"][:k], real[:k]]),
              out / "heldout_real64.png", nrow=k)
    save_grid(torch.cat([pics["recon -> bicubic"][:k], pics["recon -> refiner"][:k], real[:k]]),
              out / "heldout_recon.png", nrow=k)
    # random generator samples (made-up people) as the app draws them: psi 0.7, zero noise
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        w = G.mapping(torch.randn(k, G.z_dim, generator=g))
        w = G.w_avg + 0.7 * (w - G.w_avg)
        ws = w[:, None].expand(-1, G.num_ws, -1)
        noise = [torch.zeros([k] + s) for s in S.noise_shapes]
        samp = quantize(S(ws, noise).clamp(-1, 1))
    sheet = torch.cat([quantize(bicubic(samp)), quantize(refine(samp))])
    save_grid(sheet, out / "samples.png", nrow=k)
    if samples_png:
        save_grid(sheet, samples_png, nrow=k)
    report = {"refiner": what, "heldout": len(held), "id_threshold": thr, "rows": rows,
              "pictures_per_s": fps, "seconds": round(time.time() - t0, 1)}
    (out / "eval.json").write_text(json.dumps(report, indent=1) + "\n")
    log(f"wrote {out}/eval.json and sheets in {time.time() - t0:.0f} s")
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle: its encoder/generator, face threshold and (without --ckpt) refiner.onnx")
    ap.add_argument("--ckpt", help="evaluate a train_refiner checkpoint (EMA weights) instead of the bundle's graph")
    ap.add_argument("--model-dir", help="face-api weights for the identity distance")
    ap.add_argument("--data", dest="data_dir", help="UTKFace images folder (default: data.py's)")
    ap.add_argument("--n", type=int, help="held-out faces to use (all 500 by default)")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--out", help="folder for the JSON and the held-out sheets (outside the repository)")
    ap.add_argument("--samples-png", help="also write the generator-samples sheet (renders only) here")
    ap.set_defaults(**step_defaults(evaluate))
    evaluate(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
