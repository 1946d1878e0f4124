"""Byte-level BPE: a subword tokenizer trained on the user's corpus, beside the character tokenizer (data.py).

Ids: 0..255 are the 256 bytes, so any text (any UTF-8: emoji, CJK, control characters) encodes and decodes back
exactly; merge i (a pair of earlier ids) is token 256 + i; BOS is the last id, ``256 + len(merges)``. Text is cut
into pre-tokens first (words with one leading space, digit runs, punctuation runs, whitespace runs: PRETOKEN_PATTERN)
and merges never cross a pre-token boundary.

Training uses Hugging Face ``tokenizers`` (the optional extra ``blasgpt[bpe]``): its BPE trainer, run on exactly our
pre-tokens, gives the merges. Encoding is the compiled core's (csrc/bpe.cpp), which applies the merges by the same
rule as that library's BPE model, so a trained tokenizer needs only its merges: checkpoints store them (``to_json``),
and ``sample`` / ``eval`` run without the extra.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable, Iterator, Optional, Sequence, Union

import numpy as np

from . import _core
from .data import Batch, DataError, PathLike, Tokenizer, check_batch_args, read_text

NUM_BYTES = 256
MIN_VOCAB_SIZE = NUM_BYTES + 1  # the bytes and BOS: no merges
MAX_VOCAB_SIZE = 1 << 20
MIN_PAIR_COUNT = 2  # a pair seen once compresses one spot of the corpus: not worth a token
FORMAT = "blasgpt-bpe"
FORMAT_VERSION = 1

# The pre-tokenizer (csrc/bpe.cpp, pretoken_end): letters are A-Z, a-z and every non-ASCII character (a multi-byte
# character is never split; CJK text, with no spaces, is one word), whitespace is \t \n \v \f \r and space, the rest
# of ASCII is punctuation. A word, digit run or punctuation run takes one leading space; a whitespace run leaves its
# last space to the word that follows. This is the one the trainer is given, and the one a checkpoint names.
_S = r"\t\n\x0b\x0c\r "
_L = r"[^\x00-\x40\x5b-\x60\x7b-\x7f]"
_P = r"[\x00-\x08\x0e-\x1f\x21-\x2f\x3a-\x40\x5b-\x60\x7b-\x7f]"
PRETOKEN_PATTERN = rf" ?{_L}+| ?[0-9]+| ?{_P}+|[{_S}]+(?![^{_S}])|[{_S}]+"

# Training reads a text in pieces of about this many characters, cut after a newline with a non-space on both sides:
# the newline is a pre-token of its own, at the end of a piece as in the whole text, so the pieces hold exactly the
# text's pre-tokens. (After a longer whitespace run it would not be: the run keeps its last character at the end.)
TRAIN_PIECE_CHARS = 1 << 20
_PIECE_CUT = re.compile(r"(?<=[^\t\n\x0b\x0c\r ])\n(?=[^\t\n\x0b\x0c\r ])")


def _pieces(text: str) -> Iterator[str]:
    lo = 0
    while lo < len(text):
        cut = _PIECE_CUT.search(text, lo + TRAIN_PIECE_CHARS) if lo + TRAIN_PIECE_CHARS < len(text) else None
        hi = cut.end() if cut else len(text)
        yield text[lo:hi]
        lo = hi


def _utf8(text: str, what: str = "the text") -> bytes:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a str, got {type(text).__name__}")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} holds {text[e.start]!r} at position {e.start}, a lone surrogate and not a "
                         f"character (undecodable bytes?)") from None


def _byte_symbols() -> list[str]:
    """The printable stand-in character of each byte in a byte-level vocabulary (the mapping GPT-2 introduced and
    Hugging Face's ByteLevel pre-tokenizer uses): printable Latin-1 bytes stand for themselves, the other bytes
    for U+0100 onwards, in byte order."""
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    symbols, extra = {}, 0
    for b in range(NUM_BYTES):
        if b in printable:
            symbols[b] = chr(b)
        else:
            symbols[b] = chr(0x100 + extra)
            extra += 1
    return [symbols[b] for b in range(NUM_BYTES)]


def _check_vocab_size(vocab_size: object) -> int:
    if not isinstance(vocab_size, (int, np.integer)) or isinstance(vocab_size, bool):
        raise ValueError(f"the vocabulary size must be an integer, got {vocab_size!r}")
    if not MIN_VOCAB_SIZE <= vocab_size <= MAX_VOCAB_SIZE:
        raise ValueError(f"a byte-level BPE vocabulary has {NUM_BYTES} bytes + merges + BOS: the vocabulary size must "
                         f"be in [{MIN_VOCAB_SIZE}, {MAX_VOCAB_SIZE}], got {vocab_size}")
    return int(vocab_size)


class BPETokenizer:
    """Byte-level BPE with fixed ``merges`` ((count, 2) ids, row i = the pair that makes token 256 + i).
    Same interface as the character Tokenizer: ``vocab_size``, ``bos``, ``encode``, ``decode``, ``batch``."""

    kind = "bpe"

    def __init__(self, merges: Union[np.ndarray, Sequence[Sequence[int]]]):
        m = np.asarray(merges)
        if m.size == 0:
            m = np.zeros((0, 2), dtype=np.int32)
        if m.ndim != 2 or m.shape[1] != 2 or m.dtype.kind not in "iu":
            raise ValueError(f"merges must be integer pairs of shape (count, 2), got {m.dtype} {list(m.shape)}")
        if m.shape[0] > MAX_VOCAB_SIZE - MIN_VOCAB_SIZE:
            raise ValueError(f"{m.shape[0]} merges: at most {MAX_VOCAB_SIZE - MIN_VOCAB_SIZE} are allowed")
        self.merges = np.ascontiguousarray(m, dtype=np.int32)
        self.merges.flags.writeable = False
        self._encoder = _core.BpeEncoder(self.merges)  # ValueError: an id out of range, a pair given twice
        pieces = [bytes([b]) for b in range(NUM_BYTES)]
        for left, right in self.merges.tolist():
            pieces.append(pieces[left] + pieces[right])
        # (two merges may spell the same bytes: a trainer can reach one string by two pairs; both ids decode to it)
        self.token_bytes: list[bytes] = pieces + [b""]  # BOS stands for no text

    # -- the interface of the character tokenizer ------------------------------------------------------------------

    @property
    def bos(self) -> int:
        return NUM_BYTES + int(self.merges.shape[0])

    @property
    def vocab_size(self) -> int:
        return self.bos + 1

    def __repr__(self) -> str:
        return f"BPETokenizer(vocab_size={self.vocab_size})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BPETokenizer) and np.array_equal(other.merges, self.merges)

    def __hash__(self) -> int:
        return hash(self.merges.tobytes())

    def encode(self, text: str) -> np.ndarray:
        """Ids (int32) of ``text``: every string of characters has them (no out-of-vocabulary input)."""
        return self._encoder.encode(_utf8(text))

    def encode_text(self, text: str) -> np.ndarray:
        """Ids of a whole running text (text mode): the same as ``encode``."""
        return self.encode(text)

    def decode_bytes(self, ids: Iterable[int]) -> bytes:
        """The bytes ``ids`` stand for (BOS: none). ValueError for an id out of range."""
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), dtype=np.int64).ravel()
        bad = arr[(arr < 0) | (arr >= self.vocab_size)]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is out of range [0, {self.vocab_size})")
        pieces = self.token_bytes
        return b"".join([pieces[i] for i in arr.tolist()])

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; BOS ids are skipped. Ids that end inside a multi-byte character (a sampled sequence may)
        decode that character as U+FFFD; the ids of any text decode back to it exactly."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def batch(self, docs: Sequence[str], block_size: Optional[int] = None) -> Batch:
        """Pack ``docs`` as ``[BOS] + ids + [BOS]`` each; with ``block_size``, each cut to its first
        ``block_size + 1`` tokens (as Tokenizer.batch)."""
        check_batch_args(docs, block_size)
        raw = [_utf8(d, f"document {i}") for i, d in enumerate(docs)]
        tokens, offsets = self._encoder.encode_documents(raw, self.bos)
        if block_size is None or int(np.diff(offsets).max()) <= block_size + 1:
            return Batch(tokens, offsets)
        return Tokenizer._cut(tokens, offsets, block_size)

    # -- characters per token: bits per character of the original text, for any tokenizer ------------------------

    def token_chars(self) -> np.ndarray:
        """Characters of the original text each id covers (int64, vocab_size): its UTF-8 lead bytes (a character
        is counted by the token holding its first byte), 0 for BOS. The sum over any encoding is its length."""
        lead = [sum(1 for b in piece if b & 0xC0 != 0x80) for piece in self.token_bytes]
        return np.array(lead, dtype=np.int64)

    # -- storage ---------------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        """Everything needed to encode and decode: the format, the pre-tokenizer and the merges (as id pairs)."""
        return json.dumps({"format": FORMAT, "version": FORMAT_VERSION, "pretokenizer": PRETOKEN_PATTERN,
                           "merges": self.merges.tolist()}, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> "BPETokenizer":
        """The tokenizer ``to_json`` wrote; ValueError for anything else."""
        try:
            d = json.loads(text)
        except (ValueError, RecursionError) as e:
            raise ValueError(f"BPE tokenizer data is not JSON ({e})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError(f"not {FORMAT} data (no 'format': '{FORMAT}')")
        if d.get("version") != FORMAT_VERSION:
            raise ValueError(f"{FORMAT} version {d.get('version')!r}; this blasgpt reads {FORMAT_VERSION}")
        if d.get("pretokenizer") != PRETOKEN_PATTERN:
            raise ValueError(f"the tokenizer was trained with another pre-tokenizer ({d.get('pretokenizer')!r}) "
                             f"than this blasgpt implements")
        merges = d.get("merges")
        if not isinstance(merges, list) or not all(
                isinstance(p, list) and len(p) == 2 and all(type(i) is int for i in p) for p in merges):
            raise ValueError("BPE merges must be a list of [left, right] integer pairs")
        if any(not -2**31 <= i < 2**31 for p in merges for i in p):
            raise ValueError("a BPE merge id is out of range")
        return cls(np.array(merges, dtype=np.int32).reshape(-1, 2))

    # -- training --------------------------------------------------------------------------------------------------

    @classmethod
    def train(cls, texts: Union[str, Iterable[str]], vocab_size: int) -> "BPETokenizer":
        """Learn ``vocab_size - 257`` merges (plus the 256 bytes and BOS) from ``texts``: one running text (a str)
        or documents (an iterable of str; no merge crosses a document's edges). Deterministic: the same texts and
        size give the same merges. Needs the ``tokenizers`` package (``pip install "blasgpt[bpe]"``).

        ValueError for a size outside [257, 2**20]; DataError when the texts have fewer distinct pairs seen at least
        twice than the size asks for (the message gives the largest size they allow)."""
        vocab_size = _check_vocab_size(vocab_size)
        try:
            from tokenizers import Regex
            from tokenizers import Tokenizer as HFTokenizer
            from tokenizers import models, pre_tokenizers, trainers
        except ImportError:
            raise ImportError('training a BPE tokenizer needs the tokenizers package: pip install "blasgpt[bpe]"') \
                from None
        if isinstance(texts, str):
            pieces: Iterable[str] = _pieces(texts)
        else:
            pieces = (t for t in texts if t)
        seen = [0]

        def checked() -> Iterator[str]:
            for i, p in enumerate(pieces):
                _utf8(p, f"text {i}")  # not a str, a lone surrogate: our ValueError, not the library's
                seen[0] += 1
                yield p

        hf = HFTokenizer(models.BPE())
        # our pre-tokens, then each byte as its stand-in character (no regex of the ByteLevel step's own)
        hf.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(PRETOKEN_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        trainer = trainers.BpeTrainer(vocab_size=vocab_size - 1, min_frequency=MIN_PAIR_COUNT, show_progress=False,
                                      special_tokens=[], initial_alphabet=_byte_symbols())
        hf.train_from_iterator(checked(), trainer)
        if seen[0] == 0:
            raise DataError("cannot train a tokenizer on no text")
        model = json.loads(hf.to_str())["model"]
        ids = {s: b for b, s in enumerate(_byte_symbols())}
        merges = []
        # The library's ids differ from ours (it sorts the alphabet by symbol): translate by the tokens' text. A
        # merge that makes the text of an earlier token (two pairs can spell one string) gets an id of its own
        # here, the same segmentation; the library then grows its vocabulary by less than one, so cut to the size.
        for pair in model["merges"][:vocab_size - MIN_VOCAB_SIZE]:  # [left, right] (older versions: "left right")
            left, right = pair.split(" ") if isinstance(pair, str) else pair
            merges.append((ids[left], ids[right]))
            ids.setdefault(left + right, NUM_BYTES + len(merges) - 1)
        if len(merges) < vocab_size - MIN_VOCAB_SIZE:
            raise DataError(f"the corpus allows a vocabulary of at most {MIN_VOCAB_SIZE + len(merges)} (bytes + "
                            f"{len(merges)} merges of pairs seen at least {MIN_PAIR_COUNT} times + BOS); "
                            f"{vocab_size} was asked for")
        return cls(np.array(merges, dtype=np.int32).reshape(-1, 2))

    @classmethod
    def train_files(cls, paths: Union[PathLike, Sequence[PathLike]], vocab_size: int) -> "BPETokenizer":
        """``train`` on the running text of one or more files (read as text mode reads them: UTF-8, under 1 GiB;
        DataError otherwise). No merge crosses a file's edges."""
        if isinstance(paths, (str, os.PathLike)):
            paths = [paths]
        _check_vocab_size(vocab_size)  # before reading anything
        texts = (read_text(p)[0] for p in paths)
        return cls.train((piece for t in texts for piece in _pieces(t)), vocab_size)


# -- helpers for any tokenizer: the checkpoint's storage and bits per character ----------------------------------

AnyTokenizer = Union[Tokenizer, BPETokenizer]


TOKENIZERS = ("char", "bpe")  # the kinds a run may train with (TrainConfig.tokenizer, --tokenizer)


def tokenizer_kind(tokenizer: AnyTokenizer) -> str:
    return "bpe" if isinstance(tokenizer, BPETokenizer) else "char"


def token_chars(tokenizer: AnyTokenizer) -> np.ndarray:
    """Characters of the original text each id covers (int64, vocab_size): 1 per character id of the character
    tokenizer, the lead-byte count of a BPE token; 0 for BOS."""
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.token_chars()
    counts = np.ones(tokenizer.vocab_size, dtype=np.int64)
    counts[tokenizer.bos] = 0
    return counts


def chars_covered(tokenizer: AnyTokenizer, ids: Union[np.ndarray, Sequence[int]]) -> int:
    """Characters of the original text that the ids (of an encoding, or any window of one) cover, so that a loss of
    L nats summed over those ids is L / (ln 2 * chars) bits per character, on one scale for every tokenizer."""
    return int(token_chars(tokenizer)[np.asarray(ids, dtype=np.int64)].sum())


def tokenizer_metadata(tokenizer: AnyTokenizer) -> dict[str, str]:
    """The checkpoint's metadata entries for ``tokenizer``: its kind, and its vocabulary (char) or merges (bpe)."""
    if isinstance(tokenizer, BPETokenizer):
        return {"tokenizer": "bpe", "bpe": tokenizer.to_json()}
    return {"tokenizer": "char", "vocab": json.dumps(tokenizer.chars, ensure_ascii=False)}


def tokenizer_from_metadata(meta: dict[str, Any]) -> Optional[AnyTokenizer]:
    """The tokenizer a checkpoint's metadata stores (None if it stores none; no kind means char); ValueError for
    an unknown kind or bad data."""
    kind = meta.get("tokenizer", "char")
    if kind == "bpe":
        if "bpe" not in meta:
            raise ValueError("the tokenizer kind is bpe but there are no BPE merges")
        return BPETokenizer.from_json(meta["bpe"])
    if kind != "char":
        raise ValueError(f"unknown tokenizer kind {kind!r} (this blasgpt knows char and bpe)")
    return Tokenizer(json.loads(meta["vocab"])) if "vocab" in meta else None


__all__ = ["BPETokenizer", "MAX_VOCAB_SIZE", "MIN_VOCAB_SIZE", "PRETOKEN_PATTERN", "TOKENIZERS", "chars_covered",
           "token_chars", "tokenizer_from_metadata", "tokenizer_kind", "tokenizer_metadata"]
