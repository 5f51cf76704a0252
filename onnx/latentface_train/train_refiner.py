"""Train the refiner (refiner.py): the generator's 64 px picture -> the 192 px picture users see.

Pairs (UTKFace training split only; the 500 faces data.split_indices holds out stay out):
* input: the real face at 64 px, downsampled exactly as the generator's training data
  (data.load_faces(64): PIL Lanczos from the 200 px crop), with light random degradations
  (Gaussian blur, noise, JPEG) so that the net does not only learn Lanczos' exact look;
  with probability --render-share instead the generator's rendering of the bundle
  encoder's code of that face (zero noise), so it sees the generator's real artefacts;
* target: the same face at 192 px (data.load_faces(192): Lanczos from 200 px, antialiased).
Random aligned crops (input --crop px, target 3x that) and horizontal flips.

Loss: L1 + --lpips-weight * LPIPS-alex, plus (after --adv-start minutes) --adv-weight times a
non-saturating adversarial term from a small patch discriminator. An EMA of the weights
is what gets exported.

Resumable: a checkpoint every --ckpt-every minutes in --out (default
~/.cache/latentface-train/refiner/ckpt.pt); a rerun with the same --out resumes from it.
--minutes is the total training time over all runs (the learning-rate decay follows it).
After --early-minutes an early copy of the bundle with the refiner is written to
OUT/early/ and its path to OUT/EARLY_READY. Progress sheets (held-out faces, so they stay
out of the repository): OUT/progress_*.png, rows bicubic | refined | real.

    python -m latentface_train.train_refiner --bundle default --minutes 85 --threads 1
    python -m latentface_train.train_refiner --export --bundle default --eval-json EVAL.json
"""
import argparse
import io
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from . import data
from . import bundle as bundle_mod
from .checkpoint import load as load_ckpt, save as save_ckpt
from .lpips import LPIPS
from .refiner import Refiner, add_to_bundle
from .util import RunLog, save_grid, step_defaults

HERE = Path(__file__).resolve().parent
ONNX_DIR = HERE.parent
DEFAULT_OUT = Path.home() / ".cache" / "latentface-train" / "refiner"
SCALE = 3


