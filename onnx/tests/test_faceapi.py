"""The face graphs (face_id, face_attributes) against face-api itself, and their plumbing.

The reference test renders faces with the default bundle's own generator (no dataset
needed) plus the pictures in samples/, crops them as the Rust side does (the manifest's
centre fraction, bilinear, 8-bit), runs @vladmandic/face-api@1.7.15 on them in node
(tests/faceapi_reference.js, TF.js wasm backend) and the committed onnx/default graphs in
ONNX Runtime, and compares. It needs onnx/node_modules (scripts/setup_node.sh).
"""
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image

ONNX_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ONNX_DIR))

from latentface_train import face_graphs, faceapi  # noqa: E402
from latentface_train.util import to_uint8  # noqa: E402

torch.set_num_threads(1)

NODE_MODULES = ONNX_DIR / "node_modules"
DEFAULT = ONNX_DIR / "default"
TINY = ONNX_DIR / "tiny"
SAMPLES = ONNX_DIR.parent / "samples"
N_RENDERED = 60
DESCRIPTOR_TOL = 1e-4
AGE_TOL = 0.05
GENDER_TOL = 1e-4

needs_node_modules = pytest.mark.skipif(
    not (NODE_MODULES / "@vladmandic" / "face-api" / "model").is_dir(),
    reason="onnx/node_modules is missing (run scripts/setup_node.sh): no face-api reference to compare with")


def _session(path, threads=1):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def render_faces(bundle_dir, n, seed0=1000):
    """n faces [n, H, W, 3] uint8 from the bundle's mapping + synthesis graphs (zero noise),
    truncation psi from 0.5 to 1.0 so that the set spans plain to unusual faces."""
    m = json.loads((bundle_dir / "manifest.json").read_text())
    mapping = _session(bundle_dir / m["graphs"]["mapping"]["file"], 2)
    synth = _session(bundle_dir / m["graphs"]["synthesis"]["file"], 2)
    w_avg = np.array(m["w_avg"], np.float32)
    z = np.stack([np.random.RandomState(seed0 + i).randn(m["z_dim"]) for i in range(n)]).astype(np.float32)
    (w,) = mapping.run(None, {"z": z})
    psi = np.linspace(0.5, 1.0, n, dtype=np.float32)[:, None]
    w = w_avg + psi * (w - w_avg)
    feeds = {"ws": np.repeat(w[:, None], m["num_ws"], axis=1)}
    for i, s in enumerate(m["noise_shapes"]):
        feeds[f"noise_{i}"] = np.zeros([n] + s, np.float32)
    (img,) = synth.run(None, feeds)
    return to_uint8(img).transpose(0, 2, 3, 1)


def aligned_crops():
    """[(name, uint8 HWC)]: rendered faces (64 px) and the demo pictures (256 px)."""
    faces = [(f"render_{i}", im) for i, im in enumerate(render_faces(DEFAULT, N_RENDERED))]
    for p in sorted(SAMPLES.glob("*.png")):
        with Image.open(p) as im:
            faces.append((p.stem, np.asarray(im.convert("RGB"))))
    return faces


def run_reference(crops150, crops112, work):
    work.mkdir(parents=True, exist_ok=True)
    crops150.tofile(work / "crops150.u8")
    crops112.tofile(work / "crops112.u8")
    (work / "meta.json").write_text(json.dumps({"count": len(crops150)}))
    node = shutil.which("node")
    assert node, "node is not on PATH (onnx/node_modules is there, so the reference is expected to run)"
    t = time.time()
    subprocess.run([node, str(ONNX_DIR / "tests" / "faceapi_reference.js"), str(work), str(work / "out.json")],
                   cwd=ONNX_DIR, check=True, timeout=600)
    ref = json.loads((work / "out.json").read_text())
    ref["wall_s"] = time.time() - t
    return ref


@needs_node_modules
def test_default_graphs_match_faceapi(tmp_path):
    m = json.loads((DEFAULT / "manifest.json").read_text())
    frac = m["faces"]["crop"]["centre_fraction"]
    faces = aligned_crops()
    assert len(faces) >= 60
    c150 = np.stack([faceapi.crop_u8(im, frac, faceapi.FACE_ID_SIZE) for _, im in faces])
    c112 = np.stack([faceapi.crop_u8(im, frac, faceapi.FACE_ATTRIBUTES_SIZE) for _, im in faces])
    ref = run_reference(c150, c112, tmp_path / "ref")

    (desc,) = _session(DEFAULT / m["graphs"]["face_id"]["file"]).run(
        None, {"image": c150.transpose(0, 3, 1, 2).astype(np.float32)})
    age, gender = _session(DEFAULT / m["graphs"]["face_attributes"]["file"]).run(
        None, {"image": c112.transpose(0, 3, 1, 2).astype(np.float32)})

    d_desc = float(np.abs(desc - np.array(ref["descriptor"])).max())
    d_age = float(np.abs(age - np.array(ref["age"])).max())
    d_gender = float(np.abs(gender - np.array(ref["gender"])).max())
    t = ref["timing"]
    print(f"\nface-api reference ({ref['backend']}, {len(faces)} faces, F={frac}): "
          f"max |descriptor diff| {d_desc:.2e}, max |age diff| {d_age:.2e} y, max |gender diff| {d_gender:.2e}; "
          f"node {t['face_id_ms_per_face']:.1f} + {t['face_attributes_ms_per_face']:.1f} ms per face, "
          f"{ref['wall_s']:.1f} s in all")
    assert d_desc <= DESCRIPTOR_TOL, d_desc
    assert d_age <= AGE_TOL, d_age
    assert d_gender <= GENDER_TOL, d_gender
    # the inputs are faces, not noise: plausible readings
    assert np.all((age > 0) & (age < 100)), age
    assert np.allclose(gender.sum(1), 1, atol=1e-5)
    norms = np.linalg.norm(desc, axis=1)
    assert np.all((norms > 0.2) & (norms < 2.0)), norms


