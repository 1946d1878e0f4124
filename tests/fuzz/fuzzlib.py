"""What the fuzz harnesses share: the rule for allowed errors, and the known problems of blasgpt not fixed yet.

A harness turns a broken promise into an exception that escapes its TestOneInput; atheris then reports it as a
crash, writes the input to an artifact file and exits non-zero. A known problem is reported once per run on stderr
instead (a line starting "KNOWN ISSUE"), so a short CI run stays about new findings; FUZZ_STRICT=1 makes known
problems findings too. Delete an entry of KNOWN once blasgpt is fixed: then its inputs fail the run again.
"""

from __future__ import annotations

import os
import sys

STRICT = os.environ.get("FUZZ_STRICT") == "1"

KNOWN: dict[str, str] = {
    # (empty: the five problems first found here -- a checkpoint config allocating before its tensors were checked,
    # RecursionError from nested metadata, misaligned arrays reaching typed pointers, int64 dtypes equal but not
    # identical, ints beyond int64 -- are fixed; their reproducers stay in corpus/ as regression seeds)
}


class Finding(AssertionError):
    """blasgpt broke its contract on this input."""


_reported: set[str] = set()


def known(name: str, detail: str) -> None:
    """This input hit the known problem ``name`` (a key of KNOWN): say so once, or fail under FUZZ_STRICT=1."""
    message = f"known issue {name}: {KNOWN[name]} ({detail})"
    if STRICT:
        raise Finding(message)
    if name not in _reported:
        _reported.add(name)
        print(f"KNOWN ISSUE {name} reproduced, not failing (FUZZ_STRICT=1 would): {detail}", file=sys.stderr,
              flush=True)


def allowed_error(e: BaseException, allowed: tuple[type[BaseException], ...]) -> None:
    """Return if ``e`` is one of the errors the contract allows, with a message; else it is a finding."""
    if not isinstance(e, allowed):
        raise Finding(f"{type(e).__name__} is not among the allowed errors "
                      f"({', '.join(t.__name__ for t in allowed)}): {e}") from e
    if not str(e).strip():
        raise Finding(f"{type(e).__name__} raised without a message") from e
