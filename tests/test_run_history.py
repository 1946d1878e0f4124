"""A run directory keeps one consistent history: the Python API's ``out_dir`` takes the run-directory lock and
follows the command line's rules (resume=True / overwrite=True), default run directories started in the same
second are distinct, and metrics.jsonl keeps its steps strictly increasing across failures and resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import blasgpt
from blasgpt import rundir
from blasgpt.cli import main
from blasgpt.rundir import LOCK_FILE, RunDirError
from conftest import blasgpt_cli
from test_rundir import hold_lock

DOCS = ["anna", "bob", "clara", "dave", "eve", "frank"]
QUIET = {"log": lambda line: None}


def setup() -> tuple[list[str], blasgpt.Tokenizer, blasgpt.Model]:
    return blasgpt.microgpt_start(DOCS, n_embd=8, n_head=2)


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def a_run(run_dir: Path) -> tuple[list[str], blasgpt.Tokenizer]:
    """An API run of 6 steps in run_dir: checkpoints at 2, 4, 6, metrics rows at 2, 4, 6."""
    docs, tok, model = setup()
    blasgpt.train(model, tok, docs, steps=6, out_dir=run_dir, checkpoint_every=2, log_every=2, **QUIET)
    assert steps(run_dir) == [2, 4, 6]
    return docs, tok


# -- the API's out_dir ---------------------------------------------------------------------------------------------
def test_the_api_refuses_a_directory_another_process_trains_in(tmp_path: Path) -> None:
    """Before: train(out_dir=D) while another run trained in D appended its rows to that run's metrics.jsonl and
    wrote its checkpoints over the other's. Now it is refused (RunDirError, code 1), whatever the keywords, and
    nothing in D changes."""
    run = tmp_path / "run"
    docs, tok = a_run(run)
    holder = hold_lock(run)  # a live run in D (another process, holding D's lock)
    try:
        before = files(run)
        for kw in ({}, {"resume": True}, {"overwrite": True}):
            model = blasgpt.Model.load(run / "ckpt.safetensors")
            with pytest.raises(RunDirError) as info:
                blasgpt.train(model, tok, docs, steps=2, schedule_steps=8, out_dir=run, checkpoint_every=1, **kw)
            assert str(info.value).startswith(f"out_dir {run} is in use by another training run (pid {holder.pid} "
                                              f"on host ")
            assert str(info.value).endswith("; wait for it to end, or give another out_dir")
            assert info.value.code == 1
            assert model.step == 6
            assert files(run) == before
    finally:
        holder.kill()
        holder.wait()


def test_the_api_refuses_the_directory_of_a_training_cli_run(tmp_path: Path) -> None:
    """The command line's lock and the API's are one: the API refuses a directory a `train` process holds."""
    (tmp_path / "small.txt").write_text("\n".join(DOCS) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "train", "--data", "small.txt", "--steps", "1000000",
                             "--log-every", "1000", "--samples", "0", "--out", "run"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("step"):
                break
        docs, tok, model = setup()
        with pytest.raises(RunDirError, match=rf"is in use by another training run \(pid {proc.pid} on host "):
            blasgpt.train(model, tok, docs, steps=2, out_dir=tmp_path / "run", resume=True)
        assert model.step == 0
    finally:
        proc.kill()
        proc.wait()


def test_the_api_follows_the_rules_of_a_directory_that_holds_a_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    docs, tok = a_run(run)
    before = files(run)
    model = blasgpt.Model.load(run / "ckpt.safetensors")
    with pytest.raises(RunDirError) as info:  # neither resumed nor overwritten
        blasgpt.train(model, tok, docs, steps=2, schedule_steps=8, out_dir=run)
    assert str(info.value) == (f"out_dir {run} already holds a run (ckpt-2.safetensors, ckpt-4.safetensors, "
                               f"ckpt-6.safetensors, ckpt.safetensors, metrics.jsonl); pass resume=True with the model "
                               f"loaded from {run / 'ckpt.safetensors'} to continue it, or overwrite=True to start "
                               f"over (which removes the old run's files first)")
    assert info.value.code == 2 and files(run) == before and model.step == 6
    with pytest.raises(RunDirError, match="overwrite=True would remove the run being resumed"):
        blasgpt.train(model, tok, docs, steps=2, schedule_steps=8, out_dir=run, resume=True, overwrite=True)
    assert files(run) == before
    with pytest.raises(ValueError, match="resume=True is about out_dir's run, but no out_dir was given"):
        blasgpt.train(model, tok, docs, steps=2, schedule_steps=8, resume=True)

    blasgpt.train(model, tok, docs, steps=2, schedule_steps=8, out_dir=run, resume=True, checkpoint_every=2,
                  **QUIET)  # continues it
    assert steps(run) == [2, 4, 6, 8] and blasgpt.load_checkpoint(run / "ckpt.safetensors").step == 8
    assert not (run / LOCK_FILE).exists()

    docs, tok, fresh = setup()
    (run / "notes.txt").write_text("mine")
    blasgpt.train(fresh, tok, docs, steps=3, out_dir=run, overwrite=True, checkpoint_every=3)  # starts over
    assert sorted(files(run)) == ["ckpt-3.safetensors", "ckpt.safetensors", "metrics.jsonl", "notes.txt"]
    assert steps(run) == [3]


def test_the_api_releases_the_lock_when_train_returns_or_raises(tmp_path: Path) -> None:
    run = tmp_path / "run"
    docs, tok, model = setup()
    seen = []

    def log(line: str) -> None:
        assert (run / LOCK_FILE).read_text().split()[0] == str(os.getpid())  # held while training
        seen.append(line)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        blasgpt.train(model, tok, docs, steps=10, out_dir=run, log_every=1, log=log)
    assert not (run / LOCK_FILE).exists()
    rundir.acquire(run, resuming_here=True).release()  # nobody holds it
    blasgpt.train(model, tok, docs, steps=1, schedule_steps=10, out_dir=run, resume=True, **QUIET)
    assert not (run / LOCK_FILE).exists()


# -- default run directories ---------------------------------------------------------------------------------------
def test_default_run_directories_started_in_the_same_second_are_distinct(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch,
                                                                          capsys: pytest.CaptureFixture) -> None:
    """Before: the second and third `train` started within one second were refused (runs/<timestamp> held a run)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "small.txt").write_text("\n".join(DOCS) + "\n")
    monkeypatch.setattr("blasgpt.cli.train.time.strftime", lambda fmt, *a: "20260102-030405")
    codes = [main(["train", "--data", "small.txt", "--steps", "2", "--samples", "0", "--log-every", "0"])
             for _ in range(3)]
    assert codes == [0, 0, 0], capsys.readouterr().err
    saved = [line for line in capsys.readouterr().out.splitlines() if line.startswith("saved ")]
    assert saved == [f"saved runs/{d}/ckpt.safetensors; metrics in runs/{d}/metrics.jsonl"
                     for d in ("20260102-030405", "20260102-030405-2", "20260102-030405-3")]


