"""``blasgpt bench``: the benchmark tables, a thin entry to the benchmark of a source checkout (bench/, not installed
with the package), found and imported only when run (blasgpt.bench_entry). Its own parser reads the flags:
--quick, --json FILE, --only PART, --data FILE; --help lists them."""

from __future__ import annotations

import argparse


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    b = sub.add_parser("bench", add_help=False, help="benchmark tables: training and generation speed vs NumPy and "
                                                     "PyTorch (a source checkout's bench/; bench --help: its options)")
    b.add_argument("--bench-dir", metavar="DIR",
                   help="the checkout's bench/ directory (default: $BLASGPT_BENCH_DIR, beside the package's source, "
                        "or ./bench)")


def run(args: argparse.Namespace) -> int:
    from ..bench_entry import run_bench

    return run_bench(args.bench_dir, args.extra)
