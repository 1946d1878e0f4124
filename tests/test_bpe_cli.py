"""The BPE tokenizer through the product: ``train --tokenizer bpe`` (text and lines mode), bit-exact resume, eval's
per-character figures against a direct computation, generation (greedy = forward argmax, streamed characters
whole, --length in characters), and eval / sample of a BPE checkpoint where the ``tokenizers`` package is absent.

Training a tokenizer needs ``tokenizers`` (those tests skip without it); everything else runs on a tokenizer with
merges written out by hand."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.bpe import BPETokenizer, chars_covered
from blasgpt.checkpoint import save_checkpoint
from blasgpt.config import Config
from blasgpt.corpus import Documents, TextStream, evaluate_text, load_corpus
from blasgpt.generate import _Decoder, generate
from blasgpt.train_config import TrainConfig
from conftest import ONE_BLAS_THREAD, blasgpt_cli
from test_bpe import _hand_merges, needs_hf
from test_text_cli import QUIET, SMALL, ok, run, same_state, write_text

BPE = ["--tokenizer", "bpe", "--vocab-size", "280"]


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def hand_checkpoint(path: Path, mode: str, block: int = 16) -> tuple[blasgpt.Model, BPETokenizer]:
    """A checkpoint with a hand-made BPE tokenizer (no training library) and an untrained model, as `train` would
    write it for ``mode`` (run settings in its extra)."""
    tok = _hand_merges()
    model = blasgpt.Model(Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=block))
    run_state = TrainConfig(data_mode=mode, tokenizer="bpe", vocab_size=tok.vocab_size, val_fraction=0.0).to_dict()
    save_checkpoint(path, model, tok, run_state)
    return model, tok


# -- evaluation: the per-character figures equal a direct computation ------------------------------------------------

def test_text_stream_figures_equal_a_direct_computation() -> None:
    tok = _hand_merges()
    text = "the cat héllo the hello 中文 aaaa abab\n" * 6
    ids = tok.encode(text)
    model = blasgpt.Model(Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8))
    result, line = TextStream(ids, tok, text).evaluation(model)
    total, T = 0.0, 8
    for lo in range(0, ids.size - 1, T):
        ctx, tgt = ids[lo:lo + T], ids[lo + 1:lo + T + 1]
        lp = log_softmax(model.forward(ctx[:tgt.size]))
        total -= lp[np.arange(tgt.size), tgt].sum()
    chars = chars_covered(tok, ids[1:])
    assert chars == len(text) - len(tok.decode(ids[:1])) and result["chars"] == chars  # (the first token: context)
    assert result["targets"] == ids.size - 1
    assert result["loss"] == pytest.approx(total / (ids.size - 1), rel=1e-12)
    assert result["nats_per_char"] == pytest.approx(total / chars, rel=1e-12)
    assert result["bits_per_char"] == result["text_bits_per_char"] == pytest.approx(total / chars / math.log(2),
                                                                                   rel=1e-12)
    assert result["tokens_per_char"] == (ids.size - 1) / chars < 1  # merges fire
    assert f"{result['bits_per_char']:.4f} bits/char" in line and "nats/token" in line and "bpe vocab" in line


def test_documents_figures_count_every_target_over_the_characters() -> None:
    """Lines mode: the loss keeps its meaning (mean over documents, per token); nats_per_char is the nats of all
    targets (the closing BOS included, covering no character) over the documents' characters."""
    tok = _hand_merges()
    docs = ["the cat", "héllo", "aaaa ab", "中文 the", "x", "hello hello hello the end"]
    model = blasgpt.Model(Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=6))
    result, line = Documents(docs, tok).evaluation(model)
    total, chars, means = 0.0, 0, []
    for d in docs:
        ids = [tok.bos, *tok.encode(d).tolist(), tok.bos]
        n = min(6, len(ids) - 1)
        lp = log_softmax(model.forward(ids[:n]))
        nll = -lp[np.arange(n), ids[1:n + 1]]
        total += nll.sum()
        means.append(nll.mean())
        chars += chars_covered(tok, ids[1:n + 1])
    assert result["loss"] == pytest.approx(np.mean(means), rel=1e-12)
    assert result["bits_per_char"] == pytest.approx(result["loss"] / math.log(2), rel=1e-15)
    assert result["chars"] == chars < sum(map(len, docs))  # the last document is cut at block_size
    assert result["nats_per_char"] == pytest.approx(total / chars, rel=1e-12)
    assert result["text_bits_per_char"] == pytest.approx(total / chars / math.log(2), rel=1e-12)
    assert "bits/char" in line and line.endswith("lines mode)")


