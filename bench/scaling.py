"""More cores: 2 threads against 1 (timed in a child process that never imports torch, whose worker threads would
hold the second core), and data-parallel training over MPI ranks (each rank count its own ``mpiexec``, over one
long schedule: the first few hundred steps of a fresh model are not what a user's run spends its time on)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

import blasgpt
from recipe import MPI_RUN, LongRun
from timing import interleaved
from workloads import NamesWorkload, Workloads, check_model

BENCH = Path(__file__).resolve().with_name("bench.py")


def run_worker(name: str, args: dict[str, Any], timeout: float, launcher: tuple[str, ...] = (),
               env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``bench.py --worker name`` in a child process (under ``launcher``, e.g. mpiexec) and return the JSON
    object its last line prints."""
    r = subprocess.run([*launcher, sys.executable, str(BENCH), "--worker", name, json.dumps(args)],
                       capture_output=True, text=True, timeout=timeout, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(launcher) or 'the'} {name} worker failed: "
                           f"{(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def thread_scaling(quick: bool, data: str) -> dict[str, Any]:
    """2 threads vs 1 (wall clock, repeats in turns) at text d128 L4 T64 B12 and names d16, d64 batch 32, float32.
    Runs in the worker process."""
    if "torch" in sys.modules:
        raise AssertionError("thread scaling must run in a process that has not imported torch")
    # many short repeats rather than a few long ones: on a machine shared with other work, the best of them is
    # more likely to be a moment when both cores were free
    repeats, seconds = (2, 0.05) if quick else (16, 0.15)
    out: dict[str, Any] = {"cases": []}
    works = Workloads(data)
    tw = works.text("text-d128")
    models = [tw.model("float32", t) for t in (1, 2)]
    checked = [check_model(f"blasgpt text-d128 float32 t{t}", m, tw.check, tw.ref_loss, tw.ref_grads)
               for t, m in zip((1, 2), models)]
    res = interleaved([tw.runner(m) for m in models], repeats, seconds, True, [1, 2])
    out["cases"].append({"workload": "text-d128", "batch": tw.batch, "unit": "token", "times": [r[0] for r in res],
                         "checked": checked})
    for n_embd in (16, 64):
        w = works.names(n_embd)
        models = [w.model("float32", None, t, 32) for t in (1, 2)]
        checked = [check_model(f"blasgpt d{n_embd} float32 t{t}", m, w.check_batch, w.ref_loss, w.ref_grads)
                   for t, m in zip((1, 2), models)]
        res = interleaved([w.runner(m, 32) for m in models], repeats, seconds, True, [1, 2])
        out["cases"].append({"workload": w.name, "batch": 32, "unit": "doc", "times": [r[0] for r in res],
                             "checked": checked})
    out["torch_imported"] = "torch" in sys.modules
    return out


def thread_rows(rep: Any, quick: bool, data: str) -> None:
    cores = os.cpu_count() or 1
    if cores < 2:
        rep.notes.append(f"2-thread rows skipped: this machine has {cores} core(s)")
        return
    scaling = run_worker("threads", {"quick": quick, "data": data}, 900)
    if scaling["torch_imported"]:
        raise AssertionError("the thread-scaling child imported torch")
    rep.extra["thread_scaling"] = scaling


def mpi_worker(run: dict[str, Any]) -> None:
    """Under mpiexec: one schedule of data-parallel steps (names d64, batch 32, float32) as blasgpt.train takes them
    (shares cut once per chunk, the gradients summed by one GradientSum), timed chunk by chunk; then the gradient
    sum alone, and MPI's Allreduce of the same buffer; rank 0 prints one JSON line."""
    from mpi4py import MPI

    from blasgpt.parallel import GradientSum, data_parallel_step, share_bounds

    comm = MPI.COMM_WORLD
    lr = LongRun(**run)
    batch = 32
    w = NamesWorkload(64, blasgpt.load_docs())
    model = w.model("float32", batch=batch // comm.Get_size())  # this rank's share of each step
    ids = w.ids(0, lr.steps, batch)
    first = w.model("float32").loss(w.corpus.select(ids[0]))
    chunks = []
    loss = 0.0
    sums = GradientSum(comm, model.flat_grads)
    for c0 in range(0, lr.steps, lr.chunk):
        c1 = min(lr.steps, c0 + lr.chunk)
        comm.Barrier()
        t0 = time.perf_counter()
        bounds = share_bounds(w.corpus, ids[c0:c1], comm.Get_size(), w.cfg.block_size)
        for s in range(c0, c1):
            loss = data_parallel_step(model, w.corpus, ids[s], blasgpt.lr_at(s, lr.lr, lr.steps), comm, sums=sums,
                                      bounds=bounds[s - c0])
            if s == 0 and abs(loss - first) > 1e-5 * abs(first):
                raise AssertionError(f"the data-parallel loss of step 0 ({loss}) is not one process's ({first})")
        comm.Barrier()
        chunks.append((time.perf_counter() - t0) / (c1 - c0))
    buf = model.flat_grads
    sum_s, reduce_s = (_time_collective(comm, f) for f in (
        lambda: sums(0.0), lambda: comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)))
    sums.close()
    if comm.Get_rank() == 0:
        total = sum(t * min(lr.chunk, lr.steps - i * lr.chunk) for i, t in enumerate(chunks))
        many = comm.Get_size() > 1
        print(json.dumps({"ranks": comm.Get_size(), "steps": lr.steps, "us_per_doc": total / lr.steps / batch * 1e6,
                          "chunk_us_per_doc": [t / batch * 1e6 for t in chunks], "final_loss": loss,
                          "sum_us": sum_s * 1e6 if many else 0.0, "allreduce_us": reduce_s * 1e6 if many else 0.0,
                          "params": model.num_params,
                          "checked": "step 0's data-parallel loss equals one process's on the same batch (1e-5)"}),
              flush=True)


def _time_collective(comm: Any, call: Callable[[], Any], repeats: int = 200) -> float:
    """Seconds per call of ``call`` on every rank of ``comm``, ``repeats`` in a row."""
    comm.Barrier()
    t0 = time.perf_counter()
    for _ in range(repeats):
        call()
    comm.Barrier()
    return (time.perf_counter() - t0) / repeats


def mpi_rows(rep: Any, quick: bool, ranks: tuple[int, ...] = (1, 2)) -> None:
    from blasgpt.parallel import MPIUnavailable

    mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if mpiexec is None:
        rep.notes.append("MPI scaling skipped: mpiexec not found (pip install 'blasgpt[mpi]')")
        return
    run = MPI_RUN[quick]
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    try:
        rows = [run_worker("mpi", run.__dict__, 1800, (mpiexec, "-n", str(n)), env) for n in ranks]
    except (MPIUnavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as e:
        rep.notes.append(f"MPI scaling skipped: {e}")
        return
    for r in rows:
        r["speedup"] = rows[0]["us_per_doc"] / r["us_per_doc"]
    rep.extra["mpi"] = rows
    rep.comparisons.append(f"mpiexec -n {rows[-1]['ranks']} vs 1 rank, d64 batch 32 float32, {run.steps} steps: "
                           f"{rows[0]['us_per_doc']:.2f} -> {rows[-1]['us_per_doc']:.2f} µs/doc: "
                           f"{rows[-1]['speedup']:.2f}x")
