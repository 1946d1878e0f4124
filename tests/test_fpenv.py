"""The core's floating-point mode (csrc/fpenv.hpp): float32 flushes subnormals, float64 keeps IEEE arithmetic, and
every call leaves the caller's control word (x86 MXCSR, AArch64 FPCR) exactly as it found it."""

from __future__ import annotations

import platform
import random
import string

import numpy as np
import pytest

import blasgpt
from blasgpt import _core
from conftest import make_setup

MACHINE = platform.machine().lower()
if MACHINE in ("x86_64", "amd64", "i386", "i686"):
    FLUSH = (1 << 15) | (1 << 6)  # MXCSR flush-to-zero | denormals-are-zero
    FTZ_ONLY = 1 << 15
elif MACHINE in ("aarch64", "arm64"):
    FLUSH = FTZ_ONLY = 1 << 24  # FPCR FZ
else:
    FLUSH = FTZ_ONLY = 0

needs_flush_control = pytest.mark.skipif(FLUSH == 0, reason="no known flush-to-zero control on this CPU")


@pytest.fixture
def caller_mode():
    """Set the calling thread's control word for a test (returns the setter) and put the original back after it."""
    original = _core._fp_control()

    def set_mode(word: int) -> int:
        _core._set_fp_control(word)
        assert _core._fp_control() == word
        return word

    yield set_mode
    _core._set_fp_control(original)
    assert _core._fp_control() == original


def computing_calls(model: blasgpt.Model, tok: blasgpt.Tokenizer, docs: list[str]):
    """(name, call) for every public way into the core that computes."""
    batch = tok.batch(docs)
    bad = np.array([0, tok.vocab_size + 3], dtype=np.int32)  # fails inside the core, after its mode is set
    n = model.num_params
    dt = model.dtype
    return [
        ("train_step", lambda: model.train_step(batch, 0.01)),
        ("train (train_steps)", lambda: blasgpt.train(model, tok, docs, steps=3, batch_size=2, log=lambda s: None)),
        ("forward", lambda: model.forward([tok.bos, 1, 2])),
        ("forward_backward", lambda: model.forward_backward(batch)),
        ("loss", lambda: model.loss(batch)),
        ("apply_adam", lambda: model.apply_adam(0.01)),
        ("generate", lambda: blasgpt.generate(model, tok, "a", length=12, num=2)),
        ("sample", lambda: blasgpt.sample(model, tok, num=3)),
        ("adam_update", lambda: _core.adam_update(*(np.full(n, 1e-3, dt) for _ in range(4)), 0.01, 1)),
        ("time_gemm", lambda: _core.time_gemm(dt.name, False, True, 8, 8, 8, 0.0)),
        ("time_attention", lambda: _core.time_attention(dt.name, 16, 4, 6, 2, [], 0.0)),
        ("a call that fails in the core", lambda: pytest.raises(ValueError, model._core.loss, bad,
                                                               np.array([0, 2], dtype=np.int64))),
    ]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("threads", [1, 2])
def test_every_call_leaves_the_callers_control_word_unchanged(dtype, threads, backend, caller_mode):
    model, tok, docs = make_setup(61, 16, 4, 2, 8, n_docs=9, dtype=dtype, backend=backend)
    model.threads = threads
    found = _core._fp_control()
    # as found (IEEE, by default), flushing, and a half-set flush mode (only FTZ): each must come back bit for bit
    for word in dict.fromkeys([found, found | FLUSH, (found & ~FLUSH) | FTZ_ONLY]):
        caller_mode(word)
        for name, call in computing_calls(model, tok, docs):
            call()
            assert _core._fp_control() == word, f"{name} ({dtype}, {threads} threads) changed the control word"


UINT = {np.float32: np.uint32, np.float64: np.uint64}


def subnormal_moment(dtype: type) -> tuple[np.ndarray, ...]:
    """(params, m, v, grads) of one element whose gradient is 0 and whose first moment is 5 units of the smallest
    subnormal: IEEE arithmetic gives it the moment round(0.85 * 5) = 4 units, flushing gives 0. (Built and read
    as bit patterns: numpy's own arithmetic follows the caller's mode.)"""
    m = np.array([5], UINT[dtype]).view(dtype)
    return (np.ones(1, dtype), m, np.zeros(1, dtype), np.zeros(1, dtype))


def units(x: np.ndarray) -> int:
    """x[0] in units of its dtype's smallest subnormal (x[0] >= 0, below the smallest normal)."""
    return int(x.view(UINT[x.dtype.type])[0])


