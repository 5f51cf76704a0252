"""Count the floating-point operations of a bundle graph, per image and by op type.

    python -m latentface_train.flops --bundle default --graph synthesis_grad --out flops.json

Shapes come from running the graph once in ONNX Runtime with every intermediate tensor
exposed as an output (optimisations off, so the nodes are the exported ones), at batch
sizes 1 and 8: ONNX's static shape inference leaves the LPIPS half of the gradient graph
unresolved, a real run does not. The count is per image = (count at B=8) / 8, and the
script checks that the graph's work is linear in the batch (no per-batch constant worth
mentioning). Conventions (the usual ones, 2 FLOPs per multiply-add):
- Conv: 2 * numel(out) * (C_in / group) * k_h * k_w (+ numel(out) for a bias);
- ConvTranspose: 2 * numel(in) * (C_out / group) * k_h * k_w (+ bias);
- MatMul: 2 * numel(out) * K; Gemm: 2 * M * N * K (+ M * N for C);
- element-wise arithmetic, comparisons and activations: numel(out) each;
- reductions: numel(in);
- data movement (Reshape, Transpose, Concat, Slice, Gather, Pad, Expand, Cast, ...): 0.
Writes JSON `{"graph", "file", "per_image": {"total", "by_op": {op: flops}}, "at_batch": {B: total}}`,
which `latentface bench --flops FILE` reads to state GFLOP/s and the share of the CPU's peak.
"""
import argparse
import collections
import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import onnx

from .util import step_defaults

ELEMENTWISE = {"Add", "Sub", "Mul", "Div", "Sqrt", "Relu", "LeakyRelu", "Reciprocal", "Neg", "Where",
               "Greater", "Less", "LessOrEqual", "GreaterOrEqual", "Equal", "Pow", "Exp", "Log", "Abs",
               "Sigmoid", "Tanh", "Erf", "Max", "Min", "Clip", "Sign", "Not", "And", "Or"}
REDUCE = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL2", "ReduceSumSquare"}


def node_flops(node, shape):
    """FLOPs of one node; `shape(name)` gives a tensor's real shape (list) or None."""
    op = node.op_type
    out = shape(node.output[0]) if node.output else None
    numel = lambda s: int(np.prod(s)) if s is not None else 0
    if op == "Conv":
        w = shape(node.input[1])
        f = 2 * numel(out) * int(np.prod(w[1:]))
        return f + (numel(out) if len(node.input) > 2 and node.input[2] else 0)
    if op == "ConvTranspose":
        x, w = shape(node.input[0]), shape(node.input[1])
        f = 2 * numel(x) * int(np.prod(w[1:]))
        return f + (numel(out) if len(node.input) > 2 and node.input[2] else 0)
    if op == "MatMul":
        a = shape(node.input[0])
        return 2 * numel(out) * a[-1]
    if op == "Gemm":
        a = shape(node.input[0])
        trans_a = next((at.i for at in node.attribute if at.name == "transA"), 0)
        k = a[0] if trans_a else a[1]
        return 2 * numel(out) * k + (numel(out) if len(node.input) > 2 and node.input[2] else 0)
    if op in ELEMENTWISE:
        return numel(out)
    if op in REDUCE:
        return numel(shape(node.input[0]))
    return 0


def count(model_path, batch):
    """-> (total FLOPs, {op: FLOPs}) of one run of the graph at `batch`."""
    import onnxruntime as ort
    model_path = Path(model_path)
    m = onnx.load(str(model_path), load_external_data=False)
    have = {o.name for o in m.graph.output}
    for n in m.graph.node:
        for o in n.output:
            if o and o not in have:
                m.graph.output.append(onnx.ValueInfoProto(name=o))
                have.add(o)
    # ORT refuses external data outside the model's folder (symlinks included): copy it.
    with tempfile.TemporaryDirectory() as tmp:
        for f in model_path.parent.iterdir():
            if f.suffix == ".bin":
                shutil.copy(f, Path(tmp) / f.name)
        onnx.save(m, str(Path(tmp) / "all.onnx"))
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        s = ort.InferenceSession(str(Path(tmp) / "all.onnx"), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feed = {}
        for i in s.get_inputs():
            dims = [batch if not isinstance(d, int) else d for d in i.shape]
            feed[i.name] = (rng.random(dims) * 0.1).astype(np.float32)
        names = [o.name for o in s.get_outputs()]
        values = s.run(None, feed)
    shapes = {k: list(v.shape) for k, v in zip(names, values) if v is not None}
    shapes.update({k: list(v.shape) for k, v in feed.items()})
    for t in m.graph.initializer:
        shapes[t.name] = list(t.dims)
    for n in m.graph.node:  # Constant nodes' outputs
        if n.op_type == "Constant":
            for at in n.attribute:
                if at.name == "value":
                    shapes[n.output[0]] = list(at.t.dims)
    by_op = collections.Counter()
    for n in m.graph.node:
        by_op[n.op_type] += node_flops(n, shapes.get)
    return sum(by_op.values()), dict(by_op)


def run(*, bundle="default", graph="synthesis_grad", out=None):
    """Counts `graph` of `bundle` at B=1 and B=8; prints a table; writes JSON to `out`."""
    bdir = Path(bundle)
    manifest = json.loads((bdir / "manifest.json").read_text())
    path = bdir / manifest["graphs"][graph]["file"]
    t1, _ = count(path, 1)
    t8, by8 = count(path, 8)
    per_image = {op: v / 8 for op, v in sorted(by8.items(), key=lambda kv: -kv[1]) if v}
    total = t8 / 8
    if abs(t1 - total) > 0.02 * total:
        print(f"note: B=1 counts {t1 / 1e9:.4f} GFLOP, B=8 {total / 1e9:.4f} GFLOP per image")
    print(f"{graph} ({path}): {total / 1e9:.4f} GFLOP per image (B=8 run), {t1 / 1e9:.4f} at B=1")
    rest = 0.0
    for op, v in per_image.items():
        if v >= 0.001 * total:
            print(f"  {op:14s} {v / 1e9:9.4f} GFLOP  {100 * v / total:5.1f}%")
        else:
            rest += v
    print(f"  {'the rest':14s} {rest / 1e9:9.4f} GFLOP  {100 * rest / total:5.1f}%")
    report = dict(graph=graph, file=str(path), conventions="2 FLOPs per multiply-add; see flops.py",
                  per_image=dict(total=total, by_op=per_image), at_batch={"1": t1, "8": t8})
    if out:
        Path(out).write_text(json.dumps(report, indent=1))
    return report


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", help="bundle folder")
    ap.add_argument("--graph", help="graph name in the manifest")
    ap.add_argument("--out", help="JSON report")
    ap.set_defaults(**step_defaults(run))
    run(**vars(ap.parse_args()))


if __name__ == "__main__":
    main()
