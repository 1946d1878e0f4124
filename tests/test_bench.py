"""Smoke test of the benchmark (bench/, not part of the installed package): ``python -m blasgpt bench --quick``
finds it, checks every row of every kind (names, text windows, call paths, thread and MPI scaling, the steady-state
and whole-run long runs, generation) and writes its JSON; the entry's errors are one line. (Nothing here asserts a
speed: timings belong to the bench.)"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import blasgpt
from blasgpt import bench_entry
from blasgpt.model import default_backend
from conftest import BENCH_DIR
from recipe import TEXT


def bench(*args: str, cwd, env_extra: dict[str, str] | None = None, timeout: float = 900):
    env = dict(os.environ, BLASGPT_BENCH_DIR=str(BENCH_DIR), **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "blasgpt", "bench", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env=env)


@pytest.fixture
def text_file(tmp_path):
    """A small text for the text-mode parts: the bundled names, one per line (a few hundred thousand characters)."""
    p = tmp_path / "names-text.txt"
    p.write_text("\n".join(blasgpt.load_docs()) + "\n")
    return p


def test_bench_quick_runs_every_row_kind_and_verifies(tmp_path, text_file):
    out = tmp_path / "bench.json"
    r = bench("--quick", "--json", str(out), "--data", str(text_file), cwd=tmp_path)
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
    assert data["machine"]["text"]["source"] == str(text_file)
    ratios = "\n".join(data["comparisons"])
    assert "train_step" in ratios and "µs per call" in ratios and "blasgpt.train" in ratios
    # the long runs: both backends and both workloads in steady state, one schedule each, every chunk timed
    steady = data["steady"]
    assert {(s["workload"].split()[0], s["backend"]) for s in steady} == {
        (w, b) for w in ("names", "text") for b in ("native", "blas")}
    assert all(len(s["ms_per_step"]) == s["steps"] // s["chunk"] and s["ratio"] > 0 and s["checked"] for s in steady)
    whole = data["whole_run"]
    assert [s["impl"] for s in whole["sides"]] == ["blasgpt", *torch]
    assert all(s["step"] > 0 and s["seconds"] > 0 and len(s["val"]) >= 2 and s["checked"] for s in whole["sides"])
    # time to the nanoGPT reference's best loss: the reference, then each preset, every side checked and on one scale
    if torch:
        ttl = data["time_to_loss"]
        ref, *presets = ttl["rows"]
        assert ref["side"] == "nanoGPT reference" and ref["seconds"] > 0 and ref["val_nats_per_char"] == ttl["target"]
        assert [row["side"].split()[2] for row in presets] == ["nanogpt-cpu", "fast-text"]
        assert all(row["checked"] and ("speedup" in row) == row["reached"] for row in presets)
        assert all(len(c["points"]) >= 2 for c in ttl["curves"]) and "Time to the nanoGPT reference" in r.stdout
    else:
        assert any("time-to-loss skipped" in n for n in data["notes"])
    # the default backend against the forced ones, per workload, every backend timed in each repeat
    backends = data["backends"]
    assert [b["workload"] for b in backends] == ["d16 b16", "d64 b16", "d128 L4 H4 T64 B12"]
    assert all(set(b["us"]) == {"auto", "native", "blas"} and all(len(t) == b["repeats"] for t in b["us"].values())
               and b["auto_vs_fastest_min"] > 0 and b["clock"] == "thread-cpu" and b["checked"] for b in backends)
    assert sum("default backend (auto) / fastest of native, blas" in c for c in data["comparisons"]) == 3
    # what the auto backend chose per product shape of each model it ran, and why (both timings)
    if default_backend() == "auto":
        choices = {c["workload"]: c for c in data["gemm_choices"]}
        assert {"d16 b16", "d64 b16", "d128 L4 H4 T64 B12"} <= set(choices)
        products = [p for c in choices.values() for p in c["products"] if p["shape"] != "attention"]
        assert products and all(p["backend"] in ("native", "blas") and p["native_us"] > 0 and p["blas_us"] > 0
                                and "µs" in p["why"] for p in products)
        assert all(c["step"] is None or c["step"]["choice"] in ("plan", "native", "blas") for c in choices.values())
        assert all(b["auto_ran"] in ("the per-shape mix", "every product native", "every product on OpenBLAS")
                   for b in backends)
        assert all(row["detail"] == "auto" for row in rows
                   if row["impl"] == "blasgpt" and row["section"] in ("names", "text"))
        assert "gemm auto" in whole["sides"][0]["gemm"]
    if (os.cpu_count() or 1) >= 2:
        assert data["thread_scaling"]["torch_imported"] is False
        assert any(row["threads"] == 2 for row in rows if row["section"] == "text")
    if "mpi" in data:
        assert [m["ranks"] for m in data["mpi"]] == [1, 2] and all(m["speedup"] > 0 for m in data["mpi"])
    else:
        assert any("MPI scaling skipped" in n for n in data["notes"])
    for word in ("µs/doc", "µs/token", "tokens/s", "Steady state", "Whole run", "wall seconds per part",
                 "Default gemm backend (auto) against the forced ones", "OpenBLAS kernel", "choice and why",
                 "whole step", "command: python -m blasgpt bench --quick"):
        assert word in r.stdout


def test_bench_only_rejects_an_unknown_part(tmp_path):
    r = bench("--only", "d999", cwd=tmp_path, timeout=60)
    assert r.returncode == 2 and "invalid choice" in r.stderr and "Traceback" not in r.stderr


def test_bench_names_a_missing_text_file_in_one_line(tmp_path):
    missing = tmp_path / "missing.txt"
    r = bench("--quick", "--only", "text-d128", "--data", str(missing), cwd=tmp_path, timeout=120)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"blasgpt bench: error: data file not found: {missing}"]


def test_bench_entry_says_how_to_run_it_when_there_is_no_checkout(tmp_path, monkeypatch, capsys):
    r = bench("--quick", "--bench-dir", str(tmp_path), cwd=tmp_path, timeout=60)
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr.strip().splitlines() == [f"blasgpt bench: error: --bench-dir {tmp_path} is not the benchmark "
                                             "directory (no bench.py and recipe.py)"]
    # installed without a checkout: nothing beside the package, nothing in the working directory
    monkeypatch.delenv("BLASGPT_BENCH_DIR", raising=False)
    monkeypatch.setattr(bench_entry, "__file__", str(tmp_path / "site" / "blasgpt" / "bench_entry.py"))
    monkeypatch.chdir(tmp_path)
    assert bench_entry.run_bench(None, ["--quick"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "python bench/bench.py" in err[0] and "not part of the installed package" in err[0]
    # a checkout as the working directory is found
    (tmp_path / "bench").mkdir()
    for name in ("bench.py", "recipe.py"):
        (tmp_path / "bench" / name).write_text("")
    assert bench_entry.find_bench_dir() == tmp_path / "bench"


def test_torch_sdpa_text_baseline_matches_blasgpt_float64():
    pytest.importorskip("torch")
    from torch_gpt import TorchGPT

    text = "\n".join(blasgpt.load_docs()[:400])
    tok = blasgpt.Tokenizer.from_docs([text])
    tokens = tok.encode(text)
    n_head = TEXT["text-d128"][2]  # the bench's head count, at a smaller width, depth and block
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=32, n_head=n_head, n_layer=2, block_size=24)
    model = blasgpt.Model(cfg, "float64", seed=3)
    starts = np.array([0, 17, 230, 999], dtype=np.int64)
    loss = model.forward_backward(blasgpt.Batch.of_windows(tokens, starts))
    ref = TorchGPT({k: v.copy() for k, v in model.params.items()}, cfg, "float64")
    got_loss, grads = ref.forward_backward(ref.windows(tokens, starts))
    assert abs(got_loss - loss) < 1e-12
    for k, g in model.grads.items():
        np.testing.assert_allclose(grads[k], g, rtol=1e-9, atol=1e-13)
    # and the check can fail: another window changes the loss
    assert abs(ref.forward_backward(ref.windows(tokens, starts + 1))[0] - loss) > 1e-6
