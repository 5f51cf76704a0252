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
import time
from pathlib import Path

import torch

from . import checkpoint, data
from .networks import count_params
from .util import RunLog, save_grid, step_defaults, write_json
from .vae import VAE, aggregate_posterior_moments, bits_per_dim, dequantize, elbo, fold_prior


class VaeTraining:
    """The VAE, its optimiser and the run's progress: exactly what OUT/ckpt.pt holds."""

    def __init__(self, args):
        self.args = dict(args)
        a = self.args
        torch.manual_seed(a["seed"])
        self.vae = VAE(a["resolution"], a["z_dim"], a["max_ch"], a["base"])
        # the 3 log-scales get 10x the learning rate: they must travel from about -1.5 to -2.5
        # in the first few hundred steps while the network parameters only adjust
        scale_params = [self.vae.log_sigma]
        net_params = [p for n, p in self.vae.named_parameters() if n != "log_sigma"]
        self.opt = torch.optim.Adam([dict(params=net_params, lr_mul=1.0), dict(params=scale_params, lr_mul=10.0)],
                                    lr=a["lr"], betas=(0.9, 0.99), eps=1e-8)
        self.step, self.seconds, self.imgs_seen = 0, 0.0, 0
        self.gen = torch.Generator().manual_seed(a["seed"] + 1)

    def state_dict(self):
        return dict(vae=self.vae.state_dict(), opt=self.opt.state_dict(), step=self.step, seconds=self.seconds,
                    imgs_seen=self.imgs_seen, gen=self.gen.get_state(), config=self.vae.config, args=self.args)

    def load_state_dict(self, ck, path):
        if ck["config"] != self.vae.config:
            raise SystemExit(f"{path} holds a VAE with config {ck['config']}, not {self.vae.config}")
        self.vae.load_state_dict(ck["vae"])
        self.opt.load_state_dict(ck["opt"])
        self.step, self.seconds, self.imgs_seen = ck["step"], ck["seconds"], ck["imgs_seen"]
        self.gen.set_state(ck["gen"])

    def train_step(self, reals, lr, beta):
        """One Adam step on dequantised, x-flipped training faces. -> (rec [B], kl [B])."""
        a, vae, gen = self.args, self.vae, self.gen
        for g in self.opt.param_groups:
            g["lr"] = lr * g["lr_mul"]
        idx = torch.randint(0, len(reals), [a["batch"]], generator=gen)
        x = dequantize(reals[idx], gen)
        flip = torch.rand(a["batch"], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
        rec, kl, _ = vae(x, gen)
        loss = (rec + beta * kl).mean() / vae.dims  # nats per dim, for well-scaled Adam steps
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.step += 1
        self.imgs_seen += a["batch"]
        return rec, kl

    def fit_prior(self, reals, log):
        """Empirical-Bayes prior fit, folded exactly into the weights (vae.fold_prior): the
        latent is re-standardised to the aggregate posterior of the training faces, so that
        N(0, I) samples decode to faces and the KL term drops. (m, s) ~ (0, 1) when it was
        already done, so repeating it is harmless."""
        self.vae.eval()
        x_all = reals.float() / 127.5 - 1
        m, sd = aggregate_posterior_moments(self.vae, x_all.split(256))
        fold_prior(self.vae, m, sd)
        self.vae.train()
        log(f"prior fit: |m| mean {m.abs().mean().item():.3f}, s in [{sd.min().item():.3f}, "
            f"{sd.max().item():.3f}] folded into the encoder/decoder linear layers")

    def save(self, out, fixed_z, held_show, held_eval, log, final=False):
        """OUT/ckpt.pt (atomically), samples.png, recon.png, status.json, a held-out neg-ELBO line."""
        vae, dims = self.vae, self.vae.dims
        checkpoint.save(out / "ckpt.pt", self.state_dict())
        vae.eval()
        with torch.no_grad():
            save_grid(vae.decode(fixed_z), out / "samples.png", nrow=8)
            x = held_show.float() / 127.5 - 1
            rec = vae.decode(vae.encode(x)[0]).clamp(-1, 1)
            rows = [t for i in range(0, len(x), 8) for t in (x[i:i + 8], rec[i:i + 8])]
            save_grid(torch.cat(rows), out / "recon.png", nrow=8)
            nll = elbo(vae, held_eval, 1, torch.Generator().manual_seed(8)).mean().item()
        vae.train()
        write_json(out / "status.json", dict(step=self.step, imgs_seen=self.imgs_seen, minutes=self.seconds / 60,
                                             final=final, held_neg_elbo_nats=nll,
                                             held_bits_per_dim=bits_per_dim(nll, dims),
                                             log_sigma=vae.log_sigma.tolist()), indent=None)
        log(f"ckpt step {self.step}: held-out(128) neg-ELBO {nll:.1f} nats/image [-1,1], "
            f"{bits_per_dim(nll, dims):.4f} bits/dim (8-bit)")


def train(*, out="runs/vae", data_dir=None, resolution=64, z_dim=128, max_ch=128, base=1024, batch=32, lr=1e-3,
          kl_warmup=500, lr_rampdown=0.2, minutes=35.0, max_steps=10 ** 9, ckpt_minutes=4.0, threads=1, seed=0,
          no_fit_prior=False):
    """Train (or resume) the VAE in OUT for `minutes` of wall time; see the module docs."""
    args = dict(out=out, data=data_dir, resolution=resolution, z_dim=z_dim, max_ch=max_ch, base=base, batch=batch,
                lr=lr, kl_warmup=kl_warmup, lr_rampdown=lr_rampdown, minutes=minutes, max_steps=max_steps,
                ckpt_minutes=ckpt_minutes, threads=threads, seed=seed,
                no_fit_prior=no_fit_prior)  # stored in the checkpoint as train_vae's `args`
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, _, _ = data.load_faces(resolution, data_dir)
    train_idx, held_idx = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    held = torch.from_numpy(images[held_idx])
    print(f"{len(reals)} training faces, {len(held)} held out, at {resolution}px", flush=True)

    run = VaeTraining(args)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        run.load_state_dict(checkpoint.load(ckpt_path), ckpt_path)
        print(f"resumed at step {run.step} ({run.imgs_seen} images, {run.seconds / 60:.1f} min)", flush=True)
    vae, dims = run.vae, run.vae.dims
    print(f"VAE {count_params(vae):,} params (encoder {count_params(vae.encoder):,}, "
          f"decoder {count_params(vae.decoder):,}), config {vae.config}", flush=True)
    fixed_z = torch.randn(32, z_dim, generator=torch.Generator().manual_seed(123))
    previews = (fixed_z, held[:32], dequantize(held[:128], torch.Generator().manual_seed(7)))

    log = RunLog(out / "log.txt")
    t_start = t_ckpt = time.time()
    budget = minutes * 60
    vae.train()
    while run.step < max_steps and time.time() - t_start < budget:
        t0 = time.time()
        frac_left = 1.0 - (t0 - t_start) / budget
        step_lr = lr * max(0.1, min(1.0, frac_left / lr_rampdown)) if lr_rampdown > 0 else lr
        beta = min(1.0, (run.step + 1) / kl_warmup) if kl_warmup > 0 else 1.0
        rec, kl = run.train_step(reals, step_lr, beta)
        run.seconds += time.time() - t0
        if run.step % 25 == 0:
            nelbo = (rec + kl).mean().item()
            log(f"step {run.step} kimg {run.imgs_seen / 1000:.1f} min {run.seconds / 60:.1f} "
                f"s/step {time.time() - t0:.2f} neg-elbo {nelbo:.0f} ({bits_per_dim(nelbo, dims):.3f} b/d) "
                f"rec {rec.mean().item():.0f} kl {kl.mean().item():.0f} beta {beta:.2f} lr {step_lr:.2e} "
                f"sigma {[round(v, 4) for v in vae.log_sigma.exp().tolist()]}")
        if time.time() - t_ckpt > ckpt_minutes * 60:
            run.save(out, *previews, log)
            t_ckpt = time.time()
    if not no_fit_prior:
        run.fit_prior(reals, log)
    run.save(out, *previews, log, final=True)
    print(f"done: step {run.step}, {run.imgs_seen} images, {run.seconds / 60:.1f} min", flush=True)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--z-dim", type=int)
    ap.add_argument("--max-ch", type=int)
    ap.add_argument("--base", type=int, help="channels at resolution r: min(base/r, max_ch)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--kl-warmup", type=int, help="steps of linear KL weight ramp 0 -> 1")
    ap.add_argument("--lr-rampdown", type=float, help="fraction of --minutes at the end with lr -> 0.1 lr")
    ap.add_argument("--minutes", type=float, help="stop after this much wall time (this invocation)")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--ckpt-minutes", type=float)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--no-fit-prior", action="store_true",
                    help="skip the final empirical-Bayes prior fit (vae.fold_prior) at the end of the run")
    ap.set_defaults(**step_defaults(train))
    train(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
