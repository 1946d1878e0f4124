"""Clocks and repeats: CPU time of the calling thread for single-threaded work (BLAS and OpenMP pools are held to
one thread by bench.py, so nothing else runs on this thread's clock), wall time for multi-threaded work; the
machine's FMA peak and how busy other processes kept it."""

from __future__ import annotations

import os
import platform
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

import blasgpt
from blasgpt import _core

SINGLE_THREAD_ENV = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def clock_for(threads: int, wall: bool = False) -> tuple[Callable[[], float], str]:
    return (time.perf_counter, "wall") if wall or threads != 1 else (time.thread_time, "thread-cpu")


def time_repeats(run: Callable[[], int], repeats: int, seconds: float, threads: int = 1,
                 wall: bool = False) -> tuple[list[float], str]:
    """µs per unit of ``run`` (which does some work and returns how many units: documents, tokens, calls), each
    repeat running it until about ``seconds`` have passed."""
    clock, name = clock_for(threads, wall)
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


def interleaved(runs: Sequence[Callable[[], int]], repeats: int, seconds: float, wall: bool,
                threads: Sequence[int]) -> list[tuple[list[float], str]]:
    """Several timings taken in turns (repeat r of each before repeat r + 1 of any, the order rotated by one each
    repeat so that none always runs first), so a ratio between them sees the same machine load."""
    got: list[list[float]] = [[] for _ in runs]
    names = [""] * len(runs)
    for r in range(repeats):
        for j in range(len(runs)):
            i = (j + r) % len(runs)
            t, names[i] = time_repeats(runs[i], 1, seconds, threads[i], wall)
            got[i] += t
    return list(zip(got, names))


def best_of(fn: Callable[[], None], k: int = 7) -> float:
    """The shortest of ``k`` wall-clock runs of ``fn``, in seconds."""
    times = []
    for _ in range(k):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def probe_peaks(info: dict[str, Any], probes: int) -> None:
    """The FMA peak of one core (GFLOP/s), float32 and float64: the best of many short probes (each 20 ms of the
    core's probe, itself the best of 8 runs), so that a machine shared with other work still shows what an unshared
    moment reaches; kept as the larger of this and any earlier measurement in ``info``."""
    for dtype, key in (("float32", "peak_gflops_f32"), ("float64", "peak_gflops_f64")):
        best = max(_core.peak_gflops(dtype, 0.02) for _ in range(probes))
        info[key] = max(best, info.get(key, 0.0))


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
    env = {k: os.environ[k] for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "BLASGPT_GEMM", "BLASGPT_ISA",
                                      *SINGLE_THREAD_ENV) if k in os.environ}
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
            "blasgpt": blasgpt.__version__, "openblas": _core.blas_info(), "native_isa": _core.native_isa(),
            "env": env}


class Load:
    """How much CPU time other processes took while the benchmark ran (from /proc/stat; nothing elsewhere)."""

    def __init__(self) -> None:
        self.machine0, self.own0 = _cpu_jiffies(), _own_cpu()

    def others_pct(self) -> Optional[float]:
        m1 = _cpu_jiffies()
        if not (self.machine0 and m1 and m1[1] > self.machine0[1]):
            return None
        others = (m1[0] - self.machine0[0]) - (_own_cpu() - self.own0)
        return max(0.0, 100 * others / (m1[1] - self.machine0[1]))


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
