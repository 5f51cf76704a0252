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
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from . import data, from_bundle
from .lpips import LPIPS
from .networks import Discriminator, Encoder, Generator, count_params
from .util import save_grid


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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/gan")
    ap.add_argument("--data", default=None)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--z-dim", type=int, default=256)
    ap.add_argument("--max-ch", type=int, default=128)
    ap.add_argument("--base-ch", type=int, default=1024, help="channels at resolution r: min(base/r, max)")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=0.0025)
    ap.add_argument("--gamma", type=float, default=0.05, help="R1 weight")
    ap.add_argument("--mix", type=float, default=0.9, help="style-mixing probability")
    ap.add_argument("--ema-kimg", type=float, default=5.0)
    ap.add_argument("--minutes", type=float, default=60.0, help="stop after this much wall time")
    ap.add_argument("--max-steps", type=int, default=10 ** 9)
    ap.add_argument("--ckpt-minutes", type=float, default=5.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--recon", type=float, default=1.0, help="autoencoder weight (0: plain GAN)")
    ap.add_argument("--adv", type=float, default=0.1, help="adversarial weight on G in hybrid mode")
    ap.add_argument("--moment", type=float, default=1.0, help="mapping-to-encoder moment matching weight")
    ap.add_argument("--spread", type=float, default=0.05, help="penalty on the encoder's w+ spread across layers")
    ap.add_argument("--init-bundle", default=None,
                    help="with no checkpoint in --out: start G and E from this bundle's weights (D starts fresh)")
    args = ap.parse_args()
    hybrid = args.recon > 0

    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    images, names, _ = data.load_faces(args.resolution, args.data)
    train_idx, _ = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    print(f"{len(reals)} training faces at {args.resolution}px", flush=True)

    torch.manual_seed(args.seed)
    G = Generator(args.z_dim, args.z_dim, args.resolution, args.max_ch, base=args.base_ch)
    D = Discriminator(args.resolution, args.max_ch, base=args.base_ch)
    G_ema = Generator(args.z_dim, args.z_dim, args.resolution, args.max_ch, base=args.base_ch).eval()
    G_ema.load_state_dict(G.state_dict())
    G_ema.requires_grad_(False)
    E = Encoder(args.resolution, G.num_ws, G.w_dim, max_ch=args.max_ch) if hybrid else None
    lpips = LPIPS().eval() if hybrid else None
    # running W statistics of the encoder (mean over layers), the mapping's target
    enc_mean = torch.zeros(G.w_dim)
    enc_cov = torch.eye(G.w_dim)
    # mapping layers learn 100x slower through lr_mul; Adam sees the raw params.
    if hybrid:
        # lr_mul=0.01 would make the mapping 100x too slow for an hour of training:
        # give it its own rate so that it can follow the encoder's statistics.
        opt_g = torch.optim.Adam([
            {"params": list(G.synthesis.parameters()) + list(E.parameters()), "lr": args.lr},
            {"params": G.mapping.parameters(), "lr": args.lr * 20}], betas=(0.0, 0.99), eps=1e-8)
    else:
        opt_g = torch.optim.Adam(G.parameters(), lr=args.lr, betas=(0.0, 0.99), eps=1e-8)
    r1_every = 16
    c = r1_every / (r1_every + 1)
    opt_d = torch.optim.Adam(D.parameters(), lr=args.lr * c, betas=(0.0, 0.99 ** c), eps=1e-8)
    step, seconds, imgs_seen = 0, 0.0, 0
    gen = torch.Generator().manual_seed(args.seed + 1)
    ckpt_path = out / "ckpt.pt"
    if ckpt_path.exists():
        ck = torch.load(ckpt_path, weights_only=False)
        G.load_state_dict(ck["G"]); D.load_state_dict(ck["D"]); G_ema.load_state_dict(ck["G_ema"])
        opt_g.load_state_dict(ck["opt_g"]); opt_d.load_state_dict(ck["opt_d"])
        if hybrid:
            E.load_state_dict(ck["E"]); enc_mean, enc_cov = ck["enc_mean"], ck["enc_cov"]
        step, seconds, imgs_seen = ck["step"], ck["seconds"], ck["imgs_seen"]
        gen.set_state(ck["gen"])
        print(f"resumed at step {step} ({imgs_seen} images, {seconds / 60:.1f} min)", flush=True)
    elif args.init_bundle:
        start_from_bundle(args.init_bundle, G, G_ema, E, reals)
        if hybrid:
            with torch.no_grad():
                w0 = E(reals[:512].float() / 127.5 - 1).mean(1)
            enc_mean, enc_cov = w0.mean(0), torch.cov(w0.t())
    print(f"G {count_params(G):,} params, D {count_params(D):,} params", flush=True)
    hold = torch.from_numpy(images[data.split_indices(len(images))[1][:16]]).float() / 127.5 - 1
    fixed_z = torch.randn(32, args.z_dim, generator=torch.Generator().manual_seed(123))

    def save(final=False):
        ck = dict(G=G.state_dict(), D=D.state_dict(), G_ema=G_ema.state_dict(), opt_g=opt_g.state_dict(),
                  opt_d=opt_d.state_dict(), step=step, seconds=seconds, imgs_seen=imgs_seen,
                  gen=gen.get_state(), config=G.config, args=vars(args))
        if hybrid:
            ck.update(E=E.state_dict(), E_config=E.config, enc_mean=enc_mean, enc_cov=enc_cov)
        tmp = out / "ckpt.tmp"
        torch.save(ck, tmp)
        os.replace(tmp, ckpt_path)
        with torch.no_grad():
            noise = G_ema.synthesis.make_noise(32, generator=torch.Generator().manual_seed(5))
            save_grid(G_ema(fixed_z, noise=noise), out / "samples.png", nrow=8)
            save_grid(G_ema(fixed_z, noise=noise, psi=0.7), out / "samples_psi07.png", nrow=8)
            if hybrid:
                E.eval()
                zeros = [torch.zeros_like(n[:16]) for n in noise]
                save_grid(torch.cat([hold, G_ema.synthesis(E(hold), zeros)]), out / "recon.png", nrow=16)
                E.train()
        (out / "status.json").write_text(json.dumps(dict(step=step, imgs_seen=imgs_seen, minutes=seconds / 60,
                                                         final=final)))

    t_start = time.time()
    t_ckpt = time.time()
    ema_beta = 0.5 ** (args.batch / (args.ema_kimg * 1000))
    log = open(out / "log.txt", "a")
    while step < args.max_steps and time.time() - t_start < args.minutes * 60:
        t0 = time.time()
        idx = torch.randint(0, len(reals), [args.batch], generator=gen)
        real = reals[idx].float() / 127.5 - 1
        flip = torch.rand(args.batch, generator=gen) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)

        # generator step
        z = torch.randn(args.batch, args.z_dim, generator=gen)
        fake = G(z, mix_prob=args.mix, update_w_avg=True)
        loss_g = F.softplus(-D(diff_augment(fake, gen))).mean()
        if hybrid:
            ws = E(real)
            noise = G.synthesis.make_noise(args.batch, generator=gen)
            rec = G.synthesis(ws, noise)
            loss_rec = (rec - real).abs().mean() + lpips(rec, real).mean()
            w_enc = ws.mean(1)
            loss_spread = ((ws - w_enc[:, None]) ** 2).mean()
            with torch.no_grad():
                wd = w_enc.detach()
                enc_mean.lerp_(wd.mean(0), 0.02)
                c = wd - wd.mean(0)
                enc_cov.lerp_(c.t() @ c / (len(wd) - 1), 0.02)
            wm = G.mapping(torch.randn(256, args.z_dim, generator=gen))
            mm = wm.mean(0)
            cm = (wm - mm).t() @ (wm - mm) / (len(wm) - 1)
            loss_mom = ((mm - enc_mean) ** 2).mean() + ((cm - enc_cov) ** 2).sum() / G.w_dim
            loss_total = (args.adv * loss_g + args.recon * loss_rec + args.spread * loss_spread
                          + args.moment * loss_mom)
        else:
            loss_total = loss_g
        opt_g.zero_grad(set_to_none=True)
        loss_total.backward()
        opt_g.step()

        # discriminator step
        with torch.no_grad():
            fake = G(torch.randn(args.batch, args.z_dim, generator=gen), mix_prob=args.mix)
        do_r1 = step % r1_every == 0
        real_in = real.detach().requires_grad_(do_r1)
        real_logits = D(diff_augment(real_in, gen))
        loss_d = F.softplus(D(diff_augment(fake, gen))).mean() + F.softplus(-real_logits).mean()
        if do_r1:
            (g,) = torch.autograd.grad(real_logits.sum(), real_in, create_graph=True)
            r1 = g.square().sum(dim=[1, 2, 3]).mean()
            loss_d = loss_d + r1 * (args.gamma / 2) * r1_every
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()

        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - ema_beta)
            G_ema.w_avg.copy_(G.w_avg)
        step += 1
        imgs_seen += args.batch
        seconds += time.time() - t0
        if step % 20 == 0:
            line = (f"step {step} kimg {imgs_seen / 1000:.1f} min {seconds / 60:.1f} "
                    f"s/step {time.time() - t0:.2f} loss_g {loss_g.item():.3f} loss_d {loss_d.item():.3f}")
            if hybrid:
                line += f" rec {loss_rec.item():.4f} mom {loss_mom.item():.4f} spread {loss_spread.item():.4f}"
            print(line, flush=True)
            log.write(line + "\n"); log.flush()
        if time.time() - t_ckpt > args.ckpt_minutes * 60:
            save()
            t_ckpt = time.time()
    save(final=True)
    print(f"done: step {step}, {imgs_seen} images, {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
