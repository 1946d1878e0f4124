"""The byte-level BPE tokenizer (blasgpt.bpe): exact round trips on any text, the compiled encoder against a plain
Python BPE and against Hugging Face's own encoder, the pre-tokenizer against its regular expression, deterministic
training, vocabulary-size errors, packing, characters per token, and the tokenizer's life in a checkpoint.

Training needs the optional ``tokenizers`` package (``pip install ".[bpe]"``): those tests skip, saying so, without
it; everything else (encoding, decoding, storage) runs on merges written out here."""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt import _core
from blasgpt.bpe import (_PIECE_CUT, MIN_VOCAB_SIZE, PRETOKEN_PATTERN, BPETokenizer, _byte_symbols, chars_covered,
                         tokenizer_from_metadata, tokenizer_kind, tokenizer_metadata)
from blasgpt.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from blasgpt.data import DataError, Tokenizer, text_vocabulary
from conftest import rewrite_checkpoint

SHAKESPEARE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "tinyshakespeare.txt"


def _have_tokenizers() -> bool:
    try:
        import tokenizers  # noqa: F401
    except ImportError:
        return False
    return True


needs_hf = pytest.mark.skipif(not _have_tokenizers(),
                              reason='training needs the tokenizers package (pip install ".[bpe]")')

ADVERSARIAL = [
    "", "a", " ", "\n", "\n\n\n", "   ", " \n ", "\t\r\n\x0b\x0c", "hello world", "  leading and trailing  ",
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n",
    "naïve café — “quoted” ‘single’ … ½ ², ß, Ωμέγα, Привет мир",
    "中文，测试。日本語のテキスト、한국어 텍스트", "😀😀 👩‍👩‍👧‍👦 🇫🇷 a\u0301 e\u0308\u0301",
    "\ufeffBOM inside", "\x00\x01\x1f\x7f\x80\x9f",
    "tabs\tand\ttabs\t\t", "digits 0123456789 3.14159 1e-10 -42", "!!!???...,,,;;;:::", "<|endoftext|> <s> </s>",
    "x" * 5000, "ab" * 3000, " " * 4000 + "x", "\u0100\u07ff\u0800\uffff\U00010000\U0010ffff", "'s 't 're 've 'll 'd",
    "\r\n\r\nwindows\r\nline\r\nends\r\n", "mixed123abc!!  \n\t x99",
]


