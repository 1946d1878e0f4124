"""What a run trains and validates on: a corpus, in one of two modes, behind one interface.

``Documents`` (lines mode, microgpt): one document per line, shuffled once with the run's seed, each trained as
``[BOS] + chars + [BOS]``; step s reads documents ``(s*B + i) % n`` in that order. ``TextStream`` (text mode,
nanoGPT): a whole text as one token stream, step s trains on B windows of block_size + 1 tokens at seeded random
offsets (``window_starts``). ``load_corpus(spec, mode)`` builds either from a file or a named dataset; everything
that differs between the modes — the train/validation split, the data fingerprint a resumed run checks, the
sequences of step s, evaluation, the memory a run needs — is a method here, so the training loop, the command line
and resume never ask which mode they are in.

The tokenizer is a seam: a corpus asks its tokenizer to pack documents (``Tokenizer.batch``) or to encode a text
(``Tokenizer.encode_text``), and otherwise only reads its ``vocab_size``; another kind of tokenizer with those
methods slots in: the byte-level BPE of blasgpt.bpe does (``load_corpus(..., bpe_vocab_size=N)`` trains one on the
training split). Evaluation reports, beside the loss per token, nats and bits per character of the original text
(the nats of all predicted tokens over the characters they cover, ``chars_covered``): one scale for every tokenizer.
"""

from __future__ import annotations

import abc
import dataclasses
import hashlib
import math
import random
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Sequence, Union

import numpy as np

from .bpe import AnyTokenizer, BPETokenizer, token_chars
from .config import Config, MemoryEstimate, memory_estimate
from .data import (Batch, DataError, PathLike, TextData, Tokenizer, data_path, display_path, load_docs, read_text,
                   split_tail, text_vocabulary)
from .model import Model

EVAL_CHUNK_DOCS = 256  # documents per loss() call in evaluation: bounds the activation workspace
EVAL_CHUNK_TOKENS = 1 << 15  # text mode: positions per loss() call
EVAL_DURING_TRAINING = 1 << 15  # text mode: targets of the periodic validation figure (the final one: all)
WINDOW_DRAW_STEPS = 1024  # text mode: window starts are drawn per block of this many steps (see window_starts)


class DataChanged(DataError):
    """The data a run was trained on is not what the loader read now (its fingerprint differs)."""


# -- the pieces each mode is made of --------------------------------------------------------------------------------
def shuffle_docs(docs: Sequence[str], seed: int = 42) -> tuple[list[str], random.Random]:
    """A copy of ``docs`` shuffled as microgpt does (``random.seed(seed); random.shuffle(docs)``), and the random
    stream after the shuffle (microgpt draws its weights from it next)."""
    rng = random.Random(seed)
    shuffled = list(docs)
    rng.shuffle(shuffled)
    return shuffled, rng


def split_validation(docs: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation): the validation set is the *tail* ``fraction`` of ``docs`` (already shuffled), so no
    random numbers are drawn and the training documents keep microgpt's order."""
    train, val = split_tail(list(docs), fraction)
    if not train:
        raise ValueError(f"no training documents left after holding out {len(val)} of {len(docs)} for validation")
    return train, val


def docs_fingerprint(docs: Sequence[str]) -> str:
    """sha256 of the documents in file order (what a resumed lines-mode run checks)."""
    return hashlib.sha256("\n".join(docs).encode("utf-8")).hexdigest()


def rng_state(rng: random.Random) -> list:
    """A random stream's state as JSON (a checkpoint stores the stream left by the shuffle)."""
    version, state, gauss_next = rng.getstate()
    return [version, list(state), gauss_next]


