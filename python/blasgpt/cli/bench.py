"""``blasgpt bench``: the benchmark tables, a thin entry that imports the benchmark only when run (its own parser
reads the flags: --quick, --json FILE, --only PART, --mpi; --help lists them)."""

from __future__ import annotations

import argparse


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sub.add_parser("bench", add_help=False, help="benchmark tables: training and generation speed vs NumPy and "
                                                 "PyTorch (bench --help: its options)")


def run(args: argparse.Namespace) -> int:
    from ..bench import main

    return main(args.extra)
