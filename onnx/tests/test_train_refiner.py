"""train_refiner's pieces: aligned crops, degradations, the checkpoint format and --export."""
import json
import shutil
from pathlib import Path

import numpy as np
import torch

from latentface_train import checkpoint, data, train_refiner
from latentface_train.refiner import Refiner

ONNX = Path(__file__).resolve().parent.parent


def test_crops_are_aligned_and_renders_replace_inputs(monkeypatch):
    rng = np.random.RandomState(0)
    tgt = rng.randint(0, 256, [5, 3, 48, 48]).astype(np.uint8)
    small = np.ascontiguousarray(tgt[:, :, 1::3, 1::3])  # pixel (i, j) = target (3i+1, 3j+1)
    monkeypatch.setattr(train_refiner, "degrade", lambda u8, r: torch.from_numpy(data.to_float(u8)))
    x, y = train_refiner.make_batch(rng, np.arange(5), small, None, tgt, 8, 8, 0.0)
    assert x.shape == (8, 3, 8, 8) and y.shape == (8, 3, 24, 24)
    assert torch.equal(x, y[:, :, 1::3, 1::3])  # flips included: the crop pairs stay aligned
    renders = np.full(small.shape, 0.5, np.float16)
    x, _ = train_refiner.make_batch(rng, np.arange(5), small, renders, tgt, 8, 8, 1.0)
    assert torch.all(x == 0.5)


def test_degrade_stays_in_range_and_changes_pictures():
    rng = np.random.RandomState(1)
    u8 = rng.randint(0, 256, [4, 3, 16, 16]).astype(np.uint8)
    same = train_refiner.degrade(u8, rng, p_blur=0, p_noise=0, p_jpeg=0)
    assert torch.equal(same, torch.from_numpy(data.to_float(u8)))
    worse = train_refiner.degrade(u8, rng, p_blur=1, p_noise=1, p_jpeg=1)
    assert worse.shape == same.shape and worse.abs().max() <= 1
    assert (worse - same).abs().mean(dim=(1, 2, 3)).min() > 0.01


def test_checkpoint_loads_safely_and_exports_into_a_bundle(tmp_path):
    rng = np.random.RandomState(3)
    rng.rand(5)
    saved = train_refiner.rng_state(rng)
    net = Refiner(ch=4, blocks=1)
    torch.nn.init.normal_(net.tail.weight, std=0.1)  # not plain bicubic
    checkpoint.save(tmp_path / "ckpt.pt", {"net": net.state_dict(), "ema": net.state_dict(), "rng": saved,
                                           "step": 7, "elapsed": 60.0, "config": net.config,
                                           "info": {"training": {"steps": 7}}})
    ck = checkpoint.load(tmp_path / "ckpt.pt")  # weights_only: no pickled numpy state
    again = np.random.RandomState(0)
    train_refiner.set_rng_state(again, ck["rng"])
    assert again.rand() == rng.rand()
    bundle = tmp_path / "bundle"
    shutil.copytree(ONNX / "tiny", bundle)
    train_refiner.export(out=tmp_path, bundle=bundle, log=lambda *_: None)
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["graphs"]["refiner"]["outputs"][0]["shape"] == ["batch", 3, 96, 96]
    assert man["refiner"]["resolution"] == 96 and man["refiner"]["training"]["steps"] == 7
    assert all(line in man["rebuild"] for line in train_refiner.REBUILD)