NEW_DIRS = """
import sys
from pathlib import Path
from blasgpt.rundir import new_dir
sys.stdin.readline()  # start together
print(*(new_dir(Path("runs"), "same").name for _ in range(20)))
"""


def test_new_directories_made_at_the_same_moment_are_distinct(tmp_path: Path) -> None:
    procs = [subprocess.Popen([sys.executable, "-c", NEW_DIRS], cwd=tmp_path, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True) for _ in range(4)]
    names = [name for p in procs for name in p.communicate("go\n", timeout=120)[0].split()]
    assert len(names) == 80 and len(set(names)) == 80
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == sorted(names)


# -- metrics.jsonl across failures and resumes --------------------------------------------------------------------
QUICK = ["--samples", "0"]


def test_a_resume_after_a_failed_run_drops_the_rows_it_logged_past_its_checkpoint(tmp_path: Path) -> None:
    """A run that fails (here: the loss diverges) has logged rows past its last checkpoint; resuming from that
    checkpoint used to log those steps again (repeated, then decreasing steps). Now those rows go, saying so."""
    (tmp_path / "small.txt").write_text("\n".join(DOCS) + "\n")
    r = blasgpt_cli(["train", "--data", "small.txt", "--steps", "10", "--log-every", "5", "--out", "run", *QUICK],
                    tmp_path)
    assert r.returncode == 0, r.stderr
    r = blasgpt_cli(["train", "--resume", "run/ckpt.safetensors", "--steps", "30", "--lr", "1e300", "--log-every", "1",
                     *QUICK], tmp_path)
    assert r.returncode == 1 and "loss became nan" in r.stderr, r.stderr
    logged = steps(tmp_path / "run")
    assert logged[:2] == [5, 10] and len(logged) > 2  # rows past the checkpoint's step 10
    r = blasgpt_cli(["train", "--resume", "run/ckpt.safetensors", "--steps", "20", "--log-every", "5", *QUICK],
                    tmp_path)
    assert r.returncode == 0, r.stderr
    n = len(logged) - 2
    assert r.stdout.splitlines()[2] == (f"run/metrics.jsonl: dropped {n} row{'s' * (n != 1)} after step 10 (the step "
                                        f"this run continues from)")
    assert steps(tmp_path / "run") == [5, 10, 15, 20]


