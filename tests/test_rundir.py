"""The run directory: files that follow the user's umask, refusal of a directory that already holds a run
(--resume continues it, --overwrite replaces it), and the lock that keeps two processes from training into one
directory at once (a lock left by a killed process is taken over)."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

import blasgpt
from blasgpt import rundir
from blasgpt.data import current_umask
from blasgpt.rundir import LOCK_FILE
from conftest import blasgpt_cli

QUICK = ["--steps", "2", "--samples", "0", "--log-every", "0"]


run = blasgpt_cli


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


# -- a directory that holds a run ----------------------------------------------------------------------------------
def test_a_directory_holding_a_run_is_refused_then_overwritten_or_resumed(cwd: Path) -> None:
    """Before: a second `train --out run` silently replaced ckpt.safetensors with an unrelated model and appended
    to the first run's metrics.jsonl. Now it is refused (exit 2, nothing touched); --overwrite removes the old
    run's files first; --resume continues it in place."""
    assert run(["train", "--data", "small.txt", *QUICK, "--checkpoint-every", "1", "--out", "run"], cwd).returncode == 0
    (cwd / "run" / "notes.txt").write_text("mine")  # not a run file: --overwrite leaves it alone
    before = {p.name: p.read_bytes() for p in (cwd / "run").iterdir()}
    r = run(["train", "--data", "small.txt", *QUICK, "--seed", "7", "--out", "run"], cwd)
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr == ("blasgpt train: error: --out run already holds a run (ckpt-1.safetensors, ckpt-2.safetensors, "
                        "ckpt.safetensors, metrics.jsonl); use --resume run/ckpt.safetensors to continue it, or "
                        "--overwrite to start over (which removes the old run's files first)\n")
    assert {p.name: p.read_bytes() for p in (cwd / "run").iterdir()} == before

    r = run(["train", "--data", "small.txt", "--steps", "3", "--samples", "0", "--log-every", "0", "--seed", "7",
             "--out", "run", "--overwrite"], cwd)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in (cwd / "run").iterdir()) == ["ckpt-3.safetensors", "ckpt.safetensors",
                                                              "metrics.jsonl", "notes.txt"]
    assert [json.loads(line)["step"] for line in (cwd / "run" / "metrics.jsonl").read_text().splitlines()] == [3]
    assert blasgpt.load_checkpoint(cwd / "run" / "ckpt.safetensors").extra["seed"] == 7

    r = run(["train", "--data", "small.txt", "--steps", "5", "--samples", "0", "--log-every", "0",
             "--resume", "run/ckpt.safetensors"], cwd)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line)["step"] for line in (cwd / "run" / "metrics.jsonl").read_text().splitlines()] == [3, 5]
    assert not (cwd / "run" / LOCK_FILE).exists()


def test_resume_into_another_directory_holding_a_run_is_refused(cwd: Path) -> None:
    for out in ("a", "b"):
        assert run(["train", "--data", "small.txt", *QUICK, "--out", out], cwd).returncode == 0
    r = run(["train", "--data", "small.txt", "--steps", "4", "--samples", "0", "--resume", "a/ckpt.safetensors",
             "--out", "b"], cwd)
    assert r.returncode == 2 and "--out b already holds a run" in r.stderr, r.stderr
    r = run(["train", "--data", "small.txt", "--steps", "4", "--samples", "0", "--resume", "a/ckpt.safetensors",
             "--out", "b", "--overwrite"], cwd)
    assert r.returncode == 0, r.stderr
    assert blasgpt.load_checkpoint(cwd / "b" / "ckpt.safetensors").step == 4


# -- the lock ------------------------------------------------------------------------------------------------------
HOLDER = """
import sys, time
from pathlib import Path
from blasgpt import rundir
lock = rundir.acquire(Path(sys.argv[1]), resuming_here=True)  # (the directory may hold its run)
print("locked", flush=True)
time.sleep(120)
"""


