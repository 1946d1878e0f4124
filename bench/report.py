"""The benchmark's results: rows of timings (each with how it was checked), ratios measured in the same run, the
long runs, and the text table printed at the end (also written as JSON)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Optional, Sequence


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
class Report:
    machine: dict[str, Any]
    rows: list[Row] = field(default_factory=list)
    comparisons: list[str] = field(default_factory=list)  # ratios measured in this run, one line each
    notes: list[str] = field(default_factory=list)
    part_seconds: dict[str, float] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # thread_scaling, mpi, steady, whole_run, gemm_choices
    _mark: float = field(default_factory=time.perf_counter, repr=False)

    def done(self, part: str) -> None:
        """Charge the wall time since the previous part ended to ``part``."""
        now = time.perf_counter()
        self.part_seconds[part] = self.part_seconds.get(part, 0.0) + now - self._mark
        self._mark = now

    def add_plan(self, workload: str, model: Any) -> None:
        """Keep the auto backend's choices for ``model`` (trained on ``workload``): per product shape the backend
        it took and both timings (nothing when the model runs a forced backend)."""
        plan = model.gemm_plan if model.backend == "auto" else None
        if plan is None:
            return
        choices = self.extra.setdefault("gemm_choices", [])
        if any(c["workload"] == workload and c["dtype"] == plan.dtype for c in choices):
            return
        products = [{"shape": p["shape"], "role": p["role"], "backend": p["choice"], "native_us": p["native_s"] * 1e6,
                     "blas_us": p["blas_s"] * 1e6,
                     "why": f"native {p['native_s'] * 1e6:.1f} µs, OpenBLAS {p['blas_s'] * 1e6:.1f} µs"}
                    for p in plan.products]
        if plan.attention:
            a = plan.attention
            products.append({"shape": "attention", "role": a["role"].replace("attention of ", ""),
                             "backend": a["choice"], "fused_us": a["fused_s"] * 1e6, "gemm_us": a["gemm_s"] * 1e6,
                             "why": f"fused kernel {a['fused_s'] * 1e6:.1f} µs, as gemm products "
                                    f"{a['gemm_s'] * 1e6:.1f} µs"})
        choices.append({"workload": workload, "dtype": plan.dtype, "rows": plan.rows, "summary": plan.summary(),
                        "products": products, "large": list(plan.large), "untimed": list(plan.untimed),
                        "step": plan.step, "step_why": plan.step_summary()})

    def peak(self, dtype: str) -> float:
        return self.machine["peak_gflops_f32" if dtype == "float32" else "peak_gflops_f64"]

    def add(self, section: str, workload: str, impl: str, dtype: str, batch: int, threads: int, detail: str,
            unit: str, times: Sequence[float], clock: str, checked: str, flops: float = 0.0, per_step: int = 0,
            vs: str = "") -> Row:
        """A row from the µs per ``unit`` of each repeat; GFLOP/s and % of peak from the fastest repeat and the
        matmul FLOPs per unit (``flops``), against the FMA peak of one core times the row's threads."""
        best = min(times)
        gflops = flops / best / 1e3
        peak = self.peak(dtype) * threads if flops else 0.0
        self.rows.append(Row(section, workload, impl, dtype, batch, threads, detail, unit, statistics.median(times),
                             best, best * per_step / 1e3, gflops, peak, 100 * gflops / peak if peak else 0.0, vs,
                             clock, checked))
        return self.rows[-1]

    def rescale_peaks(self) -> None:
        for r in self.rows:
            if r.peak_gflops:
                r.peak_gflops = self.peak(r.dtype) * r.threads
                r.pct_peak = 100 * r.gflops / r.peak_gflops

    def to_json(self, command: str) -> dict[str, Any]:
        return {"command": command, "machine": self.machine, "rows": [asdict(r) for r in self.rows],
                "comparisons": self.comparisons, "notes": self.notes, "part_seconds": self.part_seconds,
                **self.extra}


# ---------------------------------------------------------------------------------------------------------------
# the text table

