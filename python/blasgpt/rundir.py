"""A run directory belongs to one run: a directory that already holds one is refused (``--resume`` continues it,
``--overwrite`` removes its files and starts over), and a lock file keeps two processes from training into it at
once. The command line and the Python API (``train``/``fit`` with ``out_dir``, ``resume=True``,
``overwrite=True``) follow the same rules; only the words of the messages differ (``Names``).

The lock is ``RUN_DIR/train.lock``, holding the pid and host of its owner, and held with ``flock`` for the
run's lifetime: the kernel drops it when the owner ends in any way, so a lock file left by a killed process
(SIGKILL, a crash) is recognised as stale and taken over, and a live owner's pid is never mistaken for a dead one.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import NamedTuple, Optional

from .data import atomic_write_bytes

LOCK_FILE = "train.lock"
METRICS_FILE = "metrics.jsonl"
RUN_PATTERNS = ("ckpt.safetensors", "ckpt-*.safetensors", METRICS_FILE)  # what makes a directory hold a run
OLD_RUN_PATTERNS = (*RUN_PATTERNS, "loss.png", ".ckpt*.tmp")  # what --overwrite removes
NEW_DIR_TRIES = 1000  # new_dir: name, name-2, ..., name-1000


class Names(NamedTuple):
    """How messages name the run directory and the two ways to use one that holds a run."""

    out: str
    resume: str
    overwrite: str


CLI = Names("--out", "--resume", "--overwrite")
API = Names("out_dir", "resume=True", "overwrite=True")


class RunDirError(Exception):
    """A run directory that cannot be used now; ``code`` is the exit code (2: a flag fixes it, 1: in use)."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def run_files(run_dir: Path, patterns: tuple[str, ...] = RUN_PATTERNS) -> list[Path]:
    """The files of a run in ``run_dir`` (none if it does not exist)."""
    if not run_dir.is_dir():
        return []
    return sorted({p for pattern in patterns for p in run_dir.glob(pattern) if p.is_file()})


def new_dir(parent: Path, name: str) -> Path:
    """Create and return ``parent/name``, or ``name-2``, ``name-3``, ... when taken: each made with an exclusive
    mkdir, so processes choosing at the same moment (default run directories named by the second) never share."""
    parent.mkdir(parents=True, exist_ok=True)
    for i in range(1, NEW_DIR_TRIES + 1):
        path = parent / (name if i == 1 else f"{name}-{i}")
        try:
            path.mkdir()
            return path
        except FileExistsError:
            continue
    raise OSError(f"cannot create a new directory in {parent}: {name} and {name}-2 ... {name}-{NEW_DIR_TRIES} "
                  f"all exist")


def check(run_dir: Path, resuming_here: bool, overwrite: bool, locked_by_us: bool = False,
          names: Names = CLI) -> None:
    """Refuse ``run_dir`` before any work is done: it is locked by a live run, or it holds a run that is neither
    resumed (``resuming_here``: the checkpoint comes from this directory) nor to be overwritten. Changes nothing."""
    if overwrite and resuming_here:
        raise RunDirError(f"{names.overwrite} would remove the run being resumed in {run_dir}; resume it without "
                          f"{names.overwrite}, or give another {names.out}", 2)
    fd = -1
    try:
        if not locked_by_us:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file (or no directory): nobody trains there
        pass
    if fd >= 0:
        try:
            if not _try_flock(fd, fcntl.LOCK_SH):
                raise _in_use(run_dir, fd, names)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    files = run_files(run_dir)
    if files and not resuming_here and not overwrite:
        latest = run_dir / "ckpt.safetensors"
        if names is CLI:
            resume = f"use --resume {latest if latest in files else 'CKPT'}"
        else:
            resume = f"pass {names.resume} with the model loaded from {latest if latest in files else 'a checkpoint'}"
        raise RunDirError(f"{names.out} {run_dir} already holds a run ({', '.join(p.name for p in files)}); {resume} "
                          f"to continue it, or {names.overwrite} to start over (which removes the old run's files "
                          f"first)", 2)


