"""Where a gradient step's time goes in ONNX Runtime, and what session options change it.

    python -m latentface_train.ort_study profile --bundle default --batch 1
    python -m latentface_train.ort_study ab --bundle default --batch 1 --rounds 12 --runs 8

The same ONNX Runtime release as the Rust program (requirements.txt pins onnxruntime to
the version of scripts/setup.sh) on the same `synthesis_grad` graph, so the per-node times
and the effect of a session option carry over; what Rust adds around a run (copying
~100 KB of inputs at B = 1) is not in these figures.
- `profile`: ORT's profiler over `--runs` runs: per op type the kernel time, its share,
  nodes per run and time per node, the share of the run spent in nodes under 20 us, and
  the sum of kernel times against the run's wall time.
- `ab`: the variants (`--variants`, default all) are timed in interleaved rounds (round r
  runs every variant `--runs` times, then round r + 1 ...), so a machine whose load changes
  during the study affects them alike; prints median and minimum per variant and the
  ratio to `base` (what the Rust program does: intra-op threads, no spinning, every graph
  optimisation, memory patterns on, sequential execution).
"""
import argparse
import collections
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from .util import step_defaults

L = ort.GraphOptimizationLevel
VARIANTS = {
    "base": dict(),
    "spin": dict(spin=True),
    "1thread": dict(threads=1),
    "basic": dict(level=L.ORT_ENABLE_BASIC),
    "extended": dict(level=L.ORT_ENABLE_EXTENDED),
    "no_nchwc": dict(disable=["NchwcTransformer"]),
    "no_mem_pattern": dict(mem=False),
    "parallel": dict(parallel=True),
}


def session(path, *, threads=2, spin=False, level=L.ORT_ENABLE_ALL, mem=True, parallel=False, disable=(),
            profile=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    so.graph_optimization_level = level
    so.enable_mem_pattern = mem
    if parallel:
        so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
        so.inter_op_num_threads = 2
    if profile:
        so.enable_profiling = True
        so.profile_file_prefix = profile
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"],
                                disabled_optimizers=list(disable))


def feed(s, batch):
    """Inputs of the gradient graph at `batch`: small random latents and targets, ones mask."""
    rng = np.random.default_rng(0)
    f = {}
    for i in s.get_inputs():
        dims = [batch if not isinstance(d, int) else d for d in i.shape]
        if i.name == "mask" or i.name == "weights":
            f[i.name] = np.ones(dims, np.float32)
        elif i.name.startswith("noise"):
            f[i.name] = np.zeros(dims, np.float32)
        else:
            f[i.name] = (rng.standard_normal(dims) * 0.1).astype(np.float32)
    return f


def times(s, f, k):
    out = []
    for _ in range(k):
        t = time.perf_counter()
        s.run(None, f)
        out.append(time.perf_counter() - t)
    return out


def graph_path(bundle, graph):
    bdir = Path(bundle)
    return bdir / json.loads((bdir / "manifest.json").read_text())["graphs"][graph]["file"]


def profile(*, bundle="default", graph="synthesis_grad", batch=1, runs=30, threads=2, out="/tmp"):
    s = session(graph_path(bundle, graph), threads=threads, profile=str(Path(out) / f"ort_profile_b{batch}"))
    f = feed(s, batch)
    times(s, f, 3)
    times(s, f, runs)
    events = json.loads(Path(s.end_profiling()).read_text())
    # Every run is in the profile, the 3 warm-up runs too: figures are per run over all.
    model_runs = [e["dur"] for e in events if e.get("cat") == "Session" and e["name"] == "model_run"]
    nodes = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    n = len(model_runs)
    by, count = collections.Counter(), collections.Counter()
    for e in nodes:
        by[e["args"].get("op_name")] += e["dur"]
        count[e["args"].get("op_name")] += 1
    total = sum(by.values())
    run_us = float(np.median(model_runs))
    d = np.array([e["dur"] for e in nodes])
    print(f"{graph} at B={batch}, {threads} threads: median run {run_us / 1e3:.2f} ms, "
          f"{len(nodes) / n:.0f} nodes per run (after ORT's optimisations), kernels {total / n / 1e3:.2f} ms "
          f"per run; nodes under 20 us: {(d < 20).sum() / n:.0f} per run, {d[d < 20].sum() / n / 1e3:.2f} ms")
    for op, v in by.most_common(15):
        print(f"  {op:20s} {v / n / 1e3:8.3f} ms  {100 * v / total:5.1f}%  {count[op] / n:4.0f} nodes  "
              f"{v / count[op]:8.1f} us/node")


def ab(*, bundle="default", graph="synthesis_grad", batch=1, rounds=12, runs=8, threads=2, variants=""):
    names = [v for v in (variants.split(",") if variants else VARIANTS) if v]
    if "base" not in names:
        names.insert(0, "base")
    path = graph_path(bundle, graph)
    sessions = {v: session(path, **{"threads": threads, **VARIANTS[v]}) for v in names}
    f = feed(sessions["base"], batch)
    for s in sessions.values():
        times(s, f, 3)
    res = {v: [] for v in names}
    for _ in range(rounds):
        for v, s in sessions.items():
            res[v] += times(s, f, runs)
    base = np.median(res["base"])
    print(f"{graph} at B={batch}, {threads} threads, {rounds} interleaved rounds x {runs} runs "
          f"(load average {' '.join(open('/proc/loadavg').read().split()[:3])})")
    for v in names:
        t = np.array(res[v]) * 1e3
        print(f"  {v:16s} median {np.median(t):8.2f} ms  min {t.min():8.2f} ms  vs base {np.median(t) / base / 1e3:6.3f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["profile", "ab"])
    ap.add_argument("--bundle", default="default")
    ap.add_argument("--graph", default="synthesis_grad")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, help="runs per variant and round (ab) or in all (profile)")
    ap.add_argument("--rounds", type=int, default=12, help="ab: interleaved rounds")
    ap.add_argument("--variants", default="", help=f"ab: comma-separated, of {', '.join(VARIANTS)}")
    a = vars(ap.parse_args())
    mode = a.pop("mode")
    if mode == "profile":
        a.pop("rounds"), a.pop("variants")
        a["runs"] = a["runs"] or step_defaults(profile)["runs"]
        profile(**a)
    else:
        a["runs"] = a["runs"] or step_defaults(ab)["runs"]
        ab(**a)


if __name__ == "__main__":
    main()