def _table(rows: list[Row], cols: Sequence[tuple[str, Callable[[Row], str]]], left: int) -> list[str]:
    table = [[h for h, _ in cols]] + [[f(r) for _, f in cols] for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(cols))]

    def fmt(row: list[str]) -> str:
        return "| " + " | ".join(c.ljust(wd) if i < left else c.rjust(wd)
                                 for i, (c, wd) in enumerate(zip(row, widths))) + " |"

    return [fmt(table[0]), "|" + "|".join("-" * (wd + 2) for wd in widths) + "|"] + [fmt(r) for r in table[1:]]


def _peak_cols(r: Row) -> list[str]:
    return [f"{r.gflops:.1f}", f"{r.peak_gflops:.0f}", f"{r.pct_peak:.1f}"] if r.peak_gflops else ["—", "—", "—"]


_COMMON: list[tuple[str, Callable[[Row], str]]] = [
    ("impl", lambda r: r.impl), ("dtype", lambda r: r.dtype), ("batch", lambda r: str(r.batch)),
    ("thr", lambda r: str(r.threads))]
_PEAK: list[tuple[str, Callable[[Row], str]]] = [
    ("GFLOP/s", lambda r: _peak_cols(r)[0]), ("peak", lambda r: _peak_cols(r)[1]),
    ("% peak", lambda r: _peak_cols(r)[2])]
SECTIONS = {
    "names": ("Training, names.txt documents (µs per document)", [
        ("workload", lambda r: r.workload), *_COMMON, ("gemm", lambda r: r.detail),
        ("µs/doc med", lambda r: f"{r.us_median:,.2f}"), ("µs/doc min", lambda r: f"{r.us_min:,.2f}"), *_PEAK,
        ("vs torch", lambda r: r.vs), ("clock", lambda r: r.clock)], 6),
    "text": ("Training, text windows (µs per token; every window block_size positions)", [
        ("workload", lambda r: r.workload), *_COMMON, ("µs/token med", lambda r: f"{r.us_median:.3f}"),
        ("µs/token min", lambda r: f"{r.us_min:.3f}"), ("ms/step", lambda r: f"{r.ms_per_step:.2f}"), *_PEAK,
        ("vs torch", lambda r: r.vs), ("clock", lambda r: r.clock)], 5),
    "calls": ("Python call paths (d16 on names.txt)", [
        ("call", lambda r: r.impl), ("dtype", lambda r: r.dtype), ("batch", lambda r: str(r.batch)),
        ("what", lambda r: r.detail), ("µs med", lambda r: f"{r.us_median:.2f}"),
        ("µs min", lambda r: f"{r.us_min:.2f}"), ("per", lambda r: r.unit), *_PEAK, ("clock", lambda r: r.clock)], 4),
    "generate": ("Generation, float32, temperature 1 (µs per generated token, all samples counted)", [
        ("model", lambda r: r.workload), ("impl", lambda r: r.impl), ("num", lambda r: str(r.batch)),
        ("thr", lambda r: str(r.threads)), ("phase", lambda r: r.detail),
        ("µs/token med", lambda r: f"{r.us_median:.2f}"), ("µs/token min", lambda r: f"{r.us_min:.2f}"),
        ("tokens/s", lambda r: f"{1e6 / r.us_min:,.0f}"), ("vs recompute", lambda r: r.vs),
        ("clock", lambda r: r.clock)], 5),
}


