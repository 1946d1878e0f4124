"""Bad arguments at the Python <-> C++ boundary raise ValueError with a sentence that says what is wrong."""

from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from blasgpt import _core
from conftest import make_setup, rewrite_checkpoint


@pytest.fixture
def setup():
    return make_setup(41, 8, 2, 1, 6)


def raw(model: blasgpt.Model):
    return model._core  # the compiled object: its own checks must hold even when Python's are bypassed


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_embd=16, n_head=3), "must divide n_embd"),
    (dict(n_embd=0), "n_embd must be between"),
    (dict(block_size=0), "block_size must be between"),
    (dict(n_layer=0), "n_layer must be between"),
    (dict(vocab_size=1), "vocab_size must be between"),
    (dict(n_head=-2), "n_head must be between"),
    (dict(n_embd=2.5), "must be an integer"),
])
def test_config_validation(kwargs, message):
    with pytest.raises(ValueError, match=message):
        blasgpt.Config(**kwargs)


def test_core_validates_config_too():
    with pytest.raises(ValueError, match="must divide n_embd"):
        _core.ModelF64(vocab_size=5, n_embd=10, n_head=3, n_layer=1, block_size=4)
    with pytest.raises(ValueError, match="unknown gemm backend"):
        _core.ModelF64(vocab_size=5, n_embd=8, n_head=2, n_layer=1, block_size=4, backend="cuda")


def test_wrong_model_dtype():
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        blasgpt.Model(blasgpt.Config(), dtype="float16")


