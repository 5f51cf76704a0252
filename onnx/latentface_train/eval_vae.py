"""Evaluate the bundle VAE; write its anomaly calibration; optionally check its ONNX export.

    python -m latentface_train.eval_vae --ckpt runs/vae/ckpt.pt --out runs/vae/eval.json \
        [--export-dir /tmp/vae_export]

Held-out split (the 500 faces data.split_indices holds out):
- test negative ELBO: uniformly dequantised faces (seeded), Monte-Carlo over --samples
  posterior draws, in nats/image on the [-1,1] scale, nats/image on the 8-bit scale
  (+ D log 127.5) and bits/dim (see vae.py for the convention); also on the raw,
  un-dequantised grid values for reference;
- reconstruction PSNR of the decoded posterior mean decode(mu), clamped to [-1,1]
  (peak-to-peak 2, i.e. the usual 8-bit PSNR).
Anomaly calibration over TRAINING faces (raw grid values, no flip, as a user image
arrives): the deterministic neg-ELBO score `vae.neg_elbo_at_mean` (what the Rust side
can reproduce from vae_encoder + vae_decoder + log_sigma) on every training face, and
the An & Cho reconstruction-probability score (-recon_prob, L draws) on a subset.
AUROC: held-out real faces vs generated junk, higher score = more anomalous.
With --export-dir: exports vae_encoder, vae_decoder and vae_decoder_grad (lpips=None)
with onnx_export.export_module and checks them against PyTorch (gradient in float64).
"""
import argparse
import copy
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from . import checkpoint, data
from .graphs import VaeDecoderGradGraph, VaeDecoderGraph, VaeEncoderGraph, reconstruction_loss
from .metrics import auroc, bits_per_dim, complexity_corrected, nats_8bit, score_stats
from .networks import count_params
from .util import batched, step_defaults, write_json
from .vae import dequantize, elbo, neg_elbo_at_mean, recon_prob