def _header(rep: Report, command: str) -> list[str]:
    info = rep.machine
    lines = [
        f"command: {command}",
        f"cpu: {info['cpu']} ({info['cores']} cores) | blasgpt {info['blasgpt']} | python {info['python']} | "
        f"numpy {info['numpy']}" + (f" | torch {info['torch']}" if "torch" in info else ""),
        f"openblas: {info['openblas']}",
        f"native kernels: {info['native_isa']} | measured FMA peak of one core (best of short probes at the start "
        f"and the end): {info['peak_gflops_f32']:.0f} GFLOP/s float32, {info['peak_gflops_f64']:.0f} GFLOP/s "
        "float64 (the 'peak' column: that x the row's threads)",
        "every single-thread row ran with BLAS and OpenMP pools held to one thread; dtype, batch and threads are "
        "each row's own columns",
    ]
    if "others_cpu_pct" in info:
        lines.append(f"machine load: other processes used {info['others_cpu_pct']:.0f} % of all {info['cores']} "
                     "cores' time during this run (0 % = a quiet machine; single-thread rows count only their own "
                     "thread's CPU time, wall-clock rows feel the load)")
    if info["env"]:
        lines.append("environment: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    if "text" in info:
        t = info["text"]
        lines.append(f"text: {t['source']} ({t['tokens']:,} tokens, vocabulary {t['vocab_size']})")
    return lines


def _gemm_choices(choices: Optional[list[dict[str, Any]]]) -> list[str]:
    """Which gemm backend each product shape of the benchmark's auto-backend models took, and why (thread CPU time
    per call of each, measured on this machine or read from its cache)."""
    lines = ["", "Auto gemm backend, per model: each product shape's choice and why (thread CPU time per call):"]
    if not choices:
        return lines + ["  no model of this run planned (every row ran a forced backend)"]
    for c in choices:
        lines.append(f"  {c['workload']} {c['dtype']}: {c['summary']}")
        lines += [f"    {p['shape']:18s} {p['role']:26s} -> {p['backend']:6s} ({p['why']})" for p in c["products"]]
        lines.append(f"    {c['step_why']}")
    return lines


def _backends(rep: Report) -> list[str]:
    rows = rep.extra.get("backends")
    if not rows:
        return []
    info = rep.machine
    kernel = str(info["openblas"]).rsplit("kernel ", 1)[-1]
    lines = ["", "Default gemm backend (auto) against the forced ones, float32, 1 thread (µs per unit, min / median "
                 f"over repeats taken in turns; thread CPU time; OpenBLAS kernel {kernel}, native kernels "
                 f"{info['native_isa']}, FMA peak {info['peak_gflops_f32']:.0f} GFLOP/s float32 per core):"]
    for r in rows:
        cells = ", ".join(f"{be} {min(t):.3f} / {statistics.median(t):.3f}" for be, t in r["us"].items())
        lines.append(f"  {r['workload']} (µs/{r['unit']}): {cells}; auto / fastest of native, blas "
                     f"{r['auto_vs_fastest_min']:.3f} (min), {r['auto_vs_fastest_median']:.3f} (median)"
                     + (f"; auto ran {r['auto_ran']}" if "auto_ran" in r else ""))
    return lines


def _long_runs(rep: Report) -> list[str]:
    lines: list[str] = []
    for s in rep.extra.get("steady", []):
        chunks = ", ".join(f"{c:.3f}" for c in s["ms_per_step"])
        lines.append(f"  {s['workload']} {s['backend']} float32 b{s['batch']}: ms/step per {s['chunk']}-step chunk of "
                     f"{s['steps']}: {chunks}; last / first {s['ratio']:.2f}x ({s['clock']}; {s['checked']})")
    if lines:
        lines.insert(0, "")
        lines.insert(1, "Steady state (one schedule of float32 training, 1 thread, timed chunk by chunk):")
    w = rep.extra.get("whole_run")
    if w:
        lines += ["", f"Whole run to a validation loss of {w['target']:.2f} nats/char: {w['label']}, float32, "
                  f"{w['threads']} thread(s), lr {w['lr']} decaying linearly to 0 over {w['steps']} steps, the same "
                  f"initial weights, windows and Adam on both sides; validation = mean over the first "
                  f"{w['val_targets']:,} targets of the held-out tail, every {w['eval_every']} steps (evaluation "
                  "time not counted):"]
        for side in w["sides"]:
            got = (f"reached at step {side['step']} in {side['seconds']:.1f} s wall ({side['cpu_seconds']:.1f} s CPU)"
                   if side["reached"] else f"not reached in {side['step']} steps ({side['seconds']:.1f} s wall); "
                   f"best {min(side['val']):.3f}")
            gemm = f" ({side['gemm']})" if side.get("gemm") else ""
            lines.append(f"  {side['impl']}: {got}; {side['ms_per_step']:.2f} ms/step{gemm}")
        if w.get("speedup"):
            lines.append(f"  blasgpt reaches it {w['speedup']:.2f}x as fast as torch (wall clock: a fair figure on a "
                         f"quiet machine only, see the machine load above) ({w['checked']})")
    lines += _time_to_loss(rep)
    m = rep.extra.get("mpi")
    if m:
        lines += ["", f"Data-parallel (mpiexec, d64 float32 batch 32, names.txt; one schedule of {m[0]['steps']} "
                  "steps per rank count, wall clock):"]
        for r in m:
            lines.append(f"  {r['ranks']} rank(s): {r['us_per_doc']:.2f} µs/doc over the whole run (first chunk "
                         f"{r['chunk_us_per_doc'][0]:.2f}, last {r['chunk_us_per_doc'][-1]:.2f}), {r['speedup']:.2f}x; "
                         f"gradient sum {r['sum_us']:.1f} µs/step (MPI allreduce of the same buffer "
                         f"{r['allreduce_us']:.1f}) ({r['checked']})")
    return lines


def _time_to_loss(rep: Report) -> list[str]:
    t = rep.extra.get("time_to_loss")
    if not t:
        return []
    lines = ["", f"Time to the nanoGPT reference's best validation loss, {t['target']:.4f} nats/char of the held-out "
                 "text (the whole split, evaluated outside the timed training; seconds of training, blasgpt's "
                 "including reading the text and training its tokenizer):"]
    for r in t["rows"]:
        if "with_evals" in r:
            got = (f"iteration {r['step']}: {r['seconds']:.2f} s wall ({r['with_evals']:.2f} s with its own "
                   f"evaluations), {r['cpu_seconds']:.2f} s CPU")
        elif r["reached"]:
            got = (f"step {r['step']} of {r['total_steps']} ({r['val_nats_per_char']:.4f}): {r['seconds']:.2f} s "
                   f"wall (start {r['start_seconds']:.2f} s), {r['cpu_seconds']:.2f} s CPU: {r['speedup']:.1f}x wall, "
                   f"{r['speedup_cpu']:.1f}x CPU")
        else:
            got = f"not reached: {r['val_nats_per_char']:.4f} after {r['step']} steps"
        lines.append(f"  {r['side']}: {got} ({r['checked']})")
    return lines


def format_table(rep: Report, command: str) -> str:
    lines = _header(rep, command)
    for key, (title, cols, left) in SECTIONS.items():
        sel = [r for r in rep.rows if r.section == key]
        if sel:
            lines += ["", title] + _table(sel, cols, left)
    ts = rep.extra.get("thread_scaling")
    if ts:
        lines += ["", "Thread scaling (wall clock, repeats in turns, a child process that never imported torch):"]
        for c in ts["cases"]:
            t1, t2 = min(c["times"][0]), min(c["times"][1])
            lines.append(f"  {c['workload']} batch {c['batch']} float32: 1 thread {t1:.3f}, 2 threads {t2:.3f} "
                         f"µs/{c['unit']}: {t1 / t2:.2f}x")
    lines += _long_runs(rep)
    lines += _backends(rep)
    if rep.extra.get("gemm_choices") or any(r.detail in ("auto", "native", "blas") for r in rep.rows):
        lines += _gemm_choices(rep.extra.get("gemm_choices"))
    if rep.comparisons:
        lines += ["", "Ratios (measured in this run):"] + [f"  {c}" for c in rep.comparisons]
    if rep.rows:
        lines += ["", "Every row was checked before timing:"]
    seen = set()
    for r in rep.rows:
        key = (r.section, r.workload, r.impl, r.dtype, r.batch, r.threads, r.checked)
        if key not in seen:
            seen.add(key)
            lines.append(f"  {r.section} {r.workload} {r.impl} {r.dtype} b{r.batch} t{r.threads}: {r.checked}")
    for a in rep.machine.get("adam", []):
        lines.append(f"Adam, {a['params']:,} {a['dtype']} params: {a['adam_ms']:.2f} ms; memory-bound estimate "
                     f"{a['bound_ms']:.2f} ms (7 streams at {a['bandwidth_gbs']:.0f} GB/s, a NumPy add's bandwidth): "
                     f"{a['ratio']:.2f}x the bound")
    lines += [f"note: {n}" for n in rep.notes]
    lines.append("wall seconds per part: " + ", ".join(f"{k} {v:.1f}" for k, v in rep.part_seconds.items()
                                                         if v >= 0.05)
                 + f" (total {sum(rep.part_seconds.values()):.0f})")
    return "\n".join(lines)
