"""Train the encoder (image -> w+ initial guess) against a trained generator.

    python -m latentface_train.train_encoder --gan runs/gan/ckpt.pt --out runs/encoder --minutes 15

Each step mixes two kinds of examples:
- generated pairs: w+ (style-mixed, truncation varied) -> image (zero noise, as the
  inversion engine uses) -> encoder; loss on the latent, in units of w_std;
- real training faces: encoder -> generator -> image; loss = the bundle's own
  reconstruction loss (pixel MSE + LPIPS), so the guess is judged as inversion judges it.
When the generator checkpoint carries the encoder trained jointly with it (hybrid mode of
train_gan), that encoder is the starting point. Resumable: OUT/ckpt.pt is rewritten every
few minutes.
"""
import argparse
import os
import time
from pathlib import Path

import torch

from . import data
from .bundle import w_stats
from .graphs import reconstruction_loss
from .lpips import LPIPS
from .networks import Encoder, Generator, count_params
from .util import save_grid


def load_generator(path):
    ck = torch.load(path, weights_only=False, map_location="cpu")
    G = Generator(**ck["config"]).eval()
    G.load_state_dict(ck["G_ema"])
    G.requires_grad_(False)
    return G, ck


def sample_ws(G, n, gen, w_avg):
    """Latents like those the encoder will meet: truncated, sometimes style-mixed."""
    with torch.no_grad():
        w = G.mapping(torch.randn(n, G.z_dim, generator=gen))
        w2 = G.mapping(torch.randn(n, G.z_dim, generator=gen))
        psi = 0.5 + 0.5 * torch.rand(n, 1, generator=gen)
        w, w2 = w_avg.lerp(w, psi), w_avg.lerp(w2, psi)
        cut = torch.randint(1, G.num_ws + 1, [n, 1, 1], generator=gen)
        rows = torch.arange(G.num_ws)[None, :, None]
        return torch.where(rows < cut, w[:, None], w2[:, None])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", default="runs/gan/ckpt.pt")
    ap.add_argument("--out", default="runs/encoder")
    ap.add_argument("--data", default=None)
    ap.add_argument("--minutes", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=8, help="generated + real examples per step, each")
    ap.add_argument("--lr", type=float, default=0.001)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    G, gan_ck = load_generator(args.gan)
    S = G.synthesis
    w_avg, w_std = w_stats(G)
    images, _, _ = data.load_faces(G.resolution, args.data)
    train_idx, hold_idx = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    torch.manual_seed(args.seed)
    if "E" in gan_ck:
        # hybrid training (train_gan --recon) already trained an encoder with the
        # generator: fine-tune that one rather than start from scratch.
        E = Encoder(**gan_ck["E_config"])
        E.load_state_dict(gan_ck["E"])
        print("starting from the encoder trained with the generator", flush=True)
    else:
        E = Encoder(G.resolution, G.num_ws, G.w_dim)
        E.w_avg.copy_(w_avg)
    lpips = LPIPS().eval()
    opt = torch.optim.Adam(E.parameters(), lr=args.lr, betas=(0.9, 0.99))
    step, seconds = 0, 0.0
    gen = torch.Generator().manual_seed(args.seed + 1)
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        ck = torch.load(ckpt, weights_only=False)
        E.load_state_dict(ck["E"]); opt.load_state_dict(ck["opt"]); gen.set_state(ck["gen"])
        step, seconds = ck["step"], ck["seconds"]
        print(f"resumed at step {step}", flush=True)
    print(f"encoder {count_params(E):,} params", flush=True)
    zeros = lambda b: [torch.zeros([b] + s) for s in S.noise_shapes]  # noqa: E731
    hold = torch.from_numpy(images[hold_idx[:16]]).float() / 127.5 - 1

    def save():
        tmp = out / "ckpt.tmp"
        torch.save(dict(E=E.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step, seconds=seconds,
                        config=E.config), tmp)
        os.replace(tmp, ckpt)
        with torch.no_grad():
            save_grid(torch.cat([hold, S(E(hold), zeros(len(hold)))]), out / "recon.png", nrow=16)

    t_start = t_ckpt = time.time()
    b = args.batch
    ones = torch.ones(b, 1, G.resolution, G.resolution)
    wts = torch.ones(b, 2)
    while time.time() - t_start < args.minutes * 60:
        t0 = time.time()
        ws_true = sample_ws(G, b, gen, w_avg)
        with torch.no_grad():
            fake = S(ws_true, zeros(b))
        idx = torch.randint(0, len(reals), [b], generator=gen)
        real = reals[idx].float() / 127.5 - 1
        flip = torch.rand(b, generator=gen) < 0.5
        real = torch.where(flip[:, None, None, None], real.flip(3), real)

        pred = E(torch.cat([fake, real]))
        loss_lat = (((pred[:b] - ws_true) / w_std) ** 2).mean()
        rec = S(pred, zeros(2 * b))
        loss_img = reconstruction_loss(rec, torch.cat([fake, real]), torch.cat([ones, ones]),
                                       torch.cat([wts, wts]), lpips).mean()
        loss = 0.1 * loss_lat + loss_img
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seconds += time.time() - t0
        if step % 20 == 0:
            print(f"step {step} min {seconds / 60:.1f} loss_lat {loss_lat.item():.3f} loss_img {loss_img.item():.4f}",
                  flush=True)
        if time.time() - t_ckpt > 180:
            save()
            t_ckpt = time.time()
    save()
    print(f"done: step {step}, {seconds / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
