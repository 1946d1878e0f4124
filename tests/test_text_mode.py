"""Text mode through the Python layer: tokenizing a whole file, seeded training windows, evaluation over every
target, generation (greedy against model.forward, streaming, the start rule). The command line's text mode is in
test_text_cli.py, named datasets in test_datasets.py, bad input in test_bad_inputs.py."""

from __future__ import annotations

import importlib
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt import data as data_module
from blasgpt.bpe import BPETokenizer
from blasgpt.data import Batch, encode_text, load_text, read_text, text_vocabulary
from blasgpt.train import evaluate_text, lr_at, window_starts
from conftest import greedy_lines

train_module = importlib.import_module("blasgpt.train")  # (blasgpt.train is also the function)
generate_module = importlib.import_module("blasgpt.generate")  # (and blasgpt.generate)

ALPHABET = "abcdé ü\n中😀,"  # newline, non-ASCII, CJK and a character outside the BMP


def random_text(seed: int, n: int, alphabet: str = ALPHABET) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(n))


def text_model(tok: blasgpt.Tokenizer, block: int, seed: int = 0, dtype: str = "float64", n_layer: int = 1,
               spread: float = 0.5) -> blasgpt.Model:
    """A small model with weights wider than the init, so its argmax moves around instead of repeating one id."""
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=n_layer, block_size=block)
    model = blasgpt.Model(cfg, dtype=dtype, seed=seed)
    rng = np.random.default_rng(seed)
    for w in model.params.values():
        w[...] = rng.normal(0.0, spread, size=w.shape)
    return model


def log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max(axis=1, keepdims=True)
    return logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))


def direct_text_loss(model: blasgpt.Model, ids: np.ndarray) -> tuple[float, int, list[int]]:
    """(mean nats/char, targets, window lengths) from model.forward: window k feeds ids[kT : kT + T] and predicts
    ids[kT + 1 : kT + T + 1], the last one partial."""
    T = model.config.block_size
    total, count, lengths = 0.0, 0, []
    for k in range(0, ids.size - 1, T):
        target = ids[k + 1:k + T + 1]
        lp = log_softmax(model.forward(ids[k:k + target.size]))
        total -= lp[np.arange(target.size), target].sum()
        count += target.size
        lengths.append(int(target.size))
    return total / count, count, lengths


def greedy_text(model: blasgpt.Model, tok: blasgpt.Tokenizer, context: list[int], n: int) -> tuple[list[int], int]:
    """n greedy ids, each argmax(model.forward(last block_size ids)[-1]) over the characters (BOS is never drawn
    in text mode), and how many times BOS itself was the unrestricted argmax."""
    T = model.config.block_size
    ctx, out, bos_won = list(context), [], 0
    for _ in range(n):
        logits = model.forward(np.array(ctx[-T:], dtype=np.int32))[-1].copy()
        bos_won += int(np.argmax(logits) == tok.bos)
        logits[tok.bos] = -np.inf
        ctx.append(int(np.argmax(logits)))
        out.append(ctx[-1])
    return out, bos_won


# -- tokenizing a whole text ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk", [data_module.TEXT_CHUNK_CHARS, 7])
def test_tokenization_equals_a_per_character_loop(tmp_path, monkeypatch, chunk):
    """load_text's vocabulary is every distinct character, sorted, plus BOS; its tokens are each character's index,
    newlines, CR, tabs and characters outside the BMP included — also when the text spans many chunks."""
    monkeypatch.setattr(data_module, "TEXT_CHUNK_CHARS", chunk)
    text = random_text(1, 3000) + "\r\n\t end"
    path = tmp_path / "t.txt"
    path.write_bytes(text.encode("utf-8"))
    data, tok = load_text(path)
    chars = sorted(set(text))
    assert tok.chars == chars and tok.bos == len(chars) and tok.vocab_size == len(chars) + 1
    naive = [chars.index(c) for c in text]
    assert data.tokens.dtype == np.int32 and data.tokens.tolist() == naive
    assert tok.decode(data.tokens) == text
    import hashlib

    assert data.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    # with a given tokenizer (a resumed run or eval): the same ids
    again, tok2 = load_text(path, tokenizer=tok)
    assert tok2 is tok and again.tokens.tolist() == naive
    assert encode_text(text, text_vocabulary(text)).tolist() == naive


