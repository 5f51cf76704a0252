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

    python -m latentface_train.train_refiner --bundle default --minutes 90 --threads 1
"""
import argparse
import io
import json
import math
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
from .checkpoint import save as save_ckpt
from .lpips import LPIPS
from .refiner import Refiner, add_to_bundle
from .util import save_grid

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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", default=str(ONNX_DIR / "default"), help="bundle whose encoder/generator make the renders")
    ap.add_argument("--out", default=str(DEFAULT_OUT), help="checkpoint / progress folder (resumed if it has ckpt.pt)")
    ap.add_argument("--data", default=None, help="UTKFace images folder (default: data.py's)")
    ap.add_argument("--minutes", type=float, default=90.0, help="total training minutes over all runs")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--crop", type=int, default=32, help="input crop side (target: 3x)")
    ap.add_argument("--ch", type=int, default=32)
    ap.add_argument("--blocks", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--lpips-weight", type=float, default=1.0)
    ap.add_argument("--adv-weight", type=float, default=0.005, help="0 = no discriminator")
    ap.add_argument("--adv-start", type=float, default=25.0, help="minutes before the adversarial term starts")
    ap.add_argument("--render-share", type=float, default=0.25, help="share of inputs that are generator renders")
    ap.add_argument("--ema", type=float, default=0.999)
    ap.add_argument("--ckpt-every", type=float, default=4.0, help="minutes")
    ap.add_argument("--sheet-every", type=float, default=10.0, help="minutes")
    ap.add_argument("--early-minutes", type=float, default=10.0, help="write OUT/early after this (0 = never)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    logf = open(out / "log.txt", "a")

    def log(msg):
        line = f"{time.strftime('%H:%M:%S')} {msg}"
        print(line, flush=True)
        logf.write(line + "\n")
        logf.flush()

    in64, names, _ = data.load_faces(64, args.data)
    tgt192, names192, _ = data.load_faces(3 * 64, args.data)
    if list(names) != list(names192):
        raise SystemExit("64 px and 192 px caches list different files")
    train_idx, held_idx = data.split_indices(len(in64))
    log(f"{len(train_idx)} training faces, {len(held_idx)} held out (not used)")
    renders = None
    if args.render_share > 0:
        man = json.loads((Path(args.bundle) / "manifest.json").read_text())
        key = (man["graphs"]["encoder"]["sha256"][:8] + man["graphs"]["synthesis"]["sha256"][:8])
        # only the training faces are rendered; held-out rows stay zero and are never drawn
        full = np.zeros(in64.shape, np.float16)
        part = render_codes(args.bundle, in64[train_idx], out / f"renders_train_{key}.npy", log=log)
        full[train_idx] = part
        renders = full

    torch.manual_seed(args.seed)
    net = Refiner(ch=args.ch, blocks=args.blocks, scale=SCALE)
    ema = Refiner(ch=args.ch, blocks=args.blocks, scale=SCALE).eval().requires_grad_(False)
    ema.load_state_dict(net.state_dict())
    D = PatchD() if args.adv_weight > 0 else None
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, betas=(0.9, 0.99))
    optD = torch.optim.Adam(D.parameters(), lr=args.lr, betas=(0.5, 0.99)) if D is not None else None
    lpips = LPIPS().eval()
    step, elapsed, early_done = 0, 0.0, False
    rng = np.random.RandomState(args.seed)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        net.load_state_dict(ck["net"])
        ema.load_state_dict(ck["ema"])
        opt.load_state_dict(ck["opt"])
        if D is not None and ck.get("D") is not None:
            D.load_state_dict(ck["D"])
            optD.load_state_dict(ck["optD"])
        step, elapsed, early_done = ck["step"], ck["elapsed"], ck.get("early_done", False)
        rng.set_state(ck["rng"])
        torch.set_rng_state(ck["torch_rng"])
        log(f"resumed from {ckpt_path}: step {step}, {elapsed / 60:.1f} min trained")

    # fixed held-out faces for the progress sheets (looked at, never trained on)
    sheet_idx = held_idx[:6]
    sheet_in = torch.from_numpy(data.to_float(in64[sheet_idx]))
    sheet_tgt = torch.from_numpy(data.to_float(tgt192[sheet_idx]))

    def info():
        return {"training": {"data": f"UTKFace aligned crops, {len(train_idx)} training faces "
                             "(500 held out by data.split_indices(seed=0) not used); inputs: the face at 64 px "
                             "(Lanczos, as the generator's data) with light blur/noise/JPEG, "
                             f"{args.render_share:.0%} generator renders of the encoder's code; "
                             "targets: the face at 192 px (Lanczos from 200 px)",
                             "licence": "UTKFace: non-commercial research use only; the weights inherit that",
                             "loss": f"L1 + {args.lpips_weight} LPIPS-alex"
                             + (f" + {args.adv_weight} adversarial (patch D, from minute {args.adv_start:g})"
                                if D is not None else ""),
                             "steps": step, "batch": args.batch, "crop": f"{args.crop} px -> {SCALE * args.crop} px",
                             "minutes": round(elapsed / 60, 1), "hardware": "1 CPU thread",
                             "weights": "EMA", "ema": args.ema}}

    def checkpoint():
        save_ckpt(ckpt_path, {"net": net.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(),
                              "D": D.state_dict() if D is not None else None,
                              "optD": optD.state_dict() if optD is not None else None,
                              "step": step, "elapsed": elapsed, "early_done": early_done,
                              "rng": rng.get_state(), "torch_rng": torch.get_rng_state(),
                              "config": net.config, "args": vars(args), "info": info()})

    budget = args.minutes * 60
    t0, base_elapsed = time.time(), elapsed
    last_ckpt = last_sheet = time.time()
    run_l1 = run_lp = run_adv = 0.0
    run_n = 0
    while elapsed < budget:
        lr = lr_at(elapsed / budget, args.lr)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = make_batch(rng, train_idx, in64, renders, tgt192, args.batch, args.crop, args.render_share)
        pred = net(x)
        l1 = (pred - y).abs().mean()
        lp = lpips(pred, y).mean()
        loss = l1 + args.lpips_weight * lp
        adv_on = D is not None and elapsed >= args.adv_start * 60
        if adv_on:
            ladv = F.softplus(-D(pred)).mean()
            loss = loss + args.adv_weight * ladv
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
            decay = min(args.ema, (1 + step) / (10 + step))  # warm-up: early EMA follows the net
            for pe, pn in zip(ema.parameters(), net.parameters()):
                pe.lerp_(pn, 1 - decay)
        step += 1
        run_l1 += l1.item()
        run_lp += lp.item()
        run_n += 1
        elapsed = base_elapsed + time.time() - t0
        if step % 100 == 0:
            log(f"step {step} {elapsed / 60:.1f} min lr {lr:.1e} l1 {run_l1 / run_n:.4f} lpips {run_lp / run_n:.4f}"
                + (f" adv {run_adv / run_n:.3f}" if adv_on else ""))
            run_l1 = run_lp = run_adv = 0.0
            run_n = 0
        if time.time() - last_sheet > args.sheet_every * 60:
            progress_sheet(ema, sheet_in, sheet_tgt, out / f"progress_{step:06d}.png")
            last_sheet = time.time()
        if not early_done and args.early_minutes > 0 and elapsed >= args.early_minutes * 60:
            export_early(Path(args.bundle), out, ema, info(), log)
            early_done = True
            checkpoint()
        if time.time() - last_ckpt > args.ckpt_every * 60:
            checkpoint()
            last_ckpt = time.time()
    checkpoint()
    progress_sheet(ema, sheet_in, sheet_tgt, out / f"progress_{step:06d}.png")
    log(f"done: step {step}, {elapsed / 60:.1f} min")


if __name__ == "__main__":
    main()
