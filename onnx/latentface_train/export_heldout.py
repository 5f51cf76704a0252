"""Write the first N held-out training-set faces as PNGs, for evaluating the Rust inversion.

    python -m latentface_train.export_heldout --n 20 --out .cache/heldout20

The same faces (data.split_indices, in order) that project_reference evaluates, at the
model's resolution, so both sides see identical targets. The output folder must stay
out of the repository (UTKFace licence): the default lies in the ignored .cache/.
"""
import argparse
from pathlib import Path

from . import data
from .util import save_png, step_defaults


def export(*, n=20, resolution=64, out=".cache/heldout20", data_dir=None):
    """Write the first n held-out faces as OUT/heldout_KK.png."""
    images, names, _ = data.load_faces(resolution, data_dir)
    _, hold = data.split_indices(len(images))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(hold[:n]):
        save_png(images[i].transpose(1, 2, 0), out / f"heldout_{k:02d}.png")
    print(f"wrote {min(n, len(hold))} faces to {out}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int)
    ap.add_argument("--resolution", type=int)
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir")
    ap.set_defaults(**step_defaults(export))
    export(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
