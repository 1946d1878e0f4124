"""Shared helpers: small random models and ragged document sets. The benchmark's directory (bench/) is put on the
import path, so tests use its PyTorch reference model (``from torch_gpt import TorchGPT``) instead of their own."""

from __future__ import annotations

import os
import random
import signal
import string
import subprocess
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import pytest

import blasgpt

BENCH_DIR = Path(__file__).resolve().parents[1] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.append(str(BENCH_DIR))

FORCED_BACKENDS = ("blas", "native")
BACKENDS = FORCED_BACKENDS + ("auto",)  # auto: each product on the kernel this machine measured faster


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes this fixture runs once per gemm backend (the slowest ones once per forced backend:
    tests/test_calibrate.py shows a mix of the two kernels computes what each alone does)."""
    return request.param


def random_docs(rng: random.Random, n: int, alphabet: str, max_len: int) -> list[str]:
    """Ragged documents: always includes an empty-bodied-free single character doc and one longer than max_len."""
    docs = ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, max_len))) for _ in range(n)]
    docs[0] = alphabet[0]  # a length-1 document: [BOS, c, BOS]
    docs[-1] = "".join(rng.choice(alphabet) for _ in range(max_len + 5))  # longer than block_size
    return docs


def make_setup(seed: int, n_embd: int, n_head: int, n_layer: int, block_size: int, n_docs: int = 5,
               vocab: int = 6, dtype: str = "float64", backend: str = "blas"):
    """(model, tokenizer, docs) with random weights and random ragged documents."""
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase[:vocab]
    docs = random_docs(rng, n_docs, alphabet, block_size)
    tok = blasgpt.Tokenizer(sorted(alphabet))
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                         block_size=block_size)
    model = blasgpt.Model(cfg, dtype=dtype, seed=seed, backend=backend)
    # spread the weights a little wider than the 0.08 init so every path (attention, relu) carries signal
    nrng = np.random.default_rng(seed)
    for w in model.params.values():
        w[...] = nrng.normal(0.0, 0.3, size=w.shape)
    return model, tok, docs


ONE_BLAS_THREAD = {"OPENBLAS_NUM_THREADS": "1"}  # a small, machine-independent address space at start-up


def blasgpt_cli(args: Sequence[str], cwd: Path, *, timeout: float = 300, env: Optional[dict[str, str]] = None,
                **kw) -> subprocess.CompletedProcess:
    """``python -m blasgpt *args`` in ``cwd``, as a user runs it: a real subprocess, its output captured as text;
    ``env`` adds variables to this process's environment; other keywords go to subprocess.run."""
    return subprocess.run([sys.executable, "-m", "blasgpt", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, **env) if env else None, **kw)


def signal_default(sig: int) -> None:
    """In a child about to receive ``sig``: its default disposition, as on a terminal. A test run started under
    nohup or as a shell's background job inherits SIGHUP or SIGINT ignored, and the CLI (rightly) keeps ignoring
    what it was told to ignore."""
    signal.signal(sig, signal.SIG_DFL)


def interrupt_training(args: list, cwd, sig: int) -> subprocess.CompletedProcess:
    """Start ``python -m blasgpt train *args`` (which must log progress lines), send ``sig`` once it has printed its
    first "step" line, and return the finished process (stdout, stderr, returncode)."""
    proc = subprocess.Popen([sys.executable, "-m", "blasgpt", "train", *args], cwd=cwd, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal_default(sig))
    assert proc.stdout is not None
    for line in proc.stdout:
        if line.startswith("step"):
            break
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def rewrite_checkpoint(src: Path, dest: Path, changes: dict[str, str], *, checksum: bool = True,
                       drop: Sequence[str] = ()) -> Path:
    """Write to ``dest`` the checkpoint ``src`` with metadata keys set to ``changes`` and ``drop`` removed: with a
    matching metadata checksum (``checksum``: a file crafted that way, to test what the loader checks beyond it),
    or with the old one, as a corrupted byte leaves it."""
    from safetensors import safe_open
    from safetensors.numpy import save

    with safe_open(str(src), framework="numpy") as f:
        meta, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    meta = {k: v for k, v in {**meta, **changes}.items() if k not in drop}
    if checksum and "meta_checksum" in meta:
        from blasgpt.checkpoint import metadata_checksum

        meta["meta_checksum"] = metadata_checksum(meta)
    dest.write_bytes(save(tensors, metadata=meta))
    return dest


def greedy_lines(model: blasgpt.Model, tok: blasgpt.Tokenizer, prompt: str = "") -> str:
    """microgpt-style greedy document: argmax of model.forward from BOS (+ prompt) until BOS or block_size."""
    ids = [tok.bos] + list(tok.encode(prompt))
    while len(ids) <= model.config.block_size:
        nxt = int(np.argmax(model.forward(ids)[-1]))
        if nxt == tok.bos:
            break
        ids.append(nxt)
    return tok.decode(ids)
