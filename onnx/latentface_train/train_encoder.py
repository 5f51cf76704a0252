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
import time
from pathlib import Path

import torch

from . import checkpoint, data
from .bundle import w_stats
from .graphs import reconstruction_loss
from .lpips import LPIPS
from .networks import Encoder, count_params
from .util import save_grid, step_defaults

CKPT_SECONDS = 180


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


def zero_noise(S, batch):
    return [torch.zeros([batch] + s) for s in S.noise_shapes]


def initial_encoder(G, gan_ck, w_avg):
    """The encoder trained jointly with G when the checkpoint has one, else a fresh one."""
    E = checkpoint.joint_encoder_from(gan_ck)
    if E is not None:
        # hybrid training (train_gan --recon) already trained an encoder with the
        # generator: fine-tune that one rather than start from scratch.
        print("starting from the encoder trained with the generator", flush=True)
        return E.train().requires_grad_(True)
    E = Encoder(G.resolution, G.num_ws, G.w_dim)
    E.w_avg.copy_(w_avg)
    return E


def encoder_step(G, E, opt, lpips, reals, gen, w_avg, w_std, b):
    """Generated pairs (loss on the latent, in w_std units) + real faces (the bundle's
    reconstruction loss through G). -> (loss_lat, loss_img)."""
    S = G.synthesis
    ws_true = sample_ws(G, b, gen, w_avg)
    with torch.no_grad():
        fake = S(ws_true, zero_noise(S, b))
    idx = torch.randint(0, len(reals), [b], generator=gen)
    real = reals[idx].float() / 127.5 - 1
    flip = torch.rand(b, generator=gen) < 0.5
    real = torch.where(flip[:, None, None, None], real.flip(3), real)

    pred = E(torch.cat([fake, real]))
    loss_lat = (((pred[:b] - ws_true) / w_std) ** 2).mean()
    rec = S(pred, zero_noise(S, 2 * b))
    ones = torch.ones(2 * b, 1, G.resolution, G.resolution)
    loss_img = reconstruction_loss(rec, torch.cat([fake, real]), ones, torch.ones(2 * b, 2), lpips).mean()
    loss = 0.1 * loss_lat + loss_img
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss_lat, loss_img


def save(out, E, opt, gen, step, seconds, G, hold):
    """OUT/ckpt.pt (atomically) and OUT/recon.png (held-out faces and their reconstructions)."""
    checkpoint.save(out / "ckpt.pt", dict(E=E.state_dict(), opt=opt.state_dict(), gen=gen.get_state(), step=step,
                                          seconds=seconds, config=E.config))
    with torch.no_grad():
        save_grid(torch.cat([hold, G.synthesis(E(hold), zero_noise(G.synthesis, len(hold)))]),
                  out / "recon.png", nrow=16)


def train(*, gan="runs/gan/ckpt.pt", out="runs/encoder", data_dir=None, minutes=15.0, batch=8, lr=0.001,
          threads=2, seed=0):
    """Train (or resume) the encoder in OUT against the generator checkpoint `gan`."""
    torch.set_num_threads(threads)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    G, gan_ck = checkpoint.load_generator(gan)
    w_avg, w_std = w_stats(G)
    images, _, _ = data.load_faces(G.resolution, data_dir)
    train_idx, hold_idx = data.split_indices(len(images))
    reals = torch.from_numpy(images[train_idx])
    torch.manual_seed(seed)
    E = initial_encoder(G, gan_ck, w_avg)
    lpips = LPIPS().eval()
    opt = torch.optim.Adam(E.parameters(), lr=lr, betas=(0.9, 0.99))
    step, seconds = 0, 0.0
    gen = torch.Generator().manual_seed(seed + 1)
    ckpt = out / "ckpt.pt"
    if ckpt.exists():
        ck = checkpoint.load(ckpt)
        E.load_state_dict(ck["E"])
        opt.load_state_dict(ck["opt"])
        gen.set_state(ck["gen"])
        step, seconds = ck["step"], ck["seconds"]
        print(f"resumed at step {step}", flush=True)
    print(f"encoder {count_params(E):,} params", flush=True)
    hold = torch.from_numpy(images[hold_idx[:16]]).float() / 127.5 - 1

    t_start = t_ckpt = time.time()
    while time.time() - t_start < minutes * 60:
        t0 = time.time()
        loss_lat, loss_img = encoder_step(G, E, opt, lpips, reals, gen, w_avg, w_std, batch)
        step += 1
        seconds += time.time() - t0
        if step % 20 == 0:
            print(f"step {step} min {seconds / 60:.1f} loss_lat {loss_lat.item():.3f} loss_img {loss_img.item():.4f}",
                  flush=True)
        if time.time() - t_ckpt > CKPT_SECONDS:
            save(out, E, opt, gen, step, seconds, G, hold)
            t_ckpt = time.time()
    save(out, E, opt, gen, step, seconds, G, hold)
    print(f"done: step {step}, {seconds / 60:.1f} min", flush=True)
    return E


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gan", help="train_gan checkpoint (its G_ema, and its encoder when it has one)")
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--minutes", type=float)
    ap.add_argument("--batch", type=int, help="generated + real examples per step, each")
    ap.add_argument("--lr", type=float)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--seed", type=int)
    ap.set_defaults(**step_defaults(train))
    train(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
