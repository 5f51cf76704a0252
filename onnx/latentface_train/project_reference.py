"""Reference PyTorch projector: the speed and quality baseline for the Rust inversion engine.

    python -m latentface_train.project_reference --ckpt runs/gan/ckpt.pt --n 20 --steps 300 \\
        --space w+ --threads 2 --out runs/ref_proj
    python -m latentface_train.project_reference ... --batch 8 --out runs/ref_proj_b8

NVIDIA's StyleGAN2-ADA projector (RESEARCH.md section 6), adapted to the bundle:
- start at the W mean of `w_avg_samples` (10,000) mapped z (z from RandomState(123), as
  NVIDIA); `w_std` is NVIDIA's SCALAR `sqrt(sum((w - w_avg)^2) / N)` over those samples
  (the RMS distance to the mean, not a per-dimension std);
- Adam (betas 0.9, 0.999, eps 1e-8); lr = initial_lr * rampup * rampdown with t = step/steps,
  rampup = min(1, t / 0.05), rampdown = 0.5 - 0.5 cos(pi * min(1, (1 - t) / 0.25))
  (so step 0 has lr 0, exactly as NVIDIA);
- latent noise N(0, 1) * w_std * 0.05 * max(0, 1 - t / 0.75)^2 added to the optimised latent
  before each synthesis (not to the stored latent); space "w": one W per image broadcast to
  all num_ws layers (NVIDIA's choice, one noise draw broadcast too); "w+": one W per layer
  (independent noise per layer);
- loss = graphs.reconstruction_loss(image, target, mask=ones, weights=[pixel, lpips], lpips),
  i.e. exactly the bundle's `synthesis_grad` loss: masked MSE + LPIPS-alex at native 64 px.
  NVIDIA uses LPIPS-VGG at 256 px and no pixel term.
- DEPARTURE FROM NVIDIA: the noise maps are fixed ZEROS (the Rust engine feeds zeros too);
  NVIDIA optimises the noise maps with a 1e5-weighted autocorrelation regulariser.
- the returned latent is the optimised one after the last Adam update, without noise.
Gradients come from autograd on the CPU, with respect to the latent only (G is frozen).
Batches: each image has its own latent; the loss is summed over the batch, and Adam is
element-wise, so a batch of B is B independent projections (their latent-noise draws
differ from the B=1 runs, so results are not bitwise identical across batch sizes).
"""
import argparse
import math
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, data, from_bundle
from .graphs import reconstruction_loss
from .metrics import psnr_u8
from .util import save_grid, step_defaults, to_uint8, write_json

_LPIPS_CACHE = {}


def default_lpips():
    """A shared LPIPS-alex module (weights from fetch_lpips_weights)."""
    if "alex" not in _LPIPS_CACHE:
        from .lpips import LPIPS
        _LPIPS_CACHE["alex"] = LPIPS().eval()
    return _LPIPS_CACHE["alex"]


@torch.no_grad()
def compute_w_stats(G, w_avg_samples=10000, z_seed=123, chunk=2500):
    """-> (w_avg [w_dim], w_std scalar float) from `w_avg_samples` mapped z (NVIDIA's recipe)."""
    z = torch.from_numpy(np.random.RandomState(z_seed).randn(w_avg_samples, G.z_dim).astype(np.float32))
    w = torch.cat([G.mapping(z[i:i + chunk]) for i in range(0, w_avg_samples, chunk)])  # [N, w_dim]
    w_avg = w.mean(0)
    w_std = float(((w - w_avg) ** 2).sum().div(w_avg_samples).sqrt())
    return w_avg, w_std


def learning_rate(step, num_steps, initial_learning_rate=0.1, lr_rampdown_length=0.25, lr_rampup_length=0.05):
    t = step / num_steps
    ramp = min(1.0, (1.0 - t) / lr_rampdown_length)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    ramp = ramp * min(1.0, t / lr_rampup_length)
    return initial_learning_rate * ramp


def noise_scale(step, num_steps, w_std, initial_noise_factor=0.05, noise_ramp_length=0.75):
    t = step / num_steps
    return w_std * initial_noise_factor * max(0.0, 1.0 - t / noise_ramp_length) ** 2


