"""Text mode on the command line, end to end (real ``python -m blasgpt`` subprocesses): train, bit-exact resume
(from a periodic checkpoint and after Ctrl-C), eval (text and --json, default split and --data) and sample."""

from __future__ import annotations

import functools
import json
import math
import os
import random
import re
import select
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.data import encode_text, read_text
from blasgpt.train import evaluate, evaluate_text, shuffle_docs
from conftest import ONE_BLAS_THREAD, blasgpt_cli, interrupt_training

SMALL = ["--block-size", "8", "--n-embd", "8", "--n-head", "2"]
QUIET = ["--samples", "0", "--log-every", "0"]


run = functools.partial(blasgpt_cli, env=ONE_BLAS_THREAD)


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, r.stderr
    return r


def write_text(path: Path, seed: int, n_lines: int) -> Path:
    rng = random.Random(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "héllo", "naïve", "café", "to", "be", "or", "not"]
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(2, 9))) for _ in range(n_lines)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def same_state(a: blasgpt.Model, b: blasgpt.Model) -> bool:
    return a.step == b.step and all(np.array_equal(x, y) for x, y in ((a.flat_params, b.flat_params),
                                                                       (a.adam_m, b.adam_m), (a.adam_v, b.adam_v)))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 60-step text-mode run on a 3 kB text with non-ASCII characters, 20% held out (block 16: the validation
    split's targets are not a multiple of it)."""
    d = tmp_path_factory.mktemp("textrun")
    write_text(d / "book.txt", 0, 100)
    r = ok(run(["train", "--data", "book.txt", "--data-mode", "text", "--steps", "60", "--batch-size", "4",
                "--val-fraction", "0.2", "--log-every", "20", "--samples", "1", "--sample-length", "40", "--out",
                "run"], cwd=d))
    (d / "train.stdout").write_text(r.stdout)
    return d


def test_train_reports_text_mode_and_prints_a_passage(run_dir):
    out = (run_dir / "train.stdout").read_text()
    text, _ = read_text(run_dir / "book.txt")
    n_val = int(len(text) * 0.2)
    assert f"{len(text) - n_val:,} train + {n_val:,} val characters (text mode)" in out
    assert "step    60 / 60" in out and "tok/s" in out
    passage = out.split("--- 1 sample(s) of 40 characters (temperature 0.5) ---\n")[1]
    assert len(passage) == 40 + 1  # the newline print adds (the passage may hold newlines of its own)
    ck = blasgpt.load_checkpoint(run_dir / "run" / "ckpt.safetensors")
    assert ck.extra["data_mode"] == "text" and ck.step == 60
    assert ck.tokenizer.chars == sorted(set(text))


def test_final_val_is_evals_default_and_counts_every_target(run_dir):
    """Training's final validation loss is exactly what eval reports by default (the validation split, every
    target once), and that equals evaluate_text on the tail of the text."""
    rows = [json.loads(line) for line in (run_dir / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [20, 40, 60] and all("tok_per_s" in row for row in rows)
    r = ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], cwd=run_dir))
    result = json.loads(r.stdout)
    assert set(result) == {"loss", "bits_per_char", "targets", "mode", "data", "checkpoint", "step", "nats_per_char",
                           "text_bits_per_char", "tokens_per_char", "chars"}
    text, _ = read_text(run_dir / "book.txt")
    n_val = int(len(text) * 0.2)
    assert n_val % 16 != 1  # so the last window is partial
    ck = blasgpt.load_checkpoint(run_dir / "run" / "ckpt.safetensors")
    val = encode_text(text[len(text) - n_val:], ck.tokenizer)
    assert result["targets"] == n_val - 1
    assert result["loss"] == rows[-1]["val_loss"] == evaluate_text(ck.model, val)[0]
    assert result["bits_per_char"] == pytest.approx(result["loss"] / math.log(2), rel=1e-15)
    # a character tokenizer's token is a character: the per-character figures are the loss itself
    assert result["nats_per_char"] == result["loss"] == rows[-1]["val_nats_per_char"]
    assert result["text_bits_per_char"] == result["bits_per_char"] == rows[-1]["val_bits_per_char"]
    assert result["tokens_per_char"] == 1.0 and result["chars"] == result["targets"]
    assert result["mode"] == "text" and result["step"] == 60 and result["data"] == "book.txt (validation split)"
    r = ok(run(["eval", "--checkpoint", "run/ckpt.safetensors"], cwd=run_dir))
    line = r.stdout.strip()
    assert re.fullmatch(rf"book\.txt \(validation split\): {result['loss']:.4f} nats/char \| "
                        rf"{result['bits_per_char']:.4f} bits/char \| {n_val - 1:,} targets \(text mode, windows "
                        rf"of 16\)", line), line


