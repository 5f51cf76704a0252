"""Put a newly trained generator (and the encoder trained jointly with it) into a copy of
a bundle, keeping every other graph (VAE, face judge) and the manifest's other fields.

    python -m latentface_train.update_generator --bundle default \
        --gan ~/.cache/latentface-train/gan/ckpt.pt --out /tmp/candidate

For a training campaign that resumes from the committed bundle (`train_gan
--init-bundle`): the candidate is a complete bundle that `latentface eval` can judge
against the committed one before it replaces it. The generator's graphs are exported
and verified exactly as `export_bundle` does; the shared `weights.bin` is rebuilt from
every graph that used it. Directions are refitted afterwards (`fit_directions_judged`),
since they belong to the generator.
"""
import argparse
import json
import os
import shutil
from pathlib import Path

import onnx
import torch

from . import bundle as bundle_io
from . import checkpoint, golden
from .lpips import LPIPS
from .networks import count_params
from .util import save_grid, step_defaults

FACE_GRAPHS = bundle_io.FACE_GRAPHS  # self-contained: not in weights.bin


def update(*, gan, out, bundle="default", threads=1, log=print):
    torch.set_num_threads(threads)
    src, out = Path(bundle), Path(out)
    work = out.with_name(out.name + ".tmp")
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(src, work)
    man = json.loads((work / "manifest.json").read_text())
    ck = checkpoint.load(gan)
    if ck["config"] != man["generator"]:
        raise SystemExit(f"{gan}: generator config {ck['config']} differs from the bundle's {man['generator']}")
    G = checkpoint.generator_from(ck)
    E = checkpoint.joint_encoder_from(ck)
    if E is None:
        raise SystemExit(f"{gan}: no jointly trained encoder (train_gan's hybrid mode writes one)")
    lpips = LPIPS().eval()

    packed = [k for k in man["graphs"] if k not in FACE_GRAPHS]
    for k in packed:  # inline the old shared weights before weights.bin is rebuilt
        path = work / man["graphs"][k]["file"]
        model = onnx.load(str(path))
        onnx.save_model(model, str(path))
    w_avg, w_std = bundle_io.w_stats(G)
    specs = bundle_io.graph_specs(G, w_avg, w_std, encoder=E, lpips=lpips)
    entries = bundle_io.export_graphs(work, specs, log=log)
    blob = bundle_io.pack_shared_weights(work, packed, log=log)
    report = bundle_io.verify_graphs(work, specs, log=log)
    if not report["ok"]:
        raise SystemExit("verification failed: the candidate is not written")
    for k in packed:
        g = man["graphs"][k]
        if k in entries:
            g.update(entries[k])
        g["sha256"] = bundle_io.sha256_file(work / g["file"])
    man["w_avg"] = [round(float(x), 6) for x in w_avg]
    man["w_std"] = [round(float(x), 6) for x in w_std]
    man["w_std_scalar"] = round(float(w_std.square().sum().sqrt()), 6)
    t = man.setdefault("training", {})
    t["generator"] = {"steps": ck["step"], "images_shown": ck["imgs_seen"], "minutes": round(ck["seconds"] / 60, 1),
                      "params_synthesis": count_params(G.synthesis), "params_mapping": count_params(G.mapping),
                      "args": ck.get("args"), "resumed_from": "the weights of the previously committed bundle"}
    t["encoder"] = {"note": "trained jointly with the generator (train_gan hybrid mode), not fine-tuned",
                    "params": count_params(E)}
    ver = man.setdefault("verification", {})
    ver.update({k: v for k, v in report.items() if k in entries})
    man["weights_bytes"] = blob
    with torch.no_grad():
        z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(2026))
        zeros = [torch.zeros([64] + s) for s in G.synthesis.noise_shapes]
        save_grid(G(z, noise=zeros, psi=0.7), work / "samples.png", nrow=16)
    for f in list(man.get("files", {})):
        man["files"][f] = bundle_io.sha256_file(work / f)
    tmp = work / "manifest.json.tmp"
    tmp.write_text(json.dumps(man, indent=1, ensure_ascii=False) + "\n")
    os.replace(tmp, work / "manifest.json")
    golden.write(work, log=log)  # its generator-rendered images change with the generator
    if out.exists():
        shutil.rmtree(out)
    os.replace(work, out)
    log(f"candidate bundle {out}: {sum(f.stat().st_size for f in out.iterdir()) / 1e6:.1f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="the bundle to copy")
    ap.add_argument("--gan", required=True, help="train_gan checkpoint (hybrid mode: with its encoder)")
    ap.add_argument("--out", required=True, help="the candidate bundle (replaced when it exists)")
    ap.add_argument("--threads", type=int)
    ap.set_defaults(**step_defaults(update))
    update(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
