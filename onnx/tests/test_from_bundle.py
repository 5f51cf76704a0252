"""The toolchain rebuilds the generator and encoder from a bundle's graphs (for training
that resumes from the committed bundle): the rebuilt modules must reproduce the graphs."""
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from latentface_train import from_bundle

TINY = Path(__file__).resolve().parent.parent / "tiny"


def test_tiny_generator_and_encoder_come_back_from_their_graphs():
    torch.set_num_threads(1)
    G = from_bundle.load_generator(TINY, log=lambda *_: None)
    E = from_bundle.load_encoder(TINY, G, max_ch=16, hidden=64, log=lambda *_: None)  # make_tiny_bundle's
    # an independent check beside the loader's own: other inputs, the synthesis graph
    S = G.synthesis
    ws = torch.randn(3, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(9))
    noise = [torch.zeros([3] + s) for s in S.noise_shapes]
    sess = ort.InferenceSession(str(TINY / "synthesis.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"ws": ws.numpy(), **{f"noise_{i}": n.numpy() for i, n in enumerate(noise)}}
    with torch.no_grad():
        want = S(ws, noise).numpy()
    assert np.abs(sess.run(None, feeds)[0] - want).max() < 1e-4
    img = torch.rand(2, 3, G.resolution, G.resolution) * 2 - 1
    sess = ort.InferenceSession(str(TINY / "encoder.onnx"), providers=["CPUExecutionProvider"])
    with torch.no_grad():
        assert np.abs(sess.run(None, {"image": img.numpy()})[0] - E(img).numpy()).max() < 1e-4

