"""The benchmark: blasgpt's training and generation speed against baselines, every row checked before it is timed.

Run ``python bench/bench.py`` in a source checkout (or ``python -m blasgpt bench``, which finds this directory);
``--quick`` for a smoke run, ``--only PART`` for one part, ``--json FILE`` to keep the numbers, ``--data`` for the
text the text parts train on (default: the ``shakespeare`` named dataset, tinyshakespeare, which blasgpt fetches
once and checks). Parts (``--only``):

- d16, d64: microgpt's size on names.txt (n_head 4, one layer, block 16): blasgpt (``Model.train_steps``, the loop
  in C++; the default gemm backend), the NumPy explicit-backprop baseline (numpy_gpt.py) and PyTorch eager autograd
  (torch_gpt.py), µs per document (training.py);
- text-d128, text-d384: text mode (windows of one token stream), blasgpt vs PyTorch with
  scaled_dot_product_attention, µs per token (training.py);
- backends: the default gemm backend (auto: per product shape the faster of blasgpt's kernels and OpenBLAS, measured
  on this machine) against each forced one, at d16 and d64 batch 16 and the two text sizes (backends.py); every
  blasgpt row elsewhere runs the default backend, and the report lists each auto model's choice per product shape
  with both timings;
- overhead: the Python call paths: a ``train_step`` loop vs one ``train_steps`` call, ``Tokenizer.batch``,
  ``blasgpt.train`` vs a ``train_step`` loop (calls.py);
- threads: 2 threads vs 1, in a child process that never imports torch; mpi: ``mpiexec -n 2`` vs 1 rank over one
  long schedule (scaling.py);
- steady: the last against the first chunk of a long float32 run, names d64 batch 32 and a small text model, both
  gemm backends; whole-run: text mode at nanoGPT's CPU size, wall time to a fixed validation loss, blasgpt against
  the same PyTorch model trained with the same recipe (long_runs.py; sizes and settings in recipe.py);
- time-to-loss: the nanoGPT reference (nanogpt_ref.py: nanoGPT's architecture and shakespeare_char CPU recipe) to
  its best validation loss, then blasgpt's ``--preset nanogpt-cpu`` and ``--preset fast-text`` to the same loss in
  nats per character of the text: wall and CPU seconds and their ratios (time_to_loss.py);
- generate: tokens/s of the KV-cached generator vs a loop that recomputes the context per token (generation.py).

Each row first proves its arithmetic (loss and gradients against blasgpt's float64 path, which the test suite checks
against finite differences, PyTorch and microgpt's own trace), then times whole training steps. Clocks: CPU time of
the calling thread for single-threaded rows (BLAS and OpenMP pools are held to one thread), wall time for
multi-threaded rows and long runs. Rows report the median and the minimum over repeats; GFLOP/s and % of peak use the
minimum and the matmul FLOPs of docs/MATH.md (``blasgpt.training_flops``: causal attention as n(n+1)/2 pairs),
against the FMA peak of one core measured in the same run by the core's probe, times the row's threads.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from backends import backend_rows
from blasgpt.cli.common import ArgumentParser, one_line
from calls import call_rows
from generation import bench_adam, generate_rows
from long_runs import steady_rows, whole_run_rows, whole_run_worker
from report import Report, format_table
from scaling import mpi_rows, mpi_worker, thread_rows, thread_scaling
from time_to_loss import time_to_loss_rows
from time_to_loss import worker as time_to_loss_worker
from timing import SINGLE_THREAD_ENV, Load, machine_info, probe_peaks
from training import names_rows, text_rows
from workloads import Workloads

PARTS = ("threads", "mpi", "steady", "whole-run", "time-to-loss", "d16", "d64", "text-d128", "text-d384", "backends",
         "overhead", "generate")
TEXT_PARTS = ("threads", "steady", "whole-run", "time-to-loss", "text-d128", "text-d384", "backends", "generate")
DEFAULT_DATA = "shakespeare"


def run(quick: bool = False, only: Optional[str] = None, data: str = DEFAULT_DATA) -> Report:
    """Every part (or ``only`` one), in this order: the parts that run in other processes first (before this one
    imports torch), then the single-process rows."""
    repeats, seconds = (2, 0.05) if quick else (5, 0.4)
    info = machine_info()
    rep = Report(info)
    probe_peaks(info, 10 if quick else 25)
    load = Load()
    works = Workloads(data)
    if only is None or only in TEXT_PARTS:  # a text that cannot be read stops the run here, before any timing
        s = works.stream()
        info["text"] = {"source": s.source, "tokens": int(s.tokens.size), "vocab_size": s.tok.vocab_size}
    rep.extra["gemm_choices"] = []  # the auto backend's plan of each model timed on it (Report.add_plan)
    have_torch = importlib.util.find_spec("torch") is not None  # imported below, after the child processes ran
    if not have_torch:
        rep.notes.append("PyTorch not installed: its rows are skipped (pip install torch to include them)")
    def selected(name: str, *also: str) -> bool:  # whether the run includes a part: all, --only it, or --only one of
        return only is None or only in (name, *also)  # ``also`` (the parts that need it)

    parts: list[tuple[str, bool, Callable[[], Any]]] = [
        ("threads", selected("threads", "d16", "d64", "text-d128"), lambda: thread_rows(rep, quick, data)),
        ("mpi", selected("mpi"), lambda: mpi_rows(rep, quick)),
        ("steady", selected("steady"), lambda: steady_rows(rep, works, quick)),
        ("whole-run", selected("whole-run"), lambda: whole_run_rows(rep, quick, data, have_torch)),
        ("time-to-loss", selected("time-to-loss"), lambda: time_to_loss_rows(rep, quick, data, have_torch)),
        ("torch", have_torch and selected("torch", "d16", "d64", "text-d128", "text-d384"),
         lambda: _import_torch(rep)),
        ("d16", selected("d16"), lambda: names_rows(rep, works, 16, have_torch, repeats, seconds)),
        ("d64", selected("d64"), lambda: names_rows(rep, works, 64, have_torch, repeats, seconds)),
        ("text-d128", selected("text-d128"), lambda: text_rows(rep, works, "text-d128", have_torch, repeats, seconds)),
        ("text-d384", only == "text-d384" or (only is None and not quick),  # a step takes seconds
         lambda: text_rows(rep, works, "text-d384", have_torch, 1 if quick else 3, 0.0)),
        ("backends", selected("backends"), lambda: backend_rows(rep, works, quick)),
        ("overhead", selected("overhead"), lambda: call_rows(rep, works.names(16), quick, repeats, seconds)),
        ("generate", selected("generate"),
         lambda: generate_rows(rep, works.text("text-d128"), quick, repeats, seconds)),
    ]
    if quick and only is None:
        rep.notes.append("text-d384 skipped by --quick (a step takes seconds): --only text-d384 runs it")
    rep.done("setup")
    for name, runs, part in parts:
        if runs:
            part()
            rep.done(name)
    if only is None:
        info["adam"] = bench_adam(quick)
        rep.done("adam")
    others = load.others_pct()
    if others is not None:
        info["others_cpu_pct"] = others
    first = (info["peak_gflops_f32"], info["peak_gflops_f64"])
    probe_peaks(info, 10 if quick else 25)  # again at the end: a peak that grew means the first saw a busy core
    if (info["peak_gflops_f32"], info["peak_gflops_f64"]) != first:
        rep.rescale_peaks()
    rep.done("setup")
    return rep


def _import_torch(rep: Report) -> None:
    import torch

    torch.set_num_threads(1)
    rep.machine["torch"] = torch.__version__


def _reexec_single_threaded(argv: Sequence[str], prog: str) -> Optional[int]:
    """BLAS and OpenMP pools must be one thread each (their idle threads would spin into the CPU clock); they read
    that at load time, so rerun this benchmark in a child process with the variables set."""
    if all(os.environ.get(k) == "1" for k in SINGLE_THREAD_ENV):
        return None
    env = dict(os.environ, **{k: "1" for k in SINGLE_THREAD_ENV})
    return subprocess.call([sys.executable, str(Path(__file__).resolve()), *argv, "--prog", prog], env=env)


def _worker(name: str, args: dict[str, Any]) -> None:
    """A part that runs in a child process: print its result as one JSON line."""
    if name == "threads":
        print(json.dumps(thread_scaling(args["quick"], args["data"])))
    elif name == "whole-run":
        print(json.dumps(whole_run_worker(args["impl"], args["quick"], args["data"])))
    elif name == "time-to-loss":
        print(json.dumps(time_to_loss_worker(args)))
    elif name == "mpi":
        mpi_worker(args)
    else:
        raise ValueError(f"no worker {name!r}")


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (a temporary file beside it, renamed over it)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parser(prog: str) -> argparse.ArgumentParser:
    p = ArgumentParser(prog=prog, error_name=_name(prog), description=(__doc__ or "").split("\n\n")[0],
                       epilog="(python -m blasgpt bench also takes --bench-dir DIR: this directory, when it is not "
                              "found by itself)" if "blasgpt" in prog else None)
    p.add_argument("--quick", action="store_true", help="a smoke run (about a minute): fewer, shorter repeats and "
                                                        "tiny long runs")
    p.add_argument("--json", metavar="FILE", help="also write the tables and machine facts as JSON")
    p.add_argument("--only", choices=PARTS, help="one part only")
    p.add_argument("--data", default=DEFAULT_DATA, metavar="FILE",
                   help=f"the text of the text-mode parts: a file or a named dataset (default {DEFAULT_DATA})")
    p.add_argument("--worker", nargs=2, metavar=("NAME", "JSON"), help=argparse.SUPPRESS)
    p.add_argument("--prog", help=argparse.SUPPRESS)  # how the user started it (for the printed command)
    return p


def _name(prog: str) -> str:
    """The benchmark's name in its error lines."""
    return "blasgpt bench" if "blasgpt" in prog else "bench.py"


def main(argv: Optional[Sequence[str]] = None, prog: str = "python bench/bench.py") -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser(prog).parse_args(argv)
    prog = args.prog or prog
    if args.prog:
        argv = argv[:argv.index("--prog")]
    code = _reexec_single_threaded(argv, prog) if args.worker is None else None
    if code is not None:
        return code
    command = " ".join([prog, *argv])
    try:
        if args.worker:
            _worker(args.worker[0], json.loads(args.worker[1]))
            return 0
        rep = run(quick=args.quick, only=args.only, data=args.data)
    except (AssertionError, ValueError, OSError, RuntimeError) as e:
        print(f"{_name(prog)}: error: {one_line(e)}", file=sys.stderr)
        return 1
    print(format_table(rep, command))
    if args.json:
        _write(Path(args.json), json.dumps(rep.to_json(command), indent=1))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
