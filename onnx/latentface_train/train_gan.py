"""Train the default generator on UTKFace faces (resumable, time-boxed).

    python -m latentface_train.train_gan --out runs/gan --minutes 90

StyleGAN2 recipe shrunk for small data and small hardware: non-saturating loss,
lazy R1 (every 16 D steps), style mixing, an EMA generator, x-flips and DiffAugment
(colour + translation, applied to real and fake alike, so it never leaks into G).
Checkpoints go to OUT/ckpt.pt every few minutes and the run picks up from there.

Hybrid mode (`--recon W`, on by default): a pure GAN needs far more images than a
2-core CPU shows it in an hour (~20k), and its samples are still blobs by then. So an
encoder is trained jointly with the synthesis network as an autoencoder (L1 + LPIPS
reconstruction of real faces through w+), which teaches the synthesis network faces in a
few hundred steps; the mapping network is pulled onto the encoder's W distribution by
moment matching (mean and covariance, against running statistics), and the adversarial
term on mapped samples sharpens what the reconstruction loss leaves blurry. The encoder
is saved in the checkpoint (`E`) and is where `train_encoder` starts from.
"""
import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import checkpoint, data, from_bundle
from .lpips import LPIPS
from .networks import Discriminator, Encoder, Generator, count_params
from .util import RunLog, save_grid, step_defaults, write_json

R1_EVERY = 16  # lazy R1: the penalty every 16 discriminator steps


def diff_augment(x, gen):
    b = x.shape[0]
    x = x + (torch.rand(b, 1, 1, 1, generator=gen) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, generator=gen) * 2) + mean
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    x = (x - mean) * (torch.rand(b, 1, 1, 1, generator=gen) + 0.5) + mean
    # translation by up to 1/8 of the size, zero fill
    r = x.shape[-1]
    s = r // 8
    xp = F.pad(x, [s, s, s, s])
    dx = torch.randint(0, 2 * s + 1, [b], generator=gen).tolist()
    dy = torch.randint(0, 2 * s + 1, [b], generator=gen).tolist()
    return torch.stack([xp[i, :, dy[i]:dy[i] + r, dx[i]:dx[i] + r] for i in range(b)])


def start_from_bundle(bundle_dir, G, G_ema, E, reals):
    """Trained weights from a committed bundle, for when no checkpoint is cached."""
    src = from_bundle.load_generator(bundle_dir)
    if src.config != G.config:
        raise SystemExit(f"{bundle_dir}: generator config {src.config} differs from the arguments' {G.config}")
    G.load_state_dict(src.state_dict())
    G_ema.load_state_dict(src.state_dict())
    if E is not None:
        E.load_state_dict(from_bundle.load_encoder(bundle_dir, src).state_dict())
    print(f"started from the weights of {bundle_dir}", flush=True)


