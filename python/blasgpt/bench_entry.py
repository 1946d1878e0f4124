"""``python -m blasgpt bench``: a thin entry to the benchmark, which is not part of the installed package (it lives
in the source checkout's ``bench/`` directory, with the PyTorch and NumPy baselines it needs). Found in order at
``--bench-dir``, ``$BLASGPT_BENCH_DIR``, beside the package's own source tree (an editable install) and in the
working directory; imported only when the command runs."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

PROG = "python -m blasgpt bench"


class BenchNotFound(Exception):
    """No benchmark directory where one was looked for; the message says how to run it."""


def _is_bench(d: Path) -> bool:
    return (d / "bench.py").is_file() and (d / "recipe.py").is_file()


def find_bench_dir(given: Optional[str] = None) -> Path:
    if given is not None:
        if not _is_bench(Path(given)):
            raise BenchNotFound(f"--bench-dir {given} is not the benchmark directory (no bench.py and recipe.py)")
        return Path(given)
    env = os.environ.get("BLASGPT_BENCH_DIR")
    if env:
        if not _is_bench(Path(env)):
            raise BenchNotFound(f"BLASGPT_BENCH_DIR={env} is not the benchmark directory (no bench.py and recipe.py)")
        return Path(env)
    for d in (Path(__file__).resolve().parents[2] / "bench", Path.cwd() / "bench"):
        if _is_bench(d):
            return d
    raise BenchNotFound("the benchmark is not part of the installed package: in a source checkout run "
                        "`python bench/bench.py` (or `python -m blasgpt bench --bench-dir CHECKOUT/bench`)")


def run_bench(bench_dir: Optional[str], argv: Sequence[str]) -> int:
    """Import the benchmark from its directory and run it with ``argv`` (its own options: --quick, --only, ...)."""
    try:
        d = find_bench_dir(bench_dir).resolve()
    except BenchNotFound as e:
        print(f"blasgpt bench: error: {e}", file=sys.stderr)
        return 1
    sys.path.insert(0, str(d))  # its modules import each other by name
    spec = importlib.util.spec_from_file_location("blasgpt_benchmark", d / "bench.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return int(module.main(list(argv), prog=PROG))
