"""fit_ganspace: the PCA finds known components, and the committed pc directions are sane."""
import json
import sys
from pathlib import Path

import numpy as np
import torch

ONNX_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ONNX_DIR))

from latentface_train import fit_ganspace  # noqa: E402

torch.set_num_threads(1)


class LinearMapping:
    """A stand-in generator whose w = z @ A + b has known principal components."""

    def __init__(self, spreads, seed=0):
        d = len(spreads)
        q, _ = np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))
        self.axes = torch.tensor(q.T, dtype=torch.float32)  # rows: the true components
        self.A = torch.tensor(spreads, dtype=torch.float32)[:, None] * self.axes
        self.b = torch.linspace(-1, 1, d)
        self.z_dim = d

    def mapping(self, z):
        return z @ self.A + self.b


def test_pca_recovers_the_components_their_spread_and_a_fixed_sign():
    G = LinearMapping([3.0, 2.0, 1.0, 0.5, 0.2, 0.1])
    mean, v, sigma, share = fit_ganspace.principal_components(G, n=20000, k=3, seed=0)
    assert torch.allclose(mean, G.b, atol=0.05)
    assert np.allclose(sigma.numpy(), [3.0, 2.0, 1.0], rtol=0.03)
    for i in range(3):
        assert abs(float(v[i] @ G.axes[i])) > 0.999
        assert float(v[i].abs().max()) == float(v[i].max())  # largest coefficient positive
    assert np.isclose(float(share.sum()), (9 + 4 + 1) / (9 + 4 + 1 + 0.25 + 0.04 + 0.01), atol=0.01)


def test_the_committed_components_are_orthonormal_measured_and_described():
    man = json.loads((ONNX_DIR / "default" / "manifest.json").read_text())
    pcs = {k: d for k, d in man["directions"].items() if d.get("fitted") == "ganspace"}
    assert len(pcs) >= 8
    names = sorted(pcs, key=lambda n: int(n[2:]))
    V = np.array([pcs[n]["vector"] for n in names])
    assert np.allclose(V @ V.T, np.eye(len(V)), atol=1e-4)
    sd = [pcs[n]["projection_std"] for n in names]
    assert sd == sorted(sd, reverse=True)
    for n in names:
        d = pcs[n]
        assert d["description"] and not d["description"].startswith("(not yet described"), n
        assert d["layers"] and set(d["layers"]) <= set(range(man["num_ws"])), n
        r = d["response"]
        assert r["strength_units"][3] == 0 and r["pixel_rms"][3] == 0
        assert r["pixel_rms"][5] > 0.02 and r["identity_distance"][5] > 0.05, n  # +2 sigma moves the face
    assert "age" in man["directions"] and man["directions"]["age"]["fitted"] == "judged"