class GanTraining:
    """The models, optimisers and progress of one run: exactly what OUT/ckpt.pt holds."""

    def __init__(self, args):
        self.args = dict(args)
        a = self.args
        self.hybrid = a["recon"] > 0
        torch.manual_seed(a["seed"])
        zd, res, ch, base = a["z_dim"], a["resolution"], a["max_ch"], a["base_ch"]
        self.G = Generator(zd, zd, res, ch, base=base)
        self.D = Discriminator(res, ch, base=base)
        self.G_ema = Generator(zd, zd, res, ch, base=base).eval()
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False)
        self.E = Encoder(res, self.G.num_ws, self.G.w_dim, max_ch=ch) if self.hybrid else None
        self.lpips = LPIPS().eval() if self.hybrid else None
        # running W statistics of the encoder (mean over layers), the mapping's target
        self.enc_mean = torch.zeros(self.G.w_dim)
        self.enc_cov = torch.eye(self.G.w_dim)
        if self.hybrid:
            # mapping layers learn 100x slower through lr_mul=0.01, which would be too slow for
            # an hour of training: they get their own rate, to follow the encoder's statistics
            self.opt_g = torch.optim.Adam([
                {"params": list(self.G.synthesis.parameters()) + list(self.E.parameters()), "lr": a["lr"]},
                {"params": self.G.mapping.parameters(), "lr": a["lr"] * 20}], betas=(0.0, 0.99), eps=1e-8)
        else:
            self.opt_g = torch.optim.Adam(self.G.parameters(), lr=a["lr"], betas=(0.0, 0.99), eps=1e-8)
        c = R1_EVERY / (R1_EVERY + 1)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=a["lr"] * c, betas=(0.0, 0.99 ** c), eps=1e-8)
        self.step, self.seconds, self.imgs_seen = 0, 0.0, 0
        self.gen = torch.Generator().manual_seed(a["seed"] + 1)

    def state_dict(self):
        ck = dict(G=self.G.state_dict(), D=self.D.state_dict(), G_ema=self.G_ema.state_dict(),
                  opt_g=self.opt_g.state_dict(), opt_d=self.opt_d.state_dict(), step=self.step,
                  seconds=self.seconds, imgs_seen=self.imgs_seen, gen=self.gen.get_state(), config=self.G.config,
                  args=self.args)
        if self.hybrid:
            ck.update(E=self.E.state_dict(), E_config=self.E.config, enc_mean=self.enc_mean, enc_cov=self.enc_cov)
        return ck

    def load_state_dict(self, ck):
        self.G.load_state_dict(ck["G"])
        self.D.load_state_dict(ck["D"])
        self.G_ema.load_state_dict(ck["G_ema"])
        self.opt_g.load_state_dict(ck["opt_g"])
        self.opt_d.load_state_dict(ck["opt_d"])
        if self.hybrid:
            self.E.load_state_dict(ck["E"])
            self.enc_mean, self.enc_cov = ck["enc_mean"], ck["enc_cov"]
        self.step, self.seconds, self.imgs_seen = ck["step"], ck["seconds"], ck["imgs_seen"]
        self.gen.set_state(ck["gen"])

    def start_from_bundle(self, bundle_dir, reals):
        start_from_bundle(bundle_dir, self.G, self.G_ema, self.E, reals)
        if self.hybrid:
            with torch.no_grad():
                w0 = self.E(reals[:512].float() / 127.5 - 1).mean(1)
            self.enc_mean, self.enc_cov = w0.mean(0), torch.cov(w0.t())

    def generator_step(self, real):
        """One step of G (and E): adversarial loss, plus in hybrid mode reconstruction,
        moment matching and spread. -> the losses to log."""
        a, G, gen, batch = self.args, self.G, self.gen, self.args["batch"]
        z = torch.randn(batch, a["z_dim"], generator=gen)
        fake = G(z, mix_prob=a["mix"], update_w_avg=True)
        loss_g = F.softplus(-self.D(diff_augment(fake, gen))).mean()
        logs = {"loss_g": loss_g}
        loss_total = loss_g
        if self.hybrid:
            ws = self.E(real)
            noise = G.synthesis.make_noise(batch, generator=gen)
            rec = G.synthesis(ws, noise)
            loss_rec = (rec - real).abs().mean() + self.lpips(rec, real).mean()
            w_enc = ws.mean(1)
            loss_spread = ((ws - w_enc[:, None]) ** 2).mean()
            with torch.no_grad():
                wd = w_enc.detach()
                self.enc_mean.lerp_(wd.mean(0), 0.02)
                c = wd - wd.mean(0)
                self.enc_cov.lerp_(c.t() @ c / (len(wd) - 1), 0.02)
            wm = G.mapping(torch.randn(256, a["z_dim"], generator=gen))
            mm = wm.mean(0)
            cm = (wm - mm).t() @ (wm - mm) / (len(wm) - 1)
            loss_mom = ((mm - self.enc_mean) ** 2).mean() + ((cm - self.enc_cov) ** 2).sum() / G.w_dim
            loss_total = (a["adv"] * loss_g + a["recon"] * loss_rec + a["spread"] * loss_spread
                          + a["moment"] * loss_mom)
            logs.update(rec=loss_rec, mom=loss_mom, spread=loss_spread)
        self.opt_g.zero_grad(set_to_none=True)
        loss_total.backward()
        self.opt_g.step()
        return logs

    def discriminator_step(self, real):
        """One step of D: non-saturating loss, lazy R1 on the reals. -> loss_d."""
        a, gen = self.args, self.gen
        with torch.no_grad():
            fake = self.G(torch.randn(a["batch"], a["z_dim"], generator=gen), mix_prob=a["mix"])
        do_r1 = self.step % R1_EVERY == 0
        real_in = real.detach().requires_grad_(do_r1)
        real_logits = self.D(diff_augment(real_in, gen))
        loss_d = F.softplus(self.D(diff_augment(fake, gen))).mean() + F.softplus(-real_logits).mean()
        if do_r1:
            (g,) = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
            r1 = g.square().sum(dim=[1, 2, 3]).mean()
            loss_d = loss_d + r1 * (a["gamma"] / 2) * R1_EVERY
        self.opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_d.step()
        return loss_d

    def train_step(self, reals, ema_beta):
        """A batch of x-flipped reals, a G step, a D step, the EMA update. -> losses."""
        batch, gen = self.args["batch"], self.gen
        idx = torch.randint(0, len(reals), [batch], generator=gen)
        real = reals[idx].float() / 127.5 - 1
        flip = torch.rand(batch, generator=gen) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)
        logs = self.generator_step(real)
        logs["loss_d"] = self.discriminator_step(real)
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
                pe.lerp_(p, 1 - ema_beta)
            self.G_ema.w_avg.copy_(self.G.w_avg)
        self.step += 1
        self.imgs_seen += batch
        return logs

    def save(self, out, fixed_z, hold, final=False):
        """OUT/ckpt.pt (atomically), the sample and reconstruction grids, OUT/status.json."""
        checkpoint.save(out / "ckpt.pt", self.state_dict())
        with torch.no_grad():
            noise = self.G_ema.synthesis.make_noise(32, generator=torch.Generator().manual_seed(5))
            save_grid(self.G_ema(fixed_z, noise=noise), out / "samples.png", nrow=8)
            save_grid(self.G_ema(fixed_z, noise=noise, psi=0.7), out / "samples_psi07.png", nrow=8)
            if self.hybrid:
                self.E.eval()
                zeros = [torch.zeros_like(n[:16]) for n in noise]
                save_grid(torch.cat([hold, self.G_ema.synthesis(self.E(hold), zeros)]), out / "recon.png", nrow=16)
                self.E.train()
        write_json(out / "status.json", dict(step=self.step, imgs_seen=self.imgs_seen, minutes=self.seconds / 60,
                                             final=final), indent=None)