def _random_texts(seed: int, count: int) -> list[str]:
    """Texts from random bytes (decoded with errors='replace'), random code points (no surrogates) and random
    words over a small alphabet (so that merges fire)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kind = rng.randrange(3)
        n = rng.randrange(0, 300)
        if kind == 0:
            out.append(bytes(rng.randrange(256) for _ in range(n)).decode("utf-8", errors="replace"))
        elif kind == 1:
            cps = [rng.choice([rng.randrange(0x80), rng.randrange(0x80, 0x800), rng.randrange(0x800, 0xD800),
                               rng.randrange(0xE000, 0x110000)]) for _ in range(n)]
            out.append("".join(map(chr, cps)))
        else:
            out.append("".join(rng.choice("aab  \n\t.,1é中😀") for _ in range(n)))
    return out


def _hand_merges() -> BPETokenizer:
    """A tokenizer with merges written out (no training): "th", "the", " the", "he", "ll", "ello", ... and a few
    over multi-byte characters, so encoding exercises chains, overlaps and repeats."""
    ids = {bytes([b]): b for b in range(256)}
    merges = []
    for left, right in [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"h", b"e"), (b"l", b"l"), (b"e", b"ll"),
                        (b"ell", b"o"), (b"a", b"a"), (b"aa", b"aa"), (b"a", b"b"), (b"\xc3", b"\xa9"),
                        (b"\xe4", b"\xb8"), (b"\n", b"\n"), (b" ", b"a"), (b" a", b"b"), (b"ab", b"a")]:
        merges.append((ids[left], ids[right]))
        ids[left + right] = 256 + len(merges) - 1
    return BPETokenizer(merges)


def _reference_encode(tok: BPETokenizer, text: str) -> list[int]:
    """Plain-Python BPE: pre-tokens by PRETOKEN_PATTERN; in each, repeatedly merge the leftmost adjacent pair of
    lowest merge index."""
    rank = {(int(a), int(b)): i for i, (a, b) in enumerate(tok.merges.tolist())}
    out: list[int] = []
    for word in re.findall(PRETOKEN_PATTERN, text, flags=re.DOTALL):
        syms = list(word.encode("utf-8"))
        while len(syms) > 1:
            best = min(((rank[p], i) for i, p in enumerate(zip(syms, syms[1:])) if p in rank), default=None)
            if best is None:
                break
            r, i = best
            syms[i:i + 2] = [256 + r]
        out.extend(syms)
    return out


# -- the pre-tokenizer --------------------------------------------------------------------------------------------

def test_pretokens_match_the_documented_regular_expression() -> None:
    for text in ADVERSARIAL + _random_texts(1, 300):
        want = [w.encode("utf-8") for w in re.findall(PRETOKEN_PATTERN, text)]
        assert _core.BpeEncoder.pretokens(text.encode("utf-8")) == want, text
        assert b"".join(want) == text.encode("utf-8")  # the pattern covers every character


def test_a_newline_between_non_spaces_is_a_pretoken_boundary() -> None:
    # what training relies on to read a text in pieces: encoding a text equals encoding its pieces cut there
    tok = _hand_merges()
    for text in ADVERSARIAL + _random_texts(2, 200):
        for m in _PIECE_CUT.finditer(text):
            a, b = text[:m.end()], text[m.end():]
            assert np.array_equal(tok.encode(text), np.concatenate([tok.encode(a), tok.encode(b)])), repr(text)


# -- encoding and decoding --------------------------------------------------------------------------------------

def test_round_trip_on_adversarial_and_random_text() -> None:
    tok = _hand_merges()
    for text in ADVERSARIAL + _random_texts(3, 500):
        ids = tok.encode(text)
        assert ids.dtype == np.int32 and ids.ndim == 1
        assert ((ids >= 0) & (ids < tok.bos)).all()
        assert tok.decode(ids) == text
        assert tok.decode(ids.tolist()) == text


def test_byte_level_tokenizer_without_merges_is_utf8() -> None:
    tok = BPETokenizer(np.zeros((0, 2), dtype=np.int32))
    assert tok.vocab_size == MIN_VOCAB_SIZE and tok.bos == 256
    for text in ADVERSARIAL:
        assert tok.encode(text).tolist() == list(text.encode("utf-8"))


def test_compiled_encoder_equals_plain_python_bpe() -> None:
    tok = _hand_merges()
    texts = ADVERSARIAL + _random_texts(4, 300) + ["the thee ththe hello helllo aaaaaaa aaaaa abababa ab aba",
                                                   "é中 ééé 中中\n\n\n\n\n the  the   the"]
    for text in texts:
        if len(text) <= 1000:  # (the reference is quadratic)
            assert tok.encode(text).tolist() == _reference_encode(tok, text), repr(text)
    assert tok.encode(" the aaaa").tolist() == [258, 32, 264]


def test_decode_skips_bos_and_replaces_split_characters() -> None:
    tok = _hand_merges()
    ids = tok.encode("é!")
    assert tok.decode([tok.bos, *ids.tolist(), tok.bos]) == "é!"
    assert tok.decode([0xC3]) == "\ufffd"  # a sampled sequence may stop inside a character
    with pytest.raises(ValueError, match=r"token id 999 is out of range \[0, 273\)"):
        tok.decode([999])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])


def test_encode_refuses_non_text() -> None:
    tok = _hand_merges()
    with pytest.raises(ValueError, match="lone surrogate"):
        tok.encode("ok\udcffno")
    with pytest.raises(ValueError, match="must be a str, got bytes"):
        tok.encode(b"bytes")  # type: ignore[arg-type]


def test_bad_merges_are_refused() -> None:
    with pytest.raises(ValueError, match=r"merge 0 is \(256, 1\): ids must be in \[0, 256\)"):
        BPETokenizer([[256, 1]])
    with pytest.raises(ValueError, match=r"merge 1 repeats the pair \(1, 2\)"):
        BPETokenizer([[1, 2], [1, 2]])
    with pytest.raises(ValueError, match=r"ids must be in"):
        BPETokenizer([[-1, 2]])
    with pytest.raises(ValueError, match=r"shape \(count, 2\)"):
        BPETokenizer([[1, 2, 3]])
    with pytest.raises(ValueError, match=r"shape \(count, 2\)"):
        BPETokenizer([[0.5, 1.0]])  # type: ignore[list-item]


def test_batch_packs_documents_like_the_char_tokenizer() -> None:
    tok = _hand_merges()
    docs = ["the hello", "aaaa", "é", "x y z"]
    b = tok.batch(docs)
    want = [[tok.bos, *tok.encode(d).tolist(), tok.bos] for d in docs]
    assert b.tokens.tolist() == [t for w in want for t in w]
    assert b.offsets.tolist() == np.cumsum([0] + [len(w) for w in want]).tolist()  # type: ignore[union-attr]
    cut = tok.batch(docs, block_size=3)
    for i, w in enumerate(want):
        assert cut.tokens[cut.offsets[i]:cut.offsets[i + 1]].tolist() == w[:4]  # type: ignore[index]
    with pytest.raises(ValueError, match="not a single str"):
        tok.batch("the")
    with pytest.raises(ValueError, match="empty"):
        tok.batch([])
    with pytest.raises(ValueError, match="document 1 holds"):
        tok.batch(["ok", "\udcff"])


# -- characters per token ---------------------------------------------------------------------------------------

def test_chars_covered_counts_the_original_characters() -> None:
    tok = _hand_merges()
    texts = ADVERSARIAL + _random_texts(7, 100)
    char_tok = text_vocabulary("".join(texts))
    for text in texts:
        ids = tok.encode(text)
        assert chars_covered(tok, ids) == len(text)
        assert chars_covered(tok, np.concatenate([[tok.bos], ids, [tok.bos]])) == len(text)
        if text:
            char_ids = char_tok.encode(text)
            assert chars_covered(char_tok, char_ids) == len(text) == char_ids.size
    assert chars_covered(char_tok, [char_tok.bos]) == 0


# -- storage ----------------------------------------------------------------------------------------------------

def test_json_round_trip_and_bad_data() -> None:
    tok = _hand_merges()
    again = BPETokenizer.from_json(tok.to_json())
    assert again == tok and hash(again) == hash(tok)
    assert again.encode("the hello").tolist() == tok.encode("the hello").tolist()
    d = json.loads(tok.to_json())
    bad = [("not json", "not JSON"), ("[]", "not blasgpt-bpe data"),
           (json.dumps({**d, "version": 2}), "version 2"),
           (json.dumps({**d, "pretokenizer": r"\w+"}), "another pre-tokenizer"),
           (json.dumps({**d, "merges": [[1]]}), "integer pairs"),
           (json.dumps({**d, "merges": [[1, True]]}), "integer pairs"),
           (json.dumps({**d, "merges": [[1, 2**40]]}), "out of range"),
           (json.dumps({**d, "merges": [[300, 1]]}), "ids must be in")]
    for text, msg in bad:
        with pytest.raises(ValueError, match=msg):
            BPETokenizer.from_json(text)


def test_metadata_records_the_kind_and_old_checkpoints_are_char() -> None:
    bpe, char = _hand_merges(), Tokenizer(list("abc"))
    assert tokenizer_kind(bpe) == "bpe" and tokenizer_kind(char) == "char"
    assert tokenizer_metadata(bpe)["tokenizer"] == "bpe"
    assert tokenizer_from_metadata(tokenizer_metadata(bpe)) == bpe
    assert tokenizer_from_metadata(tokenizer_metadata(char)) == char
    assert tokenizer_from_metadata({"vocab": json.dumps(list("abc"))}) == char  # no kind: char
    assert tokenizer_from_metadata({}) is None
    with pytest.raises(ValueError, match="unknown tokenizer kind 'wordpiece'"):
        tokenizer_from_metadata({"tokenizer": "wordpiece"})
    with pytest.raises(ValueError, match="no BPE merges"):
        tokenizer_from_metadata({"tokenizer": "bpe"})


def test_checkpoint_round_trip_with_bpe(tmp_path: Path) -> None:
    tok = _hand_merges()
    model = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8))
    path = save_checkpoint(tmp_path / "ckpt.safetensors", model, tok)
    ck = load_checkpoint(path)
    assert isinstance(ck.tokenizer, BPETokenizer) and ck.tokenizer == tok
    assert ck.tokenizer.decode(ck.tokenizer.encode("the é中😀")) == "the é中😀"
    # a model whose vocabulary does not match the merges
    small = blasgpt.Model(blasgpt.Config(vocab_size=50, n_embd=8, n_head=2, n_layer=1, block_size=8))
    path = save_checkpoint(tmp_path / "bad.safetensors", small, tok)
    with pytest.raises(CheckpointError, match="vocabulary has 273 symbols but the config says 50"):
        load_checkpoint(path)


def test_checkpoint_with_corrupt_bpe_metadata(tmp_path: Path) -> None:
    """Changed tokenizer metadata is refused: by the metadata checksum, and when the file was crafted with a
    matching checksum, by the tokenizer's own checks."""
    tok = _hand_merges()
    model = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1, block_size=8))
    path = save_checkpoint(tmp_path / "ckpt.safetensors", model, tok)
    for key, value, msg in [("bpe", "{", "not JSON"), ("tokenizer", "sentencepiece", "unknown tokenizer kind")]:
        broken = tmp_path / f"broken-{key}.safetensors"
        rewrite_checkpoint(path, broken, {key: value}, checksum=False)
        with pytest.raises(CheckpointError, match="checksum mismatch in its metadata"):
            load_checkpoint(broken)
        rewrite_checkpoint(path, broken, {key: value})
        with pytest.raises(CheckpointError, match=f"invalid metadata .*{msg}"):
            load_checkpoint(broken)


