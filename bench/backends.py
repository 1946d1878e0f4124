"""The default gemm backend (auto: per product shape the faster of blasgpt's kernels and OpenBLAS on this machine,
blasgpt.calibrate) against the two forced ones, per workload: float32, one thread, thread CPU time per training
step, the three backends taking turns in one process (the order rotated each repeat), the minimum and the median
over repeats. Each model's loss and gradients are checked against the float64 reference before it is timed; the
auto models' plans (each product's choice and both timings) go to the report's gemm choices."""

from __future__ import annotations

import statistics
from typing import Any, Callable

import blasgpt
from report import Report
from timing import interleaved
from workloads import Workloads, check_model

BACKENDS = ("auto", "native", "blas")
NAMES_BATCH = 16


Maker = Callable[[str], tuple[blasgpt.Model, str]]  # a backend's model and how it was checked


def _names_case(works: Workloads, n_embd: int) -> tuple[str, str, Maker, Any]:
    w = works.names(n_embd)

    def make(backend: str) -> tuple[blasgpt.Model, str]:
        m = w.model("float32", backend, batch=NAMES_BATCH)
        return m, check_model(f"blasgpt {w.name} float32 {backend}", m, w.check_batch, w.ref_loss, w.ref_grads)

    return f"d{n_embd} b{NAMES_BATCH}", "doc", make, lambda m: w.runner(m, NAMES_BATCH)


def _text_case(works: Workloads, name: str) -> tuple[str, str, Maker, Any]:
    w = works.text(name)

    def make(backend: str) -> tuple[blasgpt.Model, str]:
        m = w.model("float32", backend=backend)
        return m, check_model(f"blasgpt {w.name} float32 {backend}", m, w.check, w.ref_loss, w.ref_grads)

    return f"{w.label} B{w.batch}", "token", make, w.runner


def backend_rows(rep: Report, works: Workloads, quick: bool) -> None:
    """d16 and d64 batch 16 on names.txt, text d128 L4 H4 T64 B12 and (not with --quick: a step takes seconds)
    d384 L6 H6 T256 B8."""
    repeats, seconds = (2, 0.05) if quick else (7, 0.3)
    cases = [_names_case(works, 16), _names_case(works, 64), _text_case(works, "text-d128")]
    if not quick:
        cases.append(_text_case(works, "text-d384"))
    out = []
    for label, unit, make, runner in cases:
        models = {be: make(be) for be in BACKENDS}
        rep.add_plan(label, models["auto"][0])
        runs = [runner(models[be][0]) for be in BACKENDS]  # each warms up once
        got = interleaved(runs, repeats, seconds if "d384" not in label else 2 * seconds, False, [1] * len(runs))
        us = {be: times for be, (times, _) in zip(BACKENDS, got)}
        lo = {be: min(v) for be, v in us.items()}
        med = {be: statistics.median(v) for be, v in us.items()}
        ratio_min = lo["auto"] / min(lo["native"], lo["blas"])
        ratio_med = med["auto"] / min(med["native"], med["blas"])
        plan = models["auto"][0].gemm_plan
        ran = {"plan": "the per-shape mix", "native": "every product native", "blas": "every product on OpenBLAS"}[
            plan.kind] if plan is not None else "no plan"
        out.append({"workload": label, "dtype": "float32", "threads": 1, "clock": got[0][1], "repeats": repeats,
                    "unit": unit, "auto_ran": ran,
                    "us": us, "auto_vs_fastest_min": ratio_min, "auto_vs_fastest_median": ratio_med,
                    "checked": "; ".join(f"{be}: {models[be][1]}" for be in BACKENDS)})
        rep.comparisons.append(f"default backend (auto) / fastest of native, blas, {label} float32, 1 thread: "
                               f"{ratio_min:.3f} (min), {ratio_med:.3f} (median); auto ran {ran}")
    rep.extra["backends"] = out


__all__ = ["BACKENDS", "backend_rows"]
