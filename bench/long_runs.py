"""Runs as long as a user's: the speed of the last chunk of a long schedule against the first (a model that has
trained for thousands of steps is not a fresh one: e.g. Adam moments of parameters with zero gradient decay toward
subnormal numbers), and the wall time to a fixed validation loss against the equal PyTorch model trained with the
same recipe."""

from __future__ import annotations

import os
import subprocess
import time
from typing import Any

import numpy as np

import blasgpt
from recipe import NANOGPT_CPU, STEADY, STEADY_TEXT, VAL_FRACTION, WHOLE_RUN, LongRun
from report import Report
from scaling import run_worker
from workloads import TextWorkload, Workloads, check_baseline, check_model


def _chunks(run: LongRun, train_chunk: Any) -> list[float]:
    """ms per step of each chunk of one schedule (thread CPU time); ``train_chunk(lo, hi, lrs)`` trains steps
    lo .. hi - 1 and returns their losses."""
    out = []
    for lo in range(0, run.steps, run.chunk):
        hi = min(run.steps, lo + run.chunk)
        lrs = np.array([blasgpt.lr_at(s, run.lr, run.steps) for s in range(lo, hi)])
        t0 = time.thread_time()
        losses = train_chunk(lo, hi, lrs)
        out.append((time.thread_time() - t0) / (hi - lo) * 1e3)
        if not np.all(np.isfinite(losses)):
            raise AssertionError(f"the loss stopped being finite between steps {lo} and {hi}")
    return out


def steady_rows(rep: Report, works: Workloads, quick: bool) -> None:
    """float32, 1 thread, both gemm backends: names d64 batch 32 and a small text model."""
    run = STEADY[quick]
    names = works.names(64)
    text = TextWorkload("text", works.stream(), 2, STEADY_TEXT)
    rng = np.random.default_rng(1)
    starts = rng.integers(0, text.tokens.size - text.cfg.block_size - 1, size=(run.steps, text.batch), dtype=np.int64)
    out = []
    for backend in ("native", "blas"):
        for w, batch in ((names, 32), (text, text.batch)):
            if w is names:
                m = names.model("float32", backend, batch=batch)
                checked = check_model(f"blasgpt d64 float32 {backend}", m, names.check_batch, names.ref_loss,
                                      names.ref_grads)
                ids = names.ids(0, run.steps, batch)
                chunk_ms = _chunks(run, lambda lo, hi, lrs, m=m, ids=ids: m.train_steps(names.corpus, ids[lo:hi], lrs))
                label = "names d64 H4 L1 T16"
            else:
                m = text.model("float32", backend=backend)
                checked = check_model(f"blasgpt text {backend}", m, text.check, text.ref_loss, text.ref_grads)
                chunk_ms = _chunks(run, lambda lo, hi, lrs, m=m: m.train_steps(text.corpus, starts[lo:hi], lrs))
                label = f"text {text.label}"
            out.append({"workload": label, "backend": backend, "batch": batch, "steps": run.steps, "chunk": run.chunk,
                        "ms_per_step": chunk_ms, "ratio": chunk_ms[-1] / chunk_ms[0], "clock": "thread-cpu",
                        "checked": checked})
            rep.comparisons.append(f"steady state, {label} {backend} float32 b{batch}: last / first {run.chunk}-step "
                                   f"chunk of {run.steps} = {chunk_ms[-1]:.3f} / {chunk_ms[0]:.3f} ms/step = "
                                   f"{chunk_ms[-1] / chunk_ms[0]:.2f}x")
    rep.extra["steady"] = out


# ---------------------------------------------------------------------------------------------------------------
# the whole run: each side in its own process (PyTorch's idle worker threads would otherwise share the cores).
# Wall clock, so only a quiet machine gives a fair figure: PyTorch's OpenMP threads spin while they wait at each of
# the hundreds of parallel regions of a step, which on a busy 2-core machine multiplies its CPU time per step (5.5x
# measured with 6 other processes running) where blasgpt's threads meet a few times per step.

WHOLE_RUN_TIMEOUT = 1200  # seconds per side