def test_eval_on_another_file(run_dir):
    """--data evaluates every target of the whole file (here: another text in the same vocabulary)."""
    write_text(run_dir / "other.txt", 5, 30)
    text, _ = read_text(run_dir / "other.txt")
    r = ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--data", "other.txt", "--json"], cwd=run_dir))
    result = json.loads(r.stdout)
    ck = blasgpt.load_checkpoint(run_dir / "run" / "ckpt.safetensors")
    assert result["targets"] == len(text) - 1 and result["data"] == "other.txt"
    assert result["loss"] == evaluate_text(ck.model, encode_text(text, ck.tokenizer))[0]


def test_sample_on_a_text_checkpoint(run_dir):
    """sample continues --prompt for --length characters, exactly blasgpt.generate's text with the same options;
    the defaults are one 500-character sample at temperature 0.8 from seed 0; the speed goes to stderr."""
    ck = blasgpt.load_checkpoint(run_dir / "run" / "ckpt.safetensors")
    model, tok = ck.model, ck.tokenizer
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--prompt", "the café", "--length", "100", "--top-k",
                "1"], cwd=run_dir))
    assert r.stdout == blasgpt.generate(model, tok, "the café", length=100, top_k=1, temperature=0.8)[0] + "\n"
    assert re.search(r"generated 100 characters in .* s \(.* tokens/s, 1 sample\(s\) together, KV cache\)",
                     r.stderr), r.stderr
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors"], cwd=run_dir))
    want = blasgpt.generate(model, tok, "", length=500, temperature=0.8, seed=0)[0]
    assert r.stdout == want + "\n" and len(want) == 500
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--num", "3", "--length", "30", "--seed", "4",
                "--temperature", "1.5", "--prompt", "to"], cwd=run_dir))
    texts = blasgpt.generate(model, tok, "to", length=30, num=3, temperature=1.5, seed=4)
    assert r.stdout == "".join(t + "\n" for t in texts) and len(set(texts)) == 3
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--length", "0", "--prompt", "cat"], cwd=run_dir))
    assert r.stdout == "cat\n"


def test_sample_streams_to_a_terminal(run_dir):
    """On a terminal one sample is written piece by piece as it is generated: the same text as when piped."""
    import pty

    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--length", "200", "--seed", "2"], cwd=run_dir))
    leader, follower = pty.openpty()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "sample", "--checkpoint", "run/ckpt.safetensors",
                             "--length", "200", "--seed", "2"], cwd=run_dir, stdout=follower,
                            stderr=subprocess.PIPE, env=env)
    os.close(follower)
    chunks = []
    while True:
        if not select.select([leader], [], [], 60)[0]:
            proc.kill()
            pytest.fail("sample wrote nothing to the terminal for 60 s")
        try:
            got = os.read(leader, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not got:
            break
        chunks.append(got)
    os.close(leader)
    assert proc.wait(timeout=60) == 0
    assert b"".join(chunks).decode().replace("\r\n", "\n") == r.stdout


@pytest.mark.parametrize("mode", ["text", "lines"])
def test_resume_from_a_periodic_checkpoint_is_bit_exact(tmp_path, mode):
    """Resume a 30-step run from its step-10 checkpoint as the README shows, with no flag but --resume (the data,
    its mode and every setting come from the checkpoint): the same windows (documents) and updates, so the same
    parameters and Adam moments as the uninterrupted run, bit for bit (float64), and the same final val loss."""
    write_text(tmp_path / "t.txt", 1, 60)
    ok(run(["train", "--data", "t.txt", "--data-mode", mode, *SMALL, "--steps", "30", "--batch-size", "3",
            "--checkpoint-every", "10", "--keep-checkpoints", "5", "--out", "full", *QUIET], cwd=tmp_path))
    assert sorted(p.name for p in (tmp_path / "full").glob("ckpt-*")) == [
        "ckpt-10.safetensors", "ckpt-20.safetensors", "ckpt-30.safetensors"]
    env = {"XDG_CACHE_HOME": str(tmp_path / "xdg"), "BLASGPT_SHAKESPEARE_URL": "http://127.0.0.1:9/"}  # no fetch
    r = ok(subprocess.run([sys.executable, "-m", "blasgpt", "train", "--resume", "full/ckpt-10.safetensors",
                           "--out", "resumed", *QUIET], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, **env)))
    assert "data t.txt" in r.stdout and "resuming full/ckpt-10.safetensors at step 10 of 30" in r.stdout
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors").model
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors")
    early = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt-10.safetensors").model
    assert full.step == 30 and full.dtype == np.float64
    assert same_state(resumed.model, full) and not same_state(early, full)
    # so it resumes again the same, from any directory
    assert resumed.extra["data"] == str((tmp_path / "t.txt").resolve()) and resumed.extra["data_mode"] == mode
    vals = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
            for d in ("full", "resumed")]
    assert vals[0] == vals[1] is not None