# ----------------------------------------------------------------------------- export check
def export_check(vae, held_u8, out_dir, log=print):
    import onnxruntime as ort

    from .onnx_export import export_module

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    R, Z = vae.resolution, vae.z_dim
    vae = copy.deepcopy(vae).float().eval()
    g = torch.Generator().manual_seed(11)
    ex_img = torch.rand(2, 3, R, R, generator=g) * 2 - 1
    ex_z = torch.randn(2, Z, generator=g)
    paths = {k: out_dir / f"{k}.onnx" for k in ["vae_encoder", "vae_decoder", "vae_decoder_grad"]}
    res = {}
    t = time.time()
    export_module(VaeEncoderGraph(copy.deepcopy(vae)), (ex_img,), ["image"], ["mu", "logvar"], paths["vae_encoder"])
    export_module(VaeDecoderGraph(copy.deepcopy(vae)), (ex_z,), ["z"], ["image"], paths["vae_decoder"])
    m = export_module(VaeDecoderGradGraph(copy.deepcopy(vae), None),
                      (ex_z, ex_img, torch.ones(2, 1, R, R), torch.ones(2, 2)),
                      ["z", "target", "mask", "weights"], ["loss", "grad", "image"], paths["vae_decoder_grad"])
    res["export_seconds"] = time.time() - t
    res["grad_graph_nodes"] = len(m.graph.node)
    res["grad_graph_ops"] = sorted({n.op_type for n in m.graph.node})
    res["sizes_bytes"] = {k: os.path.getsize(p) for k, p in paths.items()}
    log(f"exported to {out_dir} in {res['export_seconds']:.1f}s; grad graph {len(m.graph.node)} nodes")

    vae64 = copy.deepcopy(vae).double()
    checks = []
    for B in [1, 8]:
        x = held_u8[:B].float() / 127.5 - 1
        with torch.no_grad():
            mu, _ = vae.encode(x)
        z = mu + 0.3 * torch.randn(B, Z, generator=g)
        target = held_u8[8:8 + B].float() / 127.5 - 1
        yy = torch.arange(R)[:, None].float()
        mask = ((yy + torch.arange(R)[None].float()) % 5 != 0).float()[None, None].repeat(B, 1, 1, 1)
        mask[:, :, : R // 4] = 0.0  # a masked-out band, as from a hair/background mask
        if B > 1:
            mask[1] = 1.0
        weights = torch.stack([torch.rand(B, generator=g) + 0.5, torch.rand(B, generator=g)], 1)
        # float64 autograd reference
        z64 = z.double().requires_grad_(True)
        img64 = vae64.decode(z64)
        loss64 = reconstruction_loss(img64, target.double(), mask.double(), weights.double(), None)
        (g64,) = torch.autograd.grad(loss64.sum(), z64)
        with torch.no_grad():
            mu64, lv64 = vae64.encode(x.double())
        feeds = dict(z=z.numpy(), target=target.numpy(), mask=mask.numpy(), weights=weights.numpy())
        for threads in [1, 2]:
            so = ort.SessionOptions()
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            sg = ort.InferenceSession(str(paths["vae_decoder_grad"]), so, providers=["CPUExecutionProvider"])
            se = ort.InferenceSession(str(paths["vae_encoder"]), so, providers=["CPUExecutionProvider"])
            sd = ort.InferenceSession(str(paths["vae_decoder"]), so, providers=["CPUExecutionProvider"])
            loss, grad, img = sg.run(None, feeds)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                sg.run(None, feeds)
                times.append(time.perf_counter() - t0)
            emu, elv = se.run(None, dict(image=x.numpy()))
            (dimg,) = sd.run(None, dict(z=z.numpy()))
            gr = g64.numpy()
            c = dict(batch=B, threads=threads,
                      grad_rel=float(np.abs(grad - gr).max() / np.abs(gr).max()),
                      loss_rel=float(np.abs(loss - loss64.detach().numpy()).max() / np.abs(loss64.detach().numpy()).max()),
                      image_maxabs=float(np.abs(img - img64.detach().numpy()).max()),
                      decoder_maxabs=float(np.abs(dimg - img64.detach().numpy()).max()),
                      encoder_mu_maxabs=float(np.abs(emu - mu64.numpy()).max()),
                      encoder_logvar_maxabs=float(np.abs(elv - lv64.numpy()).max()),
                      grad_step_ms_median=1000 * float(np.median(times)))
            c["ok"] = bool(c["grad_rel"] <= 1e-4 and np.isfinite(grad).all())
            checks.append(c)
            log(f"B={B} threads={threads}: grad max|d|/max|g| {c['grad_rel']:.2e}, loss rel {c['loss_rel']:.1e}, "
                f"image {c['image_maxabs']:.1e}, decoder {c['decoder_maxabs']:.1e}, encoder mu "
                f"{c['encoder_mu_maxabs']:.1e}, grad step {c['grad_step_ms_median']:.1f} ms -> "
                f"{'OK' if c['ok'] else 'FAIL'}")
    res["checks"] = checks
    res["ok"] = bool(all(c["ok"] for c in checks))
    return res


def held_out_metrics(vae, held, *, samples, batch, seed):
    """Test neg-ELBO (dequantised and raw), KL, active dims and reconstruction PSNR."""
    D = vae.dims
    g = torch.Generator().manual_seed(seed)
    xq = dequantize(held, torch.Generator().manual_seed(seed + 100))
    nll = batched(lambda b: elbo(vae, b, samples, g), xq, batch).double()
    x_raw = held.float() / 127.5 - 1
    nll_raw = batched(lambda b: elbo(vae, b, samples, g), x_raw, batch).double()
    with torch.no_grad():
        mu_all = batched(lambda b: vae.encode(b)[0], x_raw, batch)
        lv_all = batched(lambda b: vae.encode(b)[1], x_raw, batch)
        rec = batched(lambda b: vae.decode(b).clamp(-1, 1), mu_all, batch)
    kl_terms = 0.5 * (mu_all * mu_all + lv_all.exp() - 1 - lv_all).sum(1)
    mse = ((rec - x_raw) ** 2).mean(dim=[1, 2, 3]).double()
    psnr = 10 * torch.log10(4.0 / mse)
    m = nll.mean().item()
    return dict(
        n=len(held), samples=samples,
        neg_elbo_nats=m, neg_elbo_nats_std=nll.std().item(),
        neg_elbo_nats_8bit=nats_8bit(m, D), bits_per_dim=bits_per_dim(m, D),
        neg_elbo_nats_raw_grid=nll_raw.mean().item(), bits_per_dim_raw_grid=bits_per_dim(nll_raw.mean().item(), D),
        kl_nats_mean=kl_terms.mean().item(),
        active_latent_dims=int((mu_all.var(0) > 0.01).sum().item()),
        recon_psnr_db_mean=psnr.mean().item(), recon_psnr_db_of_mean_mse=(10 * torch.log10(4.0 / mse.mean())).item(),
        recon_mse_mean=mse.mean().item())


def calibrations(vae, train, log_sigma, *, calib_n, calib_n_rp, L, batch, seed):
    """The neg-ELBO calibration (`vae_anomaly`) and the recon-prob one, over training faces."""
    sel = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed + 1))
    n_cal = len(train) if calib_n <= 0 else min(calib_n, len(train))
    xt = train[sel[:n_cal]].float() / 127.5 - 1
    cal = score_stats(batched(lambda b: neg_elbo_at_mean(vae, b), xt, batch).double().numpy())
    cal.update(score="neg_elbo_nats", threshold=cal["percentiles"]["99"],
               threshold_rule="99th percentile of training faces", log_sigma=log_sigma,
               definition=("deterministic: x_hat = vae_decoder(mu), (mu, logvar) = vae_encoder(x), x in [-1,1]; "
                           "score = sum_{c,h,w} [0.5 ((x - x_hat)/sigma_c)^2 + log sigma_c + 0.5 ln(2 pi)] "
                           "+ 0.5 sum_j (mu_j^2 + exp(logvar_j) - 1 - logvar_j), sigma_c = exp(log_sigma[c]); "
                           "nats on the [-1,1] scale; higher = more anomalous"))
    xr = train[sel[:min(calib_n_rp, len(train))]].float() / 127.5 - 1
    grp = torch.Generator().manual_seed(seed + 2)
    cal_rp = score_stats((-batched(lambda b: recon_prob(vae, b, L, grp), xr, batch)).double().numpy())
    cal_rp.update(score="neg_recon_logprob_nats", L=L, threshold=cal_rp["percentiles"]["99"],
                  definition=("-log (1/L) sum_l N(x; vae_decoder(z_l), sigma^2), z_l ~ N(mu, exp(logvar)) "
                              "(An & Cho 2015), nats on the [-1,1] scale; higher = more anomalous"))
    return cal, cal_rp