# -- training (needs the tokenizers package) ---------------------------------------------------------------------

def _made_up_text(seed: int, words: int) -> str:
    """Lines of made-up words from a few syllables (some with accents, CJK or emoji), digits and punctuation."""
    rng = random.Random(seed)
    syllables = ["ka", "lo", "mi", "ne", "ru", "sa", "té", "vo", "zu", "中", "ñi", "😀", "qu", "th", "er"]
    lines, line = [], []
    for _ in range(words):
        line.append("".join(rng.choice(syllables) for _ in range(rng.randint(1, 4))) + rng.choice(["", "", ",", "."]))
        if rng.random() < 0.1:
            line.append(str(rng.randrange(1000)))
        if rng.random() < 0.12:
            lines.append(" ".join(line))
            line = []
    return "\n".join(lines) + "\n\n"


CORPUS = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\n"
          + _made_up_text(0, 3000))


def test_training_without_the_library_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tokenizers", None)  # as if not installed
    with pytest.raises(ImportError, match=r'needs the tokenizers package: pip install "blasgpt\[bpe\]"'):
        BPETokenizer.train("some text", 300)


@needs_hf
def test_trained_tokenizer_round_trips_and_encodes_as_hugging_face_does() -> None:
    from tokenizers import Regex
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    tok = BPETokenizer.train(CORPUS, 400)
    assert tok.vocab_size == 400 and tok.bos == 399
    for text in ADVERSARIAL + _random_texts(5, 200) + [CORPUS]:
        assert tok.decode(tok.encode(text)) == text
    # the same merges in the library's own BPE model (its ids: the tokens' byte-level text) encode the same way
    sym = _byte_symbols()
    names = [sym[b] for b in range(256)]
    for a, b in tok.merges.tolist():
        names.append(names[a] + names[b])
    vocab: dict[str, int] = {}
    for i, n in enumerate(names):
        vocab.setdefault(n, i)
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[(names[a], names[b]) for a, b in tok.merges.tolist()]))
    hf.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    for text in ADVERSARIAL + _random_texts(6, 200) + [CORPUS]:
        ours = tok.encode(text).tolist()
        assert [names[i] for i in ours] == hf.encode(text).tokens, repr(text)
        if len(vocab) == len(names):  # (no two merges spell one string: the ids agree too)
            assert ours == hf.encode(text).ids


