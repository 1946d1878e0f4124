"""What the commands share: exit codes, the errors reported as usage errors (one line, with argparse's own too),
argparse number types, checkpoints that must hold a vocabulary."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable, NoReturn, Optional

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad flag values: reported with exit code 2."""


def one_line(problem: object) -> str:
    """An error message as one line (a message of several lines, e.g. from a library, joined with '; ')."""
    return "; ".join(part.strip() for part in str(problem).splitlines() if part.strip())


def print_usage_error(prog: str, message: str, name: Optional[str] = None) -> None:
    """A usage error as the user sees it on stderr: ``NAME: error: MESSAGE`` (one line) and where the flags are
    described."""
    print(f"{name or prog}: error: {one_line(message)}\n(see {prog} --help)", file=sys.stderr)


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser whose errors (invalid choice, bad value, missing or unrecognized argument) are the one line
    of print_usage_error and exit code 2, where argparse prints the whole usage first; --help is unchanged.
    ``error_name`` names the command in the error line when it is not ``prog``. Its subparsers are of this class
    too (argparse makes them of the parent's class)."""

    def __init__(self, *args: Any, error_name: Optional[str] = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.error_name = error_name

    def error(self, message: str) -> NoReturn:
        print_usage_error(self.prog, message, self.error_name)
        sys.exit(EXIT_USAGE)


class MissingDependency(Exception):
    """An optional dependency a command needs is not installed: reported with exit code 1."""


def int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= lo, with a message that says which rule was broken."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    return parse


positive_int, nonneg_int = int_at_least(1), int_at_least(0)


def load_for_text(path: str) -> Checkpoint:
    """A checkpoint whose tokens can be turned into text (it has a vocabulary)."""
    ck = load_checkpoint(path)
    if ck.tokenizer is None:
        raise CheckpointError(f"{path}: has no vocabulary, so its tokens cannot be turned into text")
    return ck