def whole_run_worker(impl: str, quick: bool, data: str) -> dict[str, Any]:
    """Train one side of the whole-run row and return its validation curve and times."""
    cfg_run = WHOLE_RUN[quick]
    stream = Workloads(data).stream()
    train_tokens, val = stream.split(VAL_FRACTION)
    n_embd, n_layer, n_head, T, B = NANOGPT_CPU
    if val.size <= cfg_run.val_targets:
        raise ValueError(f"{data}: its validation split has {val.size} tokens; the whole-run row needs more than "
                         f"{cfg_run.val_targets}")
    cfg = blasgpt.Config(vocab_size=stream.tok.vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                         block_size=T)
    init = blasgpt.Model(cfg, "float64", seed=42)  # blasgpt's own initialisation, given to both sides
    params = {k: v.copy() for k, v in init.params.items()}
    starts = np.random.default_rng(0).integers(0, train_tokens.size - T - 1, size=(cfg_run.steps, B), dtype=np.int64)
    val_starts = np.arange(0, cfg_run.val_targets, T, dtype=np.int64)
    lrs = np.array([blasgpt.lr_at(s, cfg_run.lr, cfg_run.steps) for s in range(cfg_run.steps)])
    checked = gemm = ""
    if impl == "blasgpt":
        m = blasgpt.Model(cfg, "float32", threads=cfg_run.threads, init=False)
        for k, v in params.items():
            m.params[k][...] = v
        corpus = blasgpt.Batch.of_windows(train_tokens, starts[0])
        ref = init.forward_backward(corpus)
        checked = check_model("blasgpt whole run", m, corpus, ref, {k: v.copy() for k, v in init.grads.items()})
        plan = m.gemm_plan  # made for this batch by the check (the first batch the model sees)
        gemm = f"gemm {m.backend}" + (f": {plan.summary()}" if plan is not None else "")

        def train(lo: int, hi: int) -> np.ndarray:
            return m.train_steps(corpus, starts[lo:hi], lrs[lo:hi])

        def evaluate() -> float:
            return blasgpt.evaluate_text(m, val, max_targets=cfg_run.val_targets)[0]
    else:
        import torch

        from torch_gpt import TorchGPT

        torch.set_num_threads(cfg_run.threads)  # PyTorch's defaults otherwise (its OpenMP threads spin while
        if torch.get_num_threads() != cfg_run.threads:  # they wait: the fastest on a quiet machine)
            raise AssertionError(f"torch runs {torch.get_num_threads()} threads, not {cfg_run.threads}")
        ref_loss = init.forward_backward(blasgpt.Batch.of_windows(train_tokens, starts[0]))
        got, grads = TorchGPT(params, cfg, "float64").forward_backward(
            blasgpt.Batch.of_windows(train_tokens, starts[0]))
        checked = check_baseline("torch whole run", got, grads, ref_loss, init.grads, 1e-10)
        tm = TorchGPT(params, cfg, "float32")
        val_inputs = tm.windows(val, val_starts)

        def train(lo: int, hi: int) -> np.ndarray:
            return np.array([tm.train_step(tm.windows(train_tokens, starts[s]), lrs[s]) for s in range(lo, hi)])

        def evaluate() -> float:
            return tm.eval_loss(val_inputs)
    curve = [evaluate()]
    wall = cpu = 0.0
    step, reached = 0, False
    while step < cfg_run.steps and not reached:
        hi = min(cfg_run.steps, step + cfg_run.eval_every)
        t0, c0 = time.perf_counter(), time.process_time()
        losses = train(step, hi)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        if not np.all(np.isfinite(losses)):
            raise AssertionError(f"{impl}: the loss stopped being finite between steps {step} and {hi}")
        step = hi
        curve.append(evaluate())
        reached = curve[-1] <= cfg_run.target
    return {"impl": impl, "gemm": gemm, "reached": reached, "step": step, "seconds": wall, "cpu_seconds": cpu,
            "val": curve, "ms_per_step": wall / step * 1e3, "checked": checked}


def whole_run_rows(rep: Report, quick: bool, data: str, have_torch: bool) -> None:
    run = WHOLE_RUN[quick]
    if (os.cpu_count() or 1) < run.threads:
        rep.notes.append(f"whole-run row skipped: it runs {run.threads} threads, this machine has {os.cpu_count()}")
        return
    sides = []
    for impl in ("blasgpt", "torch") if have_torch else ("blasgpt",):
        try:
            sides.append(run_worker("whole-run", {"impl": impl, "quick": quick, "data": data}, WHOLE_RUN_TIMEOUT))
        except subprocess.TimeoutExpired:
            rep.notes.append(f"whole-run row skipped: its {impl} side did not finish within {WHOLE_RUN_TIMEOUT} s "
                             "(a busy machine: on a quiet one each side takes about a minute)")
            return
    if have_torch:
        a, b = sides[0]["val"][0], sides[1]["val"][0]
        if abs(a - b) > 1e-4 * abs(a):
            raise AssertionError(f"blasgpt and torch evaluate the same initial weights differently: {a} vs {b}")
    n_embd, n_layer, n_head, T, B = NANOGPT_CPU
    out: dict[str, Any] = {"label": f"d{n_embd} L{n_layer} H{n_head} T{T} B{B}", "target": run.target,
                           "threads": run.threads, "lr": run.lr, "steps": run.steps, "eval_every": run.eval_every,
                           "val_targets": run.val_targets, "sides": sides,
                           "checked": "; ".join(f"{s['impl']}: {s['checked']}" for s in sides)
                           + (f"; initial validation loss {sides[0]['val'][0]:.4f} on both sides" if have_torch
                              else "")}
    if len(sides) == 2 and all(s["reached"] for s in sides):
        out["speedup"] = sides[1]["seconds"] / sides[0]["seconds"]
        rep.comparisons.append(f"whole run to validation loss {run.target}: blasgpt {sides[0]['seconds']:.1f} s "
                               f"(step {sides[0]['step']}), torch {sides[1]['seconds']:.1f} s (step "
                               f"{sides[1]['step']}): {out['speedup']:.2f}x")
    rep.extra["whole_run"] = out
