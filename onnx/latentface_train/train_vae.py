"""Train the default bundle's VAE on UTKFace faces (resumable, time-boxed, one thread).

    python -m latentface_train.train_vae --out runs/vae --minutes 35

Gaussian VAE with a learned per-channel decoder scale (see vae.py), trained on the
train split of data.split_indices only, uniformly dequantised 8-bit data, random x-flips,
a linear KL warm-up, Adam, and a linear learning-rate ramp-down over the last part of
the run. At the end the N(0, I) prior is fitted to the aggregate posterior of the training
faces and folded exactly into the weights (vae.fold_prior; --no-fit-prior skips it);
`--minutes 0` on an existing checkpoint does only that. Checkpoints go to OUT/ckpt.pt (atomically) every few minutes together with
OUT/samples.png (decoded prior samples) and OUT/recon.png (held-out faces, each row of
originals followed by a row of their reconstructions decode(mu)); a run resumes from
OUT/ckpt.pt when it exists.
"""
import argparse
import json
import os
import time
from pathlib import Path

import torch

from . import data
from .networks import count_params
from .util import save_grid
from .vae import VAE, aggregate_posterior_moments, bits_per_dim, dequantize, elbo, fold_prior


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/vae")
    ap.add_argument("--data", default=None)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--z-dim", type=int, default=128)
    ap.add_argument("--max-ch", type=int, default=128)
    ap.add_argument("--base", type=int, default=1024, help="channels at resolution r: min(base/r, max_ch)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--kl-warmup", type=int, default=500, help="steps of linear KL weight ramp 0 -> 1")
    ap.add_argument("--lr-rampdown", type=float, default=0.2, help="fraction of --minutes at the end with lr -> 0.1 lr")
    ap.add_argument("--minutes", type=float, default=35.0, help="stop after this much wall time (this invocation)")
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--ckpt-minutes", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fit-prior", action="store_true",
                    help="skip the final empirical-Bayes prior fit (vae.fold_prior) at the end of the run")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, _, _ = data.load_faces(args.resolution, args.data)
    train_idx, held_idx = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    held = torch.from_numpy(images[held_idx])
    print(f"{len(reals)} training faces, {len(held)} held out, at {args.resolution}px", flush=True)

    torch.manual_seed(args.seed)
    vae = VAE(args.resolution, args.z_dim, args.max_ch, args.base)
    # the 3 log-scales get 10x the learning rate: they must travel from about -1.5 to -2.5
    # in the first few hundred steps while the network parameters only adjust
    scale_params = [vae.log_sigma]
    net_params = [p for n, p in vae.named_parameters() if n != "log_sigma"]
    opt = torch.optim.Adam([dict(params=net_params, lr_mul=1.0), dict(params=scale_params, lr_mul=10.0)],
                           lr=args.lr, betas=(0.9, 0.99), eps=1e-8)
    step, seconds, imgs_seen = 0, 0.0, 0
    gen = torch.Generator().manual_seed(args.seed + 1)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        if ck["config"] != vae.config:
            raise SystemExit(f"{ckpt_path} holds a VAE with config {ck['config']}, not {vae.config}")
        vae.load_state_dict(ck["vae"])
        opt.load_state_dict(ck["opt"])
        step, seconds, imgs_seen = ck["step"], ck["seconds"], ck["imgs_seen"]
        gen.set_state(ck["gen"])
        print(f"resumed at step {step} ({imgs_seen} images, {seconds / 60:.1f} min)", flush=True)
    dims = vae.dims
    print(f"VAE {count_params(vae):,} params (encoder {count_params(vae.encoder):,}, "
          f"decoder {count_params(vae.decoder):,}), config {vae.config}", flush=True)
    fixed_z = torch.randn(32, args.z_dim, generator=torch.Generator().manual_seed(123))
    held_show = held[:32]
    held_eval = dequantize(held[:128], torch.Generator().manual_seed(7))

    def save(final=False):
        ck = dict(vae=vae.state_dict(), opt=opt.state_dict(), step=step, seconds=seconds, imgs_seen=imgs_seen,
                  gen=gen.get_state(), config=vae.config, args=vars(args))
        tmp = out / "ckpt.tmp"
        torch.save(ck, tmp)
        os.replace(tmp, ckpt_path)
        vae.eval()
        with torch.no_grad():
            save_grid(vae.decode(fixed_z), out / "samples.png", nrow=8)
            x = held_show.float() / 127.5 - 1
            rec = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
            rows = [t for i in range(0, len(x), 8) for t in (x[i:i + 8], rec[i:i + 8])]
            save_grid(torch.cat(rows), out / "recon.png", nrow=8)
            nll = elbo(vae, held_eval, 1, torch.Generator().manual_seed(8)).mean().item()
        vae.train()
        st = dict(step=step, imgs_seen=imgs_seen, minutes=seconds / 60, final=final,
                  held_neg_elbo_nats=nll, held_bits_per_dim=bits_per_dim(nll, dims),
                  log_sigma=vae.log_sigma.tolist())
        (out / "status.json").write_text(json.dumps(st))
        line = (f"ckpt step {step}: held-out(128) neg-ELBO {nll:.1f} nats/image [-1,1], "
                f"{bits_per_dim(nll, dims):.4f} bits/dim (8-bit)")
        print(line, flush=True)
        log.write(line + "\n"); log.flush()

    log = open(out / "log.txt", "a")
    t_start = time.time()
    t_ckpt = time.time()
    budget = args.minutes * 60
    vae.train()
    while step < args.max_steps and time.time() - t_start < budget:
        t0 = time.time()
        frac_left = 1.0 - (t0 - t_start) / budget
        lr = args.lr * max(0.1, min(1.0, frac_left / args.lr_rampdown)) if args.lr_rampdown > 0 else args.lr
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_mul"]
        beta = min(1.0, (step + 1) / args.kl_warmup) if args.kl_warmup > 0 else 1.0

        idx = torch.randint(0, len(reals), [args.batch], generator=gen)
        x = dequantize(reals[idx], gen)
        flip = torch.rand(args.batch, generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        rec, kl, _ = vae(x, gen)
        loss = (rec + beta * kl).mean() / dims  # nats per dim, for well-scaled Adam steps
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

        step += 1
        imgs_seen += args.batch
        seconds += time.time() - t0
        if step % 25 == 0:
            nelbo = (rec + kl).mean().item()
            line = (f"step {step} kimg {imgs_seen / 1000:.1f} min {seconds / 60:.1f} s/step {time.time() - t0:.2f} "
                    f"neg-elbo {nelbo:.0f} ({bits_per_dim(nelbo, dims):.3f} b/d) rec {rec.mean().item():.0f} "
                    f"kl {kl.mean().item():.0f} beta {beta:.2f} lr {lr:.2e} "
                    f"sigma {[round(v, 4) for v in vae.log_sigma.exp().tolist()]}")
            print(line, flush=True)
            log.write(line + "\n"); log.flush()
        if time.time() - t_ckpt > args.ckpt_minutes * 60:
            save()
            t_ckpt = time.time()
    if not args.no_fit_prior:
        # Empirical-Bayes prior fit, folded exactly into the weights (vae.fold_prior): the
        # latent is re-standardised to the aggregate posterior of the training faces, so
        # that N(0, I) samples decode to faces and the KL term drops. (m, s) ~ (0, 1) when
        # it was already done, so repeating it is harmless.
        vae.eval()
        x_all = reals.float() / 127.5 - 1
        m, sd = aggregate_posterior_moments(vae, x_all.split(256))
        fold_prior(vae, m, sd)
        vae.train()
        line = (f"prior fit: |m| mean {m.abs().mean().item():.3f}, s in [{sd.min().item():.3f}, "
                f"{sd.max().item():.3f}] folded into the encoder/decoder linear layers")
        print(line, flush=True)
        log.write(line + "\n"); log.flush()
    save(final=True)
    print(f"done: step {step}, {imgs_seen} images, {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