def junk_auroc(vae, held, threshold, *, junk_n, L, batch, seed):
    """AUROC of each score, held-out real faces against each kind of junk (data.make_junk)."""
    D = vae.dims
    x_raw = held.float() / 127.5 - 1
    junk = data.make_junk(held, junk_n, vae.resolution, seed=seed + 3)
    real_e = batched(lambda b: neg_elbo_at_mean(vae, b), x_raw, batch).double().numpy()
    grp2 = torch.Generator().manual_seed(seed + 4)
    real_r = (-batched(lambda b: recon_prob(vae, b, L, grp2), x_raw, batch)).double().numpy()
    real_c = complexity_corrected(real_e, x_raw, D)
    au = dict(real_n=len(held), junk_n_per_kind=junk_n, neg_elbo={}, recon_prob={}, complexity_corrected={},
              junk_median_neg_elbo={},
              flagged_at_threshold={})
    all_e, all_r, all_c = [], [], []
    for kind, xj in junk.items():
        e = batched(lambda b: neg_elbo_at_mean(vae, b), xj, batch).double().numpy()
        r = (-batched(lambda b: recon_prob(vae, b, L, grp2), xj, batch)).double().numpy()
        au["neg_elbo"][kind] = auroc(real_e, e)
        au["recon_prob"][kind] = auroc(real_r, r)
        c = complexity_corrected(e, xj, D)
        au["complexity_corrected"][kind] = auroc(real_c, c)
        all_c.append(c)
        au["junk_median_neg_elbo"][kind] = float(np.median(e))
        au["flagged_at_threshold"][kind] = float((e > threshold).mean())
        all_e.append(e)
        all_r.append(r)
    au["neg_elbo"]["all"] = auroc(real_e, np.concatenate(all_e))
    au["recon_prob"]["all"] = auroc(real_r, np.concatenate(all_r))
    au["complexity_corrected"]["all"] = auroc(real_c, np.concatenate(all_c))
    au["complexity_corrected_definition"] = ("neg-ELBO score in bits on the 8-bit scale minus the PNG size of the "
                                             "8-bit image in bits (Serra et al. 2020); for comparison only")
    au["held_out_real_flagged_at_threshold"] = float((real_e > threshold).mean())
    au["held_out_real_median_neg_elbo"] = float(np.median(real_e))
    return au