def document_losses(model: Model, batch: Batch) -> tuple[float, float, np.ndarray]:
    """(mean over documents of each document's mean loss, nats summed over every target, targets of each
    document): the documents with the same number of targets go together, in chunks, so that a chunk's loss (a mean
    of document means) times its documents is their summed document means and, times that number, their summed
    nats. Gradients and Adam state are untouched."""
    offsets = batch.offsets
    assert offsets is not None  # (documents, not windows)
    targets = np.minimum(np.diff(offsets), model.config.block_size + 1) - 1
    means = nats = 0.0
    for k in np.unique(targets).tolist():
        docs = np.flatnonzero(targets == k)
        for lo in range(0, docs.size, EVAL_CHUNK_DOCS):
            chunk = docs[lo:lo + EVAL_CHUNK_DOCS]
            loss = model.loss(batch.select(chunk)) * chunk.size
            means += loss
            nats += loss * k
    return means / batch.num_docs, nats, targets


def evaluate(model: Model, batch: Batch) -> float:
    """Mean over documents of each document's loss (document_losses); gradients and Adam state are untouched."""
    return document_losses(model, batch)[0]


def evaluate_text(model: Model, tokens: np.ndarray, max_targets: Optional[int] = None) -> tuple[float, int]:
    """(mean cross-entropy in nats per character, targets counted) over a token stream: consecutive
    non-overlapping windows, window k feeding tokens [kT, kT + T) and predicting [kT + 1, kT + T] (T = block_size,
    the last window partial), so every target — all len(tokens) - 1 of them, or the first ``max_targets`` — is
    counted exactly once. Gradients and Adam state are untouched."""
    tokens = np.ascontiguousarray(tokens, dtype=np.int32)
    T = model.config.block_size
    targets = tokens.size - 1 if max_targets is None else min(tokens.size - 1, max_targets)
    if targets < 1:
        raise ValueError(f"a text of {tokens.size} token(s) has no target to evaluate (it needs at least 2)")
    text = tokens[:targets + 1]  # the last target's window ends here
    starts = np.arange(0, targets, T, dtype=np.int64)
    full = starts[:targets // T]  # windows of T targets each; a final partial one follows when T does not divide
    per_call = max(1, EVAL_CHUNK_TOKENS // T)
    total = 0.0
    for lo in range(0, full.size, per_call):
        chunk = full[lo:lo + per_call]
        total += model.loss(Batch.of_windows(text, chunk)) * chunk.size * T
    if starts.size > full.size:
        rest = targets - full.size * T
        total += model.loss(Batch.of_windows(text, starts[-1:])) * rest
    return total / targets, targets


def per_char(total_nats: float, targets: int, chars: int) -> dict[str, Any]:
    """The figures on the original text's scale, from the nats summed over ``targets`` predicted tokens that cover
    ``chars`` characters: nats_per_char, bits_per_char, tokens_per_char (None when they cover no character)."""
    if chars <= 0:
        return {"nats_per_char": None, "bits_per_char": None, "tokens_per_char": None, "chars": 0}
    nats = total_nats / chars
    return {"nats_per_char": nats, "bits_per_char": nats / math.log(2), "tokens_per_char": targets / chars,
            "chars": chars}


def _char_text(figures: dict[str, Any]) -> str:
    if figures["nats_per_char"] is None:
        return "no character predicted"
    return f"{figures['nats_per_char']:.4f} nats/char | {figures['bits_per_char']:.4f} bits/char"


def window_starts(seed: int, first_step: int, steps: int, batch_size: int, n_tokens: int,
                  block_size: int) -> np.ndarray:
    """Start offsets (int64, shape (steps, batch_size)) of the training windows of steps first_step ..
    first_step + steps - 1: uniform in [0, n_tokens - block_size - 1], so each window of block_size + 1 tokens
    fits. Step s's row depends only on (seed, s, batch_size, n_tokens, block_size): the rows of each block of
    WINDOW_DRAW_STEPS steps come from numpy's PCG64 seeded with (seed, block) — (-seed, 1, 0, block) for a negative
    seed —, so a resumed run draws the very same windows without replaying a random stream."""
    high = n_tokens - block_size  # exclusive
    if high < 1:
        raise ValueError(f"the text has {n_tokens} tokens; a training window needs block_size + 1 = "
                         f"{block_size + 1}")
    out = np.empty((steps, batch_size), dtype=np.int64)
    # numpy seeds only from non-negative integers; a negative seed (valid for --seed, as in lines mode) gets its own
    # streams, apart from every non-negative seed's
    entropy = [seed] if seed >= 0 else [-seed, 1, 0]
    s = first_step
    while s < first_step + steps:
        blk = s // WINDOW_DRAW_STEPS
        rows = np.random.default_rng(entropy + [blk]).integers(0, high, size=(WINDOW_DRAW_STEPS, batch_size))
        lo, hi = s - blk * WINDOW_DRAW_STEPS, min(WINDOW_DRAW_STEPS, first_step + steps - blk * WINDOW_DRAW_STEPS)
        out[s - first_step:s - first_step + hi - lo] = rows[lo:hi]
        s += hi - lo
    return out


@dataclasses.dataclass(frozen=True)
class Feed:
    """The sequences a run's steps train on: ``batch`` (packed, or windows of one stream) and ``rows(s, end)``,
    int64 (end - s, batch_size): row k selects step s + k's sequences of ``batch`` (``Model.train_steps``)."""

    batch: Batch
    rows: Callable[[int, int], np.ndarray]


# -- the interface --------------------------------------------------------------------------------------------------
class Corpus(abc.ABC):
    """Training or validation data of one mode, with the tokenizer that encodes it.

    Class attributes describe the mode: ``mode`` (its --data-mode name), ``unit`` (what a rate counts),
    ``sequences`` (what a step's batch holds), ``default_data`` (the named dataset used without --data) and the
    defaults of the samples a model trained on it prints (``sample_num``, ``sample_temperature``,
    ``sample_length``: None for block_size) and ``framed``: its sequences are documents framed by BOS, so generation
    starts at BOS and a sample ends at BOS or block_size (lines mode), else a stream generation continues past
    block_size, never drawing BOS (text mode)."""

    mode: ClassVar[str]
    unit: ClassVar[str]
    sequences: ClassVar[str]
    default_data: ClassVar[str]
    changed: ClassVar[str]  # what "the data differs" means for this mode
    sample_num: ClassVar[int]
    sample_temperature: ClassVar[float]
    sample_length: ClassVar[Optional[int]]
    framed: ClassVar[bool]
    samples_title: ClassVar[str]  # printed above the samples after training: .format(num=, length=, temperature=)

    def __init__(self, tokenizer: AnyTokenizer, *, source: str = "", where: str = "", fingerprint: Optional[str] = None,
                 init_rng: Optional[random.Random] = None):
        self.tokenizer = tokenizer
        self.source = source  # how the user named it (for messages)
        self.where = where or source  # the file it was read from (for messages about its content)
        self.fingerprint = fingerprint
        self.init_rng = init_rng  # the random stream model weights continue (lines mode: left by the shuffle)
        self._rng_state = rng_state(init_rng) if init_rng is not None else None  # as it is now, before any draw

    @abc.abstractmethod
    def __len__(self) -> int:
        """Documents, or tokens of the stream."""

    def identity(self) -> dict[str, Any]:
        """What a checkpoint records so that a resumed run can tell it reads the same data: the fingerprint, and in
        lines mode the random stream left by the shuffle (it depends on the seed and the number of documents)."""
        return _identity(self.fingerprint, self._rng_state)

    @abc.abstractmethod
    def split(self, val_fraction: float, block_size: int) -> tuple["Corpus", "Corpus"]:
        """(train, validation): the validation split is the tail ``val_fraction`` (documents after the shuffle, or
        the text by position); DataError if either cannot serve (a text shorter than one training window)."""

    @abc.abstractmethod
    def summary(self, val: "Corpus") -> str:
        """One line for the start of a run: how much trains and validates (this is the training part)."""

    @abc.abstractmethod
    def check(self, block_size: int, validation: bool = False) -> None:
        """ValueError if this data cannot train (``validation``: be evaluated) at block_size."""

    @abc.abstractmethod
    def feed(self, start: int, steps: int, batch_size: int, block_size: int, seed: int) -> Feed:
        """The sequences of steps start .. start + steps - 1 (only what they read is packed)."""

    @abc.abstractmethod
    def per_step(self, batch_size: int, block_size: int) -> int:
        """How many ``unit`` a step of batch_size trains on (for the rate a progress line shows)."""

    @abc.abstractmethod
    def loss(self, model: Model, final: bool = True) -> float:
        """The validation figure during training (``final``: the one at the end)."""

    @abc.abstractmethod
    def score(self, model: Model, final: bool = True) -> tuple[float, Optional[float]]:
        """(the validation figure of ``loss``; nats per character of the original text, None if no character)."""

    @abc.abstractmethod
    def evaluation(self, model: Model) -> tuple[dict[str, Any], str]:
        """(result for --json: loss (nats/token), nats_per_char, bits_per_char, tokens_per_char, targets, ...; the
        line to print after the data's name)."""

    @abc.abstractmethod
    def eval_rows(self, block_size: int) -> int:
        """Sequences in the largest evaluation call (0 when empty)."""

    @abc.abstractmethod
    def positions(self) -> Optional[int]:
        """The most positions one sequence trains on (None: block_size, always)."""

    def memory(self, cfg: Config, dtype: Any, batch_size: int, threads: int = 1, ranks: int = 1,
               val: Optional["Corpus"] = None) -> MemoryEstimate:
        """Memory a run on this data needs: the model, and the activations of its largest call — one process's share
        of a training batch (cut by positions: within one longest sequence of an even share), or one evaluation call
        on ``val``."""
        share = min(batch_size, -(-batch_size // ranks) + (ranks > 1))
        rows = max(share, val.eval_rows(cfg.block_size) if val is not None else 0)
        parts = [p for p in (self.positions(), val.positions() if val is not None else None) if p is not None]
        return memory_estimate(cfg, dtype, rows, threads, max(parts) if parts else None)


class Documents(Corpus):
    """Lines mode: documents in training order; step s reads documents ``(s*B + i) % len(docs)``, i < B."""

    mode, unit, sequences, default_data = "lines", "docs", "documents", "names"
    changed = "documents or their number"
    framed, sample_num, sample_temperature, sample_length = True, 20, 0.5, None
    samples_title = "--- {num} samples (temperature {temperature}) ---"

    def __init__(self, docs: Sequence[str], tokenizer: AnyTokenizer, **meta: Any):
        super().__init__(tokenizer, **meta)
        self.docs = docs
        self._packed: dict[int, Batch] = {}

    def __len__(self) -> int:
        return len(self.docs)

    def _part(self, docs: list[str]) -> "Documents":
        part = Documents(docs, self.tokenizer, source=self.source, where=self.where, fingerprint=self.fingerprint,
                         init_rng=self.init_rng)
        part._rng_state = self._rng_state
        return part

    def split(self, val_fraction: float, block_size: int) -> tuple["Documents", "Documents"]:
        train, val = split_validation(self.docs, val_fraction)
        return self._part(train), self._part(val)

    def summary(self, val: Corpus) -> str:
        return f"{len(self):,} train + {len(val):,} val docs"

    def check(self, block_size: int, validation: bool = False) -> None:
        pass  # every character is checked against the vocabulary when the documents are packed

    def packed(self, block_size: int) -> Batch:
        """All the documents packed (kept: validation reads them every time)."""
        if block_size not in self._packed:
            self._packed[block_size] = self.tokenizer.batch(self.docs, block_size=block_size)
        return self._packed[block_size]

    def feed(self, start: int, steps: int, batch_size: int, block_size: int, seed: int) -> Feed:
        docs, n = self.docs, len(self.docs)
        # Pack only the documents this run reads: ordinals start*B ... (start + steps)*B - 1, cyclic (a short run on
        # a large corpus must not pay for all of it); every document is still checked against the vocabulary.
        first, used = start * batch_size % n, min(n, max(1, steps * batch_size))
        read = list(docs[first:first + used])
        read += docs[:used - len(read)]
        if used < n:
            self.tokenizer.encode("".join(docs))
        lane = np.arange(batch_size, dtype=np.int64)

        def rows(s: int, end: int) -> np.ndarray:  # positions in the packed documents this run reads
            return (np.arange(s, end, dtype=np.int64)[:, None] * batch_size + lane - start * batch_size) % n

        return Feed(self.tokenizer.batch(read, block_size=block_size), rows)

    def per_step(self, batch_size: int, block_size: int) -> int:
        return batch_size

    def loss(self, model: Model, final: bool = True) -> float:
        return evaluate(model, self.packed(model.config.block_size))

    def _figures(self, model: Model) -> tuple[float, dict[str, Any]]:
        """(the loss, per_char over every target of every document: the BOS that ends one is a target covering no
        character)."""
        batch = self.packed(model.config.block_size)
        loss, nats, n = document_losses(model, batch)
        assert batch.offsets is not None
        starts = batch.offsets[:-1] + 1  # each document's first target
        covered = np.concatenate([[0], np.cumsum(token_chars(self.tokenizer)[batch.tokens])])
        return loss, per_char(nats, int(n.sum()), int((covered[starts + n] - covered[starts]).sum()))

    def score(self, model: Model, final: bool = True) -> tuple[float, Optional[float]]:
        loss, text = self._figures(model)
        return loss, text["nats_per_char"]

    def evaluation(self, model: Model) -> tuple[dict[str, Any], str]:
        block = model.config.block_size
        loss, text = self._figures(model)
        offsets = self.packed(block).offsets
        assert offsets is not None  # (documents, not windows)
        lengths = np.diff(offsets)
        targets = int(np.minimum(lengths - 1, block).sum())
        # bits_per_char keeps its meaning from before the text figures: the loss (per token, mean of documents) / ln 2
        result = {"loss": loss, "bits_per_char": loss / math.log(2), "targets": targets, "documents": int(lengths.size),
                  "nats_per_char": text["nats_per_char"], "text_bits_per_char": text["bits_per_char"],
                  "tokens_per_char": text["tokens_per_char"], "chars": text["chars"]}
        return result, (f"{loss:.4f} nats/token | {result['bits_per_char']:.4f} bits/token | of the text: "
                        f"{_char_text(text)} | mean over {lengths.size:,} documents ({targets:,} targets, lines mode)")

    def eval_rows(self, block_size: int) -> int:
        return min(EVAL_CHUNK_DOCS, len(self))

    def positions(self) -> Optional[int]:
        if not len(self):
            return None
        if isinstance(self.tokenizer, BPETokenizer):  # at most a token per UTF-8 byte
            return max(len(d.encode("utf-8", "surrogatepass")) for d in self.docs) + 1
        return max(map(len, self.docs)) + 1


class TextStream(Corpus):
    """Text mode: one token stream; step s trains on B windows of block_size + 1 tokens at
    ``window_starts(seed, s, ...)``, and validation counts every target once (``evaluate_text``)."""

    mode, unit, sequences, default_data = "text", "tok", "windows", "shakespeare"
    changed = "text"
    framed, sample_num, sample_temperature, sample_length = False, 1, 0.8, 500
    samples_title = "--- {num} sample(s) of {length} characters (temperature {temperature}) ---"

    def __init__(self, tokens: np.ndarray, tokenizer: AnyTokenizer, text: Optional[str] = None, **meta: Any):
        super().__init__(tokenizer, **meta)
        self.text = text  # the text the tokens encode (a BPE stream splits it, not its tokens)
        if not isinstance(tokens, np.ndarray) or tokens.ndim != 1 or tokens.dtype.kind not in "iu":
            got = f"{tokens.dtype}{list(tokens.shape)}" if isinstance(tokens, np.ndarray) else type(tokens).__name__
            raise ValueError(f"a token stream must be a 1-D integer array, got {got}")
        self.tokens = np.ascontiguousarray(tokens, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.tokens.size)

    @property
    def _units(self) -> str:
        return "tokens" if isinstance(self.tokenizer, BPETokenizer) else "characters"

    def split(self, val_fraction: float, block_size: int) -> tuple["TextStream", "TextStream"]:
        """The tail ``val_fraction`` of the characters validates (of the tokens when the text is not kept): with
        BPE, each part is encoded on its own (the tokenizer was trained on the first part only)."""
        head: Optional[str] = None
        tail: Optional[str] = None
        if isinstance(self.tokenizer, BPETokenizer) and self.text is not None and val_fraction > 0:
            cut = len(self.text) - int(len(self.text) * val_fraction)  # (split_tail's cut)
            head, tail = self.text[:cut], self.text[cut:]
            train, val = self.tokenizer.encode(head), self.tokenizer.encode(tail)
        else:
            train, val = split_tail(self.tokens, val_fraction)  # views, not copies
        if train.size < block_size + 1:
            raise DataError(f"{self.where} has {train.size:,} {self._units} to train on; text mode needs at least "
                            f"block_size + 1 = {block_size + 1}")
        if val_fraction > 0 and val.size < 2:
            raise DataError(f"{self.where}: the validation split ({val_fraction:g} of {len(self):,} {self._units}) "
                            f"is too short for one target; use a larger --val-fraction or 0")
        meta = dict(source=self.source, where=self.where, fingerprint=self.fingerprint)
        return TextStream(train, self.tokenizer, head, **meta), TextStream(val, self.tokenizer, tail, **meta)

    def summary(self, val: Corpus) -> str:
        if isinstance(self.tokenizer, BPETokenizer):
            chars = len(self.text) if self.text is not None else None
            rate = f", {len(self) / chars:.3f} tokens/char" if chars else ""
            return f"{len(self):,} train + {len(val):,} val tokens (text mode, bpe{rate})"
        return f"{len(self):,} train + {len(val):,} val characters (text mode)"

    def check(self, block_size: int, validation: bool = False) -> None:
        n, vocab = self.tokens.size, self.tokenizer.vocab_size
        if not validation:  # (token ids are checked by the core as each window trains)
            if n < block_size + 1:
                raise ValueError(f"the text has {n} tokens; training windows need block_size + 1 = {block_size + 1}")
            return
        if n < 2:
            raise ValueError(f"the validation text has {n} token(s); it needs at least 2 (one target)")
        bad = self.tokens[(self.tokens < 0) | (self.tokens >= vocab)]
        if bad.size:  # checked now, not when the first evaluation comes after training
            raise ValueError(f"the validation text holds token id {int(bad[0])}, out of range [0, {vocab})")

    def feed(self, start: int, steps: int, batch_size: int, block_size: int, seed: int) -> Feed:
        n = self.tokens.size

        def rows(s: int, end: int) -> np.ndarray:  # window starts
            return window_starts(seed, s, end - s, batch_size, n, block_size)

        return Feed(Batch.of_windows(self.tokens, np.zeros(1, dtype=np.int64)), rows)  # windows: never copied

    def per_step(self, batch_size: int, block_size: int) -> int:
        return batch_size * block_size

    def loss(self, model: Model, final: bool = True) -> float:
        return evaluate_text(model, self.tokens, None if final else EVAL_DURING_TRAINING)[0]

    def _figures(self, model: Model, final: bool = True) -> tuple[float, int, dict[str, Any]]:
        loss, targets = evaluate_text(model, self.tokens, None if final else EVAL_DURING_TRAINING)
        if not isinstance(self.tokenizer, BPETokenizer):  # a token is a character: the loss is per character
            return loss, targets, {"nats_per_char": loss, "bits_per_char": loss / math.log(2),
                                   "tokens_per_char": 1.0, "chars": targets}
        chars = int(token_chars(self.tokenizer)[self.tokens[1:targets + 1]].sum())
        return loss, targets, per_char(loss * targets, targets, chars)

    def score(self, model: Model, final: bool = True) -> tuple[float, Optional[float]]:
        loss, _, text = self._figures(model, final)
        return loss, text["nats_per_char"]

    def evaluation(self, model: Model) -> tuple[dict[str, Any], str]:
        loss, targets, text = self._figures(model)
        result = {"loss": loss, "bits_per_char": text["bits_per_char"], "targets": targets,
                  "nats_per_char": text["nats_per_char"], "text_bits_per_char": text["bits_per_char"],
                  "tokens_per_char": text["tokens_per_char"], "chars": text["chars"]}
        where = f"text mode, windows of {model.config.block_size}"
        if not isinstance(self.tokenizer, BPETokenizer):
            return result, f"{_char_text(text)} | {targets:,} targets ({where})"
        return result, (f"{_char_text(text)} | {loss:.4f} nats/token | {text['tokens_per_char'] or 0:.4f} "
                        f"tokens/char | {targets:,} targets ({where}, bpe vocab {self.tokenizer.vocab_size})")

    def eval_rows(self, block_size: int) -> int:
        return min(max(1, EVAL_CHUNK_TOKENS // block_size), -(-len(self) // block_size))

    def positions(self) -> Optional[int]:
        return None


CORPORA: dict[str, type[Corpus]] = {"text": TextStream, "lines": Documents}
MODES = tuple(CORPORA)  # the data modes (lines is the default: microgpt's)


def corpus_class(mode: str) -> type[Corpus]:
    """The corpus type of a data mode ("lines" or "text")."""
    if mode not in CORPORA:
        raise ValueError(f"the data mode must be one of {', '.join(MODES)}, got {mode!r}")
    return CORPORA[mode]


def check_model_and_tokenizer(model: Model, tokenizer: AnyTokenizer) -> None:
    """TypeError unless ``model`` is a Model and ``tokenizer`` a Tokenizer or BPETokenizer (the API's entry points
    check their arguments before using them, rather than failing on a missing attribute inside)."""
    if not isinstance(model, Model):
        raise TypeError(f"model must be a blasgpt.Model, got {type(model).__name__}")
    if not isinstance(tokenizer, (Tokenizer, BPETokenizer)):
        raise TypeError(f"tokenizer must be a blasgpt.Tokenizer or BPETokenizer, got {type(tokenizer).__name__}")


def as_corpus(data: Union[Corpus, Sequence[str], np.ndarray, TextData], tokenizer: AnyTokenizer,
              name: str = "docs") -> Corpus:
    """``data`` (the argument ``name``) as a corpus: a Corpus as it is, a token stream (a TextData or a 1-D int
    array) as a TextStream, documents (already in training order) as Documents. A single str or bytes is refused:
    it is not a list of documents (each of its characters would become one)."""
    if isinstance(data, (str, bytes)):
        text = data if isinstance(data, str) else data.decode("utf-8", "replace")
        raise ValueError(f"{name} is a single {type(data).__name__}, not a list of documents: pass a list (e.g. "
                         f"[{text[:20]!r}] for one document) or, for running text, its token stream "
                         f"(tokenizer.encode_text(text)) or a Corpus (blasgpt.load_corpus(path, 'text'))")
    if isinstance(data, Corpus):
        return data
    if isinstance(data, TextData):
        return TextStream(data.tokens, tokenizer, source=data.source, fingerprint=data.sha256)
    if isinstance(data, np.ndarray):
        return TextStream(data, tokenizer)
    if not isinstance(data, Sequence):
        raise TypeError(f"{name} must be a list of documents (str), a token stream or a Corpus, got "
                        f"{type(data).__name__}")
    bad = next((i for i, d in enumerate(data) if not isinstance(d, str)), None)
    if bad is not None:
        raise TypeError(f"{name}[{bad}] is {type(data[bad]).__name__}, not a document (str): pass documents as str, "
                        f"or a token stream as a 1-D int array (np.asarray(ids, dtype=np.int32))")
    return Documents(data, tokenizer)


def load_corpus(spec: Optional[PathLike], mode: str = "lines", *, seed: Optional[int] = None,
                tokenizer: Optional[AnyTokenizer] = None, expect: Optional[Mapping[str, Any]] = None,
                bpe_vocab_size: Optional[int] = None, val_fraction: float = 0.0) -> Corpus:
    """The corpus of a file or named dataset (``spec``; None: the mode's default, names or shakespeare) in a data
    mode. Lines mode reads every non-empty line as a document and, given a ``seed``, shuffles them as microgpt does
    (the stream left by the shuffle becomes ``init_rng``); text mode reads the whole file as one stream. The
    tokenizer is the given one (DataError naming the file and any characters outside it, before anything else is
    done with the data), else the data's own characters.
    ``expect`` (a checkpoint's record, see Corpus.identity): raise DataChanged, before any tokenizing, if the data
    is not what that run read. ``bpe_vocab_size`` (no ``tokenizer`` then): the tokenizer is a byte-level BPE of that
    many ids trained on the training split only — all but the tail ``val_fraction`` of the shuffled documents (each
    one a text of its own) or of the text's characters —, deterministically (blasgpt.bpe; needs ``tokenizers``)."""
    cls = corpus_class(mode)
    # a run records its data file by absolute path: read it by the name messages show (display_path), the same file
    if spec and Path(spec).is_absolute() and Path(spec).exists():
        spec = display_path(spec)
    if bpe_vocab_size is not None and tokenizer is not None:
        raise ValueError("give a tokenizer or a BPE vocabulary size to train one, not both")

    def verify(fingerprint: str, init_rng: Optional[random.Random] = None) -> None:
        stored = expect if expect is not None else {}
        state = rng_state(init_rng) if init_rng is not None else None
        if any(stored.get(k, v) != v for k, v in _identity(fingerprint, state).items()):
            raise DataChanged(f"the data differs from the run being resumed (its {cls.changed} changed)")

    if cls is Documents:
        docs = load_docs(spec)
        shuffled, rng = shuffle_docs(docs, seed) if seed is not None else (docs, None)
        fingerprint = docs_fingerprint(docs)
        verify(fingerprint, rng)
        if bpe_vocab_size is not None:
            tokenizer = BPETokenizer.train(split_validation(shuffled, val_fraction)[0], bpe_vocab_size)
        elif isinstance(tokenizer, Tokenizer):  # now, not when the documents are first packed (mid-run)
            _in_vocabulary("".join(docs), tokenizer, spec or "names.txt")
        return Documents(shuffled, tokenizer or Tokenizer.from_docs(shuffled), fingerprint=fingerprint, init_rng=rng,
                         source=str(spec) if spec else "names.txt (bundled)")
    path = data_path(spec or cls.default_data)
    text, digest = read_text(path)
    verify(digest)  # before tokenizing: changed text is reported as such, not as characters outside the vocabulary
    if bpe_vocab_size is not None:
        tokenizer = BPETokenizer.train(split_tail(text, val_fraction)[0], bpe_vocab_size)
    tok = tokenizer or text_vocabulary(text)
    tokens = _in_vocabulary(text, tok, path)
    return TextStream(tokens, tok, text if isinstance(tok, BPETokenizer) else None,
                      source=str(spec or cls.default_data), where=str(path), fingerprint=digest)


def _in_vocabulary(text: str, tokenizer: AnyTokenizer, where: PathLike) -> np.ndarray:
    """The ids of the text of data file ``where``; characters outside the tokenizer are the data's fault (DataError)."""
    try:
        return tokenizer.encode_text(text)
    except ValueError as e:
        raise DataError(f"{where}: {e}") from None


def _identity(fingerprint: Optional[str], state: Optional[list]) -> dict[str, Any]:
    out: dict[str, Any] = {} if fingerprint is None else {"data_sha256": fingerprint}
    if state is not None:
        out["rng_state"] = state
    return out

__all__ = ["CORPORA", "Corpus", "DataChanged", "Documents", "Feed", "MODES", "TextStream", "as_corpus",
           "corpus_class", "docs_fingerprint", "evaluate", "evaluate_text", "load_corpus", "per_char", "shuffle_docs",
           "split_validation", "window_starts"]
