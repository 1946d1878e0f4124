"""The default gemm backend (auto) against the two forced ones, per workload: thread CPU time per training step,
the backends taking turns (rotated order) in one process, float32, one thread. Prints each auto plan's choices and
their timings with --plan.

    OPENBLAS_NUM_THREADS=1 python bench/backends.py [--repeats 9] [--only d128] [--plan]

The text workloads read tinyshakespeare.txt as blasgpt.bench does ($BLASGPT_SHAKESPEARE, else ../shared/data/).
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable

import numpy as np

from blasgpt import Batch, Config, Model
from blasgpt.bench import Workload, text_stream
from blasgpt.data import Tokenizer, load_docs

BACKENDS = ("auto", "native", "blas")
Runner = Callable[[], int]


def names_runner(w: Workload, backend: str, batch: int) -> tuple[Model, Runner]:
    m = w.model("float32", backend, 1)
    step = [0]

    def run() -> int:  # 64 steps per call (the loop in C++)
        idx = np.arange(step[0], step[0] + 64, dtype=np.int64)
        m.train_steps(w.corpus, (idx[:, None] * batch + np.arange(batch)) % len(w.docs), np.full(64, 1e-3))
        step[0] += 64
        return 64

    return m, run


def text_runner(cfg: Config, stream: np.ndarray, params: np.ndarray, backend: str, batch: int,
                steps: int) -> tuple[Model, Runner]:
    m = Model(cfg, "float32", backend=backend, init=False)
    m.flat_params[...] = params
    starts = np.random.default_rng(0).integers(0, stream.size - cfg.block_size - 1, size=(64, batch))
    corpus = Batch.of_windows(stream, starts[0])
    step = [0]

    def run() -> int:
        s = step[0] % (64 - steps)
        m.train_steps(corpus, starts[s:s + steps], np.full(steps, 1e-4))
        step[0] += steps
        return steps

    return m, run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--only", default="", help="workloads whose name starts with this (comma-separated)")
    ap.add_argument("--plan", action="store_true", help="print each auto plan's choices and timings")
    args = ap.parse_args()
    names = load_docs()
    text, _ = text_stream()
    tok = Tokenizer.from_docs([text])
    stream = np.asarray(tok.encode(text), dtype=np.int32)

    def names_case(d: int, batch: int) -> Callable[[str], tuple[Model, Runner]]:
        w = Workload(d, names)
        return lambda be: names_runner(w, be, batch)

    def text_case(C: int, L: int, H: int, T: int, batch: int, steps: int) -> Callable[[str], tuple[Model, Runner]]:
        cfg = Config(vocab_size=tok.vocab_size, n_embd=C, n_head=H, n_layer=L, block_size=T)
        params = np.random.default_rng(42).normal(0.0, 0.02, Model(cfg, "float32", init=False).num_params)
        return lambda be: text_runner(cfg, stream, params.astype(np.float32), be, batch, steps)

    cases = [("d16 b16", lambda: names_case(16, 16), 0.25), ("d64 b16", lambda: names_case(64, 16), 0.25),
             ("d128 L4 H4 T64 B12", lambda: text_case(128, 4, 4, 64, 12, 2), 0.4),
             ("d384 L6 H6 T256 B8", lambda: text_case(384, 6, 6, 256, 8, 1), 0.6)]
    only = [o for o in args.only.split(",") if o]
    print(f"{'workload':20s} {'auto':>19s} {'native':>19s} {'blas':>19s}   auto / fastest (min, median)")
    for name, make, seconds in cases:
        if only and not any(name.startswith(o) for o in only):
            continue
        setup = make()
        t0 = time.process_time()
        runs = {}
        for be in BACKENDS:
            model, run = setup(be)
            run()  # warm up (auto: plans its products here)
            runs[be] = (model, run)
        setup_s = time.process_time() - t0
        ms: dict[str, list[float]] = {be: [] for be in BACKENDS}
        for r in range(args.repeats):
            for be in BACKENDS[r % 3:] + BACKENDS[:r % 3]:
                t, n = time.thread_time(), 0
                while time.thread_time() - t < seconds:
                    n += runs[be][1]()
                ms[be].append((time.thread_time() - t) / n * 1e3)
        lo = {be: min(v) for be, v in ms.items()}
        med = {be: statistics.median(v) for be, v in ms.items()}
        cells = " ".join(f"{lo[be]:9.3f} ({med[be]:7.3f})" for be in BACKENDS)
        print(f"{name:20s} {cells}   {lo['auto'] / min(lo['native'], lo['blas']):.3f}, "
              f"{med['auto'] / min(med['native'], med['blas']):.3f}   ms/step min (median)")
        plan = runs["auto"][0].gemm_plan
        if plan is not None:
            print(f"{'':20s} auto: {plan.summary()} (setup and warm-up {setup_s:.1f} s CPU)")
            if args.plan:
                for p in plan.products:
                    print(f"{'':22s}{p['role']:24s} {p['shape']:18s} native {p['native_s'] * 1e6:9.1f} µs  "
                          f"blas {p['blas_s'] * 1e6:9.1f} µs  -> {p['choice']}")
                if plan.attention:
                    a = plan.attention
                    print(f"{'':22s}{a['role']}: fused {a['fused_s'] * 1e6:.1f} µs, gemm path "
                          f"{a['gemm_s'] * 1e6:.1f} µs -> {a['choice']}")


if __name__ == "__main__":
    main()
