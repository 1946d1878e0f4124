"""The benchmark table: µs per training document for blasgpt and two baselines, checked before timed.

Run ``python -m blasgpt bench`` (or ``python bench/bench.py``); ``--quick`` for a smoke run, ``--json FILE`` to
keep the numbers. Workloads mirror the seed project's table: d16 and d64 (n_head 4, one layer, block 16) on
names.txt. Each row first proves its arithmetic (loss and gradients against blasgpt's float64 path, which the test
suite checks against finite differences, PyTorch and microgpt's own trace), then times whole training steps:

- blasgpt: ``Model.train_steps`` (the loop runs in C++), one or more threads, either gemm backend;
- NumPy: an explicit-backprop implementation written here with NumPy arrays (same algorithm, batched the same way);
- PyTorch eager autograd (skipped with a note when torch is not installed).

Clocks: CPU time of the calling thread for single-threaded rows (nothing else is counted: BLAS libraries are held
to one thread), wall time for multi-threaded rows. Each row reports the median and the minimum over repeats;
GFLOP/s and % of peak use the minimum and the matmul FLOPs of MATH.md, against a peak measured in the same run by
the core's FMA probe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Optional, Sequence

import numpy as np

from . import _core
from .config import Config, training_flops
from .data import Batch, load_docs
from .model import Model
from .train import microgpt_start

# microgpt's own script (CPython) on this machine kind, as the seed project measured it (µs per training document).
CPYTHON_US_PER_DOC = {16: 243_083.0, 64: 5_050_299.0}
SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
ADAM = dict(beta1=0.85, beta2=0.99, eps=1e-8)


@dataclass
class Row:
    workload: str
    impl: str
    dtype: str
    batch: int
    threads: int
    gemm: str
    us_per_doc_median: float
    us_per_doc_min: float
    gflops: float
    pct_peak: float
    speedup_vs_cpython: float
    clock: str
    checked: str


# ---------------------------------------------------------------------------------------------------------------
# The NumPy baseline: the same model and backward pass, written with NumPy arrays.

class NumpyGPT:
    """Explicit-backprop GPT in NumPy: packed rows for every linear layer, a loop over documents for attention."""

    def __init__(self, params: dict[str, np.ndarray], cfg: Config, dtype: Any):
        self.cfg = cfg
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    @staticmethod
    def _rms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-5)
        return x * r, r

    @staticmethod
    def _rms_back(dy: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        return r * dy - (r**3 / x.shape[1]) * x * (dy * x).sum(axis=1, keepdims=True)

    def forward_backward(self, tokens: np.ndarray, offsets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        cfg, p = self.cfg, self.p
        C, H, T = cfg.n_embd, cfg.n_head, cfg.block_size
        hd = C // H
        starts, lens = offsets[:-1], np.diff(offsets)
        ns = np.minimum(T, lens - 1)
        B = len(ns)
        rows = np.concatenate([np.arange(n) for n in ns])
        first = np.repeat(starts, ns) + rows
        tok_in, tok_out = tokens[first], tokens[first + 1]
        w = np.repeat(1.0 / (B * ns), ns).astype(p["wte"].dtype)[:, None]
        bounds = np.concatenate([[0], np.cumsum(ns)])

        e = p["wte"][tok_in] + p["wpe"][rows]
        x, r0 = self._rms(e)
        caches = []
        for layer in range(cfg.n_layer):
            pre = f"layer{layer}."
            a, ra = self._rms(x)
            wqkv = np.concatenate([p[pre + "attn_wq"], p[pre + "attn_wk"], p[pre + "attn_wv"]])
            qkv = a @ wqkv.T
            o = np.empty_like(x)
            probs = []
            for d in range(B):
                s0, s1 = bounds[d], bounds[d + 1]
                n = s1 - s0
                q, k, v = (qkv[s0:s1, i * C:(i + 1) * C].reshape(n, H, hd).transpose(1, 0, 2) for i in range(3))
                s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
                s = np.where(np.tri(n, dtype=bool), s, -np.inf)
                s = np.exp(s - s.max(axis=2, keepdims=True))
                pr = s / s.sum(axis=2, keepdims=True)
                probs.append(pr)
                o[s0:s1] = (pr @ v).transpose(1, 0, 2).reshape(n, C)
            xmid = x + o @ p[pre + "attn_wo"].T
            b, rb = self._rms(xmid)
            u = b @ p[pre + "mlp_fc1"].T
            h = np.maximum(u, 0)
            x_next = xmid + h @ p[pre + "mlp_fc2"].T
            caches.append((x, a, ra, wqkv, qkv, probs, o, xmid, b, rb, u, h))
            x = x_next
        logits = x @ p["lm_head"].T
        z = logits - logits.max(axis=1, keepdims=True)
        ez = np.exp(z)
        prob = ez / ez.sum(axis=1, keepdims=True)
        picked = prob[np.arange(len(tok_out)), tok_out]
        loss = float(-(w[:, 0] * np.log(picked)).sum())

        g: dict[str, np.ndarray] = {}
        dlogits = prob * w
        dlogits[np.arange(len(tok_out)), tok_out] -= w[:, 0]
        g["lm_head"] = dlogits.T @ x
        dx = dlogits @ p["lm_head"]
        for layer in reversed(range(cfg.n_layer)):
            pre = f"layer{layer}."
            x_in, a, ra, wqkv, qkv, probs, o, xmid, b, rb, u, h = caches[layer]
            g[pre + "mlp_fc2"] = dx.T @ h
            du = (dx @ p[pre + "mlp_fc2"]) * (u > 0)
            g[pre + "mlp_fc1"] = du.T @ b
            dx = dx + self._rms_back(du @ p[pre + "mlp_fc1"], xmid, rb)
            g[pre + "attn_wo"] = dx.T @ o
            do = dx @ p[pre + "attn_wo"]
            dqkv = np.empty_like(qkv)
            for d in range(B):
                s0, s1 = bounds[d], bounds[d + 1]
                n = s1 - s0
                q, k, v = (qkv[s0:s1, i * C:(i + 1) * C].reshape(n, H, hd).transpose(1, 0, 2) for i in range(3))
                pr = probs[d]
                dO = do[s0:s1].reshape(n, H, hd).transpose(1, 0, 2)
                dv = pr.transpose(0, 2, 1) @ dO
                dp = dO @ v.transpose(0, 2, 1)
                ds = pr * (dp - (dp * pr).sum(axis=2, keepdims=True)) / math.sqrt(hd)
                dq, dk = ds @ k, ds.transpose(0, 2, 1) @ q
                for i, t in enumerate((dq, dk, dv)):
                    dqkv[s0:s1, i * C:(i + 1) * C] = t.transpose(1, 0, 2).reshape(n, C)
            gqkv = dqkv.T @ a
            g[pre + "attn_wq"], g[pre + "attn_wk"], g[pre + "attn_wv"] = gqkv[:C], gqkv[C:2 * C], gqkv[2 * C:]
            dx = dx + self._rms_back(dqkv @ wqkv, x_in, ra)
        de = self._rms_back(dx, e, r0)
        g["wte"] = np.zeros_like(p["wte"])
        np.add.at(g["wte"], tok_in, de)
        g["wpe"] = np.zeros_like(p["wpe"])
        np.add.at(g["wpe"], rows, de)
        return loss, g

    def train_step(self, tokens: np.ndarray, offsets: np.ndarray, lr: float) -> float:
        loss, g = self.forward_backward(tokens, offsets)
        self.t += 1
        b1, b2, eps = ADAM["beta1"], ADAM["beta2"], ADAM["eps"]
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for k, grad in g.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            self.p[k] -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
        return loss


# ---------------------------------------------------------------------------------------------------------------
# The PyTorch baseline: the same model in eager autograd, documents padded to the block.

class TorchGPT:
    def __init__(self, params: dict[str, np.ndarray], cfg: Config, dtype: str):
        import torch

        self.torch, self.cfg = torch, cfg
        self.dtype = getattr(torch, dtype)
        self.p = {k: torch.tensor(np.asarray(v), dtype=self.dtype, requires_grad=True) for k, v in params.items()}
        self.opt = torch.optim.Adam(list(self.p.values()), lr=0.01, betas=(ADAM["beta1"], ADAM["beta2"]),
                                    eps=ADAM["eps"])

    def _batch(self, tokens: np.ndarray, offsets: np.ndarray) -> tuple[Any, Any, Any, int]:
        torch, T = self.torch, self.cfg.block_size
        lens = np.diff(offsets)
        ns = np.minimum(T, lens - 1)
        n_max = int(ns.max())
        inp = np.zeros((len(ns), n_max), dtype=np.int64)
        tgt = np.zeros_like(inp)
        wgt = np.zeros(inp.shape)
        for d, (s, n) in enumerate(zip(offsets[:-1], ns)):
            inp[d, :n] = tokens[s:s + n]
            tgt[d, :n] = tokens[s + 1:s + n + 1]
            wgt[d, :n] = 1.0 / (len(ns) * n)
        return torch.from_numpy(inp), torch.from_numpy(tgt), torch.tensor(wgt, dtype=self.dtype), n_max

    def loss(self, tokens: np.ndarray, offsets: np.ndarray) -> Any:
        torch, cfg, p = self.torch, self.cfg, self.p
        inp, tgt, wgt, n = self._batch(tokens, offsets)
        H, hd = cfg.n_head, cfg.n_embd // cfg.n_head

        def rms(x: Any) -> Any:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

        x = rms(p["wte"][inp] + p["wpe"][:n])
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        Bn = inp.shape[0]
        for layer in range(cfg.n_layer):
            pre = f"layer{layer}."
            a = rms(x)
            q, k, v = ((a @ p[pre + w].T).view(Bn, n, H, hd).transpose(1, 2) for w in ("attn_wq", "attn_wk", "attn_wv"))
            s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
            att = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
            o = (att @ v).transpose(1, 2).reshape(Bn, n, cfg.n_embd)
            x = x + o @ p[pre + "attn_wo"].T
            x = x + torch.relu(rms(x) @ p[pre + "mlp_fc1"].T) @ p[pre + "mlp_fc2"].T
        logits = x @ p["lm_head"].T
        nll = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt.reshape(-1),
                                                reduction="none")
        return (nll * wgt.reshape(-1)).sum()

    def forward_backward(self, tokens: np.ndarray, offsets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        for t in self.p.values():
            t.grad = None
        loss = self.loss(tokens, offsets)
        loss.backward()
        return float(loss.detach()), {k: t.grad.detach().numpy().copy() for k, t in self.p.items()}

    def train_step(self, tokens: np.ndarray, offsets: np.ndarray, lr: float) -> float:
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(tokens, offsets)
        loss.backward()
        self.opt.step()
        return float(loss.detach())


# ---------------------------------------------------------------------------------------------------------------

def _max_rel_err(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-300)) for k in want)


def _time_repeats(run: Callable[[], int], repeats: int, seconds: float, threads: int) -> tuple[list[float], str]:
    """µs per document of ``run`` (which trains and returns documents processed), calibrated so each repeat takes
    about ``seconds``; thread CPU time when single-threaded, wall time otherwise."""
    clock, name = (time.thread_time, "thread-cpu") if threads == 1 else (time.perf_counter, "wall")
    out = []
    for _ in range(repeats):
        t0 = clock()
        docs = 0
        while True:
            docs += run()
            dt = clock() - t0
            if dt >= seconds:
                break
        out.append(dt / docs * 1e6)
    return out, name


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


def bench_blasgpt(w: Workload, dtype: str, batch: int, threads: int, backend: str, repeats: int,
                  seconds: float) -> tuple[list[float], str, str]:
    m = w.model(dtype, backend, threads)
    loss = m.forward_backward(w.check_batch)
    tol = 1e-11 if dtype == "float64" else 2e-4
    if abs(loss - w.ref_loss) > tol * max(1.0, abs(w.ref_loss)):
        raise AssertionError(f"blasgpt {dtype}/{backend}: loss {loss} differs from the reference {w.ref_loss}")
    err = _max_rel_err({k: v.astype(np.float64) for k, v in m.grads.items()}, w.ref_grads)
    if err > (1e-10 if dtype == "float64" else 1e-2):
        raise AssertionError(f"blasgpt {dtype}/{backend}: gradient differs from the reference by {err:.1e}")
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
    times, clock = _time_repeats(run, repeats, seconds, threads)
    return times, clock, f"loss Δ {abs(loss - w.ref_loss):.0e}, grad rel {err:.0e}"


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


def run(quick: bool = False, only: Optional[str] = None) -> tuple[dict[str, Any], list[Row], list[str]]:
    repeats, seconds = (3, 0.05) if quick else (5, 0.4)
    names = load_docs()
    info = machine_info()
    info["peak_gflops_f32"] = _core.peak_gflops("float32", 0.1 if quick else 0.3)
    info["peak_gflops_f64"] = _core.peak_gflops("float64", 0.1 if quick else 0.3)
    try:
        import torch

        torch.set_num_threads(1)
        have_torch = True
        info["torch"] = torch.__version__
    except ImportError:
        have_torch = False
    notes = ["gemm 'native' is blasgpt's kernels, which hand a product to OpenBLAS from m*n*k >= 2^29 on (the "
             "crossover measured per shape, csrc/gemm.hpp); every product of these workloads is below it, so the "
             "native rows use no BLAS"]
    if not have_torch:
        notes.append("PyTorch not installed: its rows are skipped (pip install .[torch] to include them)")
    rows: list[Row] = []
    plan = [  # (impl, dtype, batch, threads, gemm)
        ("blasgpt", "float64", 1, 1, "native"),
        ("blasgpt", "float32", 16, 1, "native"),
        ("blasgpt", "float32", 16, 1, "blas"),
        ("blasgpt", "float32", 32, 1, "native"),
        ("blasgpt", "float32", 32, 2, "native"),
        ("numpy", "float32", 16, 1, "numpy"),
        ("torch", "float32", 16, 1, "torch"),
    ]
    for n_embd in (16, 64):
        w = Workload(n_embd, names)
        if only and only != w.name:
            continue
        for impl, dtype, batch, threads, gemm in plan:
            if impl == "torch" and not have_torch:
                continue
            if threads > (os.cpu_count() or 1):
                notes.append(f"{w.name} {threads} threads skipped: this machine has {os.cpu_count()} core(s)")
                continue
            if impl == "blasgpt":
                times, clock, checked = bench_blasgpt(w, dtype, batch, threads, gemm, repeats, seconds)
            else:
                times, clock, checked = bench_baseline(impl, w, dtype, batch, repeats, seconds)
            best = min(times)
            peak = info["peak_gflops_f32" if dtype == "float32" else "peak_gflops_f64"] * threads
            gflops = w.mean_flops / best / 1e3
            rows.append(Row(w.name, impl, dtype, batch, threads, gemm, statistics.median(times), best, gflops,
                            100 * gflops / peak, CPYTHON_US_PER_DOC[n_embd] / best, clock, checked))
    info["adam"] = bench_adam(quick)
    return info, rows, notes


def format_table(info: dict[str, Any], rows: list[Row], notes: list[str], command: str) -> str:
    lines = [
        f"command: {command}",
        f"cpu: {info['cpu']} ({info['cores']} cores) | python {info['python']} | numpy {info['numpy']}"
        + (f" | torch {info['torch']}" if "torch" in info else ""),
        f"openblas: {info['openblas']}",
        f"native kernels: {info['native_isa']} | measured FMA peak of one core: "
        f"{info['peak_gflops_f32']:.0f} GFLOP/s float32, {info['peak_gflops_f64']:.0f} GFLOP/s float64",
    ]
    if info["env"]:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    head = ("workload", "impl", "dtype", "batch", "thr", "gemm", "µs/doc med", "µs/doc min", "GFLOP/s", "% peak",
            "vs CPython", "clock")
    table = [head] + [(r.workload, r.impl, r.dtype, str(r.batch), str(r.threads), r.gemm,
                       f"{r.us_per_doc_median:,.2f}", f"{r.us_per_doc_min:,.2f}", f"{r.gflops:.1f}",
                       f"{r.pct_peak:.1f}", f"{r.speedup_vs_cpython:,.0f}x", r.clock) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(head))]
    fmt = lambda row: "| " + " | ".join(c.rjust(wd) if i >= 3 else c.ljust(wd)  # noqa: E731
                                        for i, (c, wd) in enumerate(zip(row, widths))) + " |"
    lines += ["", fmt(head), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"]
    lines += [fmt(row) for row in table[1:]]
    lines += ["", "Every row was checked before timing (loss and gradients vs blasgpt float64):"]
    lines += [f"  {r.workload} {r.impl} {r.dtype} b{r.batch} t{r.threads} {r.gemm}: {r.checked}" for r in rows]
    for a in info.get("adam", []):
        lines.append(f"Adam, {a['params']:,} {a['dtype']} params: {a['adam_ms']:.2f} ms; memory-bound estimate "
                     f"{a['bound_ms']:.2f} ms (7 streams at {a['bandwidth_gbs']:.0f} GB/s, a NumPy add's bandwidth): "
                     f"{a['ratio']:.2f}x the bound")
    lines += [f"note: {n}" for n in notes]
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
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 20 s): fewer, shorter repeats")
    parser.add_argument("--json", metavar="FILE", help="also write the table and machine facts as JSON")
    parser.add_argument("--only", choices=("d16", "d64"), help="one workload only")
    parser.add_argument("--mpi", action="store_true",
                        help="instead: data-parallel scaling over 1 and 2 MPI ranks at d64, batch 32 (needs [mpi])")
    args = parser.parse_args(argv)
    code = _reexec_single_threaded(argv)
    if code is not None:
        return code
    command = "python -m blasgpt bench " + " ".join(argv)
    if args.mpi:
        return _mpi_main(command.strip(), args)
    info, rows, notes = run(quick=args.quick, only=args.only)
    print(format_table(info, rows, notes, command.strip()))
    if args.json:
        from .data import atomic_write_bytes

        payload = {"command": command.strip(), "machine": info, "rows": [asdict(r) for r in rows], "notes": notes}
        atomic_write_bytes(args.json, json.dumps(payload, indent=1).encode())
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["--mpi-worker"] and len(sys.argv) == 6:
        _bench_worker(*(int(a) for a in sys.argv[2:]))
    else:
        raise SystemExit(main())

