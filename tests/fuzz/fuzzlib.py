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

KNOWN = {
    "checkpoint-config-allocates": "load_checkpoint allocates the model its metadata config claims (4 buffers) "
                                   "before comparing the config with the tensors in the file, so a tiny file can "
                                   "ask for any amount of memory (MemoryError, or the OOM killer)",
    "checkpoint-json-recursion": "load_checkpoint lets RecursionError out of json.loads for deeply nested "
                                 "config/extra/vocab metadata (its except clause takes KeyError/ValueError/TypeError)",
    "unaligned-arrays": "the core accepts C-contiguous but misaligned int32/int64 arrays (numpy.frombuffer at an odd "
                        "offset) and reads them through typed pointers: undefined behaviour, reported by UBSan",
    "dtype-identity": "Batch accepts an integer dtype equal to int32/int64 (numpy.longlong, a dtype with metadata) "
                      "that the core then rejects by identity: 'offsets must have dtype int64, got int64'",
    "huge-int-argument": "an int argument beyond int64 (block_size, mean_over) raises OverflowError/TypeError "
                         "instead of ValueError",
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