def evaluate(*, ckpt="runs/vae/ckpt.pt", out="runs/vae/eval.json", data_dir=None, samples=16, L=16, calib_n=0,
             calib_n_rp=2000, junk_n=100, batch=100, threads=1, export_dir=None, seed=0):
    """Evaluate the VAE checkpoint, write the report (with its calibrations) to `out`; see the module docs."""
    torch.set_num_threads(threads)
    vae, ck = checkpoint.load_vae(ckpt)
    R, D = vae.resolution, vae.dims
    images, _, _ = data.load_faces(R, data_dir)
    train_idx, held_idx = data.split_indices(len(images))
    held = torch.from_numpy(images[held_idx])
    train = torch.from_numpy(images[train_idx])
    t_all = time.time()
    rep = dict(checkpoint=str(ckpt), config=vae.config, params=count_params(vae),
               params_encoder=count_params(vae.encoder), params_decoder=count_params(vae.decoder),
               training=dict(steps=ck["step"], minutes=ck["seconds"] / 60, images_seen=ck["imgs_seen"],
                             batch=ck["args"]["batch"], threads=ck["args"]["threads"]),
               dims=D, log_sigma=vae.log_sigma_clamped().tolist(),
               sigma=vae.log_sigma_clamped().exp().tolist(),
               convention=("nats_[-1,1]: continuous density of x = u/127.5 - 1; nats_8bit = nats_[-1,1] + D*ln(127.5) "
                           "for u in [0,256); bits_per_dim = nats_8bit / (D ln 2); with dequantised data "
                           "(u + U(-1/2,1/2)) nats_8bit is an upper bound on the discrete NLL"))
    rep["test"] = held_out_metrics(vae, held, samples=samples, batch=batch, seed=seed)
    print(json.dumps(rep["test"], indent=1), flush=True)
    cal, cal_rp = calibrations(vae, train, rep["log_sigma"], calib_n=calib_n, calib_n_rp=calib_n_rp, L=L,
                               batch=batch, seed=seed)
    rep["vae_anomaly"], rep["vae_anomaly_recon_prob"] = cal, cal_rp
    print("calibration neg-ELBO:", json.dumps(cal["percentiles"]), "mean", cal["mean"], "std", cal["std"], flush=True)
    print("calibration recon-prob:", json.dumps(cal_rp["percentiles"]), "mean", cal_rp["mean"], flush=True)
    au = rep["auroc"] = junk_auroc(vae, held, cal["threshold"], junk_n=junk_n, L=L, batch=batch, seed=seed)
    print("AUROC neg-ELBO:", json.dumps({k: round(v, 4) for k, v in au["neg_elbo"].items()}), flush=True)
    print("AUROC complexity-corrected:", json.dumps({k: round(v, 4) for k, v in au["complexity_corrected"].items()}),
          flush=True)
    print("AUROC recon-prob:", json.dumps({k: round(v, 4) for k, v in au["recon_prob"].items()}), flush=True)
    rep["eval_seconds"] = time.time() - t_all
    if export_dir:
        rep["export"] = export_check(vae, held, export_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json(out, rep)
    print(f"wrote {out}", flush=True)
    if export_dir and not rep["export"]["ok"]:
        raise SystemExit("export check FAILED")
    return rep


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt")
    ap.add_argument("--out")
    ap.add_argument("--data", dest="data_dir")
    ap.add_argument("--samples", type=int, help="posterior draws for the test neg-ELBO")
    ap.add_argument("--L", type=int, help="draws for the reconstruction probability")
    ap.add_argument("--calib-n", type=int, help="training faces for the neg-ELBO calibration (0 = all)")
    ap.add_argument("--calib-n-rp", type=int, help="training faces for the recon-prob calibration")
    ap.add_argument("--junk-n", type=int, help="junk images per kind for the AUROC")
    ap.add_argument("--batch", type=int)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--export-dir", help="also export the three VAE graphs here and check them")
    ap.add_argument("--seed", type=int)
    ap.set_defaults(**step_defaults(evaluate))
    evaluate(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
