"""Render the demo photos in samples/: faces of people who don't exist.

    python -m latentface_train.make_samples --bundle default --out ../samples

The project may not ship dataset images (UTKFace's licence), so its sample inputs are
drawn from its own generator through the exported ONNX graphs: truncation 0.7, zero
noise, upscaled 4x with Lanczos so they look like the ordinary photos a user brings.
"""
import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

from .util import step_defaults, to_uint8

SEEDS = {"alice": 11, "bob": 23, "carol": 42, "dave": 77, "erin": 101, "frank": 314}


def render(*, bundle="default", out="../samples", psi=0.7, scale=4):
    """Render SEEDS' faces through the bundle's graphs into `out` as PNGs."""
    b = Path(bundle)
    m = json.loads((b / "manifest.json").read_text())
    mapping = ort.InferenceSession(str(b / m["graphs"]["mapping"]["file"]), providers=["CPUExecutionProvider"])
    synth = ort.InferenceSession(str(b / m["graphs"]["synthesis"]["file"]), providers=["CPUExecutionProvider"])
    w_avg = np.array(m["w_avg"], np.float32)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for name, seed in SEEDS.items():
        z = np.random.RandomState(seed).randn(1, m["z_dim"]).astype(np.float32)
        (w,) = mapping.run(None, {"z": z})
        w = w_avg + psi * (w - w_avg)
        ws = np.repeat(w[:, None], m["num_ws"], axis=1)
        feeds = {"ws": ws}
        for i, s in enumerate(m["noise_shapes"]):
            feeds[f"noise_{i}"] = np.zeros([1] + s, np.float32)
        (img,) = synth.run(None, feeds)
        im = Image.fromarray(to_uint8(img[0]).transpose(1, 2, 0))
        r = m["resolution"] * scale
        im.resize((r, r), Image.LANCZOS).save(out / f"{name}.png")
        print(f"{out / name}.png  seed {seed}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle")
    ap.add_argument("--out")
    ap.add_argument("--psi", type=float, help="truncation")
    ap.add_argument("--scale", type=int, help="upscaling factor (Lanczos)")
    ap.set_defaults(**step_defaults(render))
    render(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
