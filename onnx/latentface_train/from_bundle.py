"""Rebuild the PyTorch generator and encoder from a bundle's ONNX graphs.

Training checkpoints are not committed, so a fresh clone (or a machine whose cache is
gone) recovers the trained weights from the bundle itself. The traced graphs name their
weights `_param_constantN` in tracing order, not by module path, so the mapping is
learned by exporting a freshly initialised module of the same config the same way and
matching each of its initializers to the parameter or buffer that holds those exact
(random, hence unique) values. The result is checked: the rebuilt module must reproduce
the bundle graph's output in ONNX Runtime.
"""
import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnx import numpy_helper

from . import graphs
from .networks import Encoder, Generator
from .onnx_export import export_module


def _initializers(path):
    return [numpy_helper.to_array(i) for i in onnx.load(str(path)).graph.initializer]


def _tensors(module):
    named = dict(module.named_parameters())
    named.update({k: v for k, v in module.named_buffers()})
    return named


def _load_by_tracing(module, wrapper, example, input_names, output_names, bundle_graph):
    """Copy the bundle graph's initializers into `module` (see the module docstring)."""
    named = _tensors(module)
    saved = {k: v.detach().clone() for k, v in named.items()}
    with torch.no_grad():  # unique values, so that each initializer names its tensor
        for v in named.values():
            v.copy_(torch.randn(v.shape))
    with tempfile.TemporaryDirectory() as tmp:
        export_module(wrapper, example, input_names, output_names, Path(tmp) / "fresh.onnx")
        fresh = _initializers(Path(tmp) / "fresh.onnx")
    trained = _initializers(bundle_graph)
    if len(fresh) != len(trained):
        raise ValueError(f"{bundle_graph}: {len(trained)} weights, a fresh export has {len(fresh)}")
    state = {}
    for i, (f, t) in enumerate(zip(fresh, trained)):
        if f.shape != t.shape:
            raise ValueError(f"{bundle_graph}: weight {i} has shape {t.shape}, expected {f.shape}")
        hits = [k for k, v in named.items() if tuple(v.shape) == f.shape
                and np.array_equal(v.detach().numpy(), f)]
        if len(hits) == 1:
            state[hits[0]] = torch.from_numpy(t.copy())
    with torch.no_grad():
        for k, v in named.items():
            v.copy_(state.get(k, saved[k]))
    return set(named) - set(state)


def _check(session_path, feeds, torch_out, what):
    sess = ort.InferenceSession(str(session_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
    err = float(np.abs(got - torch_out.numpy()).max())
    if err > 1e-3:
        raise ValueError(f"rebuilt {what} differs from the bundle's graph by {err:.2e}")
    return err


def load_generator(bundle_dir, log=print):
    """Generator (mapping + synthesis, w_avg from the manifest) with the bundle's weights."""
    bundle_dir = Path(bundle_dir)
    man = json.loads((bundle_dir / "manifest.json").read_text())
    torch.manual_seed(1234)
    G = Generator(**man["generator"]).eval()
    S = G.synthesis
    noise_names = [f"noise_{i}" for i in range(len(S.noise_shapes))]
    ws = torch.randn(2, G.num_ws, G.w_dim)
    noise = S.make_noise(2)
    missing = _load_by_tracing(S, graphs.SynthesisGraph(S), [ws, *noise], ["ws", *noise_names], ["image"],
                               bundle_dir / "synthesis.onnx")
    missing |= _load_by_tracing(G.mapping, graphs.MappingGraph(G.mapping), [torch.randn(2, G.z_dim)], ["z"], ["w"],
                                bundle_dir / "mapping.onnx")
    missing = {m for m in missing if m != "rgb_up_kernel"}
    if missing:
        raise ValueError(f"{bundle_dir}: could not place {sorted(missing)}")
    G.w_avg.copy_(torch.tensor(man["w_avg"], dtype=torch.float32).reshape(-1)[:G.w_dim])
    ws = torch.tensor(man["w_avg"], dtype=torch.float32).reshape(1, 1, -1).expand(2, G.num_ws, -1).clone()
    ws += 0.5 * torch.randn(ws.shape)
    with torch.no_grad():
        img = S(ws, noise)
        z = torch.randn(2, G.z_dim)
        w = G.mapping(z)
    feeds = {"ws": ws, **dict(zip(noise_names, noise))}
    e1 = _check(bundle_dir / "synthesis.onnx", feeds, img, "synthesis")
    e2 = _check(bundle_dir / "mapping.onnx", {"z": z}, w, "mapping")
    log(f"generator rebuilt from {bundle_dir} (max diff synthesis {e1:.1e}, mapping {e2:.1e})")
    return G


def load_encoder(bundle_dir, G, max_ch=None, hidden=512, log=print):
    """The bundle's encoder; `max_ch` defaults to the generator's (as train_gan builds it)."""
    bundle_dir = Path(bundle_dir)
    man = json.loads((bundle_dir / "manifest.json").read_text())
    torch.manual_seed(4321)
    max_ch = man["generator"]["max_ch"] if max_ch is None else max_ch
    E = Encoder(G.resolution, G.num_ws, G.w_dim, max_ch=max_ch, hidden=hidden).eval()
    img = torch.rand(2, 3, G.resolution, G.resolution) * 2 - 1
    missing = _load_by_tracing(E, graphs.EncoderGraph(E), [img], ["image"], ["ws"], bundle_dir / "encoder.onnx")
    if missing:
        raise ValueError(f"{bundle_dir}: could not place encoder weights {sorted(missing)}")
    with torch.no_grad():
        out = E(img)
    err = _check(bundle_dir / "encoder.onnx", {"image": img}, out, "encoder")
    log(f"encoder rebuilt from {bundle_dir} (max diff {err:.1e})")
    return E
