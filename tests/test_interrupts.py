"""Signals and closed output, as a user meets them: Ctrl-C or SIGTERM during a long ``sample`` writes what was
generated and exits 130 at once (SIGHUP too); a ``train`` whose reader goes away (``| head``, a closed terminal) keeps
training; SIGHUP interrupts ``train`` like SIGTERM. Real subprocesses, real signals (Linux: /proc tells when a
handler is installed)."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import blasgpt
from blasgpt.generate import MAX_LENGTH
from conftest import ONE_BLAS_THREAD, blasgpt_cli, interrupt_training, signal_default

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux's /proc")

WITHIN = 5.0  # seconds from the signal to the exit (asked: about one)


WIDE = blasgpt.Tokenizer([chr(0x100 + i) for i in range(80)])  # two UTF-8 bytes each


def uniform_model(n_embd: int, block_size: int = 64) -> blasgpt.Model:
    """A model whose output layer is zero: every token is drawn with the same probability (text mode: all but the
    banned BOS) whatever the context, so its samples are those of any such model with this vocabulary (and in lines
    mode, block) — a small one computes them at once."""
    cfg = blasgpt.Config(vocab_size=WIDE.vocab_size, n_embd=n_embd, n_head=4, n_layer=1, block_size=block_size)
    model = blasgpt.Model(cfg, dtype="float32", seed=1)
    model.params["lm_head"][...] = 0
    return model


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """text.safetensors and lines.safetensors: uniform models, wide enough (d128, d256) that a second of CPU time
    is a few thousand characters or 512 documents of up to 64."""
    d = tmp_path_factory.mktemp("interrupts")
    blasgpt.save_checkpoint(d / "text.safetensors", uniform_model(128), WIDE, {"data_mode": "text"})
    blasgpt.save_checkpoint(d / "lines.safetensors", uniform_model(256), WIDE, {"data_mode": "lines"})
    return d


def cpu_seconds(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2:].split()  # (after the command's name) utime and stime are fields 11, 12
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def interrupt_sample(cwd: Path, args: list[str], sig: int, generating: float) -> tuple[str, str, int, float]:
    """Run ``sample *args`` into a file; once it handles SIGTERM (its handler is installed as generation starts:
    Linux's SigCgt in /proc/PID/status) and has generated for ``generating`` seconds of CPU time, send ``sig``.
    Returns (stdout, stderr, exit code, seconds from the signal to the exit)."""
    with open(cwd / "out.txt", "w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "sample", *args], cwd=cwd, stdout=out,
                                stderr=subprocess.PIPE, text=True, env=dict(os.environ, **ONE_BLAS_THREAD),
                                preexec_fn=lambda: signal_default(sig))
        deadline, start = time.monotonic() + 120, None
        while start is None or cpu_seconds(proc.pid) < start + generating:
            assert proc.poll() is None, f"sample ended (code {proc.returncode}) before the signal: make it longer"
            assert time.monotonic() < deadline, "sample did not start generating within 120 s"
            if start is None:
                assert cpu_seconds(proc.pid) < 10, "sample has run 10 s of CPU time without handling SIGTERM"
                status = Path(f"/proc/{proc.pid}/status").read_text()
                caught = next(line for line in status.splitlines() if line.startswith("SigCgt:")).split()[1]
                start = cpu_seconds(proc.pid) if int(caught, 16) >> (signal.SIGTERM - 1) & 1 else None
            time.sleep(0.01)
        proc.send_signal(sig)
        t0 = time.monotonic()
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            pytest.fail(f"sample still ran 60 s after signal {sig}")
        took = time.monotonic() - t0
    return (cwd / "out.txt").read_text(encoding="utf-8"), err, proc.returncode, took


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGHUP], ids=["ctrl-c", "sighup"])
def test_a_signal_stops_a_long_sample_to_a_file_and_keeps_its_text(checkpoints, sig):
    """Ctrl-C, or the terminal closing (SIGHUP): the text so far is written, exit 130."""
    out, err, code, took = interrupt_sample(checkpoints, ["--checkpoint", "text.safetensors", "--length",
                                                          str(MAX_LENGTH)], sig, generating=1.0)
    assert (code, err) == (130, "blasgpt sample: interrupted\n") and took < WITHIN, (code, err, took)
    assert len(out) > 1 and out.endswith("\n")
    assert out[:-1] == blasgpt.generate(uniform_model(8, 2), WIDE, length=len(out) - 1, seed=0)[0]


def test_sigterm_stops_four_long_samples_and_keeps_their_text(checkpoints):
    out, err, code, took = interrupt_sample(checkpoints, ["--checkpoint", "text.safetensors", "--num", "4",
                                                          "--length", "200000"], signal.SIGTERM, generating=1.0)
    assert (code, err) == (130, "blasgpt sample: interrupted\n") and took < WITHIN, (code, err, took)
    assert len(out) > 4 and len(out) % 4 == 0  # four samples of one length (characters: tokens), each + "\n"
    texts = blasgpt.generate(uniform_model(8, 2), WIDE, length=len(out) // 4 - 1, num=4, seed=0)
    assert out == "".join(t + "\n" for t in texts)


def test_an_interrupted_lines_sample_writes_the_whole_documents(checkpoints):
    """512 documents generated together, interrupted after t tokens: exactly those that ended by then (drew BOS,
    so shorter than t), in order, one per line; none of those still being written."""
    out, err, code, took = interrupt_sample(checkpoints, ["--checkpoint", "lines.safetensors", "--num", "512"],
                                            signal.SIGINT, generating=0.2)
    assert (code, err) == (130, "blasgpt sample: interrupted\n") and took < WITHIN, (code, err, took)
    assert out.endswith("\n")
    every = blasgpt.generate(uniform_model(8), WIDE, length=64, num=512, seed=0, mode="lines")
    whole_by = {t: [d for d in every if len(d) < t] for t in range(1, 65)}  # what a stop after t tokens keeps
    assert out[:-1].split("\n") in [docs for docs in whole_by.values() if 0 < len(docs) < 512]


@pytest.mark.parametrize("args", [["text.safetensors", "--length", str(MAX_LENGTH)],
                                  ["lines.safetensors", "--num", "2000"]], ids=["text", "lines"])
def test_sample_ends_quietly_when_its_reader_leaves(checkpoints, args):
    """``sample | head -c 50``: the reader leaves after 50 bytes; sample stops generating at once and exits 0 with
    nothing on stderr (before: "blasgpt sample: error: [Errno 32] Broken pipe", exit 1, after generating it all)."""
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "sample", "--checkpoint", *args], cwd=checkpoints,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, **ONE_BLAS_THREAD))
    assert proc.stdout is not None
    assert len(proc.stdout.read(50)) == 50
    proc.stdout.close()
    proc.stdout = None  # (communicate reads stderr alone)
    _, err = proc.communicate(timeout=60)
    assert (proc.returncode, err) == (0, b"")


@pytest.mark.parametrize("reader", ["head", "buffered", "terminal"])
def test_train_outlives_its_reader(tmp_path, reader):
    """``train | head -2`` (the reader leaves after two lines; unbuffered output sees EPIPE at once), the same with
    Python's block-buffered stdout (the reader leaves at once; the error comes at a flush or at exit) and a closed
    terminal (EIO): the run goes on quietly to its last step, saves its checkpoint and exits 0, nothing on stderr."""
    env = dict(os.environ, **ONE_BLAS_THREAD)
    env.pop("PYTHONUNBUFFERED", None)
    if reader != "buffered":
        env["PYTHONUNBUFFERED"] = "1"
    leader = follower = None
    if reader == "terminal":
        leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "train", "--steps", "2000", "--log-every", "10",
                             "--eval-every", "0", "--out", "run"], cwd=tmp_path, env=env,
                            stdout=follower if follower is not None else subprocess.PIPE, stderr=subprocess.PIPE)
    if leader is not None:
        os.close(follower)
        os.read(leader, 100)  # the first line has begun; then the terminal goes
        os.close(leader)
    else:
        assert proc.stdout is not None
        if reader == "head":
            proc.stdout.readline(), proc.stdout.readline()
        proc.stdout.close()
        proc.stdout = None  # (communicate reads stderr alone)
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (0, b"")
    assert blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors").step == 2000


def test_sighup_saves_a_checkpoint_and_frees_the_run_directory(tmp_path):
    """Closing the terminal (SIGHUP) interrupts like Ctrl-C: a checkpoint, exit 130, the lock released, so the run
    resumes at once from that checkpoint without finding a stale lock."""
    r = interrupt_training(["--steps", "200000", "--out", "run", "--samples", "0", "--log-every", "1000"], tmp_path,
                           signal.SIGHUP)
    assert r.returncode == 130 and "interrupted at step" in r.stderr, r.stderr
    step = blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors").step
    assert 0 < step < 200000
    r = blasgpt_cli(["train", "--resume", "run/ckpt.safetensors", "--steps", str(step + 5), "--samples", "0"],
                    cwd=tmp_path)
    assert r.returncode == 0 and f"resuming run/ckpt.safetensors at step {step}" in r.stdout, r.stderr
    assert "took over the lock" not in r.stdout


def test_sighup_stays_ignored_under_nohup(tmp_path):
    """A run started with SIGHUP ignored (nohup) keeps ignoring it: it trains to the end."""
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "train", "--steps", "3000", "--out", "run",
                             "--samples", "0", "--log-every", "1000"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step"):
            break
    proc.send_signal(signal.SIGHUP)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors").step == 3000