def test_ctrl_c_then_resume_is_bit_exact(tmp_path):
    """Interrupt a real text-mode run with SIGINT, resume it from the checkpoint it saved, and land exactly on an
    uninterrupted run's parameters and Adam moments."""
    write_text(tmp_path / "t.txt", 2, 60)
    common = ["--data", "t.txt", "--data-mode", "text", *SMALL, "--steps", "30000", "--samples", "0"]
    r = interrupt_training([*common, "--out", "part", "--log-every", "500"], tmp_path, signal.SIGINT)
    assert r.returncode == 130, r.stderr
    assert "continue with --resume" in r.stderr and "Traceback" not in r.stderr
    stopped = blasgpt.load_checkpoint(tmp_path / "part" / "ckpt.safetensors").model.step
    assert 0 < stopped < 30000
    ok(run(["train", "--data", "t.txt", "--data-mode", "text", "--resume", "part/ckpt.safetensors", "--out", "resumed",
            *QUIET], cwd=tmp_path))
    ok(run(["train", *common, "--out", "full", "--log-every", "0"], cwd=tmp_path))
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors").model
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors").model
    assert full.step == 30000 and same_state(resumed, full)


def test_smallest_text_trains(tmp_path):
    """A text of exactly block_size + 1 characters is enough with --val-fraction 0 (one possible window); a
    negative --seed is fine, as in lines mode."""
    (tmp_path / "t.txt").write_text("abcdefgh\n", encoding="utf-8")
    ok(run(["train", "--data", "t.txt", "--data-mode", "text", *SMALL, "--steps", "3", "--val-fraction", "0", "--seed",
            "-3", "--out", "run", *QUIET], cwd=tmp_path))
    r = ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--data", "t.txt", "--json"], cwd=tmp_path))
    assert json.loads(r.stdout)["targets"] == 8


def test_eval_in_lines_mode_is_the_mean_over_documents(tmp_path):
    """A lines-mode checkpoint: eval's default is the run's validation split, the mean over its documents of each
    one's loss, equal to training's final val loss."""
    words = [f"{a}{b}{c}" for a in "abcde" for b in "aeiou" for c in "lmnrs"]
    (tmp_path / "w.txt").write_text("\n".join(words) + "\n")
    ok(run(["train", "--data", "w.txt", "--steps", "20", "--batch-size", "4", "--val-fraction", "0.2", "--out", "run",
            *QUIET], cwd=tmp_path))
    result = json.loads(ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], cwd=tmp_path)).stdout)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert result["mode"] == "lines" and result["documents"] == int(len(words) * 0.2)
    assert result["loss"] == rows[-1]["val_loss"]
    ck = blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    shuffled, _ = shuffle_docs(words, 42)
    val = shuffled[len(words) - result["documents"]:]
    assert result["loss"] == evaluate(ck.model, ck.tokenizer.batch(val, block_size=16))
    assert result["targets"] == sum(len(v) + 1 for v in val)


def test_two_mpi_ranks_train_text_like_one_process(tmp_path):
    """Data-parallel text mode: each step's windows are split between 2 ranks and their gradients summed, so the
    run lands where one process does (up to summation order) and rank 0 alone reports and evaluates."""
    import shutil

    pytest.importorskip("mpi4py", reason="mpi4py not installed: pip install .[mpi]")
    mpiexec = shutil.which("mpiexec") or shutil.which("mpiexec", path=os.path.dirname(sys.executable))
    if mpiexec is None:
        pytest.skip("no mpiexec on PATH (pip install .[mpi] brings MPICH's)")
    write_text(tmp_path / "t.txt", 3, 60)
    common = ["train", "--data", "t.txt", "--data-mode", "text", *SMALL, "--steps", "25", "--batch-size", "5",
              "--n-layer", "2", *QUIET]
    r = subprocess.run([mpiexec, "-n", "2", sys.executable, "-m", "blasgpt", *common, "--out", "mpi"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr
    assert "data-parallel over 2 MPI ranks: each step's 5 windows" in r.stdout and r.stdout.count("saved") == 1
    ok(run([*common, "--out", "single"], cwd=tmp_path))
    a = blasgpt.load_checkpoint(tmp_path / "mpi" / "ckpt.safetensors").model
    b = blasgpt.load_checkpoint(tmp_path / "single" / "ckpt.safetensors").model
    assert a.step == b.step == 25
    assert np.abs(a.flat_params - b.flat_params).max() <= 1e-12 and np.abs(a.adam_v - b.adam_v).max() <= 1e-12
    vals = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1])["val_loss"]
            for d in ("mpi", "single")]
    assert vals[0] == pytest.approx(vals[1], rel=1e-10)