@needs_hf
def test_training_is_deterministic_across_processes() -> None:
    here = _trained_json(CORPUS, 420)
    code = ("import sys; from blasgpt.bpe import BPETokenizer; "
            "sys.stdout.write(BPETokenizer.train(sys.stdin.read(), 420).to_json())")
    for seed, threads in [("1", "1"), ("2", "2"), ("random", "2")]:
        env = {**os.environ, "PYTHONHASHSEED": seed, "RAYON_NUM_THREADS": threads}
        r = subprocess.run([sys.executable, "-c", code], input=CORPUS, capture_output=True, text=True, env=env,
                           check=True)
        assert r.stdout == here


def _trained_json(text: str, size: int) -> str:
    return BPETokenizer.train(text, size).to_json()


@needs_hf
def test_training_on_documents_and_files(tmp_path: Path) -> None:
    docs = [line for line in CORPUS.splitlines() if line]
    tok = BPETokenizer.train(docs, 300)
    assert tok.vocab_size == 300
    b = tok.batch(docs[:3])
    assert tok.decode(b.tokens) == "".join(docs[:3])
    (tmp_path / "a.txt").write_text(CORPUS, encoding="utf-8")
    (tmp_path / "b.txt").write_text("\ufeff" + CORPUS, encoding="utf-8")  # a byte-order mark is not text
    assert BPETokenizer.train_files(tmp_path / "a.txt", 350) == BPETokenizer.train(CORPUS, 350)
    both = BPETokenizer.train_files([tmp_path / "a.txt", str(tmp_path / "b.txt")], 350)
    assert both == BPETokenizer.train([CORPUS, CORPUS], 350)
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(DataError, match="not valid UTF-8"):
        BPETokenizer.train_files(tmp_path / "bad.txt", 300)


