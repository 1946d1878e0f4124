from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import blasgpt


def test_sweep_runs_a_grid_and_ranks_it(tmp_path: Path):
    data = tmp_path / "w.txt"
    data.write_text("\n".join(f"{a}{b}{c}" for a in "abcd" for b in "aeiou" for c in "lmnrs") + "\n")
    r = subprocess.run([sys.executable, "-m", "blasgpt", "sweep", "--lr", "0.003,0.03", "--n-embd", "8,16",
                        "--n-head", "2", "--jobs", "2", "--out", "sw", "--data", str(data), "--steps", "30",
                        "--batch-size", "4"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert sorted((row["lr"], row["n_embd"]) for row in rows) == [(0.003, 8), (0.003, 16), (0.03, 8), (0.03, 16)]
    assert all(row["exit_code"] == 0 and row["val_loss"] > 0 for row in rows)
    for row in rows:
        ck = tmp_path / row["run_dir"] / "ckpt.safetensors"
        assert ck.is_file() and (tmp_path / row["run_dir"] / "metrics.jsonl").is_file()
    table = r.stdout.splitlines()
    vals = [float(line.split()[2]) for line in table if line.strip().startswith(("0.003", "0.03"))]
    assert vals == sorted(vals) and len(vals) == 4  # best first


def test_sweep_rejects_bad_grids(tmp_path: Path):
    r = subprocess.run([sys.executable, "-m", "blasgpt", "sweep", "--n-embd", "10", "--n-head", "4"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "--n-embd 10: n_head (4) must divide n_embd (10)" in r.stderr
    r = subprocess.run([sys.executable, "-m", "blasgpt", "sweep", "--lr", "fast"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "comma-separated list" in r.stderr
    assert not (tmp_path / "sweeps").exists()


def test_sweep_refuses_a_value_given_twice(tmp_path: Path):
    """Before: `--lr 0.01,0.01` ran two jobs into one directory. Now equal values, however spelled, are refused
    before anything runs."""
    for flag, values, what in (("--lr", "0.01,0.03,0.01", "0.01 twice"),
                               ("--lr", "0.01,1e-2", "the same value twice (0.01, 1e-2)"),
                               ("--n-embd", "16,016", "the same value twice (16, 016)")):
        r = subprocess.run([sys.executable, "-m", "blasgpt", "sweep", flag, values, "--steps", "2"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 2
        assert r.stderr.splitlines() == [f"blasgpt sweep: error: {flag} lists {what}; give each value once",
                                         "(see blasgpt sweep --help)"]
    assert list(tmp_path.iterdir()) == []


def test_sweep_run_directories_keep_every_digit_that_tells_points_apart():
    from blasgpt.cli.sweep import _run_name

    assert [_run_name(lr, 16) for lr in (0.003, 0.01, 1e-5, 1.0)] == ["lr0.003-d16", "lr0.01-d16", "lr1e-05-d16",
                                                                      "lr1-d16"]
    assert _run_name(0.0100000001, 32) == "lr0.0100000001-d32"  # %g would call it lr0.01, as 0.01's run


def test_sweep_passes_a_preset_on_and_reports_bits_per_char(tmp_path: Path):
    """``sweep ... --preset NAME``: every run starts from the preset, the grid's --lr and --n-embd replace its
    values, and the table gives the validation bits per character of the text (one scale for any tokenizer)."""
    data = tmp_path / "t.txt"
    data.write_text("".join(f"{a}{b}{c} " for a in "abcd" for b in "aeiou" for c in "lmnrs") * 20 + "\n")
    r = subprocess.run([sys.executable, "-m", "blasgpt", "sweep", "--lr", "0.003,0.03", "--n-embd", "8",
                        "--jobs", "2", "--out", "sw", "--preset", "nanogpt-cpu", "--data", str(data), "--steps", "4",
                        "--warmup-steps", "1", "--n-layer", "1", "--block-size", "8", "--threads", "1"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "sw" / "results.json").read_text())
    assert sorted(row["lr"] for row in rows) == [0.003, 0.03]
    for row in rows:
        ck = blasgpt.load_checkpoint(tmp_path / row["run_dir"] / "ckpt.safetensors")
        assert ck.extra["lr"] == row["lr"] and ck.extra["weight_decay"] == 0.1 and ck.extra["data_mode"] == "text"
        assert (ck.model.config.n_embd, ck.model.config.tie_embeddings) == (8, True)
        assert row["val_bits_per_char"] == row["val_loss"] / math.log(2)  # characters: a token is a character
    header = r.stdout.splitlines()[1].split()
    assert header[:4] == ["lr", "n_embd", "val", "loss"] and "bits/char" in header
