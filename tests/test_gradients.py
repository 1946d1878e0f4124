"""Property tests of the hand-derived backward pass."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import blasgpt
from conftest import FORCED_BACKENDS, make_setup

# (seed, n_embd, n_head, n_layer, block_size): odd head widths, several layers, short and long blocks
CONFIGS = [
    (1, 6, 2, 1, 5),
    (2, 9, 3, 2, 4),
    (3, 8, 4, 3, 7),
    (4, 5, 1, 2, 3),
    (5, 12, 4, 1, 8),
    (6, 16, 4, 1, 6),   # head width 4: the fused attention kernel's in-vector head sums
    (7, 32, 2, 2, 5),   # head width 16: wider than a float64 vector (the gemm attention path on the native backend)
]


def finite_difference_grads(model: blasgpt.Model, batch: blasgpt.Batch, h: float = 1e-5) -> np.ndarray:
    """Central differences of model.loss for every parameter, in buffer order."""
    flat = model.flat_params
    out = np.empty_like(flat)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = model.loss(batch)
        flat[i] = keep - h
        down = model.loss(batch)
        flat[i] = keep
        out[i] = (up - down) / (2 * h)
    return out


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "C{1}H{2}L{3}T{4}".format(*c))
@pytest.mark.parametrize("backend", FORCED_BACKENDS)
def test_gradients_match_finite_differences(cfg, backend):
    seed, C, H, L, T = cfg
    model, tok, docs = make_setup(seed, C, H, L, T, backend=backend)
    batch = tok.batch(docs)
    model.forward_backward(batch)
    analytic = model.flat_grads.copy()
    numeric = finite_difference_grads(model, batch)
    for name, (rows, cols), off in model.param_table:
        a = analytic[off:off + rows * cols]
        n = numeric[off:off + rows * cols]
        scale = np.abs(n).max()
        assert scale > 0, f"{name}: finite differences are all zero; the test would prove nothing"
        rel = np.abs(a - n).max() / scale
        assert rel <= 1e-6, f"{name}: max relative error {rel:.2e}"


def test_gradient_is_deterministic_and_overwritten(backend):
    model, tok, docs = make_setup(7, 8, 2, 2, 6, backend=backend)
    batch = tok.batch(docs)
    model.forward_backward(batch)
    first = model.flat_grads.copy()
    model.flat_grads[...] = 123.0  # stale values must not leak into the next step
    model.forward_backward(batch)
    np.testing.assert_array_equal(model.flat_grads, first)


def test_batched_gradient_is_mean_of_single_documents(backend):
    model, tok, docs = make_setup(11, 8, 2, 2, 6, n_docs=7, backend=backend)
    batch_loss = model.forward_backward(tok.batch(docs))
    batched = model.flat_grads.copy()
    singles, losses = [], []
    for d in docs:
        losses.append(model.forward_backward(tok.batch([d])))
        singles.append(model.flat_grads.copy())
    np.testing.assert_allclose(batch_loss, np.mean(losses), rtol=1e-13)
    np.testing.assert_allclose(batched, np.mean(singles, axis=0), rtol=1e-12, atol=1e-14)


def test_gather_batch_equals_packed_batch():
    model, tok, docs = make_setup(12, 8, 2, 1, 6, n_docs=9)
    corpus = tok.batch(docs)
    picked = [4, 0, 8, 4]
    loss_gather = model.forward_backward(corpus.select(picked))
    g_gather = model.flat_grads.copy()
    loss_packed = model.forward_backward(tok.batch([docs[i] for i in picked]))
    assert loss_gather == loss_packed
    np.testing.assert_array_equal(model.flat_grads, g_gather)


def test_backends_agree():
    model, tok, docs = make_setup(13, 12, 3, 2, 8, n_docs=6)
    batch = tok.batch(docs)
    model.backend = "blas"
    l_blas = model.forward_backward(batch)
    g_blas = model.flat_grads.copy()
    model.backend = "native"
    l_native = model.forward_backward(batch)
    assert l_native == pytest.approx(l_blas, rel=1e-13)
    np.testing.assert_allclose(model.flat_grads, g_blas, rtol=1e-11, atol=1e-13)


def test_forward_logits_match_training_loss():
    """The inference path and the training path compute the same function."""
    model, tok, docs = make_setup(14, 8, 4, 2, 6, n_docs=1)
    doc = docs[0] + "abc"
    ids = np.concatenate([[tok.bos], tok.encode(doc), [tok.bos]]).astype(np.int32)
    n = min(model.config.block_size, ids.size - 1)
    logits = model.forward(ids[:n])
    m = logits.max(1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(1, keepdims=True))
    expected = -logp[np.arange(n), ids[1:n + 1]].mean()
    assert model.loss(tok.batch([doc])) == pytest.approx(expected, rel=1e-12)


# (n_embd, n_head) for the fused attention kernel: every head width it packs (1 to 16 lanes; 16 only where a float32
# vector has 16 lanes) and rows of 1 to 4 vectors or more, whichever of them this instruction set's vectors take
FUSED_SHAPES = [(16, 16), (16, 8), (16, 4), (32, 4), (32, 2), (48, 12), (64, 4), (128, 8)]
FUSED_POSITIONS = [1, 2, 3, 4, 5, 7, 9, 16, 17, 33, 127, 128]  # documents of 1 to kFusedMaxPositions positions


def check_fused_attention(dtype: str) -> int:
    """The fused attention kernel (the native backend) against attention's gemm path (the blas backend): loss and
    gradients of one layer over documents of every length in FUSED_POSITIONS, to float64 rounding or within float32's.
    Returns how many of FUSED_SHAPES the kernel took (a shape it does not take runs the gemm path on both)."""
    rng = np.random.default_rng(5)
    docs = [rng.integers(0, 6, size=n + 1).astype(np.int32) for n in FUSED_POSITIONS]
    offsets = np.concatenate([[0], np.cumsum([d.size for d in docs])]).astype(np.int64)
    batch = blasgpt.Batch(np.concatenate(docs), offsets)
    fused = 0
    for C, H in FUSED_SHAPES:
        fused += blasgpt._core.time_attention(dtype, C, H, max(FUSED_POSITIONS), 1, [], 0.0)[0] > 0
        cfg = blasgpt.Config(vocab_size=6, n_embd=C, n_head=H, n_layer=1, block_size=max(FUSED_POSITIONS))
        model = blasgpt.Model(cfg, dtype=dtype, seed=C + H, init=False)
        model.flat_params[...] = rng.normal(0.0, 1.2 / np.sqrt(C), size=model.flat_params.size)  # scores of a few units
        results = []
        for backend in ("native", "blas"):
            model.backend = backend
            results.append((model.forward_backward(batch), model.flat_grads.astype(np.float64)))
        (ln, gn), (lb, gb) = results
        tol = 1e-12 if dtype == "float64" else 1e-5
        assert abs(ln - lb) <= tol * abs(lb), (C, H, ln, lb)
        for name, (rows, cols), off in model.param_table:
            a, b = gn[off:off + rows * cols], gb[off:off + rows * cols]
            err = np.abs(a - b).max() / np.abs(b).max()
            assert err <= (1e-10 if dtype == "float64" else 1e-4), f"C{C} H{H} {dtype} {name}: relative error {err:.1e}"
    return fused


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fused_attention_matches_gemm_path(dtype):
    assert check_fused_attention(dtype) > 0


@pytest.mark.parametrize("isa", ["base", "avx2"])
def test_portable_kernels_match(isa):
    """The kernels built for older CPUs (chosen at run time) compute the same gradients, the fused attention kernel
    too (check_fused_attention); run in a child process with BLASGPT_ISA capping the instruction set."""
    import os
    import subprocess
    import sys

    code = """
import numpy as np, blasgpt, sys
sys.path.insert(0, %r)
from conftest import make_setup
assert blasgpt._core.native_isa() == %r, blasgpt._core.native_isa()
for cfg in [(1, 6, 2, 1, 5), (6, 16, 4, 1, 6), (7, 32, 2, 2, 5)]:
    model, tok, docs = make_setup(*cfg, backend="native")
    batch = tok.batch(docs)
    ln = model.forward_backward(batch); gn = model.flat_grads.copy()
    model.backend = "blas"
    lb = model.forward_backward(batch); gb = model.flat_grads.copy()
    assert abs(ln - lb) <= 1e-12 * abs(lb), (ln, lb)
    np.testing.assert_allclose(gn, gb, rtol=1e-10, atol=1e-13)
from test_gradients import check_fused_attention
assert check_fused_attention("float32") > 0 and check_fused_attention("float64") > 0
print("ok")
""" % (str(Path(__file__).parent), isa)
    env = dict(os.environ, BLASGPT_ISA=isa)
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    if isa == "avx2" and "this CPU does not run avx2" in r.stderr:  # (refused: blasgpt's dispatch.cpp)
        pytest.skip("this CPU has no AVX2")
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