# -- generation ----------------------------------------------------------------------------------------------------

def test_decoder_shows_a_character_split_across_tokens_only_once_whole() -> None:
    tok = BPETokenizer(np.zeros((0, 2), dtype=np.int32))  # bytes only: every multi-byte character spans tokens
    text = "héllo wörld € 😀 中文"
    dec = _Decoder(tok, 1)
    pieces = [dec.add(np.array([[i]]))[0] for i in tok.encode(text).tolist()]
    assert "".join(pieces) == text and "\ufffd" not in "".join(pieces)
    assert pieces[1] == "" and pieces[2] == "é"  # the lead byte alone shows nothing
    assert dec.end(0) == ""
    dec.add(np.array([[0xE4]]))  # a document ending inside a character: U+FFFD at the end, not before
    assert dec.end(0) == "\ufffd"


@pytest.mark.parametrize("mode", ["text", "lines"])
def test_greedy_bpe_generation_is_the_forward_argmax(mode: str) -> None:
    tok = _hand_merges()
    model = blasgpt.Model(Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=12), seed=3)
    prompt = "the héllo"
    ctx = tok.encode(prompt).tolist() if mode == "text" else [tok.bos, *tok.encode(prompt).tolist()]
    new: list[int] = []
    for _ in range(40 if mode == "text" else 12 - len(ctx) + 1):
        logits = model.forward(ctx[-12:])[-1]
        if mode == "text":
            logits[tok.bos] = -np.inf  # a stream never draws BOS
        nxt = int(np.argmax(logits))
        if mode == "lines" and nxt == tok.bos:
            break
        ctx.append(nxt)
        new.append(nxt)
    expect = tok.decode_bytes(new).decode("utf-8", errors="replace")
    if mode == "text":  # --length counts characters
        length = len(expect) - 1 if expect[-1:] == "\ufffd" else len(expect)  # (the last may be unfinished)
        got = generate(model, tok, prompt, length, top_k=1, mode=mode)[0]
        assert got == prompt + expect[:length]
    else:
        got = generate(model, tok, prompt, 12, top_k=1, mode=mode)[0]
        assert got == prompt + expect


def test_bpe_length_counts_characters_and_streaming_matches() -> None:
    tok = BPETokenizer(np.zeros((0, 2), dtype=np.int32))  # an untrained model over bytes draws broken UTF-8 often
    model = blasgpt.Model(Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8), seed=1)
    texts = generate(model, tok, "é", 37, num=3, temperature=2.0, seed=4)
    assert [len(t) for t in texts] == [38, 38, 38]
    streamed = list(generate(model, tok, "é", 37, num=3, temperature=2.0, seed=4, stream=True))
    assert ["".join(p[i] for p in streamed) for i in range(3)] == texts
    assert generate(model, tok, "é", 0, num=2) == ["é", "é"]


# -- eval and sample of a BPE checkpoint, without the training library --------------------------------------------

def test_eval_and_sample_need_no_tokenizers_package(tmp_path: Path) -> None:
    """`eval` and `sample` read the merges from the checkpoint: they work where importing tokenizers fails, and
    training a BPE tokenizer there says what to install (exit 1, nothing written)."""
    block = tmp_path / "block" / "tokenizers"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('tokenizers is blocked for this test')\n")
    env = {**ONE_BLAS_THREAD, "PYTHONPATH": str(tmp_path / "block")}
    hand_checkpoint(tmp_path / "text.safetensors", "text")
    write_text(tmp_path / "t.txt", 3, 20)
    r = ok(blasgpt_cli(["eval", "--checkpoint", "text.safetensors", "--data", "t.txt", "--json"], tmp_path, env=env))
    result = json.loads(r.stdout)
    assert result["bits_per_char"] == pytest.approx(result["nats_per_char"] / math.log(2), rel=1e-15)
    r = ok(blasgpt_cli(["sample", "--checkpoint", "text.safetensors", "--prompt", "the é", "--length", "30",
                        "--num", "2"], tmp_path, env=env))
    assert [len(line) for line in r.stdout.split("\n")] == [35, 35, 0]
    r = blasgpt_cli(["train", "--data", "t.txt", "--data-mode", "text", *BPE, *SMALL, "--steps", "2", "--out",
                     "run", *QUIET], tmp_path, env=env)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "error: " in r.stderr
    assert 'pip install "blasgpt[bpe]"' in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()


# -- training, end to end ------------------------------------------------------------------------------------------

