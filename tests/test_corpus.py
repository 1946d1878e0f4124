"""The corpus interface (blasgpt.corpus): both implementations, built by load_corpus, give the splits, fingerprints,
per-step sequences, evaluations and memory needs that training had before they existed — each checked here against
a value computed from first principles (Python's random, numpy's PCG64, model.forward, sha256), not against the
corpus code itself. Also TrainConfig (what checkpoints store) and resuming from a checkpoint written before it."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.config import memory_estimate
from blasgpt.corpus import (CORPORA, MODES, DataChanged, Documents, TextStream, as_corpus, corpus_class,
                            load_corpus)
from blasgpt.train_config import LEGACY, TrainConfig
from conftest import blasgpt_cli

WORDS = [f"{a}{b}{c}" for a in "bdkmz" for b in "aeiou" for c in "lnrs"][:37] + ["a", "longestwordhere"]
TEXT = "the cat sat on the mat.\nthe dog ate the hat!\n" * 9


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def small_model(vocab: int, block: int, seed: int = 3) -> blasgpt.Model:
    cfg = blasgpt.Config(vocab_size=vocab, n_embd=8, n_head=2, n_layer=1, block_size=block)
    model = blasgpt.Model(cfg, seed=seed)
    rng = np.random.default_rng(seed)
    for w in model.params.values():
        w[...] = rng.normal(0.0, 0.4, size=w.shape)
    return model


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "words.txt").write_text("\n".join(WORDS) + "\n", encoding="utf-8")
    (tmp_path / "book.txt").write_text(TEXT, encoding="utf-8")
    return tmp_path


# -- lines mode ------------------------------------------------------------------------------------------------------
def test_documents_are_microgpts_shuffle_split_and_fingerprint(files):
    corpus = load_corpus(files / "words.txt", "lines", seed=7)
    rng = random.Random(7)  # microgpt: random.seed(seed); random.shuffle(docs)
    want = list(WORDS)
    rng.shuffle(want)
    assert isinstance(corpus, Documents) and corpus.mode == "lines" and list(corpus.docs) == want
    assert corpus.tokenizer.chars == sorted(set("".join(WORDS)))
    assert corpus.fingerprint == hashlib.sha256("\n".join(WORDS).encode()).hexdigest()  # file order
    version, state, gauss = rng.getstate()
    assert corpus.identity() == {"data_sha256": corpus.fingerprint, "rng_state": [version, list(state), gauss]}
    assert corpus.init_rng is not None and corpus.init_rng.gauss(0, 1) == rng.gauss(0, 1)  # weights continue it
    train, val = corpus.split(0.25, 16)
    n_val = int(len(WORDS) * 0.25)
    assert list(train.docs) == want[:len(WORDS) - n_val] and list(val.docs) == want[len(WORDS) - n_val:]
    assert train.summary(val) == f"{len(WORDS) - n_val:,} train + {n_val:,} val docs"
    assert train.identity() == corpus.identity()  # the parts name the whole corpus
    unshuffled = load_corpus(files / "words.txt", "lines")  # no seed: file order (eval --data)
    assert list(unshuffled.docs) == WORDS and unshuffled.init_rng is None


@pytest.mark.parametrize("start, steps, batch", [(0, 3, 2), (5, 4, 3), (11, 9, 5), (0, 1, 40)])
def test_documents_feed_step_s_reads_documents_s_times_b_plus_i(start, steps, batch):
    """Step s trains on documents (s*B + i) % n, i < B, in order: decoded from the packed batch and its rows."""
    tok = blasgpt.Tokenizer(sorted(set("".join(WORDS))))
    corpus = Documents(WORDS, tok)
    feed = corpus.feed(start, steps, batch, 6, seed=0)
    rows = feed.rows(start, start + steps)
    assert rows.shape == (steps, batch) and rows.dtype == np.int64
    tokens, offsets = feed.batch.tokens, feed.batch.offsets
    for k in range(steps):
        for i in range(batch):
            j = rows[k, i]
            doc = WORDS[((start + k) * batch + i) % len(WORDS)]
            assert tokens[offsets[j]:offsets[j + 1]].tolist() == ([tok.bos] + tok.encode(doc).tolist() + [tok.bos])[:7]


def test_documents_evaluation_is_the_mean_document_loss_from_forward(files):
    corpus = load_corpus(files / "words.txt", "lines", seed=1)
    _, val = corpus.split(0.3, 8)
    tok = corpus.tokenizer
    model = small_model(tok.vocab_size, 8)
    losses, targets = [], 0
    for doc in val.docs:
        ids = [tok.bos] + tok.encode(doc).tolist() + [tok.bos]
        n = min(8, len(ids) - 1)
        lp = log_softmax(model.forward(ids[:n]))
        losses.append(-lp[np.arange(n), ids[1:n + 1]].mean())
        targets += n
    result, line = val.evaluation(model)
    assert result["loss"] == pytest.approx(np.mean(losses), rel=1e-12)
    assert result["targets"] == targets and result["documents"] == len(val.docs)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / math.log(2), rel=1e-15)
    assert val.loss(model) == result["loss"] and val.loss(model, final=False) == result["loss"]
    assert line.endswith(f"mean over {len(val.docs):,} documents ({targets:,} targets, lines mode)")


# -- text mode -------------------------------------------------------------------------------------------------------
def test_text_stream_tokens_split_and_fingerprint(files):
    corpus = load_corpus(files / "book.txt", "text", seed=5)
    chars = sorted(set(TEXT))
    assert isinstance(corpus, TextStream) and corpus.mode == "text" and corpus.init_rng is None
    assert corpus.tokens.tolist() == [chars.index(c) for c in TEXT]
    assert corpus.fingerprint == hashlib.sha256(TEXT.encode()).hexdigest()
    assert corpus.identity() == {"data_sha256": corpus.fingerprint}
    train, val = corpus.split(0.1, 16)
    n_val = int(len(TEXT) * 0.1)
    assert train.tokens.tolist() == corpus.tokens[:len(TEXT) - n_val].tolist()
    assert val.tokens.tolist() == corpus.tokens[len(TEXT) - n_val:].tolist()
    assert np.shares_memory(train.tokens, corpus.tokens)  # views, not copies
    assert train.summary(val) == f"{len(TEXT) - n_val:,} train + {n_val:,} val characters (text mode)"
    with pytest.raises(blasgpt.DataError, match=f"book.txt has {len(TEXT) - n_val} characters to train on; text "
                                                f"mode needs at least block_size \\+ 1 = {len(TEXT) - n_val + 1}"):
        corpus.split(0.1, len(TEXT) - n_val)
    with pytest.raises(blasgpt.DataError, match=f"the validation split \\(0.001 of {len(TEXT)} characters\\) is "
                                                f"too short for one target"):
        corpus.split(0.001, 16)


@pytest.mark.parametrize("seed, start, steps", [(3, 0, 5), (3, 1020, 9), (-4, 2047, 3)])
def test_text_stream_feed_windows_come_from_pcg64_seeded_by_seed_and_step_block(seed, start, steps):
    """Step s trains on B windows of T + 1 tokens starting at row s % 1024 of PCG64((seed, s // 1024)) draws in
    [0, n - T) — (-seed, 1, 0, s // 1024) for a negative seed."""
    tokens = np.arange(200, dtype=np.int32) % 7
    corpus = TextStream(tokens, blasgpt.Tokenizer(list("abcdefg")))
    T, B = 16, 3
    feed = corpus.feed(start, steps, B, T, seed)
    assert feed.batch.windows and feed.batch.tokens is corpus.tokens
    rows = feed.rows(start, start + steps)
    for k, s in enumerate(range(start, start + steps)):
        entropy = ([seed] if seed >= 0 else [-seed, 1, 0]) + [s // 1024]
        draws = np.random.default_rng(entropy).integers(0, 200 - T, size=(1024, B))
        assert rows[k].tolist() == draws[s % 1024].tolist()


def test_text_stream_evaluation_counts_every_target_once_from_forward(files):
    corpus = load_corpus(files / "book.txt", "text")
    _, val = corpus.split(0.2, 8)
    model = small_model(corpus.tokenizer.vocab_size, 8)
    ids, T, total = val.tokens, 8, 0.0
    for k in range(0, ids.size - 1, T):
        target = ids[k + 1:k + T + 1]
        total -= log_softmax(model.forward(ids[k:k + target.size]))[np.arange(target.size), target].sum()
    result, line = val.evaluation(model)
    assert result["targets"] == ids.size - 1 and "documents" not in result
    assert result["loss"] == pytest.approx(total / (ids.size - 1), rel=1e-12)
    assert val.loss(model) == result["loss"]
    assert line.endswith(f"{ids.size - 1:,} targets (text mode, windows of 8)")


# -- the same interface ----------------------------------------------------------------------------------------------
def test_memory_is_the_largest_call_of_either_mode():
    """One process's share of the batch or one evaluation call, whichever is larger: lines mode evaluates 256
    documents a call and trains each on at most its length + 1 positions; text mode evaluates 32768 positions a call
    (windows of T) and always trains on T."""
    tok = blasgpt.Tokenizer(list("abcdefg"))
    cfg = blasgpt.Config(vocab_size=8, n_embd=8, n_head=2, n_layer=1, block_size=16)
    docs = Documents(["ab"] * 300 + ["abcdefg"], tok)
    few = Documents(["abc"] * 5, tok)
    assert docs.memory(cfg, "float64", 8, 2, 1, few) == memory_estimate(cfg, "float64", 8, 2, 8)
    assert docs.memory(cfg, "float64", 8, 1, 3, docs) == memory_estimate(cfg, "float64", 256, 1, 8)
    # 7 documents over 2 ranks: shares are cut by positions, so one may hold a sequence more than 4
    assert few.memory(cfg, "float32", 7, 1, 2) == memory_estimate(cfg, "float32", 5, 1, 4)
    text = TextStream(np.zeros(100_000, np.int32), tok)
    short = TextStream(np.zeros(40, np.int32), tok)
    assert text.memory(cfg, "float64", 4, 1, 1, text) == memory_estimate(cfg, "float64", 2048, 1, None)
    assert text.memory(cfg, "float64", 4, 1, 1, short) == memory_estimate(cfg, "float64", 4, 1, None)
    assert text.memory(cfg, "float64", 1, 1, 1, TextStream(np.zeros(50, np.int32), tok)) == \
        memory_estimate(cfg, "float64", 4, 1, None)  # ceil(50 / 16) windows


def test_one_table_of_modes_and_what_train_accepts():
    assert set(MODES) == {"lines", "text"} and all(corpus_class(m).mode == m for m in MODES)
    assert set(CORPORA.values()) == {Documents, TextStream}
    with pytest.raises(ValueError, match="the data mode must be one of text, lines, got 'words'"):
        corpus_class("words")
    tok = blasgpt.Tokenizer(list("ab"))
    assert isinstance(as_corpus(["ab"], tok), Documents) and isinstance(as_corpus(np.zeros(3, np.int32), tok),
                                                                         TextStream)
    td = blasgpt.TextData(np.zeros(3, np.int32), "f" * 64, "mem")
    assert as_corpus(td, tok).fingerprint == "f" * 64
    corpus = Documents(["ab"], tok)
    assert as_corpus(corpus, tok) is corpus


def test_a_changed_file_is_reported_before_tokenizing(files):
    lines = load_corpus(files / "words.txt", "lines", seed=2)
    book = load_corpus(files / "book.txt", "text")
    assert load_corpus(files / "words.txt", "lines", seed=2, expect=lines.identity()).fingerprint == lines.fingerprint
    with pytest.raises(DataChanged, match=r"its documents or their number changed"):
        load_corpus(files / "words.txt", "lines", seed=3, expect=lines.identity())  # another shuffle stream
    (files / "book.txt").write_text(TEXT + "XYZ", encoding="utf-8")  # characters outside the old vocabulary
    with pytest.raises(DataChanged, match=r"its text changed"):
        load_corpus(files / "book.txt", "text", tokenizer=book.tokenizer, expect=book.identity())


# -- TrainConfig and old checkpoints -----------------------------------------------------------------------------------
def test_train_config_reads_old_run_state_in_one_place():
    old = {"seed": 7, "batch_size": 3, "lr": 0.02, "total_steps": 40, "val_fraction": 0.2, "data": "t.txt",
           "data_sha256": "0" * 64, "data_mode": "text"}  # what checkpoints held before TrainConfig
    cfg = TrainConfig.from_checkpoint(old, step=10, dtype="float32")
    assert (cfg.seed, cfg.batch_size, cfg.lr, cfg.total_steps, cfg.val_fraction, cfg.data, cfg.data_mode,
            cfg.dtype) == (7, 3, 0.02, 40, 0.2, "t.txt", "text", "float32")
    bare = TrainConfig.from_checkpoint({"note": 1}, step=12)  # save_checkpoint from Python: no run state
    assert (bare.seed, bare.batch_size, bare.lr, bare.total_steps, bare.val_fraction, bare.data_mode) == \
        (42, 1, 0.01, 12, 0.0, "lines") == (LEGACY["seed"], 1, 0.01, 12, 0.0, "lines")
    assert TrainConfig.from_checkpoint({"data_mode": "words"}, 0).data_mode == "lines"
    assert TrainConfig.from_checkpoint(cfg.to_dict(), step=10) == cfg.replace(dtype="float64")
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1, got 0"):
        cfg.replace(batch_size=0)
    with pytest.raises(ValueError, match="the learning-rate schedule must be one of linear, cosine, wsd, got 'step'"):
        cfg.replace(schedule="step")


@pytest.mark.parametrize("mode", ["lines", "text"])
def test_a_checkpoint_with_the_old_run_state_resumes_bit_exactly(tmp_path, mode):
    """A checkpoint whose extra metadata has only the keys written before TrainConfig resumes to the same
    parameters as the uninterrupted run."""
    (tmp_path / "t.txt").write_text(TEXT if mode == "text" else "\n".join(WORDS) + "\n", encoding="utf-8")
    common = ["--data", "t.txt", "--data-mode", mode, "--block-size", "8", "--n-embd", "8", "--n-head", "2",
              "--batch-size", "3", "--samples", "0", "--log-every", "0"]
    r = blasgpt_cli(["train", *common, "--steps", "20", "--checkpoint-every", "10", "--out", "full"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    ck = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt-10.safetensors")
    old_keys = ("seed", "batch_size", "lr", "total_steps", "val_fraction", "data", "data_sha256", "data_mode",
                "rng_state")
    (tmp_path / "old").mkdir()
    blasgpt.save_checkpoint(tmp_path / "old" / "ckpt.safetensors", ck.model, ck.tokenizer,
                            {k: v for k, v in ck.extra.items() if k in old_keys})
    r = blasgpt_cli(["train", "--resume", "old/ckpt.safetensors", "--samples", "0", "--log-every", "0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    a = blasgpt.Model.load(tmp_path / "old" / "ckpt.safetensors")
    b = blasgpt.Model.load(tmp_path / "full" / "ckpt.safetensors")
    assert a.step == b.step == 20
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    np.testing.assert_array_equal(a.adam_v, b.adam_v)
