"""Per-call Python overhead of the training API: python bench/overhead.py [--reps N] [--steps N].

CPU time (time.process_time) of this process, best of ``--reps`` rounds (the timed loops take turns within a
round, so a change in the machine's load hits all of them alike), per step or per document:
- the C++ step alone (Model.train_steps: one call for many steps) against a Python loop of Model.train_step on
  prepared batches and against a loop of the raw binding's train_step; on d16 (microgpt's config, float64) and on a
  1-wide model whose step costs almost nothing, so that what remains is the call itself;
- Tokenizer.batch of 1 and 16 names;
- blasgpt.train against a loop of ``model.train_step(tok.batch(docs), lr)``, per document.
"""

from __future__ import annotations

import argparse
import time
from typing import Callable

import numpy as np

import blasgpt
from blasgpt.train import microgpt_start

LR = 1e-4


def best(fns: dict[str, Callable[[int], None]], n: int, reps: int) -> dict[str, float]:
    """Best over ``reps`` rounds of µs per iteration of each ``fn(n)`` (which runs n iterations)."""
    out: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            t = time.process_time()
            fn(n)
            out[k].append((time.process_time() - t) / n * 1e6)
    return {k: min(v) for k, v in out.items()}


def measure(name: str, docs: list[str], tok: blasgpt.Tokenizer, model: blasgpt.Model, bs: int, n: int,
            reps: int) -> None:
    corpus = tok.batch(docs, block_size=model.config.block_size)
    ids = (np.arange(n * bs, dtype=np.int64) % len(docs)).reshape(n, bs)
    lrs = np.full(n, LR)
    groups = [docs[i * bs:(i + 1) * bs] for i in range(n)]
    batches = [tok.batch(g) for g in groups]
    core = model._core

    def cxx(k: int) -> None:
        model.train_steps(corpus, ids[:k], lrs[:k])

    def py_loop(k: int) -> None:
        for b in batches[:k]:
            model.train_step(b, LR)

    def raw_loop(k: int) -> None:
        for b in batches[:k]:
            core.train_step(b.tokens, b.offsets, LR)

    def py_tok_loop(k: int) -> None:
        for g in groups[:k]:
            model.train_step(tok.batch(g), LR)

    def train(k: int) -> None:
        blasgpt.train(model, tok, docs, steps=k, batch_size=bs, lr=LR, log=lambda _: None)

    def tok_loop(k: int) -> None:
        for g in groups[:k]:
            tok.batch(g)

    t = best(dict(cxx=cxx, py=py_loop, raw=raw_loop, pytok=py_tok_loop, train=train, tok=tok_loop), n, reps)
    print(f"{name} batch {bs:2d}: C++ step {t['cxx']:7.2f} | train_step loop {t['py']:7.2f} "
          f"(+{t['py'] - t['cxx']:5.2f}) | raw binding loop {t['raw']:7.2f} (+{t['raw'] - t['cxx']:5.2f}) µs/step")
    print(f"{' ' * len(name)} tok.batch {t['tok']:6.2f} µs | per doc: train() {t['train'] / bs:6.2f} | "
          f"loop of train_step(tok.batch) {t['pytok'] / bs:6.2f} µs/doc")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    names = blasgpt.load_docs()
    for name, sizes in (("d16", {}), ("d1 ", dict(n_embd=1, n_head=1, block_size=1))):
        docs, tok, model = microgpt_start(names, dtype="float64", **sizes)
        for bs in (1, 16):
            measure(name, docs, tok, model, bs, args.steps, args.reps)


if __name__ == "__main__":
    main()
