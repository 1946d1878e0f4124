"""The run directory: files that follow the user's umask, refusal of a directory that already holds a run
(--resume continues it, --overwrite replaces it), and the lock that keeps two processes from training into one
directory at once (a lock left by a killed process is taken over)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

import blasgpt
from blasgpt.data import current_umask

QUICK = ["--steps", "2", "--samples", "0", "--log-every", "0"]


def run(args: list[str], cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "blasgpt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, **kw)


@pytest.fixture
def cwd(tmp_path: Path) -> Path:
    (tmp_path / "small.txt").write_text("anna\nbob\nclara\ndave\neve\nfrank\n", encoding="utf-8")
    return tmp_path


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_run_files_follow_the_umask(cwd: Path, umask: int) -> None:
    """Checkpoints were 0600 whatever the umask (a temp file's mode); now every file of a run is 0666 & ~umask."""
    r = run(["train", "--data", "small.txt", *QUICK, "--checkpoint-every", "1", "--out", "run"], cwd,
            preexec_fn=lambda: os.umask(umask))
    assert r.returncode == 0, r.stderr
    files = sorted((cwd / "run").iterdir())
    assert [p.name for p in files] == ["ckpt-1.safetensors", "ckpt-2.safetensors", "ckpt.safetensors",
                                       "metrics.jsonl"]
    assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o666 & ~umask) for p in files}


def test_current_umask_reads_without_changing_it() -> None:
    old = os.umask(0o027)
    try:
        assert current_umask() == 0o027 and current_umask() == 0o027
    finally:
        os.umask(old)


def test_save_checkpoint_follows_the_umask(tmp_path: Path) -> None:
    model = blasgpt.Model(blasgpt.Config(vocab_size=5, n_embd=4, n_head=1))
    old = os.umask(0o007)
    try:
        blasgpt.save_checkpoint(tmp_path / "c.safetensors", model)
    finally:
        os.umask(old)
    assert mode(tmp_path / "c.safetensors") == 0o660
