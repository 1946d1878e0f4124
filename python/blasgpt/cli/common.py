"""What the commands share: exit codes, the errors reported as usage errors, argparse number types, checkpoints
that must hold a vocabulary."""

from __future__ import annotations

import argparse
from typing import Callable

from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """Bad flag values: reported with exit code 2."""


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