class RunLock:
    """Held from ``acquire`` until ``release`` (or the end of the process)."""

    def __init__(self, path: Path, fd: int, stale: str):
        self.path, self._fd = path, fd
        self.stale = stale  # the owner a stale lock file named ("pid N on host H"), or "" if there was none

    def release(self) -> None:
        if self._fd < 0:
            return
        try:
            st, now = os.fstat(self._fd), os.stat(self.path)
            if (st.st_dev, st.st_ino) == (now.st_dev, now.st_ino):
                os.unlink(self.path)  # while still locked: whoever opens the name next gets a new file
        except OSError:
            pass
        os.close(self._fd)  # drops the flock
        self._fd = -1


def acquire(run_dir: Path, resuming_here: bool = False, overwrite: bool = False, names: Names = CLI) -> RunLock:
    """Create ``run_dir`` if needed, lock it (RunDirError with the owner's pid if a live run holds it; a stale lock
    is taken over), check again under the lock that it may be used, and with ``overwrite`` remove the old run's
    files. Returns the lock; the caller releases it when the run ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir, names)
    try:
        check(run_dir, resuming_here, overwrite, locked_by_us=True, names=names)  # again: a run may have ended
        if overwrite and not resuming_here:
            for p in run_files(run_dir, OLD_RUN_PATTERNS):
                p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _lock(run_dir: Path, names: Names) -> RunLock:
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            for _ in range(20):  # a few tries: check() in a process starting now holds a shared lock for a moment
                if _try_flock(fd, fcntl.LOCK_EX):
                    break
                time.sleep(0.01)
            else:
                raise _in_use(run_dir, fd, names)
            st = os.fstat(fd)
            try:
                now: Optional[os.stat_result] = os.stat(path)
            except FileNotFoundError:
                now = None
            if now is None or (st.st_dev, st.st_ino) != (now.st_dev, now.st_ino):
                os.close(fd)  # the owner released (removed) it between our open and flock: lock the new file
                continue
            stale = _owner(fd)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            return RunLock(path, fd, stale)
        except BaseException:
            try:
                os.close(fd)
            except OSError:
                pass
            raise


def _try_flock(fd: int, kind: int) -> bool:
    try:
        fcntl.flock(fd, kind | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _owner(fd: int) -> str:
    """'pid N on host H' from a lock file's contents, or '' when it holds none (new, or being written)."""
    try:
        pid, host = os.pread(fd, 300, 0).decode("utf-8", "replace").split()[:2]
        return f"pid {int(pid)} on host {host}"
    except (OSError, ValueError):
        return ""


def _in_use(run_dir: Path, fd: int, names: Names) -> RunDirError:
    owner = _owner(fd) or "pid unknown"
    return RunDirError(f"{names.out} {run_dir} is in use by another training run ({owner}, lock "
                       f"{run_dir / LOCK_FILE}); wait for it to end, or give another {names.out}", 1)


def trim_metrics(run_dir: Path, step: int) -> str:
    """Make ``run_dir``'s metrics.jsonl end at ``step``, where a run continues: drop its rows after that step (a
    run that failed after logging past its last checkpoint, or a resume from an older checkpoint) and a last line
    cut short (a process killed mid-write), by writing the kept lines to a temporary file renamed over it. Other
    lines that are not rows stay as they are. Returns what was dropped, as a line for the user ('' if nothing)."""
    path = run_dir / METRICS_FILE
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ""
    lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
    tail = data[data.rfind(b"\n") + 1:]  # after the last newline: nothing, or a line without its newline
    torn = bool(tail) and _row_step(tail) is None
    if tail and not torn:
        lines.append(tail + b"\n")
    kept = [line for line in lines if (_row_step(line) or 0) <= step]  # (a line that is not a row stays)
    later = len(lines) - len(kept)
    new = b"".join(kept)
    if new == data:
        return ""
    atomic_write_bytes(path, new)
    what = [f"{later} row{'s' * (later != 1)} after step {step} (the step this run continues from)"] if later else []
    if torn:
        what.append("a last line cut short")
    return f"{path}: dropped {' and '.join(what)}" if what else ""


def _row_step(line: bytes) -> Optional[int]:
    """The step of a metrics row, or None for a line that is not one."""
    try:
        row = json.loads(line)
    except ValueError:  # (UnicodeDecodeError included)
        return None
    step = row.get("step") if isinstance(row, dict) else None
    return step if isinstance(step, int) and not isinstance(step, bool) else None


__all__ = ["API", "CLI", "LOCK_FILE", "METRICS_FILE", "Names", "RunDirError", "RunLock", "acquire", "check",
           "new_dir", "run_files", "trim_metrics"]
