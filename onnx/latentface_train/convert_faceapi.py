"""Add face-api's face descriptor and age/gender networks to a bundle as ONNX graphs.

    python -m latentface_train.convert_faceapi --package node_modules/@vladmandic/face-api --bundle default
    python -m latentface_train.convert_faceapi --tiny            (random weights, into tiny/)

The work is `face_graphs.convert` (what it writes: see face_graphs.py); the agreement of
the graphs with face-api itself (node) is tests/test_faceapi.py.
"""
import argparse

import torch

from .face_graphs import DEFAULT_PACKAGE, NPM_SPEC, convert


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--package", default=None, help=f"the installed {NPM_SPEC} (default: {DEFAULT_PACKAGE})")
    ap.add_argument("--bundle", default=None, help="bundle folder (default: default, or tiny with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="random-weight narrow networks for the tiny bundle")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-verify", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    convert(bundle_dir=args.bundle or ("tiny" if args.tiny else "default"), package=args.package, tiny=args.tiny,
            seed=args.seed, verify=not args.no_verify)


if __name__ == "__main__":
    main()
