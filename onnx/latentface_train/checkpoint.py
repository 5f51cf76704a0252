"""Training checkpoints: one load policy, one atomic save, and the loaders of each model.

Every checkpoint the toolchain writes (`train_gan`, `train_encoder`, `train_vae`) is a
dict of tensors, numbers, strings, lists and dicts: no pickled code. So every read goes
through `load`, which is `torch.load(..., weights_only=True, map_location="cpu")`: a
checkpoint from elsewhere cannot run code, and a GPU-written one opens on a CPU. Every
write goes through `save`: a temporary file in the same folder, then `os.replace`, so a
run killed mid-write leaves the previous checkpoint whole.

Checkpoint layouts (the keys each loader relies on):
- generator (`train_gan`): `G`, `G_ema`, `D`, `config` (Generator kwargs), `opt_g`, `opt_d`,
  `gen`, `step`, `seconds`, `imgs_seen`, `args`; in hybrid mode also `E`, `E_config`,
  `enc_mean`, `enc_cov`.
- encoder (`train_encoder`): `E`, `config` (Encoder kwargs), `opt`, `gen`, `step`, `seconds`.
- VAE (`train_vae`): `vae`, `config` (VAE kwargs), `opt`, `gen`, `step`, `seconds`,
  `imgs_seen`, `args`.
"""
import os
from pathlib import Path

import torch

from .networks import Encoder, Generator
from .vae import VAE


def load(path):
    """The checkpoint dict at `path`, read safely (tensors and plain data only) onto the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def save(path, state):
    """Write `state` to `path` atomically (temporary file in the same folder + rename)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def _frozen(module):
    module.eval().requires_grad_(False)
    return module


def generator_from(ck):
    """The EMA generator of a `train_gan` checkpoint dict, frozen, in eval mode."""
    G = Generator(**ck["config"])
    G.load_state_dict(ck["G_ema"])
    return _frozen(G)


def joint_encoder_from(ck):
    """The encoder trained with the generator (`train_gan` hybrid mode), or None."""
    if "E" not in ck:
        return None
    E = Encoder(**ck["E_config"])
    E.load_state_dict(ck["E"])
    return _frozen(E)


def load_generator(path):
    """-> (frozen EMA generator, checkpoint dict) of a `train_gan` checkpoint."""
    ck = load(path)
    return generator_from(ck), ck


def load_encoder(path):
    """-> (frozen encoder, checkpoint dict) of a `train_encoder` checkpoint."""
    ck = load(path)
    E = Encoder(**ck["config"])
    E.load_state_dict(ck["E"])
    return _frozen(E), ck


def load_vae(path):
    """-> (VAE in eval mode, checkpoint dict) of a `train_vae` checkpoint."""
    ck = load(path)
    vae = VAE(**ck["config"])
    vae.load_state_dict(ck["vae"])
    return vae.eval(), ck