@needs_flush_control
def test_float32_flushes_even_when_the_caller_does_not(caller_mode):
    caller_mode(_core._fp_control() & ~FLUSH)
    p, m, v, g = subnormal_moment(np.float32)
    assert units(np.float32(0.85) * m) == 4  # IEEE, numpy in the caller's mode
    _core.adam_update(p, m, v, g, 0.01, 1)
    assert units(m) == 0


@needs_flush_control
def test_float64_keeps_ieee_subnormals_even_when_the_caller_flushes(caller_mode):
    word = caller_mode(_core._fp_control() | FLUSH)
    p, m, v, g = subnormal_moment(np.float64)
    assert units(0.85 * m) == 0  # flushed, numpy in the caller's mode
    _core.adam_update(p, m, v, g, 0.01, 1)
    assert units(m) == 4  # microgpt's (Python's) arithmetic
    assert _core._fp_control() == word
    # and a whole float64 training run is bit-identical whatever mode its caller is in
    runs = []
    for mode in (word & ~FLUSH, word):
        caller_mode(mode)
        model, tok, docs = make_setup(62, 16, 4, 1, 8, n_docs=7, dtype="float64")
        model.threads = 2
        runs.append(blasgpt.train(model, tok, docs, steps=20, batch_size=3, log=lambda s: None).losses)
        runs.append(model.flat_params.copy())
    assert runs[0] == runs[2]
    np.testing.assert_array_equal(runs[1], runs[3])


ALPHABET = string.ascii_lowercase[:8]


def underflow_run(dtype: str, threads: int, backend: str) -> blasgpt.Model:
    """Train into the regime where float32 Adam moments underflow.

    Phase 1 (50 steps, lr 0.01): documents of 8-15 characters over all of ALPHABET. Phase 2 (650 steps) and
    phase 3 (50 steps, lr 0.001): documents of 1-5 characters without its last letter, so from then on the
    embedding of that letter, the position embeddings past 5 (and ReLU units the short documents never open) get
    zero gradient, and their first moments shrink by beta1 = 0.85 a step: below float32's smallest normal
    (1.2e-38) within ~500 steps. Phase 2 holds the weights (lr 0) while the moments evolve: over hundreds of
    steps Adam's normalized steps on near-zero gradients and the ReLU kinks turn float32 rounding into differences
    far larger than float32 tolerance (flushed or not: the cause is float32 itself), which would hide what this
    test looks at. Phase 3 trains on from the flushed moments."""
    rng = random.Random(7)

    def docs(alphabet: str, lo: int, hi: int) -> list[str]:
        return ["".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi))) for _ in range(64)]

    long_docs, short_docs = docs(ALPHABET, 8, 15), docs(ALPHABET[:-1], 1, 5)
    tok = blasgpt.Tokenizer(ALPHABET)
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=32, n_head=4, n_layer=2, block_size=16)
    model = blasgpt.Model(cfg, dtype=dtype, seed=3, backend=backend, threads=threads)
    for data, steps, lr in ((long_docs, 50, 0.01), (short_docs, 650, 0.0), (short_docs, 50, 0.001)):
        blasgpt.train(model, tok, data, steps=steps, batch_size=4, lr=lr, schedule_steps=10**9, log=lambda s: None)
    return model


@needs_flush_control
@pytest.mark.parametrize("threads", [1, 2])
def test_float32_training_through_moment_underflow_matches_float64(threads, backend):
    m32 = underflow_run("float32", threads, backend)
    m64 = underflow_run("float64", threads, backend)
    tiny = np.finfo(np.float32).tiny
    # the regime was reached: the moments of the last letter's embedding and of positions 6+ (zero gradient
    # since phase 1) are, in float64, below float32's smallest normal ...
    offsets = {name: off for name, _, off in m32.param_table}
    C = m32.config.n_embd
    rows = np.r_[offsets["wte"] + (len(ALPHABET) - 1) * C + np.arange(C), offsets["wpe"] + 6 * C + np.arange(10 * C)]
    assert np.all((m64.adam_m[rows] != 0) & (np.abs(m64.adam_m[rows]) < tiny))
    # ... and float32 flushed them: every float32 moment is exactly 0 or normal (no subnormal left)
    assert np.all(m32.adam_m[rows] == 0)
    for moment in (m32.adam_m, m32.adam_v):
        assert np.abs(moment[moment != 0]).min() >= tiny
    if threads == 2:  # the worker thread updates the upper half of the buffer: it flushed some of its moments too
        assert np.any(np.flatnonzero(m32.adam_m == 0) >= m32.num_params // 2)
    np.testing.assert_allclose(m32.flat_params, m64.flat_params, rtol=1e-4, atol=1e-5)
