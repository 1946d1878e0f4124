"""Data-parallel threads: the same numbers as one thread, whatever the split."""

from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from conftest import make_setup


@pytest.mark.parametrize("threads", [2, 3, 4])
def test_threaded_gradient_equals_single_thread(threads, backend):
    model, tok, docs = make_setup(51, 12, 3, 2, 8, n_docs=13, backend=backend)
    batch = tok.batch(docs)
    loss1 = model.forward_backward(batch)
    g1 = model.flat_grads.copy()
    model.threads = threads
    assert model.threads == threads
    loss_t = model.forward_backward(batch)
    assert loss_t == pytest.approx(loss1, rel=1e-13)
    np.testing.assert_allclose(model.flat_grads, g1, rtol=1e-12, atol=1e-15)
    assert model.loss(batch) == pytest.approx(loss1, rel=1e-13)


def test_more_threads_than_documents():
    model, tok, docs = make_setup(52, 8, 2, 1, 6, n_docs=2)
    batch = tok.batch(docs[:1])
    ref = model.forward_backward(batch)
    g = model.flat_grads.copy()
    model.threads = 4
    assert model.forward_backward(batch) == ref
    np.testing.assert_array_equal(model.flat_grads, g)


def test_threaded_training_is_deterministic_and_tracks_single_thread():
    names = blasgpt.load_docs()[:3000]
    runs = {}
    for threads in (1, 2, 2):
        docs, tok, model = blasgpt.microgpt_start(names, seed=1, n_embd=32)
        model.threads = threads
        runs.setdefault(threads, []).append(blasgpt.train(model, tok, docs, steps=60, batch_size=16).losses)
    assert runs[2][0] == runs[2][1]  # bit-identical run to run
    np.testing.assert_allclose(runs[2][0], runs[1][0], rtol=1e-10)


def test_threads_argument_checked():
    with pytest.raises(ValueError, match="threads must be an integer between 1 and 256"):
        blasgpt.Model(blasgpt.Config(), threads=0)


def test_train_steps_stops_before_applying_a_non_finite_loss():
    model, tok, docs = make_setup(53, 8, 2, 1, 6)
    corpus = tok.batch(docs)
    ids = np.array([[0, 1], [2, 3], [1, 2]], dtype=np.int64)
    model.train_steps(corpus, ids[:1], np.array([0.01]))
    before = model.flat_params.copy()
    model.params["lm_head"][0, 0] = np.inf
    before[model.param_table[2][2]] = np.inf
    losses = model.train_steps(corpus, ids[1:], np.array([0.01, 0.01]))
    assert losses.shape == (1,) and not np.isfinite(losses[0])
    assert model.step == 1
    np.testing.assert_array_equal(model.flat_params, before)


def test_calls_on_one_model_from_two_python_threads_run_one_at_a_time():
    """The core locks every call on a model (csrc/runtime.hpp), the bindings only release the GIL: two Python threads
    training one model at once end in exactly the state of the same steps taken one after another (each train_steps
    call runs whole; all steps are alike, so the order of the two calls does not matter)."""
    import threading

    steps = 60
    models = [make_setup(55, 32, 4, 2, 16, n_docs=16)[0] for _ in range(2)]
    _, tok, docs = make_setup(55, 32, 4, 2, 16, n_docs=16)
    corpus = tok.batch(docs)
    ids = np.tile(np.arange(len(docs), dtype=np.int64), (steps, 1))
    lrs = np.full(steps, 1e-3)
    np.testing.assert_array_equal(models[0].flat_params, models[1].flat_params)
    models[0].train_steps(corpus, ids, lrs)
    models[0].train_steps(corpus, ids, lrs)
    threads = [threading.Thread(target=models[1].train_steps, args=(corpus, ids, lrs)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert models[1].step == models[0].step == 2 * steps
    np.testing.assert_array_equal(models[1].flat_params, models[0].flat_params)
