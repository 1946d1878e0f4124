"""Memory: a model or run that cannot fit is refused before anything is allocated, with one sentence saying what it
needs (parameters + gradients + Adam moments + per-thread gradients + activations) and what the machine has; the
estimate is checked against what a real model and training step allocate."""

from __future__ import annotations

import json
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import blasgpt
from blasgpt.config import NEAR_LIMIT, MemoryEstimate, available_memory, check_memory, memory_estimate

HUGE = blasgpt.Config(vocab_size=27, n_embd=4096, n_head=16, n_layer=64)  # 12.9 G parameters: 384 GiB in float64

RSS_SCRIPT = """
import json, sys
import numpy as np
import blasgpt

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024

n_embd, n_layer, block, batch, threads, dtype = *map(int, sys.argv[1:6]), sys.argv[6]
chars = [chr(ord("a") + i) for i in range(26)]
tok = blasgpt.Tokenizer(chars)
rng = np.random.default_rng(0)
b = tok.batch(["".join(rng.choice(chars, block + 3)) for _ in range(batch)], block_size=block)  # all block long
cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=n_embd, n_head=4, n_layer=n_layer, block_size=block)
before = rss()
model = blasgpt.Model(cfg, dtype=dtype, init=False, threads=threads)
model.train_step(b, 0.01)
print(json.dumps({"rss": rss() - before, "estimate": blasgpt.memory_estimate(cfg, dtype, batch, threads).total}))
"""


