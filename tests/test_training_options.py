"""The training options (docs/TRAINING_OPTIONS.md): each off by default, each checked in float64 against finite
differences or its formula, under 1 and 2 threads and both gemm backends (the PyTorch checks are in
test_training_options_torch.py; this file needs no torch, so it also runs under the sanitizers)."""

from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from conftest import make_setup
from test_gradients import finite_difference_grads

THREADS = (1, 2)


def _rel(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


# -- AdamW decoupled weight decay ---------------------------------------------------------------------------------

def test_decayed_params_are_the_matrices_that_multiply_activations():
    model = blasgpt.Model(blasgpt.Config(n_layer=2))
    names = [name for name, _, _ in model.param_table]
    assert model.decayed_params == [n for n in names if n not in ("wte", "wpe")]


def test_weight_decay_with_zero_gradient_only_shrinks_the_decayed_params():
    model, _, _ = make_setup(31, 8, 2, 2, 6)
    before = {k: v.copy() for k, v in model.params.items()}
    model.flat_grads[...] = 0.0  # Adam's step is then exactly zero: only the decay moves anything
    lr, wd = 0.05, 0.3
    model.apply_adam(lr, weight_decay=wd)
    for name, w in model.params.items():
        want = before[name] * (1 - lr * wd) if name in model.decayed_params else before[name]
        np.testing.assert_array_equal(w, want, err_msg=name)


def test_weight_decay_in_train_steps_equals_adamw_steps():
    model, tok, docs = make_setup(33, 8, 2, 1, 6)
    twin = blasgpt.Model(model.config, init=False, backend=model.backend)
    twin.flat_params[...] = model.flat_params
    corpus = tok.batch(docs)
    ids = np.array([[0, 1], [2, 3], [4, 0]], dtype=np.int64)
    lrs = np.array([0.01, 0.02, 0.03])
    model.train_steps(corpus, ids, lrs, weight_decay=0.1)
    for s in range(3):
        twin.forward_backward(blasgpt.Batch(corpus.tokens, corpus.offsets, ids[s]))
        twin.apply_adam(float(lrs[s]), weight_decay=0.1)
    np.testing.assert_array_equal(model.flat_params, twin.flat_params)


# -- global-norm gradient clipping ---------------------------------------------------------------------------------

@pytest.mark.parametrize("threads", THREADS)
def test_clipped_gradient_is_g_times_clip_over_norm(threads, backend):
    model, tok, docs = make_setup(38, 32, 2, 2, 5, n_docs=7, backend=backend)  # > 2**14 parameters: sliced sums
    model.threads = threads
    batch = tok.batch(docs)
    model.forward_backward(batch)
    g = model.flat_grads.copy()
    norm = np.sqrt(np.sum(g * g))
    model.train_step(batch, 0.01, grad_clip=0.25 * norm)
    assert model.grad_norm == pytest.approx(norm, rel=1e-13)
    assert _rel(model.flat_grads, g * (0.25 * norm / norm)) <= 1e-13


def test_clipping_above_the_norm_changes_nothing():
    model, tok, docs = make_setup(35, 8, 2, 2, 6)
    twin = blasgpt.Model(model.config, init=False, backend=model.backend)
    twin.flat_params[...] = model.flat_params
    batch = tok.batch(docs)
    model.train_step(batch, 0.01)
    twin.train_step(batch, 0.01, grad_clip=1e6)
    np.testing.assert_array_equal(model.flat_params, twin.flat_params)
    np.testing.assert_array_equal(model.adam_v, twin.adam_v)
    assert twin.grad_norm == pytest.approx(np.linalg.norm(model.flat_grads), rel=1e-14)


@pytest.mark.parametrize("threads", THREADS)
def test_clipping_sees_the_summed_gradient_of_the_shares(threads):
    """As under MPI: shares' gradients (mean_over = the whole batch) summed into grads, then apply_adam clips by
    the norm of the sum, the same step as train_step on the whole batch (and not what clipping each share would
    give)."""
    model, tok, docs = make_setup(36, 8, 2, 2, 6, n_docs=8)
    model.threads = threads
    whole = blasgpt.Model(model.config, init=False, backend=model.backend)
    whole.flat_params[...] = model.flat_params
    corpus = tok.batch(docs)
    ids = np.arange(8, dtype=np.int64)
    whole.forward_backward(corpus)
    clip = 0.5 * np.linalg.norm(whole.flat_grads)
    whole.train_step(corpus, 0.01, grad_clip=clip)
    total = np.zeros_like(model.flat_grads)
    for share in (ids[:3], ids[3:]):
        model.forward_backward(blasgpt.Batch(corpus.tokens, corpus.offsets, share), mean_over=8)
        total += model.flat_grads
    model.flat_grads[...] = total
    model.apply_adam(0.01, grad_clip=clip)
    assert model.grad_norm == pytest.approx(whole.grad_norm, rel=1e-13)
    assert _rel(model.flat_params, whole.flat_params) <= 1e-12
    assert _rel(model.flat_grads, whole.flat_grads) <= 1e-12


def test_clipping_does_not_apply_a_non_finite_gradient():
    model, tok, docs = make_setup(37, 8, 2, 1, 6)
    model.forward_backward(tok.batch(docs))
    model.flat_grads[3] = np.inf
    before = model.flat_params.copy()
    model.apply_adam(0.01, grad_clip=1.0)
    assert model.step == 0 and model.grad_norm == np.inf
    np.testing.assert_array_equal(model.flat_params, before)


# -- gradient accumulation ---------------------------------------------------------------------------------------

def _split(ids: np.ndarray, k: int) -> list:
    return [ids[i * ids.size // k:(i + 1) * ids.size // k] for i in range(k)]


@pytest.mark.parametrize("threads", THREADS)
@pytest.mark.parametrize("k", [2, 3])
def test_accumulated_micro_batches_equal_the_big_batch(k, threads, backend):
    model, tok, docs = make_setup(41, 9, 3, 2, 6, n_docs=10, backend=backend)
    model.threads = threads
    corpus = tok.batch(docs)
    ids = np.array([3, 0, 9, 4, 4, 7, 1, 8, 2], dtype=np.int64)
    big_loss = model.forward_backward(corpus.select(ids))
    big = model.flat_grads.copy()
    model.flat_grads[...] = 7.0  # stale values: the first micro-batch must overwrite them
    loss = sum(model.forward_backward(corpus.select(part), mean_over=ids.size, accumulate=i > 0)
               for i, part in enumerate(_split(ids, k)))
    assert loss == pytest.approx(big_loss, rel=1e-13)
    assert _rel(model.flat_grads, big) <= 1e-12


def test_accumulate_adds_to_the_gradient_already_there(backend):
    model, tok, docs = make_setup(42, 8, 2, 2, 6, backend=backend)
    batch = tok.batch(docs)
    model.forward_backward(batch)
    g = model.flat_grads.copy()
    model.flat_grads[...] = 0.25
    model.forward_backward(batch, accumulate=True)
    assert _rel(model.flat_grads, g + 0.25) <= 1e-14


@pytest.mark.parametrize("threads", THREADS)
def test_train_step_on_micro_batches_equals_train_step_on_the_batch(threads):
    model, tok, docs = make_setup(43, 8, 2, 2, 6, n_docs=8)
    model.threads = threads
    whole = blasgpt.Model(model.config, init=False, backend=model.backend, threads=threads)
    whole.flat_params[...] = model.flat_params
    corpus = tok.batch(docs)
    ids = np.arange(8, dtype=np.int64)
    for step in range(3):
        want = whole.train_step(corpus.select(ids), 0.02, weight_decay=0.1, grad_clip=0.5)
        got = model.train_step([corpus.select(p) for p in _split(ids, 3)], 0.02, weight_decay=0.1, grad_clip=0.5)
        assert got == pytest.approx(want, rel=1e-13)
        assert model.grad_norm == pytest.approx(whole.grad_norm, rel=1e-12)
        assert _rel(model.flat_params, whole.flat_params) <= 1e-12 and model.step == whole.step == step + 1


def test_accumulated_windows_equal_the_big_batch():
    model, tok, _ = make_setup(44, 8, 2, 1, 6)
    stream = np.random.default_rng(0).integers(0, tok.vocab_size - 1, 200).astype(np.int32)
    starts = np.array([0, 17, 50, 33, 120, 190], dtype=np.int64)
    big_loss = model.forward_backward(blasgpt.Batch.of_windows(stream, starts))
    big = model.flat_grads.copy()
    loss = sum(model.forward_backward(blasgpt.Batch.of_windows(stream, part), mean_over=6, accumulate=i > 0)
               for i, part in enumerate(_split(starts, 2)))
    assert loss == pytest.approx(big_loss, rel=1e-13)
    assert _rel(model.flat_grads, big) <= 1e-12


# -- dropout -------------------------------------------------------------------------------------------------------

def _hash2(a, b):
    """The core's h(a, b) = splitmix64's finalizer of (a ^ b) + γ, on numpy uint64 (wrapping)."""
    with np.errstate(over="ignore"):
        z = (np.uint64(a) ^ np.uint64(b)) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def dropout_mask(seed: int, step: int, site: int, seq: int, n: int, C: int, p: float) -> np.ndarray:
    """m / (1 - p) of sequence ``seq`` (index in the step's batch), positions 0..n-1, as the docs define it."""
    key = _hash2(_hash2(0, seed), step)
    rows = _hash2(_hash2(_hash2(key, site), seq), np.arange(n, dtype=np.uint64))
    u = _hash2(rows[:, None], np.arange(C, dtype=np.uint64)[None, :])
    keep = (u >> np.uint64(11)) >= np.uint64(np.ceil(p * 2.0**53))
    return keep * (1 / (1 - p))


def test_dropout_masks_keep_one_minus_p_independently():
    m = dropout_mask(7, 3, 1, 0, 400, 50, 0.3) > 0
    assert abs(m.mean() - 0.7) < 0.01
    other = dropout_mask(7, 3, 2, 0, 400, 50, 0.3) > 0  # another site: unrelated
    assert abs((m & other).mean() - 0.49) < 0.01
    assert (dropout_mask(7, 3, 1, 0, 400, 50, 0.0) == 1).all()


@pytest.mark.parametrize("threads", THREADS)
def test_dropout_gradients_match_finite_differences(threads, backend):
    """Same seed and step: the same masks on every evaluation, so the loss is a smooth function to difference."""
    model, tok, docs = make_setup(72, 6, 2, 1, 5, backend=backend)
    model.threads = threads
    batch = tok.batch(docs)
    opts = {"dropout": 0.25, "dropout_seed": 9}
    model.forward_backward(batch, **opts)
    analytic = model.flat_grads.copy()
    flat, numeric, h = model.flat_params, np.empty_like(analytic), 1e-5
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + h
        up = model.forward_backward(batch, **opts)
        flat[i] = keep - h
        down = model.forward_backward(batch, **opts)
        flat[i] = keep
        numeric[i] = (up - down) / (2 * h)
    for name, (rows, cols), off in model.param_table:
        a, n = analytic[off:off + rows * cols], numeric[off:off + rows * cols]
        assert np.abs(n).max() > 0, name
        assert np.abs(a - n).max() / np.abs(n).max() <= 1e-6, name


def test_dropout_masks_do_not_depend_on_threads_or_on_the_split(backend):
    model, tok, docs = make_setup(73, 8, 2, 2, 6, n_docs=9, backend=backend)
    corpus = tok.batch(docs)
    ids = np.arange(9, dtype=np.int64)
    opts = {"dropout": 0.2, "dropout_seed": 5}
    whole_loss = model.forward_backward(corpus, **opts)
    whole = model.flat_grads.copy()
    model.threads = 2
    assert model.forward_backward(corpus, **opts) == pytest.approx(whole_loss, rel=1e-13)
    assert _rel(model.flat_grads, whole) <= 1e-12
    loss = sum(model.forward_backward(corpus.select(part), mean_over=9, accumulate=i > 0, share_start=int(part[0]),
                                      **opts) for i, part in enumerate(_split(ids, 3)))
    assert loss == pytest.approx(whole_loss, rel=1e-13)
    assert _rel(model.flat_grads, whole) <= 1e-12


def test_dropout_depends_on_seed_and_step_and_never_acts_outside_training():
    model, tok, docs = make_setup(74, 8, 2, 1, 6)
    batch = tok.batch(docs)
    plain = model.forward_backward(batch)
    a = model.forward_backward(batch, dropout=0.5, dropout_seed=1)
    g = model.flat_grads.copy()
    assert model.forward_backward(batch, dropout=0.5, dropout_seed=1) == a
    np.testing.assert_array_equal(model.flat_grads, g)
    assert model.forward_backward(batch, dropout=0.5, dropout_seed=2) != a
    model.step = 1
    assert model.forward_backward(batch, dropout=0.5, dropout_seed=1) != a
    assert model.loss(batch) == plain  # evaluation after a dropout step: no mask left behind
    assert model.forward_backward(batch, dropout=0.0, dropout_seed=1) == plain


def test_dropout_training_resumes_bit_exactly(tmp_path, backend):
    model, tok, docs = make_setup(75, 8, 2, 1, 6, backend=backend)
    corpus = tok.batch(docs)
    ids = np.array([[0, 1], [2, 3], [4, 0], [1, 3]], dtype=np.int64)
    opts = {"dropout": 0.3, "dropout_seed": 11, "weight_decay": 0.1, "grad_clip": 1.0}
    start = blasgpt.save_checkpoint(tmp_path / "start.safetensors", model, tok)
    straight = [model.train_step(corpus.select(i), 0.01, **opts) for i in ids]
    resumed = blasgpt.load_checkpoint(start, backend=backend).model
    half = [resumed.train_step(corpus.select(i), 0.01, **opts) for i in ids[:2]]
    path = blasgpt.save_checkpoint(tmp_path / "half.safetensors", resumed, tok)
    resumed = blasgpt.load_checkpoint(path, backend=backend).model
    half += list(resumed.train_steps(corpus, ids[2:], np.full(2, 0.01), **opts))
    assert half == straight
    np.testing.assert_array_equal(resumed.flat_params, model.flat_params)


# -- weight tying --------------------------------------------------------------------------------------------------

def tied_setup(seed: int, C: int, H: int, L: int, T: int, backend: str = "blas", n_docs: int = 6):
    """make_setup's model and documents, with wte as the output layer (the same sizes, weights drawn alike)."""
    untied, tok, docs = make_setup(seed, C, H, L, T, n_docs=n_docs, backend=backend)
    cfg = blasgpt.Config(**{**untied.config.to_dict(), "tie_embeddings": True})
    model = blasgpt.Model(cfg, init=False, backend=backend)
    for name, w in model.params.items():
        w[...] = untied.params[name]
    return model, tok, docs


def test_tied_table_has_no_lm_head_and_the_head_is_wte():
    model, tok, docs = tied_setup(61, 8, 2, 1, 6)
    names = [n for n, _, _ in model.param_table]
    assert "lm_head" not in names and names[:2] == ["wte", "wpe"]
    assert model.num_params == model.config.num_params
    untied = blasgpt.Model(blasgpt.Config(**{**model.config.to_dict(), "tie_embeddings": False}), init=False,
                          backend=model.backend)
    assert untied.num_params - model.num_params == model.config.vocab_size * model.config.n_embd
    for name, w in model.params.items():
        untied.params[name][...] = w
    untied.params["lm_head"][...] = model.params["wte"]  # an untied model whose head equals wte: same function
    ids = np.array([tok.bos, 1, 2, 3], dtype=np.int32)
    np.testing.assert_array_equal(model.forward(ids), untied.forward(ids))
    batch = tok.batch(docs)
    assert model.forward_backward(batch) == untied.forward_backward(batch)
    np.testing.assert_allclose(model.grads["wte"], untied.grads["wte"] + untied.grads["lm_head"], rtol=1e-13,
                               atol=1e-16)


@pytest.mark.parametrize("threads", THREADS)
def test_tied_gradients_match_finite_differences(threads, backend):
    model, tok, docs = tied_setup(63, 6, 2, 1, 5, backend=backend)
    model.threads = threads
    batch = tok.batch(docs)
    model.forward_backward(batch)
    analytic = model.flat_grads.copy()
    numeric = finite_difference_grads(model, batch)
    for name, (rows, cols), off in model.param_table:
        a, n = analytic[off:off + rows * cols], numeric[off:off + rows * cols]
        assert np.abs(n).max() > 0, name
        assert np.abs(a - n).max() / np.abs(n).max() <= 1e-6, name


def test_tied_checkpoint_round_trip_and_old_checkpoints_load_untied(tmp_path):
    import json

    from safetensors import safe_open

    model, tok, docs = tied_setup(64, 8, 2, 1, 6)
    model.train_step(tok.batch(docs), 0.01)
    path = blasgpt.save_checkpoint(tmp_path / "tied.safetensors", model, tok)
    back = blasgpt.load_checkpoint(path).model
    assert back.config.tie_embeddings and "lm_head" not in back.params
    np.testing.assert_array_equal(back.flat_params, model.flat_params)
    np.testing.assert_array_equal(back.adam_v, model.adam_v)
    with safe_open(str(path), framework="numpy") as f:
        assert json.loads(f.metadata()["config"])["tie_embeddings"] is True
    assert blasgpt.Config.from_dict({"vocab_size": 7, "n_embd": 8, "n_head": 2, "n_layer": 1,
                                     "block_size": 6}).tie_embeddings is False


def test_tie_embeddings_must_be_a_bool():
    with pytest.raises(ValueError, match="tie_embeddings must be True or False"):
        blasgpt.Config(tie_embeddings=1)  # type: ignore[arg-type]


# -- bad input ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda m, b: m.train_step(b, 0.01, weight_decay=-0.1), "weight_decay must be a finite number >= 0"),
    (lambda m, b: m.train_step(b, 0.01, weight_decay=float("nan")), "weight_decay must be a finite number >= 0"),
    (lambda m, b: m.apply_adam(0.01, weight_decay=float("inf")), "weight_decay must be a finite number >= 0"),
    (lambda m, b: m._core.apply_adam(0.01, weight_decay=-1.0), "weight_decay must be a finite number >= 0"),
    (lambda m, b: m.train_step(b, 0.01, grad_clip=0.0), "grad_clip must be a finite number > 0"),
    (lambda m, b: m.train_step(b, 0.01, grad_clip=-1.0), "grad_clip must be a finite number > 0"),
    (lambda m, b: m.apply_adam(0.01, grad_clip=float("inf")), "grad_clip must be a finite number > 0"),
    (lambda m, b: m.train_steps(b, np.zeros((1, 1), np.int64), np.ones(1), grad_clip=float("nan")),
     "grad_clip must be a finite number > 0"),
    (lambda m, b: m._core.apply_adam(0.01, grad_clip=-1.0), "grad_clip must be a finite number > 0"),
    (lambda m, b: m.train_step([], 0.01), "at least one batch"),
    (lambda m, b: m.train_step(b, 0.01, dropout=1.0), r"dropout must be a number in \[0, 1\)"),
    (lambda m, b: m.train_step(b, 0.01, dropout=-0.1), r"dropout must be a number in \[0, 1\)"),
    (lambda m, b: m.train_step([b], 0.01, dropout=float("nan")), r"dropout must be a number in \[0, 1\)"),
    (lambda m, b: m.forward_backward(b, dropout=1.5), r"dropout must be a number in \[0, 1\)"),
    (lambda m, b: m._core.train_step(b.tokens, b.offsets, 0.01, dropout=1.0), r"dropout must be a number in"),
    (lambda m, b: m.train_step(b, 0.01, dropout=0.1, dropout_seed=-1), "dropout_seed must be an integer"),
    (lambda m, b: m.forward_backward(b, share_start=-1), "share_start must be an integer"),
    (lambda m, b: m.train_step([b, "x"], 0.01), "batch must be a blasgpt.Batch"),
])
def test_bad_options_are_one_line_value_errors(call, match):
    model, tok, docs = make_setup(39, 8, 2, 1, 6)
    batch = tok.batch(docs)
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match=match) as e:
        call(model, batch)
    assert "\n" not in str(e.value)
    np.testing.assert_array_equal(model.flat_params, before)
    assert model.step == 0