@needs_hf
def test_train_eval_sample_with_bpe_in_text_mode(tmp_path: Path) -> None:
    write_text(tmp_path / "book.txt", 0, 150)
    r = ok(run(["train", "--data", "book.txt", "--data-mode", "text", *BPE, *SMALL, "--steps", "40",
                "--batch-size", "4", "--val-fraction", "0.2", "--log-every", "20", "--samples", "1",
                "--sample-length", "60", "--out", "run"], cwd=tmp_path))
    assert "vocab 280 (bpe)" in r.stdout and "tokens/char" in r.stdout and "bits/char)" in r.stdout
    ck = blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    text = (tmp_path / "book.txt").read_text(encoding="utf-8")
    cut = len(text) - int(len(text) * 0.2)
    # trained on the training split only, deterministically; stored whole in the checkpoint
    assert ck.tokenizer == BPETokenizer.train(text[:cut], 280) != BPETokenizer.train(text, 280)
    assert ck.extra["tokenizer"] == "bpe" and ck.extra["vocab_size"] == 280
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    result = json.loads(ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], cwd=tmp_path)).stdout)
    val = ck.tokenizer.encode(text[cut:])  # the validation split: the tail characters, encoded on their own
    loss, targets = evaluate_text(ck.model, val)
    chars = chars_covered(ck.tokenizer, val[1:])
    assert result["loss"] == loss == rows[-1]["val_loss"] and result["targets"] == targets == val.size - 1
    assert result["nats_per_char"] == pytest.approx(loss * targets / chars, rel=1e-14)
    assert result["nats_per_char"] == rows[-1]["val_nats_per_char"]
    assert result["bits_per_char"] == result["text_bits_per_char"] == rows[-1]["val_bits_per_char"]
    assert result["chars"] == chars and result["tokens_per_char"] == targets / chars
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--prompt", "naïve", "--length", "50",
                "--num", "3", "--seed", "2"], cwd=tmp_path))
    lines = r.stdout.split("\n")
    assert "generated 150 characters" in r.stderr
    assert sum(map(len, r.stdout)) >= 3 * 55 and lines[0].startswith("naïve")


@needs_hf
def test_resume_with_bpe_is_bit_exact(tmp_path: Path) -> None:
    """Resume a BPE run from its step-10 checkpoint with --resume alone: the tokenizer comes from the checkpoint
    (not retrained), the same windows and updates, bit for bit."""
    write_text(tmp_path / "t.txt", 1, 100)
    ok(run(["train", "--data", "t.txt", "--data-mode", "text", *BPE, *SMALL, "--steps", "30", "--batch-size", "3",
            "--checkpoint-every", "10", "--keep-checkpoints", "5", "--out", "full", *QUIET], cwd=tmp_path))
    r = ok(run(["train", "--resume", "full/ckpt-10.safetensors", "--out", "resumed", *BPE, *QUIET], cwd=tmp_path))
    assert "resuming full/ckpt-10.safetensors at step 10 of 30" in r.stdout
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors")
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors")
    assert same_state(resumed.model, full.model) and resumed.tokenizer == full.tokenizer
    vals = [json.loads((tmp_path / d / "metrics.jsonl").read_text().splitlines()[-1]) for d in ("full", "resumed")]
    assert vals[0]["val_loss"] == vals[1]["val_loss"] and vals[0]["val_bits_per_char"] == vals[1]["val_bits_per_char"]


@needs_hf
def test_lines_mode_with_bpe(tmp_path: Path) -> None:
    """Lines mode: each document is [BOS] + its BPE tokens + [BOS]; the tokenizer learns from the training
    documents only (no merge across documents); samples are documents."""
    write_text(tmp_path / "docs.txt", 5, 300)
    ok(run(["train", "--data", "docs.txt", *BPE, *SMALL, "--steps", "20", "--val-fraction", "0.2", "--out", "run",
            "--samples", "3"], cwd=tmp_path))
    ck = blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    corpus = load_corpus(tmp_path / "docs.txt", "lines", seed=42)
    train_docs, _ = corpus.split(0.2, 8)
    assert ck.tokenizer == BPETokenizer.train(train_docs.docs, 280)  # type: ignore[attr-defined]
    result = json.loads(ok(run(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], cwd=tmp_path)).stdout)
    assert result["mode"] == "lines" and 0 < result["tokens_per_char"] < 1
    assert result["text_bits_per_char"] == pytest.approx(result["nats_per_char"] / math.log(2), rel=1e-15)
    r = ok(run(["sample", "--checkpoint", "run/ckpt.safetensors", "--num", "4"], cwd=tmp_path))
    assert len(r.stdout.split("\n")) == 5  # (not splitlines: an untrained model draws control bytes)