@needs_hf
def test_vocabulary_size_bounds() -> None:
    for bad in [0, 1, 256, -5, 2**20 + 1]:
        with pytest.raises(ValueError, match=r"vocabulary size must be in \[257, 1048576\], got"):
            BPETokenizer.train(CORPUS, bad)
    for wrong in [True, 300.0, "300", None]:
        with pytest.raises(ValueError, match="vocabulary size must be an integer"):
            BPETokenizer.train(CORPUS, wrong)  # type: ignore[arg-type]
    assert BPETokenizer.train(CORPUS, 257).merges.shape == (0, 2)
    with pytest.raises(DataError, match=r"the corpus allows a vocabulary of at most (\d+) .*; 5000 was asked for"):
        BPETokenizer.train(CORPUS, 5000)
    most = 0
    try:
        BPETokenizer.train(CORPUS, 5000)
    except DataError as e:
        most = int(re.search(r"at most (\d+)", str(e)).group(1))  # type: ignore[union-attr]
    assert BPETokenizer.train(CORPUS, most).vocab_size == most  # the largest allowed size trains
    with pytest.raises(DataError, match="at most"):
        BPETokenizer.train(CORPUS, most + 1)
    with pytest.raises(DataError, match="no text"):
        BPETokenizer.train("", 300)
    with pytest.raises(DataError, match="no text"):
        BPETokenizer.train(["", ""], 300)
    with pytest.raises(ValueError, match="text 1 holds '\\\\udcff'"):
        BPETokenizer.train(["fine", "bad \udcff"], 300)
    with pytest.raises(ValueError, match="text 0 must be a str, got int"):
        BPETokenizer.train([3], 300)  # type: ignore[list-item]


@needs_hf
def test_tokens_per_char_on_tinyshakespeare() -> None:
    if not SHAKESPEARE.is_file():
        pytest.skip(f"the real tinyshakespeare.txt is not at {SHAKESPEARE}")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    tok = BPETokenizer.train(text, 1024)
    ids = tok.encode(text)
    assert tok.decode(ids) == text and chars_covered(tok, ids) == len(text)
    per_char = ids.size / len(text)
    assert 0.35 < per_char < 0.45  # measured 0.416 (2.41 characters per token); char level: 1.0
    assert text_vocabulary(text).encode(text).size / len(text) == 1.0