def test_manifest_faces_sections():
    for name in ("default", "tiny"):
        m = json.loads((ONNX_DIR / name / "manifest.json").read_text())
        faces = m["faces"]
        assert faces["id_threshold"] == face_graphs.ID_THRESHOLD
        assert faces["crop"]["centre_fraction"] == face_graphs.CENTRE_FRACTION
        assert faces["verification"]["ok"] is True
        assert m["graphs"]["face_id"]["inputs"] == [
            {"name": "image", "shape": ["batch", 3, 150, 150], "dtype": "float32"}]
        assert m["graphs"]["face_id"]["outputs"] == [{"name": "descriptor", "shape": ["batch", 128], "dtype": "float32"}]
        assert m["graphs"]["face_attributes"]["inputs"] == [
            {"name": "image", "shape": ["batch", 3, 112, 112], "dtype": "float32"}]
        assert m["graphs"]["face_attributes"]["outputs"] == [
            {"name": "age", "shape": ["batch"], "dtype": "float32"},
            {"name": "gender", "shape": ["batch", 2], "dtype": "float32"}]
    m = json.loads((DEFAULT / "manifest.json").read_text())
    assert m["faces"]["source"]["npm"] == face_graphs.NPM_SPEC
    assert m["faces"]["source"]["weights_sha256"] == face_graphs.WEIGHTS_SHA256
    assert face_graphs.NOTICE in m["files"]


def test_tiny_face_graphs_match_their_modules():
    m = json.loads((TINY / "manifest.json").read_text())
    seed = m["faces"]["source"]["random_weights"]["seed"]
    g = torch.Generator().manual_seed(5)
    for key, module, size in (("face_id", faceapi.tiny_face_id(seed), 150),
                              ("face_attributes", faceapi.tiny_face_attributes(seed), 112)):
        x = torch.randint(0, 256, [3, 3, size, size], generator=g).float()
        got = _session(TINY / m["graphs"][key]["file"]).run(None, {"image": x.numpy()})
        with torch.no_grad():
            want = module(x)
        want = want if isinstance(want, tuple) else (want,)
        for a, b in zip(got, want):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5, err_msg=key)


def test_tfjs_weight_decoding(tmp_path):
    """uint8 affine quantization (q * scale + min, in float64 then float32), float16 and
    plain float32 weights, in storage order over concatenated shards."""
    q = np.array([0, 1, 255, 128], np.uint8)
    h = np.array([1.5, -2.25], np.float16)
    f = np.array([[3.0, -1.0]], np.float32)
    blob = q.tobytes() + h.tobytes() + f.tobytes()
    (tmp_path / "a.bin").write_bytes(blob[:5])
    (tmp_path / "b.bin").write_bytes(blob[5:])
    manifest = [{"paths": ["a.bin", "b.bin"], "weights": [
        {"name": "q", "shape": [2, 2], "dtype": "float32", "quantization": {"dtype": "uint8", "scale": 0.1, "min": -1.0}},
        {"name": "h", "shape": [2], "dtype": "float32", "quantization": {"dtype": "float16"}},
        {"name": "f", "shape": [1, 2], "dtype": "float32"}]}]
    (tmp_path / "m.json").write_text(json.dumps(manifest))
    w = faceapi.load_tfjs_weights(tmp_path / "m.json")
    np.testing.assert_array_equal(w["q"], (q.astype(np.float64) * 0.1 - 1.0).astype(np.float32).reshape(2, 2))
    np.testing.assert_array_equal(w["h"], [1.5, -2.25])
    np.testing.assert_array_equal(w["f"], f)
    assert all(v.dtype == np.float32 for v in w.values())


def test_tf_same_padding_is_asymmetric():
    # TF 'same' at stride 2 on an even size puts the extra pixel after (bottom/right)
    assert faceapi.same_pads(112, 3, 2) == (0, 1, 56)
    assert faceapi.same_pads(56, 3, 2) == (0, 1, 28)
    assert faceapi.same_pads(7, 3, 2) == (1, 1, 4)
    assert faceapi.same_pads(28, 1, 2) == (0, 0, 14)


def test_centre_crop_matches_torch_bilinear():
    rng = np.random.RandomState(0)
    img = rng.rand(64, 64, 3)
    for frac in (0.7, 0.8, 1.0):
        px = int(round(frac * 64))
        off = (64 - px) // 2
        want = torch.nn.functional.interpolate(
            torch.from_numpy(img[off:off + px, off:off + px]).permute(2, 0, 1)[None], size=150, mode="bilinear",
            align_corners=False)[0].permute(1, 2, 0).numpy()
        np.testing.assert_allclose(faceapi.centre_crop_resize(img, frac, 150), want, atol=1e-12)