def zero_noise(G, batch):
    return [torch.zeros([batch] + s) for s in G.synthesis.noise_shapes]


def project(G, target, *, num_steps=300, initial_learning_rate=0.1, initial_noise_factor=0.05,
            lr_rampdown_length=0.25, lr_rampup_length=0.05, noise_ramp_length=0.75,
            w_avg_samples=10000, space="w+", pixel_weight=1.0, lpips_weight=1.0, seed=0, lpips=None,
            w_stats=None, step_times=None, verbose=False):
    """Project target image(s) into G's latent space.

    G: networks.Generator (frozen here: requires_grad is switched off, eval mode).
    target: float tensor [3,H,W] or [B,3,H,W] in [-1, 1] (B > 1: B independent projections).
    lpips: an LPIPS module; None -> the default LPIPS-alex (only loaded if lpips_weight != 0).
    w_stats: optional precomputed (w_avg, w_std) from compute_w_stats, to skip re-mapping.
    step_times: optional list; the wall time of each step (seconds) is appended to it.
    Returns (ws [B, num_ws, w_dim] float32 tensor, losses: float64 array [num_steps, B],
    the per-sample loss at each step, evaluated at the noisy latent the gradient came from).
    """
    if space not in ("w", "w+"):
        raise ValueError(f"space must be 'w' or 'w+', got {space!r}")
    if target.ndim == 3:
        target = target[None]
    target = target.detach().float()
    B = target.shape[0]
    assert target.shape[1:] == (3, G.resolution, G.resolution), target.shape
    G.eval().requires_grad_(False)
    if lpips is None and lpips_weight != 0:
        lpips = default_lpips()
    if lpips is not None:
        lpips.eval().requires_grad_(False)

    w_avg, w_std = w_stats if w_stats is not None else compute_w_stats(G, w_avg_samples)
    n_lat = 1 if space == "w" else G.num_ws
    w_opt = w_avg.detach().reshape(1, 1, -1).repeat(B, n_lat, 1).clone().requires_grad_(True)
    optimizer = torch.optim.Adam([w_opt], lr=initial_learning_rate, betas=(0.9, 0.999), eps=1e-8)
    noise = zero_noise(G, B)
    mask = torch.ones(B, 1, G.resolution, G.resolution)
    weights = torch.tensor([[pixel_weight, lpips_weight]], dtype=torch.float32).repeat(B, 1)
    gen = torch.Generator().manual_seed(seed)
    losses = np.zeros([num_steps, B])

    for step in range(num_steps):
        t0 = time.perf_counter()
        lr = learning_rate(step, num_steps, initial_learning_rate, lr_rampdown_length, lr_rampup_length)
        for group in optimizer.param_groups:
            group["lr"] = lr
        sigma = noise_scale(step, num_steps, w_std, initial_noise_factor, noise_ramp_length)
        w_in = w_opt + torch.randn(w_opt.shape, generator=gen) * sigma
        ws = w_in.expand(-1, G.num_ws, -1) if space == "w" else w_in
        img = G.synthesis(ws, noise)
        loss = reconstruction_loss(img, target, mask, weights, lpips)  # [B]
        optimizer.zero_grad(set_to_none=True)
        loss.sum().backward()
        optimizer.step()
        losses[step] = loss.detach().double().numpy()
        if step_times is not None:
            step_times.append(time.perf_counter() - t0)
        if verbose and (step % max(1, num_steps // 10) == 0 or step == num_steps - 1):
            print(f"  step {step + 1:4d}/{num_steps} lr {lr:.4f} sigma {sigma:.4f} "
                  f"loss {' '.join(f'{v:.4f}' for v in losses[step])}", flush=True)

    ws = w_opt.detach()
    if space == "w":
        ws = ws.expand(-1, G.num_ws, -1)
    return ws.contiguous().clone(), losses


# ----------------------------------------------------------------------------- CLI
def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_projection(*, ckpt=None, bundle="default", n=20, steps=300, space="w+", threads=2, batch=1, lr=0.1,
                   noise_factor=0.05, pixel_weight=1.0, lpips_weight=1.0, w_avg_samples=10000, seed=0, data_dir=None,
                   out="runs/ref_proj", curve="", verbose=False):
    """Project the first n held-out faces, write OUT/ws.npy, compare.png and report.json.

    curve: comma-separated extra step budgets ("50,100,200"): the same faces are projected
    again with num_steps = each budget (its own full schedule), and report.json's `curve`
    lists, for every budget and `steps`, the seconds per image and the codes OUT/ws_kK.npy,
    which `latentface bench --suite quality --reference-curve` judges (time to quality)."""
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    load_at_start = os.getloadavg()

    if ckpt:
        G, ck = checkpoint.load_generator(ckpt)
        ck_meta = {k: ck[k] for k in ("step", "imgs_seen", "seconds") if k in ck}
    else:  # the committed bundle's own generator, checked against its graphs
        G = from_bundle.load_generator(bundle).requires_grad_(False)
        ck_meta = {"bundle": str(bundle)}
    res = G.resolution
    images, names, _ = data.load_faces(res, data_dir)
    held = data.split_indices(len(images))[1][:n]
    targets_u8 = images[held]
    targets = torch.from_numpy(data.to_float(targets_u8))
    lpips = default_lpips()

    t0 = time.perf_counter()
    w_stats = compute_w_stats(G, w_avg_samples)
    w_stats_s = time.perf_counter() - t0
    print(f"G step {ck_meta.get('step')} | {len(held)} held-out faces | w_std {w_stats[1]:.4f} "
          f"({w_stats_s:.2f}s) | {steps} steps, space {space}, batch {batch}, "
          f"{threads} threads", flush=True)

    # one untimed warm-up (first-call allocations, oneDNN primitive creation)
    project(G, targets[:min(batch, len(held))], num_steps=2, space=space, lpips=lpips, w_stats=w_stats,
            pixel_weight=pixel_weight, lpips_weight=lpips_weight)

    all_ws, per_image, groups = [], [], []
    for g0 in range(0, len(held), batch):
        idx = list(range(g0, min(g0 + batch, len(held))))
        times = []
        t0 = time.perf_counter()
        ws, losses = project(G, targets[idx], num_steps=steps, initial_learning_rate=lr,
                             initial_noise_factor=noise_factor, space=space,
                             w_avg_samples=w_avg_samples, pixel_weight=pixel_weight,
                             lpips_weight=lpips_weight, seed=seed + g0, lpips=lpips,
                             w_stats=w_stats, step_times=times, verbose=verbose)
        wall = time.perf_counter() - t0
        with torch.no_grad():
            img = G.synthesis(ws, zero_noise(G, len(idx)))
            tgt = targets[idx]
            final_loss = reconstruction_loss(img, tgt, torch.ones(len(idx), 1, res, res),
                                             torch.tensor([[pixel_weight, lpips_weight]]).repeat(len(idx), 1),
                                             lpips).numpy()
            proj_u8 = to_uint8(img)
            lp = lpips(torch.from_numpy(data.to_float(proj_u8)), tgt).numpy()
        ms_step = float(np.median(times) * 1000)
        groups.append(dict(size=len(idx), seconds=wall, ms_per_step_median=ms_step,
                           ms_per_step_first=times[0] * 1000))
        for j, i in enumerate(idx):
            rec = dict(index=int(held[i]), name=str(names[held[i]]), psnr_db=psnr_u8(proj_u8[j], targets_u8[i]),
                       lpips=float(lp[j]), final_loss=float(final_loss[j]),
                       first_loss=float(losses[0, j]), min_step_loss=float(losses[:, j].min()),
                       seconds=wall / len(idx), ms_per_step_median=ms_step)
            per_image.append(rec)
            print(f"[{i + 1}/{len(held)}] {rec['name']}: PSNR {rec['psnr_db']:.2f} dB, LPIPS {rec['lpips']:.4f}, "
                  f"loss {rec['first_loss']:.4f} -> {rec['final_loss']:.4f}, {rec['seconds']:.1f} s/img, "
                  f"{ms_step:.1f} ms/step (batch {len(idx)})", flush=True)
        all_ws.append(ws.numpy())
        all_ws_np = np.concatenate(all_ws)
        np.save(out / "ws.npy", all_ws_np)
        save_grid(torch.cat([targets[:len(all_ws_np)],
                             G.synthesis(torch.from_numpy(all_ws_np), zero_noise(G, len(all_ws_np))).detach()]),
                  out / "compare.png", nrow=len(all_ws_np))

    budgets = sorted({int(k) for k in str(curve).split(",") if k.strip()} - {steps})
    curve_rows = []
    for k in budgets + [steps]:
        if k == steps:
            ws_k, secs = all_ws_np, sum(g["seconds"] for g in groups) / len(held)
        else:
            parts, wall = [], 0.0
            for g0 in range(0, len(held), batch):
                idx = list(range(g0, min(g0 + batch, len(held))))
                t0 = time.perf_counter()
                ws, _ = project(G, targets[idx], num_steps=k, initial_learning_rate=lr,
                                initial_noise_factor=noise_factor, space=space, w_avg_samples=w_avg_samples,
                                pixel_weight=pixel_weight, lpips_weight=lpips_weight, seed=seed + g0,
                                lpips=lpips, w_stats=w_stats)
                wall += time.perf_counter() - t0
                parts.append(ws.numpy())
            ws_k, secs = np.concatenate(parts), wall / len(held)
            print(f"curve: {k} steps, {secs:.2f} s/img", flush=True)
        np.save(out / f"ws_k{k}.npy", ws_k)
        curve_rows.append(dict(steps=k, seconds_per_image=secs, ws=f"ws_k{k}.npy"))

    full = [g for g in groups if g["size"] == batch] or groups
    ms_batch = float(np.median([g["ms_per_step_median"] for g in full]))
    mean = {k: float(np.mean([r[k] for r in per_image]))
            for k in ("psnr_db", "lpips", "final_loss", "first_loss", "seconds", "ms_per_step_median")}
    report = dict(
        settings=dict(ckpt=str(ckpt or bundle), ckpt_meta=ck_meta, n=len(held), steps=steps, space=space,
                      batch=batch, lr=lr, noise_factor=noise_factor,
                      pixel_weight=pixel_weight, lpips_weight=lpips_weight,
                      w_avg_samples=w_avg_samples, seed=seed, noise_maps="zeros",
                      loss="graphs.reconstruction_loss (mask=ones): MSE + LPIPS-alex at native res",
                      metrics="PSNR and LPIPS on uint8-rounded projections vs the uint8 targets; "
                              "final_loss on the float projection"),
        environment=dict(torch=torch.__version__, threads=torch.get_num_threads(), cpu=cpu_name(),
                         cpu_count=os.cpu_count(), loadavg_start=load_at_start, loadavg_end=os.getloadavg(),
                         python=platform.python_version()),
        w_std=w_stats[1], w_stats_seconds=w_stats_s,
        ms_per_step_at_batch=ms_batch, ms_per_step_per_image_at_batch=ms_batch / batch,
        groups=groups, mean=mean, images=per_image, curve=curve_rows)
    write_json(out / "report.json", report, indent=2)
    print(f"mean: PSNR {mean['psnr_db']:.2f} dB, LPIPS {mean['lpips']:.4f}, loss {mean['final_loss']:.4f}, "
          f"{mean['seconds']:.1f} s/img; {ms_batch:.1f} ms/step at batch {batch} -> {out}/report.json",
          flush=True)
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", help="training checkpoint (G_ema); default: --bundle's weights")
    ap.add_argument("--bundle", help="bundle whose generator is rebuilt in PyTorch when no --ckpt is given (from_bundle)")
    ap.add_argument("--n", type=int, help="first N faces of the held-out split")
    ap.add_argument("--steps", type=int)
    ap.add_argument("--space", choices=["w", "w+"])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int, help="images projected together (one latent each)")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--noise-factor", type=float)
    ap.add_argument("--pixel-weight", type=float)
    ap.add_argument("--lpips-weight", type=float)
    ap.add_argument("--w-avg-samples", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--out")
    ap.add_argument("--curve", help="extra step budgets for the time-to-quality curve, e.g. 50,100,200")
    ap.add_argument("--verbose", action="store_true")
    ap.set_defaults(**step_defaults(run_projection))
    run_projection(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
