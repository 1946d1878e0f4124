"""The command line, end to end, as a user runs it (real subprocesses)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import blasgpt_cli, interrupt_training



@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    words = ["anna", "bob", "clara", "dave", "eve", "frank", "grace", "heidi", "ivan", "judy", "karl", "lena"]
    p = tmp_path / "small.txt"
    p.write_text("\n".join(words * 5) + "\n", encoding="utf-8")
    return p


def test_train_then_sample(tmp_path, corpus):
    r = blasgpt_cli(["train", "--data", str(corpus), "--steps", "60", "--batch-size", "4", "--out", "run", "--samples",
                     "5", "--log-every", "20"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "step    60 / 60" in r.stdout and "saved" in r.stdout
    samples = r.stdout.split("samples (temperature 0.5) ---\n")[1].splitlines()
    assert len(samples) == 5 and all(set(s) <= set("abcdefghijklmnopqrstuvwxyz") for s in samples)
    ckpt = tmp_path / "run" / "ckpt.safetensors"
    assert ckpt.is_file()
    r = blasgpt_cli(["sample", "--checkpoint", str(ckpt), "--num", "4", "--prompt", "a", "--top-k", "3"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 4 and all(s.startswith("a") for s in lines)


def test_ctrl_c_saves_and_resume_is_bit_exact(tmp_path, corpus):
    """Interrupt a real run with SIGINT, resume it from the checkpoint it saved, and land on exactly the weights of
    an uninterrupted run."""
    import signal

    import blasgpt

    common = ["--data", str(corpus), "--batch-size", "2", "--steps", "40000", "--samples", "0"]
    r = interrupt_training([*common, "--out", "part", "--log-every", "2000"], tmp_path, signal.SIGINT)
    err = r.stderr
    assert r.returncode == 130, err
    assert "continue with --resume" in err
    stopped = blasgpt.load_checkpoint(tmp_path / "part" / "ckpt.safetensors").model.step
    assert 0 < stopped < 40000

    r = blasgpt_cli(["train", "--data", str(corpus), "--resume", "part/ckpt.safetensors", "--out", "resumed",
                     "--samples", "0", "--log-every", "0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = blasgpt_cli(["train", *common, "--out", "full", "--log-every", "0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors").model
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors").model
    assert resumed.step == full.step == 40000
    assert (resumed.flat_params == full.flat_params).all()
    assert (resumed.adam_v == full.adam_v).all()


def test_help_explains_itself(tmp_path):
    r = blasgpt_cli(["--help"], cwd=tmp_path)
    assert r.returncode == 0 and "train" in r.stdout and "sample" in r.stdout
    r = blasgpt_cli(["train", "--help"], cwd=tmp_path)
    assert r.returncode == 0 and "--batch-size" in r.stdout and "microgpt" in r.stdout


@pytest.mark.parametrize("args, code, message", [
    (["train", "--n-head", "3"], 2, "n_head (3) must divide n_embd (16)"),
    (["train", "--steps", "-1"], 2, "must be >= 0"),
    (["train", "--block-size", "0"], 2, "must be >= 1"),
    (["train", "--lr", "nan"], 2, "--lr must be a finite number"),
    (["train", "--data", "missing.txt"], 1, "data file not found"),
    (["sample", "--checkpoint", "missing.safetensors"], 1, "checkpoint not found"),
    (["frobnicate"], 2, "invalid choice"),
])
def test_user_errors_are_one_line_without_traceback(tmp_path, args, code, message):
    r = blasgpt_cli([*args], cwd=tmp_path)
    assert r.returncode == code
    assert message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "runs").exists(), "an error left a run directory behind"


def test_bad_data_files(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n \t\n")
    (tmp_path / "bin.dat").write_bytes(b"\x00\x01\x02abc\n")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    for name, message in [("empty.txt", "holds no documents"), ("bin.dat", "binary"), ("latin1.txt", "UTF-8")]:
        r = blasgpt_cli(["train", "--data", name, "--steps", "1"], cwd=tmp_path)
        assert r.returncode == 1 and message in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_sampling_errors(tmp_path, corpus):
    r = blasgpt_cli(["train", "--data", str(corpus), "--steps", "2", "--samples", "0", "--out", "r"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    for args, message in [(["--prompt", "xyz!"], "not in the vocabulary"), (["--top-k", "99"], "top_k"),
                          (["--temperature", "0"], "temperature")]:
        r = blasgpt_cli(["sample", "--checkpoint", "r/ckpt.safetensors", *args], cwd=tmp_path)
        assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr, r.stderr