def test_load_text_drops_a_byte_order_mark_and_keeps_everything_else(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes(b"\xef\xbb\xbf" + "ab\n\nb a\n".encode())
    data, tok = load_text(path)
    assert tok.chars == ["\n", " ", "a", "b"]
    assert tok.decode(data.tokens) == "ab\n\nb a\n"


def test_a_file_whose_size_stat_cannot_tell_is_read_whole():
    """/proc files report size 0 yet hold text: read_text reads on past what stat said."""
    status = Path("/proc/self/status")
    if not status.is_file() or status.stat().st_size != 0:
        pytest.skip("no /proc/self/status reporting size 0 here")
    text, _ = read_text(status)
    assert text.startswith("Name:") and "\nPid:" in text and len(text) > 100


def test_encode_text_names_the_characters_outside_the_vocabulary():
    tok = text_vocabulary("abc\n")
    with pytest.raises(ValueError, match=r"2 character\(s\) not in the vocabulary: 'x', '😀'"):
        encode_text("ab😀cx", tok)


def test_tokens_take_four_bytes_per_character_and_splits_are_views(tmp_path):
    text = random_text(2, 10_000)
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    data, _ = load_text(path)
    assert len(data) == len(text) == data.tokens.size
    assert data.tokens.nbytes == 4 * len(text)
    train, val = data.split(0.1)
    assert val.size == int(len(text) * 0.1) and train.size + val.size == len(text)
    assert np.array_equal(np.concatenate([train, val]), data.tokens)  # the tail by position, not shuffled
    assert np.shares_memory(train, data.tokens) and np.shares_memory(val, data.tokens)
    assert data.split(0.0)[1].size == 0


def _encode_overhead(n: int) -> int:
    """Bytes encode_text allocates at its peak beyond the 4 per character it returns, for an n-character text."""
    text = ("the quick brown fox jumps over the lazy dog\n" * (n // 44 + 1))[:n]
    tok = text_vocabulary(text)
    tracemalloc.start()
    try:
        ids = encode_text(text, tok)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert ids.nbytes == 4 * n and ids.dtype == np.int32
    return peak - ids.nbytes


def test_encoding_a_large_text_keeps_four_bytes_per_character():
    """The tokens take 4 bytes a character; everything else encode_text allocates at once is bounded by its chunk
    size: the same for 2 chunks as for 4 (17 million characters), not a few more bytes per character."""
    chunk = data_module.TEXT_CHUNK_CHARS
    small, large = _encode_overhead(2 * chunk), _encode_overhead(4 * chunk)
    assert large < small + (1 << 20), f"{small / 1e6:.0f} MB over the tokens for 2 chunks, {large / 1e6:.0f} for 4"
    assert large < 16 * chunk, f"{large / 1e6:.0f} MB over the tokens"


# -- training windows ------------------------------------------------------------------------------------------------
def test_window_starts_depend_only_on_seed_and_step():
    """Any step's row is the same whether drawn alone, in a chunk, or in a run started elsewhere (across the
    1024-step draw blocks too); another seed gives other windows."""
    args = dict(batch_size=5, n_tokens=5000, block_size=16)
    all_rows = window_starts(7, 0, 2600, **args)
    assert all_rows.shape == (2600, 5) and all_rows.dtype == np.int64
    for s in (0, 1, 1023, 1024, 1025, 2047, 2048, 2599):
        assert np.array_equal(window_starts(7, s, 1, **args)[0], all_rows[s])
    for first, steps in ((0, 256), (100, 1000), (1000, 50), (2000, 600)):
        assert np.array_equal(window_starts(7, first, steps, **args), all_rows[first:first + steps])
    assert np.array_equal(window_starts(7, 0, 2600, **args), all_rows)
    assert not np.array_equal(window_starts(8, 0, 2600, **args), all_rows)
    # any integer seeds them, as --seed does in lines mode: negative ones too (numpy refused them), each its own
    neg = window_starts(-7, 0, 2600, **args)
    assert np.array_equal(window_starts(-7, 1025, 3, **args), neg[1025:1028])
    assert not np.array_equal(neg, all_rows) and not np.array_equal(neg, window_starts(-8, 0, 2600, **args))
    assert not np.array_equal(window_starts(2**40, 0, 5, **args), window_starts(2**40 + 1, 0, 5, **args))
    assert len(np.unique(all_rows)) > 4000  # uniform draws, not a few repeated offsets


def test_window_starts_cover_every_offset_that_fits():
    """Starts are uniform over [0, n - block_size - 1]: each window of block_size + 1 tokens fits, and every such
    offset occurs (here n = block_size + 4: offsets 0..3)."""
    rows = window_starts(0, 0, 500, 4, 20, 16)
    assert set(np.unique(rows).tolist()) == {0, 1, 2, 3}
    assert np.array_equal(np.unique(window_starts(3, 0, 10, 3, 17, 16)), [0])  # exactly block_size + 1 tokens
    with pytest.raises(ValueError, match="a training window needs block_size \\+ 1 = 17"):
        window_starts(0, 0, 1, 1, 16, 16)


def test_train_steps_on_the_seeded_windows():
    """train() in text mode is, bit for bit, train_step on Batch.of_windows(tokens, window_starts(seed, s)[s]) with
    microgpt's learning-rate schedule; its first loss is the mean over the windows of all block_size positions'
    cross-entropy, computed here from model.forward."""
    text = random_text(3, 400)
    tok = text_vocabulary(text)
    ids = encode_text(text, tok)
    T, B, steps = 8, 3, 9
    model = text_model(tok, T, seed=4)
    reference = text_model(tok, T, seed=4)
    starts = window_starts(11, 0, steps, B, ids.size, T)
    first = 0.0
    for st in starts[0]:
        lp = log_softmax(reference.forward(ids[st:st + T]))
        first -= lp[np.arange(T), ids[st + 1:st + T + 1]].mean() / B
    hist = blasgpt.train(model, tok, ids, steps=steps, batch_size=B, lr=0.02, window_seed=11)
    losses = [reference.train_step(Batch.of_windows(ids, starts[s]), lr_at(s, 0.02, steps)) for s in range(steps)]
    assert hist.losses == losses
    assert np.array_equal(model.flat_params, reference.flat_params)
    assert np.array_equal(model.adam_v, reference.adam_v)
    assert hist.losses[0] == pytest.approx(first, rel=1e-12)
    # a TextData trains exactly like its token array; another window seed trains differently
    again = text_model(tok, T, seed=4)
    td = data_module.TextData(ids, "0" * 64, "mem")
    assert blasgpt.train(again, tok, td, steps=steps, batch_size=B, lr=0.02, window_seed=11).losses == losses
    other = text_model(tok, T, seed=4)
    assert blasgpt.train(other, tok, ids, steps=steps, batch_size=B, lr=0.02, window_seed=12).losses != losses


def test_train_in_two_parts_equals_one_run():
    """The windows of a continued run come from (seed, step), so 5 + 7 steps with the full schedule equal 12."""
    text = random_text(5, 300)
    tok = text_vocabulary(text)
    ids = encode_text(text, tok)
    one, two = text_model(tok, 8, seed=1), text_model(tok, 8, seed=1)
    h = blasgpt.train(one, tok, ids, steps=12, batch_size=2, window_seed=3)
    a = blasgpt.train(two, tok, ids, steps=5, batch_size=2, window_seed=3, schedule_steps=12)
    b = blasgpt.train(two, tok, ids, steps=7, batch_size=2, window_seed=3, schedule_steps=12)
    assert a.losses + b.losses == h.losses
    assert np.array_equal(one.flat_params, two.flat_params) and np.array_equal(one.adam_m, two.adam_m)


# -- evaluation ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [2, 9, 10, 11, 50, 103])
def test_evaluate_text_counts_every_target_once(n):
    """Consecutive windows of T = 8 (the last partial unless T divides n - 1): the mean over all n - 1 targets
    equals the direct computation from model.forward."""
    text = random_text(n, n)
    tok = text_vocabulary(ALPHABET)
    ids = encode_text(text, tok)
    model = text_model(tok, 8, seed=n)
    loss, targets = evaluate_text(model, ids)
    want, count, lengths = direct_text_loss(model, ids)
    assert targets == count == n - 1 and sum(lengths) == n - 1
    assert loss == pytest.approx(want, rel=1e-12)
    if n == 103:  # 102 targets = 12 windows of 8 + one of 6
        assert lengths == [8] * 12 + [6]


def test_evaluate_text_over_many_calls_and_a_prefix(monkeypatch):
    """Chunked into several loss() calls (a tiny EVAL_CHUNK_TOKENS) the result is the same, max_targets counts the
    first targets only, and gradients and Adam state are untouched."""
    text = random_text(9, 600)
    tok = text_vocabulary(ALPHABET)
    ids = encode_text(text, tok)
    model = text_model(tok, 8, seed=9)
    blasgpt.train(model, tok, ids, steps=2, batch_size=2)
    state = [a.copy() for a in (model.flat_params, model.flat_grads, model.adam_m, model.adam_v)]
    whole, n = evaluate_text(model, ids)
    monkeypatch.setattr(train_module, "EVAL_CHUNK_TOKENS", 24)
    assert evaluate_text(model, ids) == pytest.approx((whole, n), rel=1e-13)
    loss, targets = evaluate_text(model, ids, max_targets=100)
    assert targets == 100 and loss == pytest.approx(direct_text_loss(model, ids[:101])[0], rel=1e-12)
    assert evaluate_text(model, ids, max_targets=10**9)[1] == ids.size - 1
    for before, now in zip(state, (model.flat_params, model.flat_grads, model.adam_m, model.adam_v)):
        assert np.array_equal(before, now)


def test_validation_during_training_uses_the_first_32768_targets_and_all_at_the_end():
    assert train_module.EVAL_DURING_TRAINING == 32768
    text = random_text(10, 36_000, "ab \n")
    tok = text_vocabulary(text)
    ids = encode_text(text, tok)
    train_ids, val_ids = ids[:2000], ids[2000:]
    model = text_model(tok, 16, seed=2, spread=0.2)
    hist = blasgpt.train(model, tok, train_ids, steps=2, batch_size=2, val_docs=val_ids, eval_every=1)
    assert [s for s, _ in hist.val_losses] == [1, 2]
    assert hist.val_losses[1][1] == evaluate_text(model, val_ids)[0]  # the final one: every target
    at_1 = text_model(tok, 16, seed=2, spread=0.2)
    blasgpt.train(at_1, tok, train_ids, steps=1, batch_size=2, schedule_steps=2)
    assert hist.val_losses[0][1] == evaluate_text(at_1, val_ids, max_targets=32768)[0]
    assert hist.val_losses[0][1] != evaluate_text(at_1, val_ids)[0]


# -- generation ------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gen_setup():
    """A text vocabulary with a newline, a model whose BOS logit often wins (so banning BOS is exercised)."""
    tok = text_vocabulary("\nabcdefgh é")
    model = text_model(tok, 8, seed=21, n_layer=2)
    model.params["lm_head"][tok.bos] = 4.0 * model.params["lm_head"][3]
    return model, tok


@pytest.mark.parametrize("prompt", ["", "a", "abc dé", "hgfedcba", "ab cd ef gh éa bc"])
def test_greedy_text_generation_is_argmax_of_forward(gen_setup, prompt):
    """top_k=1: token for token argmax(model.forward(last block_size ids)[-1]) over the characters, for 40 tokens
    (five times block_size), from prompts shorter than, equal to and longer than block_size."""
    model, tok = gen_setup
    context = list(tok.encode(prompt)) if prompt else [tok.chars.index("\n")]
    want, bos_won = greedy_text(model, tok, context, 40)
    got = blasgpt.generate(model, tok, prompt, length=40, top_k=1, temperature=3.0, seed=5)
    assert got == [prompt + tok.decode(want)]
    assert blasgpt.generate(model, tok, prompt, length=40, num=3, top_k=1, seed=6) == got * 3  # batched alike
    assert tok.bos not in want


def test_banning_bos_was_exercised(gen_setup):
    model, tok = gen_setup
    total = sum(greedy_text(model, tok, list(tok.encode(p)) or [0], 40)[1] for p in ["", "a", "abc dé"])
    assert total > 0, "BOS never won the argmax, so the text-mode ban is not tested"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_greedy_generation_with_a_trained_model(dtype):
    text = ("to be or not to be, that is the question\n" * 20)
    tok = text_vocabulary(text)
    ids = encode_text(text, tok)
    model = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size, n_embd=16, n_head=2, n_layer=1, block_size=12),
                          dtype=dtype, seed=0)
    blasgpt.train(model, tok, ids, steps=150, batch_size=4, lr=0.02)
    want, _ = greedy_text(model, tok, list(tok.encode("to be")), 60)
    assert blasgpt.generate(model, tok, "to be", length=60, top_k=1)[0] == "to be" + tok.decode(want)


def test_empty_prompt_starts_from_a_newline_or_bos(gen_setup):
    """Text mode with an empty prompt conditions on "\\n" (in this vocabulary) — not part of the result — and on
    BOS when the vocabulary has no newline."""
    model, tok = gen_setup
    want, _ = greedy_text(model, tok, [tok.chars.index("\n")], 20)
    assert blasgpt.generate(model, tok, "", length=20, top_k=1) == [tok.decode(want)]
    assert blasgpt.generate(model, tok, "", length=20, top_k=1) == blasgpt.generate(model, tok, length=20, top_k=1)
    no_newline = text_vocabulary("abcdefgh é")
    m2 = text_model(no_newline, 8, seed=3)
    want, _ = greedy_text(m2, no_newline, [no_newline.bos], 20)
    got = blasgpt.generate(m2, no_newline, "", length=20, top_k=1)
    assert got == [no_newline.decode(want)] and len(got[0]) == 20


def test_greedy_lines_generation_stops_at_bos_and_block_size():
    """Lines mode keeps microgpt's rules: the context is BOS + prompt, a sample ends at BOS or at block_size."""
    tok = blasgpt.Tokenizer(list("abcdef"))
    seen_stop, seen_full = False, False
    for seed in range(6):
        model = text_model(tok, 6, seed=seed, spread=0.6)
        for prompt in ("", "a", "fed"):
            want = greedy_lines(model, tok, prompt)
            got = blasgpt.generate(model, tok, prompt, length=6, num=2, top_k=1, mode="lines")
            assert got == [want, want]
            assert blasgpt.sample(model, tok, num=1, temperature=1e-9, prompt=prompt) == [want]
            seen_stop |= len(want) < 6
            seen_full |= len(want) == 6
    assert seen_stop and seen_full


@pytest.mark.parametrize("num", [1, 3])
def test_stream_pieces_concatenate_to_the_result(gen_setup, num):
    model, tok = gen_setup
    for prompt, length in (("ab", 100), ("", 37), ("abc", 1)):
        kw = dict(length=length, num=num, temperature=1.3, top_k=None, seed=17)
        whole = blasgpt.generate(model, tok, prompt, **kw)
        pieces = list(blasgpt.generate(model, tok, prompt, stream=True, **kw))
        if num == 1:
            assert pieces[0] == prompt and all(isinstance(p, str) for p in pieces)
            assert ["".join(pieces)] == whole
        else:
            assert pieces[0] == [prompt] * num and all(isinstance(p, list) and len(p) == num for p in pieces)
            assert ["".join(col) for col in zip(*pieces)] == whole
        assert len(pieces) > (2 if length > 3 else 1)  # it really streamed in several pieces
        assert all(len(w) == len(prompt) + length for w in whole)


def test_seeds_num_and_length(gen_setup):
    """The same seed gives the same samples, another seed others; sample i does not depend on num; length 0 gives
    the prompt alone; num 0 gives nothing."""
    model, tok = gen_setup
    five = blasgpt.generate(model, tok, "ab", length=50, num=5, seed=3)
    assert len(five) == 5 and len(set(five)) == 5 and all(s.startswith("ab") and len(s) == 52 for s in five)
    assert blasgpt.generate(model, tok, "ab", length=50, num=5, seed=3) == five
    assert blasgpt.generate(model, tok, "ab", length=50, num=2, seed=3) == five[:2]
    assert blasgpt.generate(model, tok, "ab", length=50, num=5, seed=4) != five
    assert blasgpt.generate(model, tok, "ab", length=0, num=3) == ["ab"] * 3
    assert list(blasgpt.generate(model, tok, "ab", length=0, stream=True)) == ["ab"]
    assert blasgpt.generate(model, tok, "", length=0) == [""]
    assert blasgpt.generate(model, tok, "ab", length=5, num=0) == []
    assert set("".join(five)) <= set(tok.chars)


def test_top_k_restricts_each_draw(gen_setup):
    """With top_k=2 and a high temperature every new character is one of the two likeliest characters after its
    context (BOS excluded), checked token by token against model.forward."""
    model, tok = gen_setup
    T = model.config.block_size
    prompt = "abc"
    outs = blasgpt.generate(model, tok, prompt, length=30, num=4, temperature=5.0, top_k=2, seed=8)
    assert len(set(outs)) > 1
    for out in outs:
        ids = list(tok.encode(out))
        for i in range(len(prompt), len(ids)):
            logits = model.forward(np.array(ids[max(0, i - T):i], dtype=np.int32))[-1]
            top = set(np.argsort(logits)[-2:].tolist()) - {tok.bos}
            if tok.bos in np.argsort(logits)[-2:]:  # BOS is banned: the third likeliest may take its place
                top |= {int(np.argsort(logits)[-3])}
            assert ids[i] in top


def test_lines_mode_streams_the_same_documents():
    """Lines mode through stream=True: pieces (empty once a document has ended) join to the non-stream result,
    documents that end early included."""
    tok = blasgpt.Tokenizer(list("abcdef"))
    ended_early = False
    for seed in range(4):
        model = text_model(tok, 6, seed=seed, spread=0.6)
        kw = dict(length=6, num=4, temperature=1.0, seed=seed, mode="lines")
        whole = blasgpt.generate(model, tok, "a", **kw)
        pieces = list(blasgpt.generate(model, tok, "a", stream=True, **kw))
        assert ["".join(col) for col in zip(*pieces)] == whole
        assert all(s.startswith("a") and len(s) <= 6 for s in whole)
        ended_early |= any(len(s) < 6 for s in whole)
    assert ended_early


@pytest.mark.parametrize("seconds", [0.0, 1e9])  # one token per C++ call; twice as many each call
def test_generation_in_calls_draws_what_one_call_draws(gen_setup, monkeypatch, seconds):
    """generate runs the C++ generator call by call (CHUNK_SECONDS each, so Ctrl-C is seen between calls): the
    samples are token for token those of one call for the whole length, however the calls fall."""
    model, tok = gen_setup
    doc_tok = blasgpt.Tokenizer(list("abcdef"))
    doc_model = text_model(doc_tok, 6, seed=1, spread=0.6)
    monkeypatch.setattr(generate_module, "CHUNK_SECONDS", seconds)
    for m, t, prompt, length, num, mode, temperature, top_k in (
            (model, tok, "ab", 100, 3, "text", 1.3, None), (model, tok, "", 37, 1, "text", 0.5, 3),
            (model, tok, "abc dé", 9, 2, "text", 2.0, 1), (doc_model, doc_tok, "a", 6, 5, "lines", 1.0, None)):
        ids = generate_module._generator(m, t, prompt, num, temperature, top_k, 9, mode).next(length)
        want = [prompt + t.decode([i for i in row if i >= 0]) for row in ids]
        assert blasgpt.generate(m, t, prompt, length=length, num=num, temperature=temperature, top_k=top_k, seed=9,
                                mode=mode) == want


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_a_generation_stopped_early_has_whole_documents_and_prefixes(monkeypatch, tokenizer):
    """What sample writes when interrupted: after any number of C++ calls, a sample marked whole is exactly its
    document of the full run (a byte-level document that ended inside a character included) and any other is a
    prefix of it, never part of a character."""
    bpe = tokenizer == "bpe"  # (a byte-level BOS is 1 of 257 tokens: nearly uniform draws, more documents)
    tok = BPETokenizer([]) if bpe else blasgpt.Tokenizer(list("abcdef"))
    model = text_model(tok, 12, seed=4, spread=0.1 if bpe else 0.6)
    if not bpe:
        model.params["lm_head"][tok.bos] = model.params["lm_head"][3]  # BOS as likely as "d": documents end
    num = 400 if bpe else 40
    full = blasgpt.generate(model, tok, "a", length=12, num=num, temperature=1.0, seed=5, mode="lines")
    monkeypatch.setattr(generate_module, "CHUNK_SECONDS", 0.0)  # one token per call
    seen_whole = seen_part = 0
    for calls in range(1, 13):
        run = generate_module.Generation(model, tok, "a", 12, num, 1.0, None, 5, "lines")
        for _ in zip(range(calls), run):
            pass
        for text, whole, want in zip(run.texts(), run.ended, full):
            assert text == want if whole else want.startswith(text), (calls, text, want)
            seen_whole += whole and not all(run.ended)
            seen_part += not whole and text != want
    assert seen_whole and seen_part


def test_a_document_that_ends_inside_a_character_ends_in_u_fffd():
    """Lines mode, byte-level BPE, one token per document: a lone lead byte is an unfinished character, U+FFFD."""
    tok = BPETokenizer([])
    model = text_model(tok, 4, seed=2, spread=0.1)
    firsts = generate_module._generator(model, tok, "", 300, 1.0, None, 3, "lines").next(1)[:, 0]
    assert any(0xC2 <= i <= 0xF4 for i in firsts)
    want = [tok.decode([i]) for i in firsts]  # errors="replace"; BOS: ""
    assert blasgpt.generate(model, tok, "", length=1, num=300, temperature=1.0, seed=3, mode="lines") == want
