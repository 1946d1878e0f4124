"""Smoke test of the benchmark: ``bench --quick`` runs from an installed package, checks every row of every kind
(names, text windows, call paths, thread and MPI scaling, generation) and writes its JSON; plus the PyTorch SDPA
text baseline against blasgpt's float64 gradients. (Nothing here asserts a speed: timings belong to the bench.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.baselines import TorchTextGPT
from blasgpt import bench
from blasgpt.bench import TEXT, WORKLOADS, text_stream

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


def test_bench_quick_runs_every_row_kind_and_verifies(tmp_path):
    out = tmp_path / "bench.json"
    env = dict(os.environ)
    if SHAKESPEARE.is_file():  # CI keeps shared/ beside the repository; the run itself starts elsewhere
        env["BLASGPT_SHAKESPEARE"] = str(SHAKESPEARE)
    r = subprocess.run([sys.executable, "-m", "blasgpt", "bench", "--quick", "--json", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    data = json.loads(out.read_text())
    rows = data["rows"]
    assert {row["section"] for row in rows} == {"names", "text", "calls", "generate"}
    torch = {"torch"} if importlib.util.find_spec("torch") else set()
    assert {"blasgpt", "numpy"} | torch <= {row["impl"] for row in rows if row["section"] == "names"}
    assert {"blasgpt"} | {t + " SDPA" for t in torch} <= {row["impl"] for row in rows if row["section"] == "text"}
    assert {"kv-cache", "recompute loop"} == {row["impl"] for row in rows if row["section"] == "generate"}
    assert all(row["us_min"] > 0 and row["checked"] for row in rows)
    assert all(0 < row["pct_peak"] and row["peak_gflops"] > 0 for row in rows if row["gflops"])
    assert data["machine"]["peak_gflops_f32"] > 0 and "OpenBLAS" in data["machine"]["openblas"]
    names = {t["name"] for t in data["targets"]}
    assert any("tok.batch" in n for n in names) and any("train_step" in n for n in names)
    assert all(isinstance(t["met"], bool) for t in data["targets"])
    if (os.cpu_count() or 1) >= 2:
        assert data["thread_scaling"]["torch_imported"] is False
        assert any(row["threads"] == 2 for row in rows if row["section"] == "text")
    for word in ("µs/doc", "µs/token", "tokens/s", "target", "command: python -m blasgpt bench --quick"):
        assert word in r.stdout


def test_bench_only_accepts_the_new_parts_and_rejects_others(tmp_path):
    assert {"text-d128", "text-d384", "overhead", "threads", "mpi", "generate"} <= set(WORKLOADS)
    r = subprocess.run([sys.executable, "-m", "blasgpt", "bench", "--only", "d999"], capture_output=True, text=True,
                       timeout=60, cwd=tmp_path)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_bench_names_a_missing_text_file_in_one_line(tmp_path):
    env = dict(os.environ, BLASGPT_SHAKESPEARE=str(tmp_path / "missing.txt"))
    r = subprocess.run([sys.executable, "-m", "blasgpt", "bench", "--quick", "--only", "text-d128"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"blasgpt bench: error: BLASGPT_SHAKESPEARE={tmp_path / 'missing.txt'} "
                                             "is not a file"]


def test_text_stream_falls_back_to_names_and_rejects_a_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("BLASGPT_SHAKESPEARE", str(tmp_path / "missing.txt"))
    with pytest.raises(ValueError, match="not a file"):
        text_stream()
    (tmp_path / "t.txt").write_text("to be or not to be")
    monkeypatch.setenv("BLASGPT_SHAKESPEARE", str(tmp_path / "t.txt"))
    assert text_stream() == ("to be or not to be", str(tmp_path / "t.txt"))
    # found nowhere (no variable, nothing beside the package or the working directory): the bundled names
    monkeypatch.delenv("BLASGPT_SHAKESPEARE")
    monkeypatch.setattr(bench, "__file__", str(tmp_path / "site" / "blasgpt" / "bench.py"))
    monkeypatch.chdir(tmp_path)
    text, source = text_stream()
    assert text == "\n".join(blasgpt.load_docs()) and "names.txt" in source
    # a copy of shared/ beside the working directory's parent is found
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "tinyshakespeare.txt").write_text("First Citizen:")
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path / "repo")
    assert text_stream()[0] == "First Citizen:"


def test_torch_sdpa_text_baseline_matches_blasgpt_float64():
    pytest.importorskip("torch")
    text = "\n".join(blasgpt.load_docs()[:400])
    tok = blasgpt.Tokenizer.from_docs([text])
    tokens = tok.encode(text)
    n_head = TEXT["text-d128"][2]  # the bench's head count, at a smaller width, depth and block
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=32, n_head=n_head, n_layer=2, block_size=24)
    model = blasgpt.Model(cfg, "float64", seed=3)
    starts = np.array([0, 17, 230, 999], dtype=np.int64)
    loss = model.forward_backward(blasgpt.Batch.of_windows(tokens, starts))
    ref = TorchTextGPT({k: v.copy() for k, v in model.params.items()}, cfg, "float64")
    got_loss, grads = ref.forward_backward(tokens, starts)
    assert abs(got_loss - loss) < 1e-12
    for k, g in model.grads.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-9, atol=1e-13)
    # and the check can fail: another window changes the loss
    assert abs(ref.forward_backward(tokens, starts + 1)[0] - loss) > 1e-6
