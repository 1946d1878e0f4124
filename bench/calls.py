"""The cost of calling blasgpt from Python (d16 on names.txt): a ``train_step`` loop against one ``train_steps``
call, ``Tokenizer.batch``, and ``blasgpt.train`` against the loop a user would write. Each pair is first shown to
compute the same thing, then timed in turns."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

import blasgpt
from report import Report
from timing import interleaved
from workloads import NamesWorkload


def bench_call_overhead(w: NamesWorkload, repeats: int, seconds: float) -> dict[str, Any]:
    """d16 float64, one document per step: a Python loop of ``model.train_step(batch, lr)`` against the same steps
    inside one ``train_steps`` call; the difference per step is the cost of a call from Python."""
    n = 512
    ids = np.arange(n, dtype=np.int64) % len(w.docs)
    batches = [w.corpus.select(ids[i:i + 1]) for i in range(n)]
    loop_m, steps_m = w.model("float64", batch=1), w.model("float64", batch=1)
    got = [loop_m.train_step(b, 1e-3) for b in batches[:64]]
    want = steps_m.train_steps(w.corpus, ids[:64, None], np.full(64, 1e-3))
    if got != want.tolist() or not np.array_equal(loop_m.flat_params, steps_m.flat_params):
        raise AssertionError("a train_step loop and one train_steps call trained differently")

    def loop() -> int:
        for b in batches:
            loop_m.train_step(b, 1e-3)
        return n

    def steps() -> int:
        steps_m.train_steps(w.corpus, ids[:, None], np.full(n, 1e-3))
        return n

    (t_loop, clock), (t_steps, _) = interleaved([loop, steps], repeats, seconds, False, [1, 1])
    return {"loop": t_loop, "steps": t_steps, "clock": clock,
            "checked": "64 steps: losses and parameters of the loop equal one train_steps call's, bit for bit"}


def bench_tokenizer(w: NamesWorkload, repeats: int, seconds: float) -> dict[str, Any]:
    """µs per ``Tokenizer.batch`` call: one name, and 16 names."""
    tok, docs = w.tok, w.docs[:4096]
    for d in docs[:64]:
        want = np.array([tok.bos, *tok.encode(d).tolist(), tok.bos], dtype=np.int32)
        b = tok.batch([d])
        if not (np.array_equal(b.tokens, want) and b.offsets.tolist() == [0, len(want)]):
            raise AssertionError(f"Tokenizer.batch([{d!r}]) packs the wrong tokens")
    b16 = tok.batch(docs[:16])
    if [tok.decode(b16.tokens[a:z]) for a, z in zip(b16.offsets[:-1], b16.offsets[1:])] != docs[:16]:
        raise AssertionError("Tokenizer.batch of 16 names does not decode back to them")
    groups = [docs[i:i + 16] for i in range(0, len(docs), 16)]

    def one() -> int:
        for d in docs:
            tok.batch([d])
        return len(docs)

    def sixteen() -> int:
        for g in groups:
            tok.batch(g)
        return len(groups)

    (t1, clock), (t16, _) = interleaved([one, sixteen], repeats, seconds, False, [1, 1])
    return {"one": t1, "sixteen": t16, "clock": clock,
            "checked": "64 single names and a batch of 16 pack [BOS] + ids + [BOS] and decode back"}


def bench_train_vs_loop(w: NamesWorkload, repeats: int, steps: int) -> dict[str, Any]:
    """d16 float32, batch 16, from the list of names to a trained model: ``blasgpt.train`` against the loop a user
    would write (tokenize once, then ``model.train_step(corpus.select(ids), lr_at(s))`` per step)."""
    B, lr = 16, 0.01
    lane = np.arange(B, dtype=np.int64)

    def by_train() -> tuple[blasgpt.Model, list[float]]:
        m = w.model("float32")
        return m, blasgpt.train(m, w.tok, w.docs, steps=steps, batch_size=B, lr=lr, log=lambda _: None).losses

    def by_loop() -> tuple[blasgpt.Model, list[float]]:
        m = w.model("float32")
        corpus = w.tok.batch(w.docs, block_size=m.config.block_size)
        n = len(w.docs)
        return m, [m.train_step(corpus.select((s * B + lane) % n), blasgpt.lr_at(s, lr, steps)) for s in range(steps)]

    (ma, la), (mb, lb) = by_train(), by_loop()
    if la != lb or not np.array_equal(ma.flat_params, mb.flat_params):
        raise AssertionError("blasgpt.train and a train_step loop trained differently")
    out: dict[str, list[float]] = {"train": [], "loop": []}
    for _ in range(repeats):
        for key, fn in (("train", by_train), ("loop", by_loop)):
            t0 = time.thread_time()
            fn()
            out[key].append((time.thread_time() - t0) / (steps * B) * 1e6)
    return {**out, "clock": "thread-cpu",
            "checked": f"{steps} steps: train's losses and parameters equal the loop's, bit for bit"}


def call_rows(rep: Report, w: NamesWorkload, quick: bool, repeats: int, seconds: float) -> None:
    co = bench_call_overhead(w, repeats, seconds)
    loop = rep.add("calls", "d16", "model.train_step loop", "float64", 1, 1, "a Python loop, 512 steps", "doc",
                   co["loop"], co["clock"], co["checked"], w.mean_flops, 1)
    steps = rep.add("calls", "d16", "model.train_steps", "float64", 1, 1, "the same 512 steps, one call", "doc",
                    co["steps"], co["clock"], co["checked"], w.mean_flops, 1)
    rep.comparisons.append(f"d16 float64 batch 1: a Python loop of model.train_step {loop.us_min:.2f} µs/doc, one "
                           f"train_steps call {steps.us_min:.2f}: {loop.us_min - steps.us_min:.2f} µs per call")
    tk = bench_tokenizer(w, repeats, seconds)
    rep.add("calls", "d16", "tok.batch([doc])", "int32", 1, 1, "one name", "call", tk["one"], tk["clock"],
            tk["checked"])
    rep.add("calls", "d16", "tok.batch(docs)", "int32", 16, 1, "16 names", "call", tk["sixteen"], tk["clock"],
            tk["checked"])
    tv = bench_train_vs_loop(w, 2 if quick else 5, 100 if quick else 1000)
    tr = rep.add("calls", "d16", "blasgpt.train", "float32", 16, 1, "names -> trained model", "doc", tv["train"],
                 tv["clock"], tv["checked"], w.mean_flops, 16)
    lp = rep.add("calls", "d16", "model.train_step loop", "float32", 16, 1, "names -> trained model", "doc",
                 tv["loop"], tv["clock"], tv["checked"], w.mean_flops, 16)
    rep.comparisons.append(f"d16 float32 batch 16, names -> trained model: blasgpt.train {tr.us_min:.2f} µs/doc, a "
                           f"train_step loop {lp.us_min:.2f}: train takes {tr.us_min / lp.us_min:.2f}x the loop's time")