def test_a_resume_from_an_older_checkpoint_into_its_own_directory_drops_the_later_rows(tmp_path: Path) -> None:
    (tmp_path / "small.txt").write_text("\n".join(DOCS) + "\n")
    r = blasgpt_cli(["train", "--data", "small.txt", "--steps", "20", "--log-every", "5", "--checkpoint-every", "10",
                     "--out", "run", *QUICK], tmp_path)
    assert r.returncode == 0, r.stderr
    assert steps(tmp_path / "run") == [5, 10, 15, 20]
    r = blasgpt_cli(["train", "--resume", "run/ckpt-10.safetensors", "--steps", "25", "--log-every", "5", *QUICK],
                    tmp_path)
    assert r.returncode == 0, r.stderr
    assert "run/metrics.jsonl: dropped 2 rows after step 10 (the step this run continues from)" in r.stdout.splitlines()
    assert steps(tmp_path / "run") == [5, 10, 15, 20, 25]


def test_a_resume_from_an_older_checkpoint_keeps_the_checkpoint_it_writes(tmp_path: Path) -> None:
    """Before: resuming ckpt-2 of a run that had saved up to ckpt-6, with keep_checkpoints=1, deleted the new ckpt-3
    it had just written (ckpt-6 counted as newer), leaving ckpt.safetensors the only copy of step 3."""
    run = tmp_path / "run"
    docs, tok = a_run(run)
    model = blasgpt.Model.load(run / "ckpt-2.safetensors")
    blasgpt.train(model, tok, docs, steps=1, schedule_steps=6, out_dir=run, checkpoint_every=1, keep_checkpoints=1,
                  resume=True, **QUIET)
    assert (run / "ckpt-3.safetensors").exists()
    assert (run / "ckpt-3.safetensors").read_bytes() == (run / "ckpt.safetensors").read_bytes()
    assert not (run / "ckpt-2.safetensors").exists()


def test_trim_metrics_drops_later_rows_and_a_line_cut_short_and_keeps_the_rest(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics.jsonl"
    assert rundir.trim_metrics(tmp_path, 3) == ""  # no file: nothing to do
    rows = [json.dumps({"step": s, "train_loss": 1.0}).encode() + b"\n" for s in (1, 2, 3, 4, 5)]
    metrics.write_bytes(b"".join(rows[:3]) + b"# a note\n" + b"".join(rows[3:]) + b'{"step": 6, "train_lo')
    assert rundir.trim_metrics(tmp_path, 3) == (f"{metrics}: dropped 2 rows after step 3 (the step this run "
                                                f"continues from) and a last line cut short")
    assert metrics.read_bytes() == b"".join(rows[:3]) + b"# a note\n"
    inode = metrics.stat().st_ino
    assert rundir.trim_metrics(tmp_path, 3) == "" and metrics.stat().st_ino == inode  # already consistent: untouched
    metrics.write_bytes(rows[0] + rows[1].rstrip(b"\n"))  # a whole row without its newline: completed, not dropped
    assert rundir.trim_metrics(tmp_path, 2) == ""
    assert metrics.read_bytes() == rows[0] + rows[1]
    assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
