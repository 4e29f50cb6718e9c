"""Benchmark GPTQ (qlib.methods.gptq) against baselines measured in the same run.

Run with ``.venv/bin/python benchmarks/bench_methods.py``.

The layers are the feed-forward pair of a small transformer block (d_model
384, d_ff 1536): fc1 with W of shape 1536 x 384 (in = 384) and fc2 with W of
shape 384 x 1536 (in = 1536), float32, with 2048 calibration rows of random
correlated inputs (x = z M + noise). Every method quantizes to 4 bits,
symmetric, per group of 128 input columns, min-max; each time includes
everything from the weight and inputs to the result (the Hessian
2 X^T X / n included). Compared:

- round-to-nearest (``round_to_nearest``) on the same grid: the baseline,
  ratios are against it;
- ``gptq_quantize`` (block_size 128, the lazy batch updates);
- ``gptq_quantize(block_size=1)``: the same column loop, every update applied
  at once to all later columns (no lazy batching);
- the naive OBQ-style loop of the tests: the explicit inverse Hessian of the
  remaining columns, updated by a Schur complement after every column (no
  Cholesky, no lazy batching), timed once without warm-up (it is slow);
- the Hessian alone (``2 X^T X / n`` in float32), a BLAS floor for context.

Times are MEDIANS of several round-robin repeats after one warm-up call
(each repeat calls every candidate once, so that they share the machine's
load and their ratios stay meaningful on a busy machine). The target, GPTQ
under 1 s per layer, is printed with PASS/MISS and does not fail the run; a
GPTQ result that differs from the reference loop does (exit status 1): run
in float64, the codes must be identical.
"""

from __future__ import annotations

import functools
import os
import platform
import sys
import time

import numpy as np
from common import median_times as round_robin_medians
from common import print_rows

import qlib
from qlib.methods.gptq import gptq_quantize, layer_output_error, round_to_nearest

REPEATS = 5

#: Round-robin medians with this script\'s default number of repeats.
median_times = functools.partial(round_robin_medians, repeats=REPEATS)
BITS, GROUP = 4, 128
N_CALIBRATION = 2048




def reference_gptq(w, x, *, bits, group_size, damp=0.01):
    """The OBQ-style loop of tests/methods/test_gptq.py (without act_order): explicit H_F^-1,
    w_F -= (w_j - q_j) / [H_F^-1]_jj * [H_F^-1]_{j,F}, then the Schur complement removes column j."""
    w0 = np.array(w, dtype=np.float64)
    x = np.asarray(x, dtype=np.float64)
    h = 2.0 * x.T @ x / x.shape[0]
    n_in = w0.shape[1]
    dead = np.diag(h) == 0
    h[dead, dead] = 1.0
    w = w0.copy()
    w[:, dead] = 0
    hinv = np.linalg.inv(h + damp * np.mean(np.diag(h)) * np.eye(n_in))
    codes = np.zeros(w0.shape, dtype=np.int64)
    q = None
    for j in range(n_in):
        if j % group_size == 0:
            q = qlib.calibrate(w[:, j: j + group_size], bits=bits, symmetric=True, axis=0)
        codes[:, j] = qlib.quantize(w[:, j], q)
        qv = qlib.fake_quantize(w[:, j], q)
        d = hinv[j, j]
        delta = w[:, j] - qv
        w -= np.outer(delta / d, hinv[j])
        w[:, j] = qv
        hinv -= np.outer(hinv[:, j], hinv[j]) / d
        hinv[j, :] = 0.0
        hinv[:, j] = 0.0
    return codes


def layer_data(rng, out_features, in_features):
    mix = (rng.standard_normal((in_features, in_features)) / np.sqrt(in_features)).astype(np.float32)
    z = rng.standard_normal((N_CALIBRATION, in_features), dtype=np.float32)
    x = z @ mix + np.float32(0.3) * rng.standard_normal((N_CALIBRATION, in_features), dtype=np.float32)
    w = (rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)).astype(np.float32)
    return w, x


ROWS: list[tuple[str, str, float, str]] = []
CHECKS: list[tuple[str, str, bool]] = []
EXACT: list[tuple[str, bool]] = []
ERRORS: list[tuple[str, float, float]] = []


