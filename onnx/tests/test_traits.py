"""fit_traits: region masks, the generalised-eigenvector components, the committed traits."""
import base64
import json
import sys
from pathlib import Path

import numpy as np
import torch

ONNX_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ONNX_DIR))

from latentface_train import fit_traits  # noqa: E402

torch.set_num_threads(1)
TEMPLATE = {"face_template": {"left_eye": [0.29, 0.3], "right_eye": [0.69, 0.3], "mouth": [0.49, 0.69]}}


def test_masks_are_weights_and_the_rest_keeps_away_from_the_region():
    for t in fit_traits.TRAITS:
        inside, rest = fit_traits.region_masks(t, 64, TEMPLATE)
        assert inside.shape == rest.shape == (64, 64)
        assert 0 <= inside.min() and inside.max() == 1 and 0 <= rest.min() and rest.max() <= 1
        assert 20 < inside.sum() < 0.5 * 64 * 64, t
        assert (inside * rest).sum() < 0.05 * inside.sum(), t


def test_eyes_sit_on_the_template_points():
    inside, _ = fit_traits.region_masks("eyes", 64, TEMPLATE)
    for x, y in ((0.29, 0.3), (0.69, 0.3)):
        assert inside[int(y * 64), int(x * 64)] == 1
    assert inside[int(0.69 * 64), int(0.49 * 64)] == 0  # the mouth


def test_components_are_the_best_localised_directions_and_biorthogonal():
    rng = np.random.default_rng(0)
    L, W = 2, 6
    # Row 0: direction e0 moves only the region, e1 only the rest; row 1 is mixed.
    A = np.zeros((L, W, W))
    B = np.zeros((L, W, W))
    A[0, 0, 0], B[0, 1, 1] = 5.0, 5.0
    for r in range(L):
        X, Y = rng.normal(size=(W, W)), rng.normal(size=(W, W))
        A[r] += 0.1 * X @ X.T
        B[r] += 0.1 * Y @ Y.T + np.eye(W)
    comps = fit_traits.components(torch.from_numpy(A), torch.from_numpy(B), 3, 0.0)
    assert comps[0][0] == 0 and abs(abs(comps[0][2][0]) / np.linalg.norm(comps[0][2]) - 1) < 0.05
    assert [c[1] for c in comps] == sorted((c[1] for c in comps), reverse=True)
    for r in range(L):
        mine = [c for c in comps if c[0] == r]
        if mine:
            V = np.stack([c[2] for c in mine])
            U = np.stack([c[3] for c in mine])
            assert np.allclose(U @ V.T, np.eye(len(mine)), atol=1e-8)
    # Transferring moves exactly those components of the difference.
    ws, src = torch.randn(4, L, W), torch.randn(4, L, W)
    out = fit_traits.transfer(ws, src, comps)
    for r, _, v, u in comps:
        got = (out[:, r].double() @ torch.from_numpy(u))
        want = (src[:, r].double() @ torch.from_numpy(u))
        assert torch.allclose(got, want, atol=1e-4)


def test_committed_traits_decode_with_the_bundle_dimensions():
    for name in ("tiny", "default"):
        m = json.loads((ONNX_DIR / name / "manifest.json").read_text())
        assert set(m["traits"]) == set(fit_traits.TRAITS), name
        for t, e in m["traits"].items():
            k, W, R = len(e["rows"]), m["w_dim"], m["resolution"]
            V = np.frombuffer(base64.b64decode(e["basis"]), "<f2").astype(np.float32).reshape(k, W)
            U = np.frombuffer(base64.b64decode(e["dual"]), "<f2").astype(np.float32).reshape(k, W)
            rows = np.array(e["rows"])
            for r in set(e["rows"]):
                i = np.flatnonzero(rows == r)
                assert np.allclose(U[i] @ V[i].T, np.eye(len(i)), atol=2e-2), (name, t, r)
            assert len(base64.b64decode(e["mask"])) == R * R
        assert any("fit_traits" in r for r in m["rebuild"]), name