class PatchD(nn.Module):
    """A small patch discriminator (about 70 px receptive field): one logit per patch."""

    def __init__(self, ch=32):
        super().__init__()
        layers, c_in = [], 3
        for c in (ch, 2 * ch, 4 * ch):
            layers += [nn.Conv2d(c_in, c, 4, stride=2, padding=1), nn.LeakyReLU(0.2)]
            c_in = c
        layers += [nn.Conv2d(c_in, c_in, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(c_in, 1, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)


def render_codes(bundle, images64, cache_path, batch=64, log=print):
    """The generator's rendering (zero noise) of the bundle encoder's code of each face,
    float16 [N, 3, 64, 64]; cached at cache_path (keyed by the bundle's graph hashes)."""
    if cache_path.exists():
        return np.load(cache_path)
    from .from_bundle import load_encoder, load_generator
    G = load_generator(bundle, log=log)
    E = load_encoder(bundle, G, log=log)
    S = G.synthesis
    out = np.empty(images64.shape, np.float16)
    t = time.time()
    with torch.no_grad():
        for i in range(0, len(images64), batch):
            x = torch.from_numpy(data.to_float(images64[i:i + batch]))
            noise = [torch.zeros([len(x)] + s) for s in S.noise_shapes]
            out[i:i + batch] = S(E(x), noise).clamp(-1, 1).numpy().astype(np.float16)
    log(f"rendered {len(images64)} encoder reconstructions in {time.time() - t:.0f} s")
    tmp = cache_path.with_name(cache_path.name + ".tmp.npy")
    np.save(tmp, out)
    os.replace(tmp, cache_path)
    return out


def gaussian_blur(x, sigma):
    """x [B,3,H,W], sigma [B] (0 = unchanged): separable 5-tap Gaussian, replicate border."""
    t = torch.arange(-2, 3, dtype=x.dtype)
    s = sigma.clamp(min=1e-3)[:, None]
    k = torch.exp(-0.5 * (t[None] / s) ** 2)
    k = k / k.sum(1, keepdim=True)  # [B, 5]
    b, c, h, w = x.shape
    y = F.pad(x.reshape(1, b * c, h, w), (2, 2, 2, 2), mode="replicate")
    kk = k.repeat_interleave(c, 0)
    y = F.conv2d(y, kk[:, None, None, :], groups=b * c)
    y = F.conv2d(y, kk[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def jpeg(u8_chw, quality):
    buf = io.BytesIO()
    Image.fromarray(u8_chw.transpose(1, 2, 0)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return np.asarray(Image.open(buf).convert("RGB")).transpose(2, 0, 1)


def degrade(u8_batch, rng, p_blur=0.5, p_noise=0.4, p_jpeg=0.3):
    """uint8 [B,3,64,64] -> float [-1,1], each picture lightly blurred / noised / JPEG'd at random."""
    u8 = u8_batch.copy()
    for i in range(len(u8)):
        if rng.rand() < p_jpeg:
            u8[i] = jpeg(u8[i], rng.randint(55, 96))
    x = torch.from_numpy(data.to_float(u8))
    sig = torch.from_numpy(np.where(rng.rand(len(u8)) < p_blur, rng.uniform(0.3, 0.9, len(u8)), 0.0)).float()
    if (sig > 0).any():
        blurred = gaussian_blur(x, sig)
        x = torch.where((sig > 0)[:, None, None, None], blurred, x)
    std = np.where(rng.rand(len(u8)) < p_noise, rng.uniform(0.005, 0.03, len(u8)), 0.0)
    x = x + torch.from_numpy(std).float()[:, None, None, None] * torch.randn(x.shape)
    return x.clamp(-1, 1)


def bicubic(x):
    return F.interpolate(x, scale_factor=SCALE, mode="bicubic", align_corners=False).clamp(-1, 1)


def make_batch(rng, idx, in64, renders, tgt192, batch, crop, render_share):
    """Aligned random crops: inputs [B,3,crop,crop], targets [B,3,3crop,3crop]."""
    pick = idx[rng.randint(0, len(idx), batch)]
    x = degrade(in64[pick], rng)
    if renders is not None and render_share > 0:
        use = rng.rand(batch) < render_share
        if use.any():
            x[torch.from_numpy(use)] = torch.from_numpy(renders[pick[use]].astype(np.float32))
    y = torch.from_numpy(data.to_float(tgt192[pick]))
    r = in64.shape[-1]
    xs, ys = [], []
    for i in range(batch):
        oy, ox = rng.randint(0, r - crop + 1, 2)
        a = x[i, :, oy:oy + crop, ox:ox + crop]
        b = y[i, :, SCALE * oy:SCALE * (oy + crop), SCALE * ox:SCALE * (ox + crop)]
        if rng.rand() < 0.5:
            a, b = a.flip(-1), b.flip(-1)
        xs.append(a)
        ys.append(b)
    return torch.stack(xs), torch.stack(ys)


def progress_sheet(ema, inputs, targets, path):
    with torch.no_grad():
        out = ema(inputs).clamp(-1, 1)
    save_grid(torch.cat([bicubic(inputs), out, targets]), path, nrow=len(inputs))


def lr_at(frac, base, decay_from=0.7, floor=0.1):
    """Constant, then linear decay to base*floor over the last 30% of the time budget."""
    if frac <= decay_from:
        return base
    return base * (1 - (1 - floor) * min(1.0, (frac - decay_from) / (1 - decay_from)))


def export_early(bundle, out, ema, info, log):
    early = out / "early"
    if early.exists():
        shutil.rmtree(early)
    shutil.copytree(bundle, early)
    add_to_bundle(early, ema, info, log=log)
    (out / "EARLY_READY").write_text(str(early) + "\n")
    log(f"early refiner bundle written to {early}")


REBUILD = [
    ".venv/bin/python -m latentface_train.train_refiner --bundle default --minutes 85 --threads 1   "
    "# resumes ~/.cache/latentface-train/refiner/ckpt.pt",
    ".venv/bin/python -m latentface_train.eval_refiner --bundle default --ckpt ~/.cache/latentface-train/refiner/ckpt.pt",
    ".venv/bin/python -m latentface_train.train_refiner --export --bundle default "
    "--eval-json ~/.cache/latentface-train/refiner/eval/eval.json",
]


def rng_state(rng):
    """numpy RandomState state as plain data (checkpoint.load reads tensors and plain data only)."""
    s = rng.get_state()
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def set_rng_state(rng, s):
    rng.set_state((s[0], np.array(s[1], np.uint32), s[2], s[3], s[4]))


def training_info(*, n_train, render_share, lpips_weight, adv_weight, adv_start, step, batch, crop, elapsed,
                  ema, threads):
    """The manifest's `refiner.training` (also kept in the checkpoint)."""
    return {"training": {"data": f"UTKFace aligned crops, {n_train} training faces "
                         "(500 held out by data.split_indices(seed=0) not used); inputs: the face at 64 px "
                         "(Lanczos, as the generator's data) with light blur/noise/JPEG, "
                         f"{render_share:.0%} generator renders of the encoder's code; "
                         "targets: the face at 192 px (Lanczos from 200 px)",
                         "licence": "UTKFace: non-commercial research use only; the weights inherit that",
                         "loss": f"L1 + {lpips_weight} LPIPS-alex"
                         + (f" + {adv_weight} adversarial (patch D, from minute {adv_start:g})"
                            if adv_weight > 0 else ""),
                         "steps": step, "batch": batch, "crop": f"{crop} px -> {SCALE * crop} px",
                         "minutes": round(elapsed / 60, 1), "hardware": f"{threads} CPU thread(s)",
                         "weights": "EMA", "ema": ema}}


def train(*, bundle=str(ONNX_DIR / "default"), out=str(DEFAULT_OUT), data_dir=None, minutes=90.0, threads=1,
          batch=16, crop=32, ch=32, blocks=4, lr=2e-4, lpips_weight=1.0, adv_weight=0.005, adv_start=25.0,
          render_share=0.25, ema_decay=0.999, ckpt_every=4.0, sheet_every=10.0, early_minutes=10.0, seed=0,
          log=None):
    """Train (or resume) the refiner in `out` until `minutes` of training in all; -> the checkpoint path."""
    torch.set_num_threads(threads)
    out = Path(out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    if log is None:
        run_log = RunLog(out / "log.txt")

        def log(msg):
            run_log(f"{time.strftime('%H:%M:%S')} {msg}")

    in64, names, _ = data.load_faces(64, data_dir)
    tgt192, names192, _ = data.load_faces(3 * 64, data_dir)
    if list(names) != list(names192):
        raise SystemExit("64 px and 192 px caches list different files")
    train_idx, held_idx = data.split_indices(len(in64))
    log(f"{len(train_idx)} training faces, {len(held_idx)} held out (not used)")
    renders = None
    if render_share > 0:
        man = json.loads((Path(bundle) / "manifest.json").read_text())
        key = (man["graphs"]["encoder"]["sha256"][:8] + man["graphs"]["synthesis"]["sha256"][:8])
        # only the training faces are rendered; held-out rows stay zero and are never drawn
        renders = np.zeros(in64.shape, np.float16)
        renders[train_idx] = render_codes(bundle, in64[train_idx], out / f"renders_train_{key}.npy", log=log)

    torch.manual_seed(seed)
    net = Refiner(ch=ch, blocks=blocks, scale=SCALE)
    ema = Refiner(ch=ch, blocks=blocks, scale=SCALE).eval().requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    D = PatchD() if adv_weight > 0 else None
    opt = torch.optim.Adam(net.parameters(), lr=lr, betas=(0.9, 0.99))
    optD = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.99)) if D is not None else None
    lpips = LPIPS().eval()
    step, elapsed, early_done = 0, 0.0, False
    rng = np.random.RandomState(seed)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = load_ckpt(ckpt_path)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        if D is not None and ck.get("D") is not None:
            D.load_state_dict(ck["D"])
            optD.load_state_dict(ck["optD"])
        step, elapsed, early_done = ck["step"], ck["elapsed"], ck.get("early_done", False)
        set_rng_state(rng, ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed from {ckpt_path}: step {step}, {elapsed / 60:.1f} min trained")

    # fixed held-out faces for the progress sheets (looked at, never trained on)
    sheet_idx = held_idx[:6]
    sheet_in = torch.from_numpy(data.to_float(in64[sheet_idx]))
    sheet_tgt = torch.from_numpy(data.to_float(tgt192[sheet_idx]))

    def info():
        return training_info(n_train=len(train_idx), render_share=render_share, lpips_weight=lpips_weight,
                             adv_weight=adv_weight if D is not None else 0, adv_start=adv_start, step=step,
                             batch=batch, crop=crop, elapsed=elapsed, ema=ema_decay, threads=threads)

    def checkpoint():
        save_ckpt(ckpt_path, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                              "D": D.state_dict() if D is not None else None,
                              "optD": optD.state_dict() if optD is not None else None,
                              "step": step, "elapsed": elapsed, "early_done": early_done,
                              "rng": rng_state(rng), "torch_rng": torch.get_rng_state(),
                              "config": net.config, "info": info()})

    budget = minutes * 60
    t0, base_elapsed = time.time(), elapsed
    last_ckpt = last_sheet = time.time()
    run_l1 = run_lp = run_adv = 0.0
    run_n = 0
    while elapsed < budget:
        cur_lr = lr_at(elapsed / budget, lr)
        for g in opt.param_groups:
            g["lr"] = cur_lr
        x, y = make_batch(rng, train_idx, in64, renders, tgt192, batch, crop, render_share)
        pred = net(x)
        l1 = (pred - y).abs().mean()
        lp = lpips(pred, y).mean()
        loss = l1 + lpips_weight * lp
        adv_on = D is not None and elapsed >= adv_start * 60
        if adv_on:
            ladv = F.softplus(-D(pred)).mean()
            loss = loss + adv_weight * ladv
            run_adv += ladv.item()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if adv_on:  # discriminator step: real 192 px crops vs the refined ones
            d_loss = F.softplus(D(pred.detach())).mean() + F.softplus(-D(y)).mean()
            optD.zero_grad(set_to_none=True)
            d_loss.backward()
            optD.step()
        with torch.no_grad():
            decay = min(ema_decay, (1 + step) / (10 + step))  # warm-up: early EMA follows the net
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - decay)
        step += 1
        run_l1 += l1.item()
        run_lp += lp.item()
        run_n += 1
        elapsed = base_elapsed + time.time() - t0
        if step % 100 == 0:
            log(f"step {step} {elapsed / 60:.1f} min lr {cur_lr:.1e} l1 {run_l1 / run_n:.4f} lpips {run_lp / run_n:.4f}"
                + (f" adv {run_adv / run_n:.3f}" if adv_on else ""))
            run_l1 = run_lp = run_adv = 0.0
            run_n = 0
        if time.time() - last_sheet > sheet_every * 60:
            progress_sheet(ema, sheet_in, sheet_tgt, out / f"progress_{step:06d}.png")
            last_sheet = time.time()
        if not early_done and early_minutes > 0 and elapsed >= early_minutes * 60:
            export_early(Path(bundle), out, ema, info(), log)
            early_done = True
            checkpoint()
        if time.time() - last_ckpt > ckpt_every * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    progress_sheet(ema, sheet_in, sheet_tgt, out / f"progress_{step:06d}.png")
    log(f"done: step {step}, {elapsed / 60:.1f} min")
    return ckpt_path


def export(*, out=str(DEFAULT_OUT), bundle="default", eval_json=None, log=print):
    """OUT/ckpt.pt's EMA refiner -> BUNDLE/refiner.onnx + manifest `refiner` (training info, the
    held-out figures of `eval_json`) and the rebuild commands."""
    ckpt_path = Path(out).expanduser() / "ckpt.pt"
    if not ckpt_path.exists():
        raise SystemExit(f"{ckpt_path}: no checkpoint to export (train first)")
    ck = load_ckpt(ckpt_path)
    net = Refiner(**ck["config"]).eval()
    net.load_state_dict(ck["ema"])
    info = json.loads(json.dumps(ck["info"]))
    if eval_json:
        ev = json.loads(Path(eval_json).expanduser().read_text())
        if ev.get("heldout") != 500:
            raise SystemExit(f"{eval_json}: evaluated on {ev.get('heldout')} faces, not the 500 held out")
        info["eval"] = {"heldout": ev["heldout"], "what": "192 px vs the real face (Lanczos from 200 px); "
                        "id = face_id descriptor distance", "rows": ev["rows"]}
    manifest = add_to_bundle(bundle, net, info, log=log)
    manifest["rebuild"] = list(manifest.get("rebuild", [])) + [
        r for r in REBUILD if r not in manifest.get("rebuild", [])]
    bundle_mod.write_manifest(bundle, manifest, extra_files=list(manifest.get("files", {})))
    log(f"refiner (step {ck['step']}, {ck['elapsed'] / 60:.1f} min) exported into {bundle}")
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle whose encoder/generator make the renders (with --export: the target)")
    ap.add_argument("--out", help="checkpoint / progress folder (resumed if it has ckpt.pt)")
    ap.add_argument("--data", dest="data_dir", help="UTKFace images folder (default: data.py's)")
    ap.add_argument("--minutes", type=float, help="total training minutes over all runs")
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int)
    ap.add_argument("--crop", type=int, help="input crop side (target: 3x)")
    ap.add_argument("--ch", type=int, help="refiner width")
    ap.add_argument("--blocks", type=int, help="residual blocks")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--lpips-weight", type=float)
    ap.add_argument("--adv-weight", type=float, help="0 = no discriminator")
    ap.add_argument("--adv-start", type=float, help="minutes before the adversarial term starts")
    ap.add_argument("--render-share", type=float, help="share of inputs that are generator renders")
    ap.add_argument("--ema", dest="ema_decay", type=float, help="EMA decay of the exported weights")
    ap.add_argument("--ckpt-every", type=float, help="minutes")
    ap.add_argument("--sheet-every", type=float, help="minutes")
    ap.add_argument("--early-minutes", type=float, help="write OUT/early after this (0 = never)")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--export", action="store_true",
                    help="no training: put OUT/ckpt.pt's EMA refiner into --bundle and exit")
    ap.add_argument("--eval-json", help="with --export: eval_refiner's JSON, recorded in the manifest")
    ap.set_defaults(**step_defaults(train), export=False, eval_json=None)
    args = vars(ap.parse_args())
    if args.pop("export"):
        export(out=args["out"], bundle=args["bundle"], eval_json=args["eval_json"])
        return
    args.pop("eval_json")
    train(**args)


if __name__ == "__main__":
    main()
