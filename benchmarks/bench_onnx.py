"""Benchmark ONNX Runtime fp32 against int8 QDQ graphs exported by qlib.export_onnx.

Run with ``.venv/bin/python benchmarks/bench_onnx.py [--threads 1 2 4] [--rounds 9]``
(needs ``pip install onnx==1.23.2 onnxruntime==1.32.0``), preferably on an idle machine.

Layers: the feed-forward layers of a small transformer (hidden size 384, as
all-MiniLM-L6-v2: 384 -> 1536 and 1536 -> 384), each as a one-layer graph:
fp32 ``MatMul + Add`` and the
int8 QDQ form (int8 per-channel weights, int8 per-tensor input and output
calibrated on Gaussian activations; input quantization and output
dequantization included in the int8 time). For each batch size the fp32 and
int8 sessions are timed round-robin (one median_ms run of each per round,
``--rounds`` rounds), so that a change of the machine's load hits both alike;
the median over the rounds is reported, with the fp32 / int8 ratio.

It also checks the exported int8 graph once: ORT's codes of the one-layer
graph against qlib's fake-quantized simulation (at most one code apart on
under 1 % of the outputs; exit status 1 otherwise).
"""

from __future__ import annotations

import argparse
import platform
import sys

import numpy as np

import qlib
from qlib.models.onnx_export import export_onnx, onnx_session, optimized_op_types, run_onnx

BATCHES = (1, 4, 16, 64, 256)


def layer_model(n_in: int, n_out: int, rng: np.random.Generator) -> qlib.MLP:
    return qlib.MLP({"fc1.weight": (rng.standard_normal((n_out, n_in)) / np.sqrt(n_in)).astype(np.float32),
                     "fc1.bias": (0.1 * rng.standard_normal(n_out)).astype(np.float32)})


def interleaved_ms(calls: dict, number: int, rounds: int) -> dict:
    runs = {name: [] for name in calls}
    for _ in range(rounds):
        for name, f in calls.items():
            runs[name].append(qlib.median_ms(f, number=number, repeat=1))
    return {name: float(np.median(t)) for name, t in runs.items()}


def check_codes(model: qlib.MLP, ranges, x: np.ndarray) -> bool:
    out = run_onnx(export_onnx(model, quantized=ranges, code_outputs=True), x)
    trace = model.trace(x, params=qlib.fake_quantize_weights(model.params),
                        act_quant=qlib.activation_quantizer(ranges))
    expected = qlib.quantize(trace.logits, ranges["output"])
    diff = np.abs(out["logits_codes"].astype(np.int64) - expected)
    ok = int(diff.max()) <= 1 and np.count_nonzero(diff) < 0.01 * diff.size
    print(f"codes check: {np.count_nonzero(diff)} of {diff.size} differ, by at most {int(diff.max())}: "
          f"{'PASS' if ok else 'FAIL'}")
    return ok


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    import onnxruntime

    print(f"onnxruntime {onnxruntime.__version__}, {platform.machine()}, {platform.processor() or 'cpu'}")
    rng = np.random.default_rng(0)
    ok = True
    for n_in, n_out in ((384, 1536), (1536, 384)):
        model = layer_model(n_in, n_out, rng)
        ranges = qlib.calibrate_activations(model, rng.standard_normal((512, n_in)), include_output=True)
        protos = {"fp32": export_onnx(model), "int8": export_onnx(model, quantized=ranges)}
        if n_in == 384:
            print("kernels:", {label: optimized_op_types(p) for label, p in protos.items()})
            ok &= check_codes(model, ranges, rng.standard_normal((256, n_in)).astype(np.float32))
        tokens = rng.standard_normal((max(BATCHES), n_in)).astype(np.float32)
        print(f"\nlayer {n_in} -> {n_out}: ms per call, fp32 / int8")
        print(f"{'threads':>7s} {'batch':>6s} {'fp32':>9s} {'int8':>9s} {'ratio':>7s}")
        for threads in args.threads:
            sessions = {label: onnx_session(p, threads=threads) for label, p in protos.items()}
            for n in BATCHES:
                feed = {"x": tokens[:n]}
                calls = {label: (lambda s=s: s.run(None, feed)) for label, s in sessions.items()}
                for s in sessions.values():
                    s.run(None, feed)  # warm-up
                t = interleaved_ms(calls, number=20 if n < 64 else 3, rounds=args.rounds)
                print(f"{threads:7d} {n:6d} {t['fp32']:9.4f} {t['int8']:9.4f} {t['fp32'] / t['int8']:7.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
