"""Command line: ``python -m blasgpt train | sample | eval | bench | plot | sweep`` (also the ``blasgpt`` command).

One module per command, each with ``add_parser(subparsers)`` and ``run(args) -> exit code``; this module parses,
runs the command and turns errors into one line on stderr and an exit code (never a traceback): 0 success, 1 data /
file / model error, 2 usage error, 130 interrupted (after saving a checkpoint); a warning is one line on stderr too.
Under mpiexec, rank 0 alone talks to the user and a rank that fails ends the whole job.
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Any, Callable, Optional, Sequence

from .. import __version__, rundir
from ..checkpoint import CheckpointError
from ..config import MemoryLimitError
from ..data import DataError
from ..parallel import MPIUnavailable, abort_on_error, world
from ..train import TrainingError
from . import bench, eval, plot, sample, sweep, train
from .common import (EXIT_ERROR, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, ArgumentParser, MissingDependency, UsageError,
                     one_line, print_usage_error, quiet_when_closed)

COMMANDS = {"train": train, "sample": sample, "eval": eval, "bench": bench, "sweep": sweep, "plot": plot}
PASSES_ON_UNKNOWN_FLAGS = ("sweep", "bench")  # (to every train run it starts; to the benchmark's own parser)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="blasgpt",
        description="Train a tiny character-level GPT (Karpathy's microgpt, exactly) and sample from it. "
                    "With no data file it learns to invent names from the bundled names.txt.",
        epilog="Examples:\n"
               "  python -m blasgpt train                       # microgpt: names, d16, 1000 steps, prints names\n"
               "  python -m blasgpt train --data my.txt --steps 5000 --batch-size 16 --dtype float32\n"
               "  python -m blasgpt sample --checkpoint runs/DATE/ckpt.safetensors --num 10 --prompt ma\n"
               "  python -m blasgpt train --data shakespeare --data-mode text --n-embd 128 --n-layer 4 \\\n"
               "      --block-size 64 --batch-size 12 --dtype float32 --steps 2000 --lr 0.003 --out runs/book\n"
               "  python -m blasgpt sample --checkpoint runs/book/ckpt.safetensors --length 500 --prompt ROMEO:",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blasgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for command in COMMANDS.values():
        command.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command not in PASSES_ON_UNKNOWN_FLAGS:  # said by the command's parser: "blasgpt train: ..."
        _command_parser(parser, args.command).error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    command = COMMANDS[args.command].run
    try:
        args.comm = world() if args.command == "train" else None
    except MPIUnavailable as e:
        print(f"blasgpt {args.command}: error: {one_line(e)}", file=sys.stderr)
        return EXIT_ERROR
    with quiet_when_closed(during=args.command == "train"):  # a closed pipe or terminal never stops training
        if args.comm is not None:
            return _main_mpi(command, args)
        return _run(command, args)


def _command_parser(parser: argparse.ArgumentParser, command: str) -> argparse.ArgumentParser:
    """The subparser of ``command``."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[command]


def _main_mpi(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Under mpiexec: rank 0 alone talks to the user; any rank that fails ends the whole job (no hang)."""
    comm = args.comm
    if comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of this process)
    with abort_on_error(comm):
        code = _run(command, args)
        if code not in (EXIT_OK, EXIT_INTERRUPTED):
            raise SystemExit(code)  # abort_on_error ends the other ranks too
        return code


def _run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    def say(problem: object) -> None:
        print(f"blasgpt {args.command}: error: {one_line(problem)}", file=sys.stderr)

    try:
        with warnings.catch_warnings():
            warnings.showwarning = _warning_line(args)
            return command(args)
    except UsageError as e:
        print_usage_error(f"blasgpt {args.command}", str(e))
        return EXIT_USAGE
    except rundir.RunDirError as e:
        say(e)
        return e.code
    except MemoryError as e:  # refused before allocating (says what it needs), or an allocation that failed anyway
        detail = f" ({e})" if str(e) else ""
        say(e if isinstance(e, MemoryLimitError) else f"out of memory{detail}; try a smaller model, batch or request")
        return EXIT_ERROR
    except (DataError, CheckpointError, TrainingError, MissingDependency, OSError) as e:
        say(e)
        return EXIT_ERROR
    except ValueError as e:  # e.g. sampling options that do not fit this model (top-k > vocab, long prompt)
        say(e)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"blasgpt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if getattr(args, "run_lock", None) is not None:
            args.run_lock.release()


def _warning_line(args: argparse.Namespace) -> Callable[..., None]:
    """A warnings.showwarning that prints ``blasgpt COMMAND: warning: message``, one line on stderr (rank 0 alone
    under mpiexec), instead of Python's two lines naming the source."""
    quiet = args.comm is not None and args.comm.Get_rank() != 0

    def show(message: Any, category: Any, filename: Any, lineno: Any, file: Any = None, line: Any = None) -> None:
        if not quiet:
            print(f"blasgpt {args.command}: warning: {one_line(message)}", file=sys.stderr)

    return show


__all__ = ["EXIT_ERROR", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main"]