def train(*, out="runs/gan", data_dir=None, resolution=64, z_dim=256, max_ch=128, base_ch=1024, batch=16,
          lr=0.0025, gamma=0.05, mix=0.9, ema_kimg=5.0, minutes=60.0, max_steps=10 ** 9, ckpt_minutes=5.0,
          threads=2, seed=0, recon=1.0, adv=0.1, moment=1.0, spread=0.05, init_bundle=None):
    """Train (or resume) the generator in OUT for `minutes` of wall time; see the module docs."""
    args = dict(out=out, data=data_dir, resolution=resolution, z_dim=z_dim, max_ch=max_ch, base_ch=base_ch,
                batch=batch, lr=lr, gamma=gamma, mix=mix, ema_kimg=ema_kimg, minutes=minutes, max_steps=max_steps,
                ckpt_minutes=ckpt_minutes, threads=threads, seed=seed, recon=recon, adv=adv, moment=moment,
                spread=spread, init_bundle=init_bundle)  # stored in the checkpoint as train_gan's `args`
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    images, names, _ = data.load_faces(resolution, data_dir)
    train_idx, hold_idx = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    print(f"{len(reals)} training faces at {resolution}px", flush=True)

    run = GanTraining(args)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        run.load_state_dict(checkpoint.load(ckpt_path))
        print(f"resumed at step {run.step} ({run.imgs_seen} images, {run.seconds / 60:.1f} min)", flush=True)
    elif init_bundle:
        run.start_from_bundle(init_bundle, reals)
    print(f"G {count_params(run.G):,} params, D {count_params(run.D):,} params", flush=True)
    hold = torch.from_numpy(images[hold_idx[:16]]).float() / 127.5 - 1
    fixed_z = torch.randn(32, z_dim, generator=torch.Generator().manual_seed(123))

    t_start = t_ckpt = time.time()
    ema_beta = 0.5 ** (batch / (ema_kimg * 1000))
    log = RunLog(out / "log.txt")
    while run.step < max_steps and time.time() - t_start < minutes * 60:
        t0 = time.time()
        losses = run.train_step(reals, ema_beta)
        run.seconds += time.time() - t0
        if run.step % 20 == 0:
            line = (f"step {run.step} kimg {run.imgs_seen / 1000:.1f} min {run.seconds / 60:.1f} "
                    f"s/step {time.time() - t0:.2f} loss_g {losses['loss_g'].item():.3f} "
                    f"loss_d {losses['loss_d'].item():.3f}")
            if run.hybrid:
                line += (f" rec {losses['rec'].item():.4f} mom {losses['mom'].item():.4f} "
                         f"spread {losses['spread'].item():.4f}")
            log(line)
        if time.time() - t_ckpt > ckpt_minutes * 60:
            run.save(out, fixed_z, hold)
            t_ckpt = time.time()
    run.save(out, fixed_z, hold, final=True)
    print(f"done: step {run.step}, {run.imgs_seen} images, {run.seconds / 60:.1f} min", flush=True)
    return run


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir", help="training images (default: ../shared/datasets/utkface/images "
                                                    "or LATENTFACE_DATA)")
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--z-dim", type=int)
    ap.add_argument("--max-ch", type=int)
    ap.add_argument("--base-ch", type=int, help="channels at resolution r: min(base/r, max)")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--lr", type=float)
    ap.add_argument("--gamma", type=float, help="R1 weight")
    ap.add_argument("--mix", type=float, help="style-mixing probability")
    ap.add_argument("--ema-kimg", type=float)
    ap.add_argument("--minutes", type=float, help="stop after this much wall time")
    ap.add_argument("--max-steps", type=int)
    ap.add_argument("--ckpt-minutes", type=float)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.add_argument("--recon", type=float, help="autoencoder weight (0: plain GAN)")
    ap.add_argument("--adv", type=float, help="adversarial weight on G in hybrid mode")
    ap.add_argument("--moment", type=float, help="mapping-to-encoder moment matching weight")
    ap.add_argument("--spread", type=float, help="penalty on the encoder's w+ spread across layers")
    ap.add_argument("--init-bundle",
                    help="with no checkpoint in --out: start G and E from this bundle's weights (D starts fresh)")
    ap.set_defaults(**step_defaults(train))
    train(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
