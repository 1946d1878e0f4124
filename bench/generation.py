"""Generation speed (the C++ KV-cached generator against a Python loop that recomputes the whole context per token,
after checking that greedy generation equals that loop token for token) and Adam's update against a memory-bandwidth
bound."""

from __future__ import annotations

import random
from typing import Any

import numpy as np

import blasgpt
from blasgpt import _core
from recipe import ADAM
from report import Report
from timing import best_of, interleaved
from workloads import TextWorkload


def _recompute_next(m: blasgpt.Model, ids: list[int], greedy: bool, rng: random.Random) -> int:
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
    m = w.model("float32")
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

        res = interleaved(runs + [loop], repeats, seconds, False, [1, 1, 1])
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

        t_adam = best_of(lambda p=p, m=m, v=v, g=g: _core.adam_update(p, m, v, g, 1e-3, 3))
        x, y, z = np.empty(n, dtype), np.ones(n, dtype), np.ones(n, dtype)
        t_add = best_of(lambda x=x, y=y, z=z: np.add(y, z, out=x))
        bandwidth = 3 * n * x.itemsize / t_add
        bound = 7 * n * x.itemsize / bandwidth
        out.append({"dtype": np.dtype(dtype).name, "params": n, "adam_ms": t_adam * 1e3, "bound_ms": bound * 1e3,
                    "bandwidth_gbs": bandwidth / 1e9, "ratio": t_adam / bound})
    return out


def generate_rows(rep: Report, w: TextWorkload, quick: bool, repeats: int, seconds: float) -> None:
    T = w.cfg.block_size
    g = bench_generate(w, repeats, seconds, T // 4 if quick else T, T + T // 4 if quick else 2 * T)
    by_phase: dict[str, list[Any]] = {}
    for r in g["rows"]:
        by_phase.setdefault(r["phase"], []).append(
            rep.add("generate", w.label, r["impl"], "float32", r["num"], 1,
                    f"{r['phase']}: prompt {r['prompt']}, +{r['count']}", "token", r["times"], r["clock"],
                    g["checked"]))
    for phase, rs in by_phase.items():
        base = rs[-1].us_min
        for r in rs:
            r.vs = f"{base / r.us_min:.1f}x"
        rep.comparisons.append(f"generation {w.label} float32, {phase}: KV cache {1e6 / rs[0].us_min:,.0f} tokens/s "
                               f"(num 1), {1e6 / rs[1].us_min:,.0f} tokens/s (num 8); recompute loop "
                               f"{1e6 / base:,.0f} tokens/s: {base / rs[0].us_min:.1f}x and {base / rs[1].us_min:.1f}x")
