"""What the commands share: exit codes, the errors reported as usage errors (one line, with argparse's own too),
argparse number types, checkpoints that must hold a vocabulary, what signals do while a command works, and output
whose reader has gone."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
from typing import Any, Callable, Iterator, NoReturn, Optional, TextIO

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


@contextlib.contextmanager
def _handling(signals: tuple[int, ...], handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Within: ``handler`` handles these signals, except any this process was told to ignore (nohup ignores
    SIGHUP, a shell's background job SIGINT), which stay ignored; then the previous handlers come back."""
    previous = {s: signal.getsignal(s) for s in signals}
    for s, before in previous.items():
        if before is not signal.SIG_IGN:
            signal.signal(s, handler)
    try:
        yield
    finally:
        for s, before in previous.items():
            signal.signal(s, before)


def interrupting(*signals: int) -> contextlib.AbstractContextManager[None]:
    """Within: these signals (SIGTERM, SIGHUP) raise KeyboardInterrupt, as Ctrl-C does."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return _handling(signals, handler)


class StopRequest:
    """``with StopRequest(SIGINT, SIGTERM) as stop:`` the first of these signals only sets ``stop.asked``, so a
    loop that checks it between its steps ends there and keeps what it made; a second one raises KeyboardInterrupt
    at once. Signals the process ignores stay ignored."""

    def __init__(self, *signals: int):
        self.asked = False
        self._handling = _handling(signals, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        if self.asked:
            raise KeyboardInterrupt
        self.asked = True

    def __enter__(self) -> "StopRequest":
        self._handling.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._handling.__exit__(*exc)


READER_GONE = (errno.EPIPE, errno.EIO)  # the pipe's reader exited (`| head`); the terminal was closed


class QuietStream:
    """A text stream (sys.stdout, sys.stderr) that goes quiet when its reader is gone, instead of raising: its file
    descriptor then points at os.devnull, so this and every later write, and Python's flush at exit, go nowhere.
    Other errors are raised as usual; everything else is the wrapped stream's."""

    def __init__(self, stream: TextIO):
        self.stream = stream

    def write(self, text: str) -> int:
        try:
            return self.stream.write(text)
        except OSError as e:
            self._gone(e)
            return len(text)

    def flush(self) -> None:
        try:
            self.stream.flush()
        except OSError as e:
            self._gone(e)

    def _gone(self, error: OSError) -> None:
        if not silence_if_gone(self.stream, error):
            raise error

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def silence_if_gone(stream: TextIO, error: OSError) -> bool:
    """If ``error`` says the reader of ``stream`` is gone (a closed pipe or terminal), point its file descriptor at
    os.devnull (what is buffered and every later write go nowhere) and return True; otherwise False."""
    if error.errno not in READER_GONE:
        return False
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, stream.fileno())
    finally:
        os.close(devnull)
    stream.flush()  # what was buffered, now into os.devnull
    return True


@contextlib.contextmanager
def quiet_when_closed(during: bool) -> Iterator[None]:
    """``during``: within, sys.stdout and sys.stderr are QuietStreams (a closed pipe or terminal does not stop the
    work). In any case what is left in them is flushed quietly at the end, so Python's exit-time flush of a closed
    stdout neither prints "Exception ignored ... BrokenPipeError" nor changes the exit code."""
    streams = sys.stdout, sys.stderr
    quiet = QuietStream(sys.stdout), QuietStream(sys.stderr)
    if during:
        sys.stdout, sys.stderr = quiet  # type: ignore[assignment]
    try:
        yield
    finally:
        for stream in quiet:
            stream.flush()
        if during and sys.stdout is quiet[0]:  # (a command may have replaced it: keep that)
            sys.stdout = streams[0]
        if during and sys.stderr is quiet[1]:
            sys.stderr = streams[1]