@pytest.mark.parametrize("sizes", ["256 4 64 32 1 float32", "128 2 128 16 2 float64"])
def test_estimate_matches_the_real_allocation(sizes: str) -> None:
    """In a fresh process: the resident memory a model and one training step add is within 1.5x of the estimate
    (about 230 MB and 140 MB here: the parameters' four buffers, a second thread's gradient, the activations)."""
    r = subprocess.run([sys.executable, "-c", RSS_SCRIPT, *sizes.split()], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    m = json.loads(r.stdout)
    assert m["estimate"] > 100e6
    assert 1 / 1.5 < m["rss"] / m["estimate"] < 1.5, m


def test_estimate_breakdown() -> None:
    cfg = blasgpt.Config(vocab_size=27, n_embd=64, n_head=4, n_layer=2, block_size=32)
    e = memory_estimate(cfg, "float32", batch_size=10, threads=3)
    assert e.params == cfg.num_params * 4 and e.thread_grads == 2 * e.params
    # 10 sequences over 3 threads: ceil(10 / 3) = 4 each, one more as shares are cut by positions, not sequences
    ws_floats, ws_ints = blasgpt._core.workspace_size(**cfg.to_dict(), rows=5 * 32)
    assert e.activations == 3 * (ws_floats * 4 + ws_ints * 4)
    assert e.total == 4 * e.params + e.thread_grads + e.activations
    assert memory_estimate(cfg, "float64").total == 4 * 8 * cfg.num_params  # no batch: the model alone
    short = memory_estimate(cfg, "float64", batch_size=1, positions=5)
    assert short.activations == sum(a * s for a, s in zip(blasgpt._core.workspace_size(**cfg.to_dict(), rows=5),
                                                          (8, 4)))


def test_model_refuses_a_huge_config_at_once() -> None:
    """Before: std::bad_alloc after the allocator tried. Now a MemoryError (also a ValueError) that says why, and
    no allocation is attempted: it returns in milliseconds."""
    t0 = time.perf_counter()
    with pytest.raises(blasgpt.MemoryLimitError) as info:
        blasgpt.Model(HUGE)
    assert time.perf_counter() - t0 < 0.5
    assert isinstance(info.value, MemoryError) and isinstance(info.value, ValueError)
    assert re.fullmatch(r"a float64 model of 12,885,188,608 parameters needs 384\.0 GiB of memory \(parameters "
                        r"96\.0 GiB \+ gradients 96\.0 GiB \+ Adam moments 192\.0 GiB\), but only [\d.]+ [MG]iB is "
                        r"available \(MemAvailable\); use smaller sizes", str(info.value)), str(info.value)


def test_more_threads_than_memory_for_their_gradients() -> None:
    """Every thread past the first keeps its own gradient buffer: 255 of them for a 600 MB model are refused."""
    cfg = blasgpt.Config(vocab_size=27, n_embd=512, n_head=8, n_layer=6)
    if 255 * 8 * cfg.num_params < 1.2 * available_memory()[0]:
        pytest.skip("this machine has room for 255 more gradient buffers of this model")
    model = blasgpt.Model(cfg, init=False)
    with pytest.raises(blasgpt.MemoryLimitError, match=r"this model with 256 threads needs [\d.]+ GiB of memory "
                                                       r"\(.* \+ 255 more thread gradient\(s\) [\d.]+ GiB, "
                                                       r"[\d.]+ MiB of it already allocated\)"):
        model.threads = 256
    assert model.threads == 1


def test_cli_refuses_a_huge_config_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """`python -m blasgpt train --n-embd 4096 --n-layer 64 --n-head 16` ended in a 20-line std::bad_alloc
    traceback; now one line and exit 1, within a second (measured in-process: the data loads, nothing else)."""
    from blasgpt.cli import main

    monkeypatch.chdir(tmp_path)
    t0 = time.perf_counter()
    code = main(["train", "--n-embd", "4096", "--n-layer", "64", "--n-head", "16", "--out", "run"])
    assert time.perf_counter() - t0 < 1.0
    err = capsys.readouterr().err
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith("blasgpt train: error: this run needs 505.4 GiB of memory (parameters 96.0 GiB + gradients "
                          "96.0 GiB + Adam moments 192.0 GiB + activations for 256 sequence(s) at once 121.4 GiB), "
                          "but only "), err
    assert not (tmp_path / "run").exists()


def test_check_memory_against_what_is_available() -> None:
    avail = available_memory()[0]

    def needing(fraction: float) -> MemoryEstimate:
        return MemoryEstimate(params=int(avail * fraction / 4), thread_grads=0, activations=0, sequences=0,
                              threads=1)

    assert check_memory(needing(0.5)) is None
    note = check_memory(needing((NEAR_LIMIT + 1) / 2))
    assert note is not None and note.endswith("close to the limit")
    with pytest.raises(blasgpt.MemoryLimitError, match="needs .* but only .* is available"):
        check_memory(needing(1.2), "this thing")
    assert check_memory(needing(1.2), resident=int(avail)) is None  # what is already allocated is not needed again


def _address_space(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def test_address_space_limit_is_respected(tmp_path: Path) -> None:
    """Under ulimit -v 2 GiB a 6 GiB model is refused by name of the limit (it would fit in the machine's RAM)."""
    code = ("import blasgpt\n"
            "blasgpt.Model(blasgpt.Config(vocab_size=27, n_embd=1024, n_head=16, n_layer=16))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       preexec_fn=_address_space(2 << 30), env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 1
    assert re.search(r"MemoryLimitError: a float64 model of 201,\d+,\d+ parameters needs 6\.0 GiB of memory .*, but "
                     r"only [\d.]+ [MG]iB is available \(the room left under the 2\.0 GiB address-space limit, "
                     r"ulimit -v\)", r.stderr), r.stderr


def test_start_line_warns_close_to_the_limit(tmp_path: Path) -> None:
    """A run that needs about 90% of the memory there is: it trains, and its start line says so. The room under a
    1 GiB address-space limit is read from a refused run first; the batch is then sized to fill 90% of it."""
    (tmp_path / "same.txt").write_text("\n".join(["abcdefgh", "hgfedcba", "aabbccdd"] * 4) + "\n")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")

    def train(batch: int) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "blasgpt", "train", "--data", "same.txt", "--steps", "1",
                               "--samples", "0", "--log-every", "0", "--val-fraction", "0", "--dtype", "float32",
                               "--batch-size", str(batch), "--out", f"run{batch}"],
                              cwd=tmp_path, capture_output=True, text=True, timeout=120,
                              preexec_fn=_address_space(1 << 30), env=env)

    refused = train(10**9)
    m = re.search(r"but only ([\d.]+) MiB is available", refused.stderr)
    assert refused.returncode == 1 and m, refused.stderr
    room = float(m.group(1)) * 2**20
    cfg = blasgpt.Config(vocab_size=9)
    per_seq = memory_estimate(cfg, "float32", 1, positions=9).activations
    batch = int(0.9 * room / per_seq)
    r = train(batch)
    assert r.returncode == 0, r.stderr
    start = r.stdout.splitlines()[0]
    assert re.search(r" \| memory: needs [\d.]+ MiB of [\d.]+ MiB available \(the room left under the 1\.0 GiB "
                     r"address-space limit, ulimit -v\), close to the limit$", start), start


REPEAT_SCRIPT = """
import blasgpt
from blasgpt.config import available_memory, memory_estimate

docs = ["abcdefgh", "hgfedcba", "aabbccdd"]
tok = blasgpt.Tokenizer.from_docs(docs)
model = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size), dtype="float32")
per_seq = memory_estimate(model.config, "float32", 1, positions=9).activations
batch = int(0.6 * available_memory()[0] / per_seq)
for _ in range(3):
    blasgpt.train(model, tok, docs, steps=1, batch_size=batch)
print("trained", batch)
"""


def test_repeated_train_calls_do_not_count_the_workspace_twice() -> None:
    """train() checks memory on every call; the activations a previous call allocated are not needed again, so a
    batch filling 60% of the room (under ulimit -v 1 GiB) trains call after call."""
    r = subprocess.run([sys.executable, "-c", REPEAT_SCRIPT], capture_output=True, text=True, timeout=120,
                       preexec_fn=_address_space(1 << 30), env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
    assert r.returncode == 0 and r.stdout.startswith("trained "), r.stderr
