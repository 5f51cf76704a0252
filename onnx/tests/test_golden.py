"""The golden vectors in each bundle (golden.json, latentface_train.golden) are what the
Python toolchain computes today: detail, neg-ELBO (through the graphs and through the
torch VAE), percentiles and verdicts. tests/golden.rs asserts the Rust side against the
same files, so the two languages cannot drift apart."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from latentface_train import golden, make_tiny_bundle, metrics

ONNX_DIR = Path(__file__).resolve().parent.parent
BUNDLES = [ONNX_DIR / "tiny", ONNX_DIR / "default"]


def _committed(bundle_dir):
    return json.loads((bundle_dir / golden.FILE).read_text())


def _close(got, want, rel, what):
    assert abs(got - want) <= rel * max(abs(want), 1.0), f"{what}: now {got}, golden {want}"


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=lambda p: p.name)
def test_golden_file_is_what_the_toolchain_computes(bundle_dir):
    torch.set_num_threads(1)
    want = _committed(bundle_dir)
    got = golden.compute(bundle_dir)
    man = json.loads((bundle_dir / "manifest.json").read_text())
    assert want["format"] == golden.FORMAT
    assert want["calibrations"][0]["calibration"] == man["vae_anomaly"], "golden.json is older than the manifest"
    assert [i["name"] for i in got["images"]] == [i["name"] for i in want["images"]]
    tol = want["score_rel_tol"]
    for g, w in zip(got["images"], want["images"]):
        assert g["u8_hex"] == w["u8_hex"], w["name"]
        _close(g["detail"], w["detail"], 1e-12, f"{w['name']} detail")
        for k in ("recon_nll", "kl", "neg_elbo"):
            _close(g[k], w[k], tol, f"{w['name']} {k}")
    for g, w in zip(got["formula"], want["formula"]):
        assert g == w
    assert got["calibrations"] == want["calibrations"]


@pytest.mark.parametrize("bundle_dir", BUNDLES, ids=lambda p: p.name)
def test_percentiles_and_verdicts_of_the_golden_scores(bundle_dir):
    want = _committed(bundle_dir)
    r = want["resolution"]
    cal = metrics.Calibration(want["calibrations"][0]["calibration"])
    for im in want["images"]:
        u8 = np.frombuffer(bytes.fromhex(im["u8_hex"]), np.uint8).reshape(1, 3, r, r)
        d = float(metrics.detail(torch.from_numpy(golden.to_float(u8)))[0])
        _close(d, im["detail"], 1e-12, f"{im['name']} detail")
        _close(cal.percentile(im["neg_elbo"]), im["percentile"], 1e-9, f"{im['name']} percentile")
        assert cal.verdict(im["neg_elbo"], d, want["unusual_percentile"]) == im["verdict"], im["name"]
    for c in want["calibrations"]:
        cal = metrics.Calibration(c["calibration"])
        assert [cal.percentile(s) for s in c["scores"]] == c["percentiles"]
        assert [cal.value_at(p) for p in c["at_percentiles"]] == c["values"]
        for v in c["verdicts"]:
            assert cal.verdict(v["score"], v["detail"], want["unusual_percentile"]) == v["verdict"], v


def test_torch_vae_scores_match_the_tiny_golden_vectors():
    """The torch VAE's own neg_elbo_at_mean (what calibrated the manifests) agrees with the
    scores through the graphs."""
    torch.set_num_threads(1)
    _, _, vae, _ = make_tiny_bundle.tiny_models(0)
    assert golden.check_against_torch(_committed(ONNX_DIR / "tiny"), vae) <= golden.SCORE_REL_TOL


def test_calibration_mirrors_the_rust_rules():
    """The cases of src/vae/score.rs's unit test, on the Python mirror."""
    c = metrics.Calibration(golden.SYNTHETIC_CALIBRATION)
    assert c.percentile(100.0) == 50.0
    assert abs(c.percentile(120.0) - 70.0) < 1e-9
    assert abs(c.percentile(170.0) - 97.0) < 1e-9
    assert c.percentile(1e9) == 100.0
    assert abs(c.percentile(85.0) - 15.865) < 0.01
    assert c.percentile(-1e9) < 1e-6
    assert abs(c.value_at(92.5) - 145.0) < 1e-9
    assert c.verdict(120.0, 0.05) == "normal"
    assert c.verdict(160.0, 0.05) == "unusual"
    assert c.verdict(190.5, 0.05) == "anomalous"
    assert c.verdict(120.0, 0.01) == "anomalous"
    assert c.verdict(120.0, None) == "normal"
