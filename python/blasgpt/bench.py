"""The benchmark: blasgpt's training and generation speed against baselines, every row checked before it is timed.

Run ``python -m blasgpt bench`` (or ``python bench/bench.py``); ``--quick`` for a smoke run, ``--only NAME`` for one
part, ``--json FILE`` to keep the numbers, ``--mpi`` for data-parallel scaling alone. Parts:

- d16, d64: the seed project's table on names.txt (n_head 4, one layer, block 16): blasgpt (``Model.train_steps``,
  the loop in C++; either gemm backend), a NumPy explicit-backprop baseline and PyTorch eager autograd
  (blasgpt.baselines), µs per document;
- text-d128, text-d384: text mode (windows of one token stream, ``Batch.of_windows``) on tinyshakespeare.txt
  (found through $BLASGPT_SHAKESPEARE or ../shared/data/ beside the repository or the working directory; else the
  bundled names joined with newlines), blasgpt vs PyTorch with scaled_dot_product_attention, µs per token;
- overhead: the Python call paths of the project's performance issue (a ``train_step`` loop vs one ``train_steps``
  call, ``Tokenizer.batch``, ``blasgpt.train`` vs a ``train_step`` loop);
- threads: 2 threads vs 1, timed in a child process that never imports torch (its worker threads would hold the
  second core); mpi: ``mpiexec -n 2`` vs 1 rank (blasgpt.parallel);
- generate: tokens/s of the C++ KV-cached generator vs a Python loop that recomputes the whole context per token,
  after checking that greedy generation equals that loop token for token.

Each row first proves its arithmetic (loss and gradients against blasgpt's float64 path, which the test suite checks
against finite differences, PyTorch and microgpt's own trace), then times whole training steps. Clocks: CPU time of
the calling thread for single-threaded rows (BLAS and OpenMP pools are held to one thread), wall time for
multi-threaded rows and for the thread-scaling ratios. Rows report the median and the minimum over repeats; GFLOP/s
and % of peak use the minimum and the matmul FLOPs of MATH.md (causal attention as n(n+1)/2 pairs), against the
FMA peak of one core measured in the same run by the core's probe, times the row's threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _core
from .baselines import ADAM, NumpyGPT, TorchGPT, TorchTextGPT
from .config import Config, training_flops
from .data import Batch, Tokenizer, load_docs
from .model import Model
from .train import lr_at, microgpt_start, train

# microgpt's own script (CPython) on this machine kind, as the seed project measured it (µs per training document).
CPYTHON_US_PER_DOC = {16: 243_083.0, 64: 5_050_299.0}
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
WORKLOADS = ("d16", "d64", "text-d128", "text-d384", "overhead", "threads", "mpi", "generate")
# text-mode workloads: name -> (n_embd, n_layer, n_head, block_size, batch)
TEXT = {"text-d128": (128, 4, 4, 64, 12), "text-d384": (384, 6, 6, 256, 8)}
SHAKESPEARE = "tinyshakespeare.txt"
TEXT_INIT_STD = 0.02


@dataclass
class Row:
    section: str  # names | text | calls | generate
    workload: str
    impl: str
    dtype: str
    batch: int
    threads: int
    detail: str  # gemm backend, or what was timed
    unit: str  # what one µs figure is per: doc, token, call
    us_median: float
    us_min: float
    ms_per_step: float
    gflops: float
    peak_gflops: float
    pct_peak: float
    vs: str
    clock: str
    checked: str


@dataclass
class Target:
    name: str
    measured: str
    target: str
    met: bool


def _max_rel_err(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-300)) for k in want)


def _clock(threads: int) -> tuple[Callable[[], float], str]:
    return (time.thread_time, "thread-cpu") if threads == 1 else (time.perf_counter, "wall")


def _time_repeats(run: Callable[[], int], repeats: int, seconds: float, threads: int = 1,
                  wall: bool = False) -> tuple[list[float], str]:
    """µs per unit of ``run`` (which does some work and returns how many units: documents, tokens, calls),
    calibrated so each repeat takes about ``seconds``; thread CPU time when single-threaded (unless ``wall``), wall
    time otherwise."""
    clock, name = (time.perf_counter, "wall") if wall else _clock(threads)
    out = []
    for _ in range(repeats):
        t0 = clock()
        units = 0
        while True:
            units += run()
            dt = clock() - t0
            if dt >= seconds:
                break
        out.append(dt / units * 1e6)
    return out, name


def _interleaved(runs: Sequence[Callable[[], int]], repeats: int, seconds: float, wall: bool,
                 threads: Sequence[int]) -> list[tuple[list[float], str]]:
    """Several timings taken in turns (repeat r of each before repeat r + 1 of any), so a ratio between them sees
    the same machine load."""
    got: list[list[float]] = [[] for _ in runs]
    names = [""] * len(runs)
    for _ in range(repeats):
        for i, fn in enumerate(runs):
            t, names[i] = _time_repeats(fn, 1, seconds, threads[i], wall)
            got[i] += t
    return list(zip(got, names))


# ---------------------------------------------------------------------------------------------------------------
# names.txt documents (lines mode)

class Workload:
    """One model size on names.txt: shared documents, weights and the float64 reference gradient."""

    def __init__(self, n_embd: int, names: Sequence[str]):
        self.n_embd = n_embd
        self.name = f"d{n_embd}"
        self.docs, self.tok, ref = microgpt_start(names, seed=42, n_embd=n_embd)
        self.cfg = ref.config
        self.params = {k: v.copy() for k, v in ref.params.items()}
        self.corpus = self.tok.batch(self.docs, block_size=self.cfg.block_size)
        self.check_batch = self.tok.batch(self.docs[:16])
        self.ref_loss = ref.forward_backward(self.check_batch)
        self.ref_grads = {k: v.copy() for k, v in ref.grads.items()}
        lens = np.diff(self.corpus.offsets)
        self.mean_flops = training_flops(self.cfg, np.minimum(self.cfg.block_size, lens[:4096] - 1)) / min(4096,
                                                                                                          len(lens))

    def model(self, dtype: str, backend: str, threads: int) -> Model:
        m = Model(self.cfg, dtype=dtype, backend=backend, threads=threads, init=False)
        for k, v in self.params.items():
            m.params[k][...] = v
        return m

    def batch_at(self, step: int, batch: int) -> Batch:
        ids = (step * batch + np.arange(batch, dtype=np.int64)) % len(self.docs)
        lo = self.corpus.offsets[ids]
        hi = self.corpus.offsets[ids + 1]
        toks = np.concatenate([self.corpus.tokens[a:b] for a, b in zip(lo, hi)])
        offs = np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64)
        return Batch(toks, offs)


def _check_model(what: str, m: Model, batch: Batch, ref_loss: float, ref_grads: dict[str, np.ndarray]) -> str:
    """Loss and gradients of ``m`` on ``batch`` against the float64 reference; AssertionError if they differ."""
    loss = m.forward_backward(batch)
    f64 = m.dtype == np.float64
    if abs(loss - ref_loss) > (1e-11 if f64 else 2e-4) * max(1.0, abs(ref_loss)):
        raise AssertionError(f"{what}: loss {loss} differs from the reference {ref_loss}")
    err = _max_rel_err({k: v.astype(np.float64) for k, v in m.grads.items()}, ref_grads)
    if err > (1e-10 if f64 else 1e-2):
        raise AssertionError(f"{what}: gradient differs from the reference by {err:.1e}")
    return f"loss Δ {abs(loss - ref_loss):.0e}, grad rel {err:.0e}"


def _names_runner(w: Workload, m: Model, batch: int) -> Callable[[], int]:
    chunk = max(1, 2048 // batch)
    step = [0]

    def run() -> int:
        s0 = step[0]
        idx = np.arange(s0, s0 + chunk, dtype=np.int64)
        ids = (idx[:, None] * batch + np.arange(batch)) % len(w.docs)
        m.train_steps(w.corpus, ids, np.full(chunk, 1e-3))
        step[0] += chunk
        return chunk * batch

    run()  # warm up: workspaces grow to size once
    return run


def bench_blasgpt(w: Workload, dtype: str, batch: int, threads: int, backend: str, repeats: int,
                  seconds: float) -> tuple[list[float], str, str]:
    m = w.model(dtype, backend, threads)
    checked = _check_model(f"blasgpt {dtype}/{backend}", m, w.check_batch, w.ref_loss, w.ref_grads)
    times, clock = _time_repeats(_names_runner(w, m, batch), repeats, seconds, threads)
    return times, clock, checked


def bench_baseline(kind: str, w: Workload, dtype: str, batch: int, repeats: int,
                   seconds: float) -> tuple[list[float], str, str]:
    make = (lambda dt: NumpyGPT(w.params, w.cfg, dt)) if kind == "numpy" else (lambda dt: TorchGPT(w.params, w.cfg, dt))
    ref = make("float64")
    loss, grads = ref.forward_backward(w.check_batch.tokens, w.check_batch.offsets)
    err = _max_rel_err(grads, w.ref_grads)
    if abs(loss - w.ref_loss) > 1e-11 or err > 1e-9:
        raise AssertionError(f"{kind} baseline disagrees with blasgpt: loss Δ {abs(loss - w.ref_loss):.1e}, "
                             f"gradient {err:.1e}")
    impl = make(dtype)
    step = [0]

    def run() -> int:
        b = w.batch_at(step[0], batch)
        impl.train_step(b.tokens, b.offsets, 1e-3)
        step[0] += 1
        return batch

    run()
    times, clock = _time_repeats(run, repeats, seconds, 1)
    return times, clock, f"float64 loss Δ {abs(loss - w.ref_loss):.0e}, grad rel {err:.0e}"


# ---------------------------------------------------------------------------------------------------------------
# text windows (text mode)

def text_stream() -> tuple[str, str]:
    """(text, where it came from): tinyshakespeare.txt from $BLASGPT_SHAKESPEARE, else ../shared/data/ beside the
    repository (a source checkout) or the working directory, else the bundled names joined with newlines."""
    env = os.environ.get("BLASGPT_SHAKESPEARE")
    if env:
        if not Path(env).is_file():
            raise ValueError(f"BLASGPT_SHAKESPEARE={env} is not a file")
        return Path(env).read_text(encoding="utf-8"), env
    for base in (Path(__file__).resolve().parents[2], Path.cwd()):
        p = base.parent / "shared" / "data" / SHAKESPEARE
        if p.is_file():
            return p.read_text(encoding="utf-8"), str(p)
    return "\n".join(load_docs()), f"bundled names.txt joined with newlines ({SHAKESPEARE} not found)"


class TextWorkload:
    """One text-mode model on a token stream: weights (numpy draws of N(0, 0.02²): microgpt's 0.08 makes a d384
    model's logits huge, a loss near 40), a table of window starts per step, and the float64 reference loss and
    gradients of a few windows."""

    def __init__(self, name: str, tokens: np.ndarray, vocab: int, check_windows: int):
        n_embd, n_layer, n_head, block, batch = TEXT[name]
        self.name, self.batch, self.tokens = name, batch, tokens
        self.cfg = Config(vocab_size=vocab, n_embd=n_embd, n_head=n_head, n_layer=n_layer, block_size=block)
        rng = np.random.default_rng(42)
        ref = Model(self.cfg, "float64", init=False)
        for v in ref.params.values():
            v[...] = rng.normal(0.0, TEXT_INIT_STD, v.shape)
        self.params = {k: v.copy() for k, v in ref.params.items()}
        self.starts = rng.integers(0, tokens.size - block - 1, size=(64, batch), dtype=np.int64)  # full windows
        self.check = Batch.of_windows(tokens, self.starts[0, :check_windows])
        self.ref_loss = ref.forward_backward(self.check)
        self.ref_grads = {k: v.copy() for k, v in ref.grads.items()}
        self.corpus = Batch.of_windows(tokens, self.starts[0])
        self.tokens_per_step = batch * block
        self.flops_per_token = training_flops(self.cfg, [block]) / block
        self.label = f"d{n_embd} L{n_layer} H{n_head} T{block}"
        self.torch_checked = ""

    def model(self, dtype: str, threads: int) -> Model:
        m = Model(self.cfg, dtype=dtype, backend="native", threads=threads, init=False)
        for k, v in self.params.items():
            m.params[k][...] = v
        return m


def _text_runner(w: TextWorkload, m: Model) -> Callable[[], int]:
    step = [0]

    def run() -> int:  # one step per call: a text step is milliseconds, the Python around it microseconds
        s = step[0] % len(w.starts)
        m.train_steps(w.corpus, w.starts[s:s + 1], np.full(1, 1e-3))
        step[0] += 1
        return w.tokens_per_step

    run()
    return run


def bench_text_blasgpt(w: TextWorkload, dtype: str, threads: int, repeats: int,
                       seconds: float) -> tuple[list[float], str, str]:
    m = w.model(dtype, threads)
    checked = _check_model(f"blasgpt {w.name} {dtype}", m, w.check, w.ref_loss, w.ref_grads)
    times, clock = _time_repeats(_text_runner(w, m), repeats, seconds, threads)
    return times, clock, checked


def bench_text_torch(w: TextWorkload, threads: int, repeats: int, seconds: float) -> tuple[list[float], str, str]:
    import torch

    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise AssertionError(f"torch runs {torch.get_num_threads()} threads, not {threads}")
    if not w.torch_checked:  # once per workload (the check does not depend on the thread count)
        ref = TorchTextGPT(w.params, w.cfg, "float64")
        loss, grads = ref.forward_backward(w.tokens, w.check.doc_ids)
        err = _max_rel_err(grads, w.ref_grads)
        if abs(loss - w.ref_loss) > 1e-10 * max(1.0, abs(w.ref_loss)) or err > 1e-8:
            raise AssertionError(f"torch SDPA baseline disagrees with blasgpt: loss Δ {abs(loss - w.ref_loss):.1e}, "
                                 f"gradient {err:.1e}")
        w.torch_checked = f"float64 loss Δ {abs(loss - w.ref_loss):.0e}, grad rel {err:.0e}"
        del ref
    impl = TorchTextGPT(w.params, w.cfg, "float32")
    inputs = [impl.windows(w.tokens, s) for s in w.starts]
    step = [0]

    def run() -> int:
        impl.train_step(*inputs[step[0] % len(inputs)], 1e-3)
        step[0] += 1
        return w.tokens_per_step

    run()
    times, clock = _time_repeats(run, repeats, seconds, threads)
    torch.set_num_threads(1)
    return times, clock, w.torch_checked


# ---------------------------------------------------------------------------------------------------------------
# Python call paths (the performance issue's overhead targets)

def bench_call_overhead(w: Workload, repeats: int, seconds: float) -> dict[str, Any]:
    """d16 float64, one document per step: a Python loop of ``model.train_step(batch, lr)`` against the same steps
    inside one ``train_steps`` call; the difference per step is the cost of a call from Python."""
    n = 512
    ids = np.arange(n, dtype=np.int64) % len(w.docs)
    batches = [w.corpus.select(ids[i:i + 1]) for i in range(n)]
    loop_m, steps_m = w.model("float64", "native", 1), w.model("float64", "native", 1)
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

    (t_loop, clock), (t_steps, _) = _interleaved([loop, steps], repeats, seconds, False, [1, 1])
    return {"loop": t_loop, "steps": t_steps, "clock": clock,
            "checked": "64 steps: losses and parameters of the loop equal one train_steps call's, bit for bit"}


def bench_tokenizer(w: Workload, repeats: int, seconds: float) -> dict[str, Any]:
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

    (t1, clock), (t16, _) = _interleaved([one, sixteen], repeats, seconds, False, [1, 1])
    return {"one": t1, "sixteen": t16, "clock": clock,
            "checked": "64 single names and a batch of 16 pack [BOS] + ids + [BOS] and decode back"}


def bench_train_vs_loop(w: Workload, repeats: int, steps: int) -> dict[str, Any]:
    """d16 float32, batch 16, from the list of names to a trained model: ``blasgpt.train`` against the loop a user
    would write (tokenize once, then ``model.train_step(corpus.select(ids), lr_at(s))`` per step)."""
    B, lr = 16, 0.01
    lane = np.arange(B, dtype=np.int64)

    def by_train() -> tuple[Model, list[float]]:
        m = w.model("float32", "native", 1)
        return m, train(m, w.tok, w.docs, steps=steps, batch_size=B, lr=lr, log=lambda _: None).losses

    def by_loop() -> tuple[Model, list[float]]:
        m = w.model("float32", "native", 1)
        corpus = w.tok.batch(w.docs, block_size=m.config.block_size)
        n = len(w.docs)
        return m, [m.train_step(corpus.select((s * B + lane) % n), lr_at(s, lr, steps)) for s in range(steps)]

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


# ---------------------------------------------------------------------------------------------------------------
# thread scaling, in a child process that has not imported torch

def thread_scaling(quick: bool) -> dict[str, Any]:
    """2 threads vs 1 (wall clock, repeats in turns) at text d128 L4 T64 B12 and names d64 batch 32 (and d16
    batch 32 for the table), float32; run by ``python -m blasgpt.bench --threads-worker``."""
    if "torch" in sys.modules:
        raise AssertionError("thread scaling must run in a process that has not imported torch")
    # many short repeats rather than a few long ones: on a machine shared with other work, the best of them is
    # more likely to be a moment when both cores were free
    repeats, seconds = (2, 0.05) if quick else (16, 0.15)
    out: dict[str, Any] = {"torch_imported": False, "cases": []}
    text, _ = text_stream()
    tok = Tokenizer.from_docs([text])
    tw = TextWorkload("text-d128", tok.encode(text), tok.vocab_size, 4)
    models = [tw.model("float32", t) for t in (1, 2)]
    checked = [_check_model(f"blasgpt text-d128 float32 t{t}", m, tw.check, tw.ref_loss, tw.ref_grads)
               for t, m in zip((1, 2), models)]
    res = _interleaved([_text_runner(tw, m) for m in models], repeats, seconds, True, [1, 2])
    out["cases"].append({"workload": "text-d128", "batch": tw.batch, "unit": "token", "times": [r[0] for r in res],
                         "checked": checked, "flops": tw.flops_per_token, "per_step": tw.tokens_per_step})
    names = load_docs()
    for n_embd in (16, 64):
        w = Workload(n_embd, names)
        models = [w.model("float32", "native", t) for t in (1, 2)]
        checked = [_check_model(f"blasgpt d{n_embd} float32 t{t}", m, w.check_batch, w.ref_loss, w.ref_grads)
                   for t, m in zip((1, 2), models)]
        res = _interleaved([_names_runner(w, m, 32) for m in models], repeats, seconds, True, [1, 2])
        out["cases"].append({"workload": w.name, "batch": 32, "unit": "doc", "times": [r[0] for r in res],
                             "checked": checked, "flops": w.mean_flops, "per_step": 32})
    out["torch_imported"] = "torch" in sys.modules
    return out


def _thread_child(quick: bool) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "blasgpt.bench", "--threads-worker"] + (["--quick"] if quick else []),
                       capture_output=True, text=True, timeout=900)
    if r.returncode != 0:
        raise RuntimeError(f"thread-scaling child failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------------------------
# generation

def _recompute_next(m: Model, ids: list[int], greedy: bool, rng: random.Random) -> int:
    """The next token from a full forward over the last block of ``ids``: argmax, or a draw from the softmax."""
    logits = m.forward(ids[-m.config.block_size:])[-1].astype(np.float64)
    if greedy:
        return int(np.argmax(logits))
    c = np.cumsum(np.exp(logits - logits.max()))
    return int(np.searchsorted(c, rng.random() * c[-1], side="right"))


def bench_generate(w: TextWorkload, repeats: int, seconds: float, slide_count: int,
                   check_count: int) -> dict[str, Any]:
    """tokens/s of the KV-cached generator (``model._core.generator(...).next(n)``) against the recompute loop, in
    the block (a one-token prompt, block_size - 1 new tokens) and sliding past it (a full-block prompt,
    ``slide_count`` new tokens); float32, temperature 1, all tokens. First, greedy generation of ``check_count``
    tokens must equal the recompute loop's."""
    m = w.model("float32", 1)
    m.train_steps(w.corpus, w.starts[:8], np.full(8, 3e-3))  # a few steps, so the logits are not those of noise
    T = m.config.block_size
    prompt = np.ascontiguousarray(w.tokens[:8])
    want: list[int] = []
    ids = prompt.tolist()
    for _ in range(check_count):
        want.append(_recompute_next(m, ids, True, random.Random(0)))
        ids.append(want[-1])
    for num in (1, 8):
        got = m._core.generator(prompt, num, 0, 1.0, 1, -1, -1, True).next(check_count)
        if got.shape != (num, check_count) or any(row != want for row in got.tolist()):
            raise AssertionError(f"greedy generation (num={num}) differs from the recompute loop")
    phases = {"in block": (np.ascontiguousarray(w.tokens[:1]), T - 1),
              "sliding": (np.ascontiguousarray(w.tokens[:T]), slide_count)}
    out: dict[str, Any] = {"checked": f"greedy (top_k=1), num 1 and 8, {check_count} tokens from an 8-token prompt "
                                      f"(cached up to {T} positions, then sliding): the recompute loop's, token for "
                                      "token",
                           "rows": []}
    for phase, (p, count) in phases.items():
        slide = phase == "sliding"
        runs = []
        for num in (1, 8):
            def kv(num: int = num, p: np.ndarray = p, count: int = count, slide: bool = slide) -> int:
                got = m._core.generator(p, num, 7, 1.0, 0, -1, -1, slide).next(count)
                if got.shape != (num, count):
                    raise AssertionError(f"the generator stopped early: {got.shape}")
                return num * count
            runs.append(kv)

        def loop(p: np.ndarray = p, count: int = count) -> int:
            rng, ids = random.Random(7), p.tolist()
            for _ in range(count):
                ids.append(_recompute_next(m, ids, False, rng))
            return count

        res = _interleaved(runs + [loop], repeats, seconds, False, [1, 1, 1])
        for (times, clock), (impl, num) in zip(res, (("kv-cache", 1), ("kv-cache", 8), ("recompute loop", 1))):
            out["rows"].append({"phase": phase, "impl": impl, "num": num, "times": times, "clock": clock,
                                "prompt": int(p.size), "count": count})
    return out


def bench_adam(quick: bool) -> list[dict[str, Any]]:
    """Adam over one big buffer against a memory-bandwidth bound: the update streams 7 arrays' worth of bytes
    (reads p, m, v, g; writes p, m, v); the bound is that traffic at the bandwidth of a same-size NumPy add."""
    out = []
    n = 1 << (20 if quick else 22)
    rng = np.random.default_rng(0)
    for dtype in (np.float32, np.float64):
        p, m, g = (rng.standard_normal(n).astype(dtype) for _ in range(3))
        v = np.abs(rng.standard_normal(n)).astype(dtype)
        ref = [a.copy() for a in (p, m, v)]
        _core.adam_update(p, m, v, g, 1e-3, 3)
        b1, b2 = ADAM["beta1"], ADAM["beta2"]
        m_ref = b1 * ref[1] + (1 - b1) * g
        v_ref = b2 * ref[2] + (1 - b2) * g * g
        step_ref = 1e-3 * (m_ref / (1 - b1**3)) / (np.sqrt(v_ref / (1 - b2**3)) + ADAM["eps"])
        step_got = (ref[0] - p).astype(np.float64)
        tol = 1e-4 if dtype == np.float32 else 1e-10  # relative to each element's own update (and its p's ulp)
        bound = tol * np.abs(step_ref) + 4 * np.spacing(np.abs(ref[0]).astype(dtype)).astype(np.float64)
        if not np.all(np.abs(step_got - step_ref) <= bound):
            raise AssertionError("Adam kernel disagrees with the NumPy formula")

        def best_of(fn: Callable[[], None], k: int = 7) -> float:
            times = []
            for _ in range(k):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return min(times)

        t_adam = best_of(lambda p=p, m=m, v=v, g=g: _core.adam_update(p, m, v, g, 1e-3, 3))
        x, y, z = np.empty(n, dtype), np.ones(n, dtype), np.ones(n, dtype)
        t_add = best_of(lambda x=x, y=y, z=z: np.add(y, z, out=x))
        bandwidth = 3 * n * x.itemsize / t_add
        bound = 7 * n * x.itemsize / bandwidth
        out.append({"dtype": np.dtype(dtype).name, "params": n, "adam_ms": t_adam * 1e3, "bound_ms": bound * 1e3,
                    "bandwidth_gbs": bandwidth / 1e9, "ratio": t_adam / bound})
    return out


def machine_info() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", *SINGLE_THREAD_ENV) if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "openblas": _core.blas_info(), "native_isa": _core.native_isa(), "env": env}



# ---------------------------------------------------------------------------------------------------------------
# the run

def _cpu_jiffies() -> Optional[tuple[float, float]]:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (None where there is none)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    return (sum(v) - v[3] - v[4]) / tick, sum(v) / tick


def _own_cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def probe_peaks(info: dict[str, Any], probes: int) -> None:
    """The FMA peak of one core (GFLOP/s), float32 and float64: the best of many short probes (each 20 ms of
    the core's probe, itself the best of 8 runs), so that a machine shared with other work still shows what an
    unshared moment reaches; kept as the larger of this and any earlier measurement in ``info``."""
    for dtype, key in (("float32", "peak_gflops_f32"), ("float64", "peak_gflops_f64")):
        best = max(_core.peak_gflops(dtype, 0.02) for _ in range(probes))
        info[key] = max(best, info.get(key, 0.0))


def run(quick: bool = False, only: Optional[str] = None) -> dict[str, Any]:
    """Every part (or ``only`` one): returns machine facts, rows, targets, comparisons and notes."""
    def want(*parts: str) -> bool:
        return only is None or only in parts

    repeats, seconds = (2, 0.05) if quick else (5, 0.4)
    cores = os.cpu_count() or 1
    info = machine_info()
    probe_peaks(info, 10 if quick else 25)
    rows: list[Row] = []
    targets: list[Target] = []
    lines: list[str] = []  # comparisons and ratios measured in this run
    notes: list[str] = ["gemm 'native' is blasgpt's kernels, which hand a product to OpenBLAS from m*n*k >= 2^29 on "
                        "(the crossover measured per shape, csrc/gemm.hpp): the d16, d64 and d128 rows use no BLAS; "
                        "at d384 T256 B8 the QKV and MLP products (2048 rows) go to OpenBLAS"]
    spent: dict[str, float] = {}
    out: dict[str, Any] = {"machine": info, "rows": rows, "targets": targets, "comparisons": lines, "notes": notes,
                           "part_seconds": spent}
    mark = [time.perf_counter()]
    machine0, own0 = _cpu_jiffies(), _own_cpu()

    def done(part: str) -> None:  # wall seconds since the previous part ended
        now = time.perf_counter()
        spent[part] = spent.get(part, 0.0) + now - mark[0]
        mark[0] = now

    def add(section: str, workload: str, impl: str, dtype: str, batch: int, threads: int, detail: str, unit: str,
            times: list[float], clock: str, checked: str, flops: float = 0.0, per_step: int = 0, vs: str = "") -> Row:
        best = min(times)
        gflops = flops / best / 1e3
        peak = info["peak_gflops_f32" if dtype == "float32" else "peak_gflops_f64"] * threads if flops else 0.0
        rows.append(Row(section, workload, impl, dtype, batch, threads, detail, unit, statistics.median(times), best,
                        best * per_step / 1e3, gflops, peak, 100 * gflops / peak if peak else 0.0, vs, clock, checked))
        return rows[-1]

    def target(name: str, measured: str, goal: str, met: bool) -> None:
        targets.append(Target(name, measured, goal, bool(met)))

    text_parts = ("text-d128", "text-d384", "generate", "threads", "d16", "d64")  # (the thread child reads it too)
    text, source = text_stream() if want(*text_parts) else ("", "")  # (a bad $BLASGPT_SHAKESPEARE stops us here)

    # 1. the parts that run in other processes, before this one imports torch
    scaling: dict[str, Any] = {}
    if want("threads", "text-d128", "d16", "d64"):
        if cores < 2:
            notes.append(f"2-thread rows skipped: this machine has {cores} core(s)")
        else:
            scaling = _thread_child(quick)
            out["thread_scaling"] = scaling
            if scaling["torch_imported"]:
                raise AssertionError("the thread-scaling child imported torch")
    done("threads")
    if want("mpi"):
        from .parallel import MPIUnavailable

        try:
            mpi = scaling_table(steps=20 if quick else 50, repeats=2 if quick else 20)  # (short repeats, as above)
            out["mpi"] = mpi
        except (MPIUnavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
            notes.append(f"MPI scaling skipped: {e}")
    done("mpi")
    have_torch = False
    if want("d16", "d64", "text-d128", "text-d384"):
        try:
            import torch

            torch.set_num_threads(1)
            have_torch = True
            info["torch"] = torch.__version__
        except ImportError:
            notes.append("PyTorch not installed: its rows are skipped (pip install .[torch] to include them)")

    def child(workload: str) -> Optional[dict[str, Any]]:
        return next((c for c in scaling.get("cases", []) if c["workload"] == workload), None)

    # 2. names.txt documents
    names = load_docs()
    works: dict[str, Workload] = {}
    plan = [  # (impl, dtype, batch, threads, gemm); the 2-thread rows come from the thread-scaling child
        ("blasgpt", "float64", 1, 1, "native"),
        ("blasgpt", "float32", 16, 1, "native"),
        ("blasgpt", "float32", 16, 1, "blas"),
        ("blasgpt", "float32", 32, 1, "native"),
        ("numpy", "float32", 16, 1, "numpy"),
        ("torch", "float32", 16, 1, "torch"),
    ]
    for n_embd in (16, 64):
        name = f"d{n_embd}"
        if not (want(name) or (n_embd == 16 and want("overhead"))):
            continue
        w = works[name] = Workload(n_embd, names)
        if not want(name):
            continue
        for impl, dtype, batch, threads, gemm in plan:
            if impl == "torch" and not have_torch:
                continue
            if impl == "blasgpt":
                times, clock, checked = bench_blasgpt(w, dtype, batch, threads, gemm, repeats, seconds)
            else:
                times, clock, checked = bench_baseline(impl, w, dtype, batch, repeats, seconds)
            add("names", name, impl, dtype, batch, threads, gemm, "doc", times, clock, checked, w.mean_flops, batch,
                f"{CPYTHON_US_PER_DOC[n_embd] / min(times):,.0f}x")
        c = child(name)
        if c:
            add("names", name, "blasgpt", "float32", 32, 2, "native", "doc", c["times"][1], "wall", c["checked"][1],
                w.mean_flops, 32, f"{CPYTHON_US_PER_DOC[n_embd] / min(c['times'][1]):,.0f}x")

    done("names")
    # 3. text windows
    text_works: dict[str, TextWorkload] = {}
    if want("text-d128", "text-d384", "generate"):
        tok = Tokenizer.from_docs([text])
        tokens = tok.encode(text)
        info["text"] = {"source": source, "tokens": int(tokens.size), "vocab_size": tok.vocab_size}
        if not source.endswith(SHAKESPEARE):
            notes.append(f"text rows ran on the {source}: set $BLASGPT_SHAKESPEARE to tinyshakespeare.txt")
        for name in TEXT:
            if not (want(name) or (name == "text-d128" and want("generate"))):
                continue
            if name == "text-d384" and quick and only != name:
                notes.append("text-d384 skipped by --quick (a step takes seconds): --only text-d384 runs it")
                continue
            w128 = text_works[name] = TextWorkload(name, tokens, tok.vocab_size, 4 if name == "text-d128" else 2)
            if not want(name):
                continue
            w = w128
            reps, secs = (repeats, seconds) if name == "text-d128" else ((1, 0.0) if quick else (3, 0.0))
            thread_counts = (1, 2) if name == "text-d128" and cores >= 2 else (1,)
            for threads in thread_counts:
                if threads == 1:
                    times, clock, checked = bench_text_blasgpt(w, "float32", 1, reps, secs)
                else:
                    c = child(name)
                    if c is None:
                        continue
                    times, clock, checked = c["times"][1], "wall", c["checked"][1]
                b = add("text", w.label, "blasgpt", "float32", w.batch, threads, "native", "token", times, clock,
                        checked, w.flops_per_token, w.tokens_per_step)
                if have_torch:
                    times, clock, checked = bench_text_torch(w, threads, reps, secs)
                    t = add("text", w.label, "torch SDPA", "float32", w.batch, threads, "torch", "token", times,
                            clock, checked, w.flops_per_token, w.tokens_per_step)
                    b.vs = f"{t.us_min / b.us_min:.2f}x"
                    lines.append(f"{w.label} B{w.batch} float32, {threads} thread(s): blasgpt {b.us_min:.3f} µs/token, "
                                 f"torch SDPA {t.us_min:.3f} µs/token: blasgpt runs at {t.us_min / b.us_min:.2f}x "
                                 "torch's speed")

    done("text")
    # 4. Python call paths
    if want("overhead"):
        w = works["d16"]
        co = bench_call_overhead(w, repeats, seconds)
        loop = add("calls", "d16", "model.train_step loop", "float64", 1, 1, "a Python loop, 512 steps", "doc",
                   co["loop"], co["clock"], co["checked"], w.mean_flops, 1)
        steps = add("calls", "d16", "model.train_steps", "float64", 1, 1, "the same 512 steps, one call", "doc",
                    co["steps"], co["clock"], co["checked"], w.mean_flops, 1)
        overhead = loop.us_min - steps.us_min
        target("d16 float64 batch 1, a Python loop of model.train_step", f"{loop.us_min:.2f} µs/doc",
               "<= 5 µs/doc", loop.us_min <= 5)
        target("   its cost per call (loop minus one train_steps call)", f"{overhead:.2f} µs/call", "<= 1 µs",
               overhead <= 1)
        tk = bench_tokenizer(w, repeats, seconds)
        one = add("calls", "d16", "tok.batch([doc])", "int32", 1, 1, "one name", "call", tk["one"], tk["clock"],
                  tk["checked"])
        sixteen = add("calls", "d16", "tok.batch(docs)", "int32", 16, 1, "16 names", "call", tk["sixteen"],
                      tk["clock"], tk["checked"])
        target("tok.batch([doc]) of one name", f"{one.us_min:.2f} µs", "<= 2 µs", one.us_min <= 2)
        target("tok.batch of 16 names", f"{sixteen.us_min:.2f} µs", "<= 5 µs", sixteen.us_min <= 5)
        tv = bench_train_vs_loop(w, 2 if quick else 5, 100 if quick else 1000)
        tr = add("calls", "d16", "blasgpt.train", "float32", 16, 1, "names -> trained model", "doc", tv["train"],
                 tv["clock"], tv["checked"], w.mean_flops, 16)
        lp = add("calls", "d16", "model.train_step loop", "float32", 16, 1, "names -> trained model", "doc",
                 tv["loop"], tv["clock"], tv["checked"], w.mean_flops, 16)
        target("blasgpt.train vs a train_step loop, d16 float32 batch 16", f"{tr.us_min:.2f} vs {lp.us_min:.2f} "
               "µs/doc", "train never slower", tr.us_min <= lp.us_min)

    done("overhead")
    for c in scaling.get("cases", []):
        if c["workload"] in ("text-d128", "d64"):
            t1, t2 = min(c["times"][0]), min(c["times"][1])
            what = "text d128 L4 T64 B12" if c["workload"] == "text-d128" else "d64 batch 32"
            target(f"2 threads vs 1, {what} float32 (wall, child process without torch)",
                   f"{t1:.3f} -> {t2:.3f} µs/{c['unit']}: {t1 / t2:.2f}x", ">= 1.85x", t1 / t2 >= 1.85)
    if "mpi" in out:
        m = out["mpi"]
        target("mpiexec -n 2 vs 1 rank, d64 batch 32 float32", f"{m[0]['us_per_doc']:.2f} -> {m[-1]['us_per_doc']:.2f} "
               f"µs/doc: {m[-1]['speedup']:.2f}x", ">= 1.75x", m[-1]["speedup"] >= 1.75)

    # 5. generation
    if want("generate"):
        w = text_works["text-d128"]
        T = w.cfg.block_size
        g = bench_generate(w, repeats, seconds, T // 4 if quick else T, T + T // 4 if quick else 2 * T)
        by_phase: dict[str, list[Row]] = {}
        for r in g["rows"]:
            by_phase.setdefault(r["phase"], []).append(
                add("generate", w.label, r["impl"], "float32", r["num"], 1,
                    f"{r['phase']}: prompt {r['prompt']}, +{r['count']}", "token", r["times"], r["clock"],
                    g["checked"]))
        for phase, rs in by_phase.items():
            base = rs[-1].us_min
            for r in rs:
                r.vs = f"{base / r.us_min:.1f}x"
            lines.append(f"generation {w.label} float32, {phase}: KV cache {1e6 / rs[0].us_min:,.0f} tokens/s "
                         f"(num 1), {1e6 / rs[1].us_min:,.0f} tokens/s (num 8); recompute loop "
                         f"{1e6 / base:,.0f} tokens/s: {base / rs[0].us_min:.1f}x and {base / rs[1].us_min:.1f}x")

    done("generate")
    if only is None:
        info["adam"] = bench_adam(quick)
        done("adam")
    machine1 = _cpu_jiffies()
    if machine0 and machine1 and machine1[1] > machine0[1]:  # how busy other processes kept the machine
        others = (machine1[0] - machine0[0]) - (_own_cpu() - own0)
        info["others_cpu_pct"] = max(0.0, 100 * others / (machine1[1] - machine0[1]))
    if rows:  # probe again at the end: a peak that grew means the first probes saw a busy core
        first = (info["peak_gflops_f32"], info["peak_gflops_f64"])
        probe_peaks(info, 10 if quick else 25)
        if (info["peak_gflops_f32"], info["peak_gflops_f64"]) != first:
            for r in rows:
                if r.peak_gflops:
                    r.peak_gflops = info["peak_gflops_f32" if r.dtype == "float32" else "peak_gflops_f64"] * r.threads
                    r.pct_peak = 100 * r.gflops / r.peak_gflops
    # targets on the training tables (the performance issue's first rows), against the final peak
    for name, goal in (("d64", 70.0), ("d16", 40.0)):  # (each put first: d16, d64, then the rest)
        r = next((r for r in rows if r.section == "names" and r.workload == name and r.impl == "blasgpt"
                  and r.dtype == "float32" and r.batch == 16 and r.threads == 1 and r.detail == "native"), None)
        if r:
            targets.insert(0, Target(f"{name} H4 L1 T16 batch 16 float32 training steps (train_steps, native)",
                                     f"{r.us_min:.2f} µs/doc, {r.pct_peak:.1f} % of {r.peak_gflops:.0f} GFLOP/s",
                                     f">= {goal:.0f} % of FMA peak", r.pct_peak >= goal))
    return out


def _table(rows: list[Row], cols: Sequence[tuple[str, Callable[[Row], str]]], left: int) -> list[str]:
    table = [[h for h, _ in cols]] + [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(wd) if i < left else c.rjust(wd)
                                 for i, (c, wd) in enumerate(zip(row, widths))) + " |"

    return [fmt(table[0]), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"] + [fmt(r) for r in table[1:]]


def _peak_cols(r: Row) -> list[str]:
    return [f"{r.gflops:.1f}", f"{r.peak_gflops:.0f}", f"{r.pct_peak:.1f}"] if r.peak_gflops else ["—", "—", "—"]


def format_table(result: dict[str, Any], command: str) -> str:
    info, rows = result["machine"], result["rows"]
    lines = [
        f"command: {command}",
        f"cpu: {info['cpu']} ({info['cores']} cores) | python {info['python']} | numpy {info['numpy']}"
        + (f" | torch {info['torch']}" if "torch" in info else ""),
        f"openblas: {info['openblas']}",
        f"native kernels: {info['native_isa']} | measured FMA peak of one core (best of short probes at the start "
        f"and the end): "
        f"{info['peak_gflops_f32']:.0f} GFLOP/s float32, {info['peak_gflops_f64']:.0f} GFLOP/s float64 "
        "(the 'peak' column: that x the row's threads)",
    ]
    if "others_cpu_pct" in info:
        lines.append(f"machine load: other processes used {info['others_cpu_pct']:.0f} % of all {info['cores']} cores' "
                     "time during this run (0 % = a quiet machine; single-thread rows count only their own "
                     "thread's CPU time, wall-clock rows feel the load)")
    if info["env"]:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    if "text" in info:
        t = info["text"]
        lines.append(f"text: {t['source']} ({t['tokens']:,} tokens, vocabulary {t['vocab_size']})")
    common: list[tuple[str, Callable[[Row], str]]] = [
        ("impl", lambda r: r.impl), ("dtype", lambda r: r.dtype), ("batch", lambda r: str(r.batch)),
        ("thr", lambda r: str(r.threads))]
    sections = {
        "names": ("Training, names.txt documents (µs per document)", [
            ("workload", lambda r: r.workload), *common, ("gemm", lambda r: r.detail),
            ("µs/doc med", lambda r: f"{r.us_median:,.2f}"), ("µs/doc min", lambda r: f"{r.us_min:,.2f}"),
            ("GFLOP/s", lambda r: _peak_cols(r)[0]), ("peak", lambda r: _peak_cols(r)[1]),
            ("% peak", lambda r: _peak_cols(r)[2]), ("vs CPython", lambda r: r.vs), ("clock", lambda r: r.clock)], 6),
        "text": ("Training, text windows (µs per token; every window block_size positions)", [
            ("workload", lambda r: r.workload), *common, ("µs/token med", lambda r: f"{r.us_median:.3f}"),
            ("µs/token min", lambda r: f"{r.us_min:.3f}"), ("ms/step", lambda r: f"{r.ms_per_step:.2f}"),
            ("GFLOP/s", lambda r: _peak_cols(r)[0]), ("peak", lambda r: _peak_cols(r)[1]),
            ("% peak", lambda r: _peak_cols(r)[2]), ("vs torch", lambda r: r.vs), ("clock", lambda r: r.clock)], 5),
        "calls": ("Python call paths (d16 on names.txt)", [
            ("call", lambda r: r.impl), ("dtype", lambda r: r.dtype), ("batch", lambda r: str(r.batch)),
            ("what", lambda r: r.detail), ("µs med", lambda r: f"{r.us_median:.2f}"),
            ("µs min", lambda r: f"{r.us_min:.2f}"), ("per", lambda r: r.unit),
            ("GFLOP/s", lambda r: _peak_cols(r)[0]), ("peak", lambda r: _peak_cols(r)[1]),
            ("% peak", lambda r: _peak_cols(r)[2]), ("clock", lambda r: r.clock)], 4),
        "generate": ("Generation, float32, temperature 1 (µs per generated token, all samples counted)", [
            ("model", lambda r: r.workload), ("impl", lambda r: r.impl), ("num", lambda r: str(r.batch)),
            ("thr", lambda r: str(r.threads)), ("phase", lambda r: r.detail),
            ("µs/token med", lambda r: f"{r.us_median:.2f}"), ("µs/token min", lambda r: f"{r.us_min:.2f}"),
            ("tokens/s", lambda r: f"{1e6 / r.us_min:,.0f}"), ("vs recompute", lambda r: r.vs),
            ("clock", lambda r: r.clock)], 5),
    }
    for key, (title, cols, left) in sections.items():
        sel = [r for r in rows if r.section == key]
        if sel:
            lines += ["", title] + _table(sel, cols, left)
    if "thread_scaling" in result:
        lines += ["", "Thread scaling (wall clock, repeats in turns, a child process that never imported torch):"]
        for c in result["thread_scaling"]["cases"]:
            t1, t2 = min(c["times"][0]), min(c["times"][1])
            lines.append(f"  {c['workload']} batch {c['batch']} float32: 1 thread {t1:.3f}, 2 threads {t2:.3f} "
                         f"µs/{c['unit']}: {t1 / t2:.2f}x")
    if "mpi" in result:
        lines += ["", "Data-parallel (mpiexec, d64 float32 batch 32, names.txt; wall clock, best of repeats):"]
        for m in result["mpi"]:
            lines.append(f"  {m['ranks']} rank(s): {m['us_per_doc']:.2f} µs/doc, {m['speedup']:.2f}x, allreduce "
                         f"{m['allreduce_us']:.1f} µs/step")
    if result["comparisons"]:
        lines += ["", "Ratios (measured in this run):"] + [f"  {c}" for c in result["comparisons"]]
    if result["targets"]:
        lines += ["", "Targets (the performance issue):"]
        lines += [f"  target {t.target} for {t.name.strip()}: {t.measured}: {'met' if t.met else 'NOT MET'}"
                  for t in result["targets"]]
    lines += ["", "Every row was checked before timing:"]
    seen = set()
    for r in rows:
        key = (r.section, r.workload, r.impl, r.dtype, r.batch, r.threads, r.checked)
        if key not in seen:
            seen.add(key)
            lines.append(f"  {r.section} {r.workload} {r.impl} {r.dtype} b{r.batch} t{r.threads}: {r.checked}")
    for a in info.get("adam", []):
        lines.append(f"Adam, {a['params']:,} {a['dtype']} params: {a['adam_ms']:.2f} ms; memory-bound estimate "
                     f"{a['bound_ms']:.2f} ms (7 streams at {a['bandwidth_gbs']:.0f} GB/s, a NumPy add's bandwidth): "
                     f"{a['ratio']:.2f}x the bound")
    lines += [f"note: {n}" for n in result["notes"]]
    lines.append("wall seconds per part: " + ", ".join(f"{k} {v:.1f}" for k, v in result["part_seconds"].items()
                                                         if v >= 0.05))
    if any(r.section == "names" for r in rows):
        lines.append("vs CPython: microgpt's own script, 243,083 µs/doc (d16) and 5,050,299 µs/doc (d64), measured "
                     "elsewhere on this machine kind.")
    return "\n".join(lines)


def _bench_worker(n_embd: int, batch: int, steps: int, repeats: int) -> None:
    """Run under mpiexec by ``scaling_table`` (``python -m blasgpt.bench --mpi-worker ...``): time data-parallel
    steps and the gradient Allreduce alone; rank 0 prints one JSON line."""
    from mpi4py import MPI

    from .parallel import data_parallel_step

    comm = MPI.COMM_WORLD
    docs, tok, model = microgpt_start(load_docs(), seed=42, dtype="float32", n_embd=n_embd)
    corpus = tok.batch(docs, block_size=model.config.block_size)
    lane = np.arange(batch, dtype=np.int64)
    ids = lambda k: (k * batch + lane) % len(docs)  # noqa: E731
    for k in range(5):  # warm up (workspaces, MPI buffers)
        data_parallel_step(model, corpus, ids(k), 1e-3, comm)
    best_step = best_reduce = float("inf")
    for r in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        for k in range(steps):
            data_parallel_step(model, corpus, ids(r * steps + k), 1e-3, comm)
        comm.Barrier()
        best_step = min(best_step, (time.perf_counter() - t0) / steps)
        buf = model.flat_grads
        comm.Barrier()
        t0 = time.perf_counter()
        for _ in range(steps):
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        comm.Barrier()
        best_reduce = min(best_reduce, (time.perf_counter() - t0) / steps)
    if comm.Get_rank() == 0:
        print(json.dumps({"ranks": comm.Get_size(), "us_per_doc": best_step / batch * 1e6,
                          "allreduce_us": best_reduce * 1e6 if comm.Get_size() > 1 else 0.0,
                          "params": model.num_params, "n_embd": n_embd, "batch": batch}), flush=True)


def scaling_table(n_embd: int = 64, batch: int = 32, ranks: tuple[int, ...] = (1, 2), steps: int = 200,
                  repeats: int = 5) -> list[dict[str, Any]]:
    """µs per document of data-parallel training at each rank count (each its own mpiexec), wall clock, best of
    ``repeats``; with the Allreduce of the gradient buffer timed on its own."""
    import shutil

    from .parallel import MPIUnavailable

    mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if mpiexec is None:
        raise MPIUnavailable("mpiexec not found: pip install 'blasgpt[mpi]' (or load your cluster's MPI)")
    rows = []
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    for n in ranks:
        out = subprocess.run([mpiexec, "-n", str(n), sys.executable, "-m", "blasgpt.bench", "--mpi-worker",
                              str(n_embd), str(batch), str(steps), str(repeats)], capture_output=True, text=True,
                             env=env, timeout=600)
        if out.returncode != 0:
            raise RuntimeError(f"mpiexec -n {n} failed: {out.stderr.strip().splitlines()[-1:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    base = rows[0]["us_per_doc"] * rows[0]["ranks"]
    for r in rows:
        r["speedup"] = base / r["us_per_doc"] / rows[0]["ranks"] * 1.0
        r["efficiency"] = r["speedup"] / r["ranks"]
    return rows


def _mpi_main(command: str, args: argparse.Namespace) -> int:
    rows = scaling_table(steps=50 if args.quick else 200, repeats=3 if args.quick else 5)
    print(f"command: {command}\ndata-parallel training, d64 float32, batch 32, names.txt; wall clock, best of repeats")
    print("| ranks | µs/doc | speedup | efficiency | allreduce µs/step (grad buffer alone) |")
    print("|------:|-------:|--------:|-----------:|--------------------------------------:|")
    for r in rows:
        print(f"| {r['ranks']:5d} | {r['us_per_doc']:6.2f} | {r['speedup']:6.2f}x | {100 * r['efficiency']:9.0f}% | "
              f"{r['allreduce_us']:37.1f} |")
    print(f"({rows[0]['params']:,} float32 parameters per Allreduce)")
    best = rows[-1]["speedup"]
    print(f"target >= 1.75x for {rows[-1]['ranks']} ranks vs 1: {best:.2f}x: {'met' if best >= 1.75 else 'NOT MET'}")
    if args.json:
        from .data import atomic_write_bytes

        atomic_write_bytes(args.json, json.dumps({"command": command, "rows": rows}, indent=1).encode())
        print(f"wrote {args.json}")
    return 0


def _reexec_single_threaded(argv: Sequence[str]) -> Optional[int]:
    """BLAS and OpenMP pools must be one thread each (their idle threads would spin into the CPU clock); they
    read that at load time, so rerun this benchmark in a child process with the variables set."""
    if all(os.environ.get(k) == "1" for k in SINGLE_THREAD_ENV):
        return None
    env = dict(os.environ, **{k: "1" for k in SINGLE_THREAD_ENV})
    return subprocess.call([sys.executable, "-m", "blasgpt.bench", *argv], env=env)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="blasgpt bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 30 s): fewer, shorter repeats")
    parser.add_argument("--json", metavar="FILE", help="also write the table and machine facts as JSON")
    parser.add_argument("--only", choices=WORKLOADS, help="one part only")
    parser.add_argument("--mpi", action="store_true",
                        help="instead: data-parallel scaling over 1 and 2 MPI ranks at d64, batch 32 (needs [mpi])")
    parser.add_argument("--threads-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    code = _reexec_single_threaded(argv)
    if code is not None:
        return code
    command = "python -m blasgpt bench " + " ".join(a for a in argv if a != "--threads-worker")
    try:
        if args.threads_worker:
            print(json.dumps(thread_scaling(args.quick)))
            return 0
        if args.mpi:
            return _mpi_main(command.strip(), args)
        result = run(quick=args.quick, only=args.only)
    except (AssertionError, ValueError, OSError, RuntimeError) as e:
        print(f"blasgpt bench: error: {e}", file=sys.stderr)
        return 1
    print(format_table(result, command.strip()))
    if args.json:
        from .data import atomic_write_bytes

        payload = {"command": command.strip(), **result, "rows": [asdict(r) for r in result["rows"]],
                   "targets": [asdict(t) for t in result["targets"]]}
        atomic_write_bytes(args.json, json.dumps(payload, indent=1).encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mpi-worker"] and len(sys.argv) == 6:
        _bench_worker(*(int(a) for a in sys.argv[2:]))
    else:
        raise SystemExit(main())