def bench_layer(name: str, out_features: int, in_features: int, rng) -> None:
    w, x = layer_data(rng, out_features, in_features)
    case = f"{name} W {out_features}x{in_features}, X {N_CALIBRATION}x{in_features}"
    grid = dict(bits=BITS, group_size=GROUP)

    def rtn():
        return round_to_nearest(w, **grid)

    def gptq():
        return gptq_quantize(w, x, **grid)

    def gptq_b1():
        return gptq_quantize(w, x, block_size=1, **grid)

    def hessian():
        return (x.T @ x) * np.float32(2.0 / x.shape[0])

    t_rtn, t_h, t_gptq, t_b1 = median_times(rtn, hessian, gptq, gptq_b1)
    t0 = time.perf_counter()
    ref_codes = reference_gptq(w, x, **grid)
    t_ref = time.perf_counter() - t0

    row(case, "round-to-nearest (baseline)", t_rtn)
    row(case, "Hessian 2 X^T X / n alone", t_h, f"{t_h / t_rtn:.1f}x RTN")
    row(case, "gptq_quantize (block 128)", t_gptq, f"{t_gptq / t_rtn:.1f}x RTN")
    row(case, "gptq_quantize (block 1, no lazy)", t_b1,
        f"{t_b1 / t_rtn:.1f}x RTN, {t_b1 / t_gptq:.1f}x GPTQ")
    row(case, "naive OBQ loop, explicit H^-1 (1 run)", t_ref,
        f"{t_ref / t_rtn:.0f}x RTN, {t_ref / t_gptq:.0f}x GPTQ")
    CHECKS.append((f"{case}: gptq_quantize < 1 s", f"{t_gptq:.3f} s", t_gptq < 1.0))

    r = gptq()
    r64 = gptq_quantize(w.astype(np.float64), x.astype(np.float64), **grid)
    EXACT.append((f"{case}: float64 gptq_quantize codes == reference loop codes",
                  bool(np.array_equal(r64.codes, ref_codes))))
    same = float(np.mean(r.codes == ref_codes))
    EXACT.append((f"{case}: float32 gptq_quantize codes equal the reference's for {100 * same:.2f} % "
                  f"(>= 99 % required; float32 rounding moves near-ties)", same >= 0.99))
    ERRORS.append((case, layer_output_error(w, rtn().weight, x), layer_output_error(w, r.weight, x)))


def row(case: str, method: str, seconds: float, note: str = "") -> None:
    ROWS.append((case, method, seconds, note))


def main() -> int:
    print(f"qlib {qlib.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPU(s)")
    print(f"{BITS}-bit symmetric per group of {GROUP}, min-max; median of {REPEATS} round-robin repeats "
          f"after 1 warm-up (naive OBQ loop: 1 run)")
    threads = {k: os.environ[k] for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS") if k in os.environ}
    print(f"BLAS threads: {threads or 'default (one per core)'}; on a shared machine, try OPENBLAS_NUM_THREADS=1")
    print("load average (1, 5, 15 min) at start: {:.2f} {:.2f} {:.2f}\n".format(*os.getloadavg()))
    rng = np.random.default_rng(0)
    bench_layer("fc1", 1536, 384, rng)
    bench_layer("fc2", 384, 1536, rng)

    print_rows(ROWS)

    print("\nrelative squared output error ||X W^T - X W_hat^T||^2 / ||X W^T||^2 on the calibration inputs")
    for case, e_rtn, e_gptq in ERRORS:
        print(f"  {case}: RTN {e_rtn:.5f}, GPTQ {e_gptq:.5f} ({e_rtn / e_gptq:.2f}x lower)")
    print("load average (1, 5, 15 min) at the end: {:.2f} {:.2f} {:.2f} (2 cores: above 2, other processes "
          "share them and absolute times grow)".format(*os.getloadavg()))
    print("\ntargets")
    for what, measured, good in CHECKS:
        print(f"  {'PASS' if good else 'MISS'}  {what}  (measured {measured})")
    print("\nexactness")
    for what, good in EXACT:
        print(f"  {'PASS' if good else 'FAIL'}  {what}")
    return 0 if all(g for _, g in EXACT) else 1


if __name__ == "__main__":
    sys.exit(main())
