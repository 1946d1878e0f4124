"""Training speed: whole steps of blasgpt against the NumPy and PyTorch baselines on names.txt documents (d16, d64)
and against PyTorch on text windows (the recipe's text sizes). Every implementation's loss and gradients are
checked against blasgpt's float64 ones before it is timed."""

from __future__ import annotations

from typing import Any, Callable, Optional

from blasgpt.model import default_backend
from numpy_gpt import NumpyGPT
from report import Report
from timing import time_repeats
from workloads import NamesWorkload, TextWorkload, Workloads, check_baseline, check_model

# (impl, dtype, batch, threads, gemm backend); blasgpt on its default backend (what users run; the backends part,
# backends.py, times it against the forced ones); the 2-thread rows come from the thread-scaling child (scaling.py)
NAMES_PLAN = [
    ("blasgpt", "float64", 1, 1, "default"),
    ("blasgpt", "float32", 16, 1, "default"),
    ("blasgpt", "float32", 32, 1, "default"),
    ("numpy", "float32", 16, 1, "numpy"),
    ("torch", "float32", 16, 1, "torch"),
]


def bench_blasgpt(rep: Report, w: NamesWorkload, dtype: str, batch: int, repeats: int,
                  seconds: float) -> tuple[list[float], str, str, str]:
    """blasgpt on its default backend; returns the times, the clock, how it was checked and the backend."""
    m = w.model(dtype, batch=batch)
    rep.add_plan(f"{w.name} b{batch}", m)
    checked = check_model(f"blasgpt {dtype}/{m.backend}", m, w.check_batch, w.ref_loss, w.ref_grads)
    times, clock = time_repeats(w.runner(m, batch), repeats, seconds)
    return times, clock, checked, m.backend


def bench_baseline(kind: str, w: NamesWorkload, dtype: str, batch: int, repeats: int,
                   seconds: float) -> tuple[list[float], str, str]:
    if kind == "numpy":
        make: Callable[[str], Any] = lambda dt: NumpyGPT(w.params, w.cfg, dt)  # noqa: E731
        ref_loss, ref_grads = make("float64").forward_backward(w.check_batch.tokens, w.check_batch.offsets)
        step = lambda impl, b: impl.train_step(b.tokens, b.offsets, 1e-3)  # noqa: E731
    else:
        from torch_gpt import TorchGPT

        make = lambda dt: TorchGPT(w.params, w.cfg, dt)  # noqa: E731
        ref_loss, ref_grads = make("float64").forward_backward(w.check_batch)
        step = lambda impl, b: impl.train_step(impl.inputs(b), 1e-3)  # noqa: E731
    checked = check_baseline(f"{kind} baseline", ref_loss, ref_grads, w.ref_loss, w.ref_grads, 1e-11)
    impl = make(dtype)
    at = [0]

    def run() -> int:
        step(impl, w.batch_at(at[0], batch))
        at[0] += 1
        return batch

    run()
    times, clock = time_repeats(run, repeats, seconds)
    return times, clock, checked


def bench_text_blasgpt(rep: Report, w: TextWorkload, dtype: str, repeats: int,
                       seconds: float) -> tuple[list[float], str, str]:
    m = w.model(dtype)
    rep.add_plan(f"{w.label} B{w.batch}", m)
    checked = check_model(f"blasgpt {w.name} {dtype}", m, w.check, w.ref_loss, w.ref_grads)
    times, clock = time_repeats(w.runner(m), repeats, seconds)
    return times, clock, checked


def bench_text_torch(w: TextWorkload, threads: int, repeats: int, seconds: float) -> tuple[list[float], str, str]:
    import torch

    from torch_gpt import TorchGPT

    torch.set_num_threads(threads)
    if torch.get_num_threads() != threads:
        raise AssertionError(f"torch runs {torch.get_num_threads()} threads, not {threads}")
    if not w.torch_checked:  # once per workload (the check does not depend on the thread count)
        ref_loss, ref_grads = TorchGPT(w.params, w.cfg, "float64").forward_backward(w.check)
        w.torch_checked = check_baseline("torch SDPA baseline", ref_loss, ref_grads, w.ref_loss, w.ref_grads, 1e-10)
    impl = TorchGPT(w.params, w.cfg, "float32")
    inputs = [impl.windows(w.tokens, s) for s in w.starts]
    at = [0]

    def run() -> int:
        impl.train_step(inputs[at[0] % len(inputs)], 1e-3)
        at[0] += 1
        return w.tokens_per_step

    run()
    times, clock = time_repeats(run, repeats, seconds, threads)
    torch.set_num_threads(1)
    return times, clock, w.torch_checked


def _child_case(rep: Report, workload: str) -> Optional[dict[str, Any]]:
    """The 2-thread timing of ``workload`` from the thread-scaling child, if it ran."""
    return next((c for c in rep.extra.get("thread_scaling", {}).get("cases", []) if c["workload"] == workload), None)


def names_rows(rep: Report, works: Workloads, n_embd: int, have_torch: bool, repeats: int, seconds: float) -> None:
    w = works.names(n_embd)
    added = []
    for impl, dtype, batch, threads, gemm in NAMES_PLAN:
        if impl == "torch" and not have_torch:
            continue
        if impl == "blasgpt":
            times, clock, checked, gemm = bench_blasgpt(rep, w, dtype, batch, repeats, seconds)
        else:
            times, clock, checked = bench_baseline(impl, w, dtype, batch, repeats, seconds)
        added.append(rep.add("names", w.name, impl, dtype, batch, threads, gemm, "doc", times, clock, checked,
                             w.mean_flops, batch))
    c = _child_case(rep, w.name)
    if c:
        added.append(rep.add("names", w.name, "blasgpt", "float32", 32, 2, default_backend(), "doc", c["times"][1],
                             "wall", c["checked"][1], w.mean_flops, 32))
    torch_row = next((r for r in added if r.impl == "torch"), None)
    if torch_row:
        for r in added:
            if r is not torch_row and r.threads == torch_row.threads:
                r.vs = f"{torch_row.us_min / r.us_min:.2f}x"


def text_rows(rep: Report, works: Workloads, name: str, have_torch: bool, repeats: int, seconds: float) -> None:
    w = works.text(name)
    threads_list = (1, 2) if _child_case(rep, name) else (1,)
    for threads in threads_list:
        if threads == 1:
            times, clock, checked = bench_text_blasgpt(rep, w, "float32", repeats, seconds)
        else:
            c = _child_case(rep, name)
            assert c is not None
            times, clock, checked = c["times"][1], "wall", c["checked"][1]
        b = rep.add("text", w.label, "blasgpt", "float32", w.batch, threads, default_backend(), "token", times, clock,
                    checked, w.flops_per_token, w.tokens_per_step)
        if have_torch:
            times, clock, checked = bench_text_torch(w, threads, repeats, seconds)
            t = rep.add("text", w.label, "torch SDPA", "float32", w.batch, threads, "torch", "token", times, clock,
                        checked, w.flops_per_token, w.tokens_per_step)
            b.vs = f"{t.us_min / b.us_min:.2f}x"
            rep.comparisons.append(f"{w.label} B{w.batch} float32, {threads} thread(s): blasgpt {b.us_min:.3f} "
                                   f"µs/token, torch SDPA {t.us_min:.3f} µs/token: blasgpt runs at "
                                   f"{t.us_min / b.us_min:.2f}x torch's speed")


__all__ = ["NAMES_PLAN", "bench_baseline", "bench_blasgpt", "bench_text_blasgpt", "bench_text_torch", "names_rows",
           "text_rows"]