def test_token_id_out_of_range(setup):
    model, tok, _ = setup
    bad = blasgpt.Batch(np.array([tok.bos, 1, tok.vocab_size, tok.bos], dtype=np.int32),
                        np.array([0, 4], dtype=np.int64))
    with pytest.raises(ValueError, match=r"token id 7 at position 2 is out of range \[0, 7\)"):
        model.forward_backward(bad)
    neg = blasgpt.Batch(np.array([tok.bos, -1, tok.bos], dtype=np.int32), np.array([0, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="token id -1"):
        model.train_step(neg, 0.01)
    with pytest.raises(ValueError, match="out of range"):
        model.forward([tok.bos, 99])


def test_empty_batch(setup):
    model, tok, docs = setup
    with pytest.raises(ValueError, match="batch is empty"):
        tok.batch([])
    corpus = tok.batch(docs)
    with pytest.raises(ValueError, match="batch is empty"):
        model.forward_backward(corpus.select([]))


def test_documents_need_two_tokens(setup):
    model, tok, _ = setup
    b = blasgpt.Batch(np.array([tok.bos], dtype=np.int32), np.array([0, 1], dtype=np.int64))
    with pytest.raises(ValueError, match="has 1 tokens; each needs at least 2"):
        model.loss(b)


def test_offsets_must_be_monotone_and_in_bounds(setup):
    model, tok, _ = setup
    t = np.array([tok.bos, 0, tok.bos, tok.bos, 1, tok.bos], dtype=np.int32)
    for offsets in ([0, 4, 3], [0, 3, 9], [-1, 3]):
        with pytest.raises(ValueError, match="offsets must be non-decreasing and within the tokens array"):
            model.loss(blasgpt.Batch(t, np.array(offsets, dtype=np.int64)))
    with pytest.raises(ValueError, match="document index 5 is out of range"):
        model.loss(blasgpt.Batch(t, np.array([0, 3, 6], dtype=np.int64)).select([5]))


@pytest.mark.parametrize("tokens, message", [
    (np.array([6, 0, 6], dtype=np.int64), "tokens must have dtype int32, got int64"),
    (np.array([6.0, 0.0, 6.0]), "tokens must have dtype int32, got float64"),
    (np.array([[6, 0, 6]], dtype=np.int32), "tokens must be 1-D"),
    (np.array([6, 9, 0, 9, 6, 9], dtype=np.int32)[::2], "tokens must be C-contiguous"),
    ([6, 0, 6], "tokens must be a numpy array"),
])
def test_array_checks(setup, tokens, message):
    model, _, _ = setup
    offsets = np.array([0, 3], dtype=np.int64)
    with pytest.raises(ValueError, match=message):
        blasgpt.Batch(tokens, offsets)  # Python's check
    with pytest.raises(ValueError, match=message):
        raw(model).forward_backward(tokens, offsets)  # and the binding's own


def test_offsets_dtype_checked_in_core(setup):
    model, _, _ = setup
    with pytest.raises(ValueError, match="offsets must have dtype int64, got int32"):
        raw(model).loss(np.array([6, 0, 6], dtype=np.int32), np.array([0, 3], dtype=np.int32))


def test_doc_longer_than_block_is_truncated_like_microgpt(setup):
    model, tok, _ = setup
    T = model.config.block_size
    long_doc = "abcdefabcdefabcdef"  # 18 chars > block_size 6
    full = model.loss(tok.batch([long_doc]))
    cut = model.loss(tok.batch([long_doc[:T]]))  # [BOS] + first T chars: the same T positions and targets
    assert full == cut
    assert model.loss(tok.batch([long_doc], block_size=T)) == full


@pytest.mark.parametrize("lr", [float("nan"), -0.1, float("inf"), "fast"])
def test_bad_learning_rate(setup, lr):
    model, tok, docs = setup
    with pytest.raises(ValueError, match="lr must be"):
        model.train_step(tok.batch(docs), lr)
    with pytest.raises(ValueError, match="lr must be"):
        raw(model).train_step(*(lambda b: (b.tokens, b.offsets))(tok.batch(docs)), float("nan"))


def test_bad_sampling_options(setup):
    model, tok, _ = setup
    with pytest.raises(ValueError, match="temperature must be"):
        blasgpt.sample(model, tok, temperature=0)
    with pytest.raises(ValueError, match="top_k must be"):
        blasgpt.sample(model, tok, top_k=tok.vocab_size + 1)
    with pytest.raises(ValueError, match=r"character\(s\) not in the vocabulary: '!'"):
        blasgpt.sample(model, tok, prompt="a!")
    with pytest.raises(ValueError, match="must be shorter than block_size"):
        blasgpt.sample(model, tok, prompt="abcdef")


def test_forward_length_and_type(setup):
    model, tok, _ = setup
    with pytest.raises(ValueError, match="between 1 and block_size"):
        model.forward([tok.bos] * 7)
    with pytest.raises(ValueError, match="integer ids"):
        model.forward(np.array([0.5, 1.0]))


def test_train_arguments(setup):
    model, tok, docs = setup
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1"):
        blasgpt.train(model, tok, docs, steps=1, batch_size=0)
    with pytest.raises(ValueError, match="no documents"):
        blasgpt.train(model, tok, [], steps=1)
    other = blasgpt.Tokenizer(list("xyz"))
    with pytest.raises(ValueError, match="tokenizer has 4 symbols but the model expects 7"):
        blasgpt.train(model, other, docs, steps=1)


def test_non_finite_loss_stops_training(setup):
    model, tok, docs = setup
    model.params["wte"][0, 0] = np.nan
    with pytest.raises(blasgpt.TrainingError, match="loss became nan at step 1"):
        blasgpt.train(model, tok, docs, steps=3)


def test_adam_kernel_checks_and_matches_formula():
    rng = np.random.default_rng(3)
    p, m, g = (rng.standard_normal(1001) for _ in range(3))
    v = np.abs(rng.standard_normal(1001))
    want_m = 0.85 * m + (1 - 0.85) * g
    want_v = 0.99 * v + (1 - 0.99) * g * g
    want_p = p - 0.01 * (want_m / (1 - 0.85**4)) / (np.sqrt(want_v / (1 - 0.99**4)) + 1e-8)
    _core.adam_update(p, m, v, g, 0.01, 4)
    np.testing.assert_allclose(p, want_p, rtol=1e-14, atol=1e-16)
    np.testing.assert_allclose(m, want_m, rtol=1e-14)
    with pytest.raises(ValueError, match="same length"):
        _core.adam_update(p, m, v, g[:10], 0.01, 4)
    with pytest.raises(ValueError, match="step must be >= 1"):
        _core.adam_update(p, m, v, g, 0.01, 0)
    with pytest.raises(ValueError, match="grads must have dtype float64, got float32"):
        _core.adam_update(p, m, v, g.astype(np.float32), 0.01, 1)


def test_misaligned_and_equivalent_dtypes(setup):
    model, tok, docs = setup
    buf = np.zeros(64, np.uint8)
    misaligned = np.frombuffer(buf.data, np.int32, count=3, offset=1)
    with pytest.raises(ValueError, match="tokens must be aligned"):
        raw(model).loss(misaligned, np.array([0, 3], dtype=np.int64))
    with pytest.raises(ValueError, match="tokens must be aligned"):
        blasgpt.Batch(misaligned, np.array([0, 3], dtype=np.int64))
    buf2 = np.zeros(13, np.uint8)
    buf2[1:13] = np.frombuffer(np.array([6, 1, 2], dtype=np.int32).tobytes(), np.uint8)
    odd = np.frombuffer(buf2.data, np.int32, count=3, offset=1)  # Model.forward copies a misaligned list of ids
    assert not odd.flags.aligned
    np.testing.assert_array_equal(model.forward(odd), model.forward([6, 1, 2]))
    b = tok.batch(docs[:2])
    same = blasgpt.Batch(b.tokens, b.offsets.astype(np.longlong))  # int64 under another name: accepted by both
    assert model.loss(same) == model.loss(b)


def test_out_of_range_integers_are_value_errors(setup):
    model, tok, docs = setup
    b = tok.batch(docs[:2])
    with pytest.raises(ValueError, match="mean_over is out of range for a 64-bit integer"):
        raw(model).forward_backward(b.tokens, b.offsets, None, 2**63)
    with pytest.raises(ValueError, match="mean_over must be an integer between the batch size"):
        model.forward_backward(b, mean_over=2**63)
    with pytest.raises(ValueError, match="block_size must be an integer between 1 and 2\\*\\*30"):
        tok.batch(docs, block_size=2**63)


def test_train_steps_checks_every_step_before_applying_any(setup):
    model, tok, docs = setup
    corpus = tok.batch(docs)
    before = model.flat_params.copy()
    ids = np.array([[0, 1], [1, 2], [2, 99]], dtype=np.int64)  # the last step names a document that is not there
    with pytest.raises(ValueError, match="document index 99 is out of range"):
        model.train_steps(corpus, ids, np.full(3, 0.01))
    assert model.step == 0
    np.testing.assert_array_equal(model.flat_params, before)


def test_checkpoint_metadata_cannot_make_the_loader_allocate(tmp_path, setup):
    """A checkpoint crafted with a config that claims an enormous model (and a metadata checksum to match) is
    refused by comparing the tensors with the config before any model is allocated; absurdly nested JSON is refused
    too."""
    import json

    model, tok, _ = setup
    path = tmp_path / "c.safetensors"
    blasgpt.save_checkpoint(path, model, tok)
    config = blasgpt.load_checkpoint(path).model.config.to_dict()
    crafted = tmp_path / "crafted.safetensors"
    for key, value in [("config", json.dumps({**config, "vocab_size": 1 << 24})),
                       ("extra", "[" * 5000), ("dtype", "float16"), ("step", "-5")]:
        rewrite_checkpoint(path, crafted, {key: value})
        with pytest.raises(blasgpt.CheckpointError, match=f"{crafted.name}: (invalid metadata|tensor)"):
            blasgpt.load_checkpoint(crafted)
