"""A run directory belongs to one run: a directory that already holds one is refused (``--resume`` continues it,
``--overwrite`` removes its files and starts over), and a lock file keeps two processes from training into it at
once.

The lock is ``RUN_DIR/train.lock``, holding the pid and host of its owner, and held with ``flock`` for the
run's lifetime: the kernel drops it when the owner ends in any way, so a lock file left by a killed process
(SIGKILL, a crash) is recognised as stale and taken over, and a live owner's pid is never mistaken for a dead one.
"""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path
from typing import Optional

LOCK_FILE = "train.lock"
RUN_PATTERNS = ("ckpt.safetensors", "ckpt-*.safetensors", "metrics.jsonl")  # what makes a directory hold a run
OLD_RUN_PATTERNS = (*RUN_PATTERNS, "loss.png", ".ckpt*.tmp")  # what --overwrite removes


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


def check(run_dir: Path, resuming_here: bool, overwrite: bool, locked_by_us: bool = False) -> None:
    """Refuse ``run_dir`` before any work is done: it is locked by a live run, or it holds a run that is neither
    resumed (``resuming_here``: the checkpoint comes from this directory) nor to be overwritten. Changes nothing."""
    if overwrite and resuming_here:
        raise RunDirError(f"--overwrite would remove the run being resumed in {run_dir}; resume it without "
                          f"--overwrite, or give another --out", 2)
    fd = -1
    try:
        if not locked_by_us:
            fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:  # no lock file (or no directory): nobody trains there
        pass
    if fd >= 0:
        try:
            if not _try_flock(fd, fcntl.LOCK_SH):
                raise _in_use(run_dir, fd)
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)
    files = run_files(run_dir)
    if files and not resuming_here and not overwrite:
        latest = run_dir / "ckpt.safetensors"
        resume = f"--resume {latest}" if latest in files else "--resume CKPT"
        raise RunDirError(f"--out {run_dir} already holds a run ({', '.join(p.name for p in files)}); use {resume} "
                          f"to continue it, or --overwrite to start over (which removes the old run's files first)", 2)


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


def acquire(run_dir: Path, resuming_here: bool = False, overwrite: bool = False) -> RunLock:
    """Create ``run_dir`` if needed, lock it (RunDirError with the owner's pid if a live run holds it; a stale lock
    is taken over), check again under the lock that it may be used, and with ``overwrite`` remove the old run's
    files. Returns the lock; the caller releases it when the run ends."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock(run_dir)
    try:
        check(run_dir, resuming_here, overwrite, locked_by_us=True)  # again: a run may have ended in between
        if overwrite and not resuming_here:
            for p in run_files(run_dir, OLD_RUN_PATTERNS):
                p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _lock(run_dir: Path) -> RunLock:
    path = run_dir / LOCK_FILE
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            for _ in range(20):  # a few tries: check() in a process starting now holds a shared lock for a moment
                if _try_flock(fd, fcntl.LOCK_EX):
                    break
                time.sleep(0.01)
            else:
                raise _in_use(run_dir, fd)
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


def _in_use(run_dir: Path, fd: int) -> RunDirError:
    owner = _owner(fd) or "pid unknown"
    return RunDirError(f"--out {run_dir} is in use by another training run ({owner}, lock {run_dir / LOCK_FILE}); "
                       f"wait for it to end, or give another --out", 1)


__all__ = ["LOCK_FILE", "RunDirError", "RunLock", "acquire", "check", "run_files"]