def hold_lock(run_dir: Path) -> subprocess.Popen:
    """A process that holds run_dir's lock (until it is killed)."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(run_dir)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
    return proc


def test_the_lock_names_its_owner_and_is_released(tmp_path: Path) -> None:
    lock = rundir.acquire(tmp_path / "run")
    assert (tmp_path / "run" / LOCK_FILE).read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    assert lock.stale == ""
    with pytest.raises(rundir.RunDirError, match=rf"in use by another training run \(pid {os.getpid()} on host "):
        rundir.acquire(tmp_path / "run")
    with pytest.raises(rundir.RunDirError, match="in use") as info:
        rundir.check(tmp_path / "run", resuming_here=False, overwrite=False)
    assert info.value.code == 1
    lock.release()
    assert not (tmp_path / "run" / LOCK_FILE).exists()
    rundir.acquire(tmp_path / "run").release()


def test_a_lock_left_by_a_killed_process_is_taken_over(tmp_path: Path) -> None:
    holder = hold_lock(tmp_path / "run")
    with pytest.raises(rundir.RunDirError, match=rf"\(pid {holder.pid} on host "):
        rundir.acquire(tmp_path / "run")
    holder.kill()  # SIGKILL: nothing of the holder runs, the lock file stays
    holder.wait()
    assert (tmp_path / "run" / LOCK_FILE).read_text().split()[0] == str(holder.pid)
    lock = rundir.acquire(tmp_path / "run")
    assert lock.stale == f"pid {holder.pid} on host {socket.gethostname()}"
    assert (tmp_path / "run" / LOCK_FILE).read_text().split()[0] == str(os.getpid())
    lock.release()


def test_train_refuses_a_locked_directory_and_takes_over_a_stale_lock(cwd: Path) -> None:
    """A training run SIGKILLed mid-run leaves its lock file; resuming it takes the lock over and says so."""
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "train", "--data", "small.txt", "--steps", "1000000",
                             "--log-every", "1000", "--checkpoint-every", "1000", "--out", "run"], cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step"):
            break
    r = run(["train", "--data", "small.txt", "--resume", "run/ckpt.safetensors", "--steps", "2000000"], cwd)
    assert r.returncode == 1
    assert r.stderr == (f"blasgpt train: error: --out run is in use by another training run (pid {proc.pid} on host "
                        f"{socket.gethostname()}, lock run/train.lock); wait for it to end, or give another --out\n")
    proc.kill()
    proc.communicate()
    assert (cwd / "run" / LOCK_FILE).exists()
    step = blasgpt.load_checkpoint(cwd / "run" / "ckpt.safetensors").step
    r = run(["train", "--data", "small.txt", "--resume", "run/ckpt.safetensors", "--steps", str(step + 3),
             "--samples", "0", "--log-every", "0"], cwd)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0] == (f"took over the lock of run left by pid {proc.pid} on host "
                                        f"{socket.gethostname()}, which is no longer running")
    assert not (cwd / "run" / LOCK_FILE).exists()


def test_two_train_processes_started_together_into_one_directory(cwd: Path) -> None:
    """Started at the same moment: one trains, the other is refused naming it; the winner's run is intact."""
    cmd = [sys.executable, "-m", "blasgpt", "train", "--data", "small.txt", "--steps", "1000000", "--log-every",
           "1000", "--samples", "0", "--out", "run"]
    procs = [subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    done: list[subprocess.Popen] = []
    t0 = time.monotonic()
    while not done and time.monotonic() - t0 < 120:
        done = [p for p in procs if p.poll() is not None]
        time.sleep(0.05)
    assert len(done) == 1, "neither was refused"
    loser = done[0]
    winner = procs[1 - procs.index(loser)]
    loser_err = loser.communicate()[1]
    assert loser.returncode == 1
    assert loser_err == (f"blasgpt train: error: --out run is in use by another training run (pid {winner.pid} on host "
                         f"{socket.gethostname()}, lock run/train.lock); wait for it to end, or give another --out\n")
    assert winner.stdout is not None
    for line in winner.stdout:
        if line.startswith("step"):  # training (its SIGTERM handler is in place)
            break
    winner.send_signal(signal.SIGTERM)  # the winner saves and ends; the lock goes with it
    out, err = winner.communicate(timeout=120)
    assert winner.returncode == 130, err
    assert not (cwd / "run" / LOCK_FILE).exists()
    ck = blasgpt.load_checkpoint(cwd / "run" / "ckpt.safetensors")
    assert ck.step > 0
