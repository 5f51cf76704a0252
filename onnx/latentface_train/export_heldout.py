"""Write the first N held-out training-set faces as PNGs, for evaluating the Rust inversion.

    python -m latentface_train.export_heldout --n 20 --out .cache/heldout20

The same faces (data.split_indices, in order) that project_reference evaluates, at the
model's resolution, so both sides see identical targets. The output folder must stay
out of the repository (UTKFace licence): the default lies in the ignored .cache/.
"""
import argparse
from pathlib import Path

from . import data
from .util import save_png


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--out", default=".cache/heldout20")
    ap.add_argument("--data", default=None)
    args = ap.parse_args()
    images, names, _ = data.load_faces(args.resolution, args.data)
    _, hold = data.split_indices(len(images))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(hold[:args.n]):
        save_png(images[i].transpose(1, 2, 0), out / f"heldout_{k:02d}.png")
    print(f"wrote {min(args.n, len(hold))} faces to {out}")


if __name__ == "__main__":
    main()
