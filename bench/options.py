"""Cost per training step of each training option (docs/TRAINING_OPTIONS.md): python bench/options.py [--reps N]

CPU time of this process (time.process_time), one thread, median over ``--reps`` rounds in which the variants take
turns (so a change in the machine's load hits all of them alike), of ``--steps`` train_steps each, on nanoGPT's CPU
shape (d128 L4 H4, windows of 64 tokens, batch 12, vocabulary 65, random tokens: cost does not depend on the text).
Every variant is the default step with one option on; accumulation cuts the same 12 windows into 4 micro-batches.
Prints ms per step and the ratio to the default step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

import blasgpt

LR = 1e-4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    args = ap.parse_args()

    sizes = dict(vocab_size=65, n_embd=128, n_head=4, n_layer=4, block_size=64)
    stream = np.random.default_rng(0).integers(0, 64, 200_000).astype(np.int32)
    starts = np.random.default_rng(1).integers(0, stream.size - 65, (args.steps, 12)).astype(np.int64)
    batches = [blasgpt.Batch.of_windows(stream, s) for s in starts]
    micro = [[blasgpt.Batch.of_windows(stream, s[i:i + 3]) for i in range(0, 12, 3)] for s in starts]
    untied = blasgpt.Model(blasgpt.Config(**sizes), dtype=args.dtype, seed=1)
    tied = blasgpt.Model(blasgpt.Config(**sizes, tie_embeddings=True), dtype=args.dtype, seed=1)

    def loop(model: blasgpt.Model, data: list, **opts: object) -> Callable[[], None]:
        return lambda: [model.train_step(b, LR, **opts) for b in data]  # type: ignore[arg-type]

    variants = {
        "default": loop(untied, batches),
        "weight_decay=0.1": loop(untied, batches, weight_decay=0.1),
        "grad_clip=1.0": loop(untied, batches, grad_clip=1.0),
        "grad_accum=4 (3+3+3+3)": loop(untied, micro),
        "dropout=0.1": loop(untied, batches, dropout=0.1, dropout_seed=1),
        "tie_embeddings": loop(tied, batches),
    }
    times: dict[str, list[float]] = {k: [] for k in variants}
    for fn in variants.values():
        fn()  # warm up: workspaces allocated
    for _ in range(args.reps):
        for name, fn in variants.items():
            t0 = time.process_time()
            fn()
            times[name].append((time.process_time() - t0) / args.steps)
    base = statistics.median(times["default"])
    print(f"{args.dtype}, d128 L4 H4 T64 B12, 1 thread, median of {args.reps} x {args.steps} steps (CPU time)")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"  {name:24s} {1e3 * med:8.2f} ms/step   x{med / base:.3f}")


if __name__ == "__main__":
    main()
