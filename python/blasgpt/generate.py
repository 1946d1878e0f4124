"""Generation: ``num`` samples of one prompt advanced together by the C++ core, one batched call per token, with
every layer's keys and values cached while the context fits in block_size.

Two modes, as in training. ``"text"`` (running text): the context is exactly ``tokenizer.encode(prompt)``; an
empty prompt starts from a newline when the vocabulary has one (as nanoGPT's sample.py does), else from BOS, and
that start token is not part of the result; BOS is never drawn (no training window contains it); past block_size
the context slides to the last block_size tokens, as nanoGPT's (recomputed in C++, batched: learned absolute
positions shift with the window). ``"lines"`` (microgpt's documents): the context is BOS + the prompt, a sample
ends at BOS or when the context fills block_size + 1 positions.

With a byte-level BPE tokenizer a token is bytes and one character may span tokens: each sample's bytes go
through an incremental UTF-8 decoder, so a character appears whole once its last byte is drawn (a stream never
shows half of one) and bytes that are no UTF-8 become U+FFFD. In text mode ``length`` then counts characters, as
with the character tokenizer (tokens are drawn until every sample has that many); in lines mode it counts tokens
(a document's context is block_size tokens).

Sample i draws from its own random stream seeded by (seed, i): the same seed gives the same samples, and sample i
does not depend on ``num``. ``top_k=1`` is greedy: token for token ``argmax(model.forward(context)[-1])``.
"""

from __future__ import annotations

import codecs
import math
import time
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from .bpe import AnyTokenizer, BPETokenizer
from .corpus import MODES, check_model_and_tokenizer, corpus_class
from .model import Model

MAX_LENGTH = 1 << 24      # characters one call may generate (num x length)
MAX_PROMPT = 1 << 20      # characters of prompt (only the last block_size of them condition the first token)
CHUNK_SECONDS = 0.05      # a C++ call draws as many tokens as take about this long (the first call one token): a
                          # stream shows text at once and smoothly, and Ctrl-C, seen between calls, stops at once


def _check(model: Model, tokenizer: AnyTokenizer, length: int, num: int, temperature: float,
           top_k: Optional[int], mode: str) -> float:
    check_model_and_tokenizer(model, tokenizer)
    V = model.config.vocab_size
    if tokenizer.vocab_size != V:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} symbols but the model expects {V}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 <= length <= MAX_LENGTH:
        raise ValueError(f"length must be an integer between 0 and {MAX_LENGTH}, got {length!r}")
    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= 1 << 16:
        raise ValueError(f"num must be an integer between 0 and 65536, got {num!r}")
    if num * length > MAX_LENGTH:  # the (num, length) result is held at once
        raise ValueError(f"num x length is {num * length:,} characters; one call generates at most {MAX_LENGTH:,}")
    try:
        temp = float(temperature)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number > 0, got {temperature!r}") from None
    if not (math.isfinite(temp) and temp > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= V):
        raise ValueError(f"top_k must be an integer between 1 and the vocabulary size {V}, got {top_k!r}")
    return temp


def _start(model: Model, tokenizer: AnyTokenizer, prompt: str, mode: str) -> np.ndarray:
    """The context ids generation starts from (see the module docstring); a start token it adds is not text."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a str, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT:
        raise ValueError(f"prompt has {len(prompt):,} characters; at most {MAX_PROMPT:,} are allowed")
    ids = tokenizer.encode(prompt)
    block = model.config.block_size
    if corpus_class(mode).framed:  # a document: BOS, then the prompt
        if ids.size >= block:
            units = "tokens" if isinstance(tokenizer, BPETokenizer) else "characters"
            raise ValueError(f"prompt has {ids.size} {units}; it must be shorter than block_size ({block})")
        return np.concatenate([[tokenizer.bos], ids]).astype(np.int32)
    if ids.size:
        return ids
    try:
        newline = tokenizer.encode("\n")  # (a byte-level BPE: the newline byte)
    except ValueError:  # a character vocabulary without one
        newline = np.array([tokenizer.bos], dtype=np.int32)
    return np.ascontiguousarray(newline, dtype=np.int32)


def _seed(seed: Optional[int]) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy) & (2**64 - 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return seed & (2**64 - 1)


def _generator(model: Model, tokenizer: AnyTokenizer, prompt: str, num: int, temperature: float,
               top_k: Optional[int], seed: Optional[int], mode: str):
    ctx = _start(model, tokenizer, prompt, mode)
    framed = corpus_class(mode).framed  # documents end at BOS; a stream never draws it and slides past the block
    return model._core.generator(ctx, num, _seed(seed), temperature, top_k or 0,
                                 stop_token=tokenizer.bos if framed else -1,
                                 ban_token=-1 if framed else tokenizer.bos, slide=not framed)


class _Decoder:
    """The text of each sample's new tokens, as they come (-1 after a sample ended and BOS: no text). A character
    tokenizer's token is a character; a BPE token is bytes, decoded per sample by an incremental UTF-8 decoder."""

    def __init__(self, tokenizer: AnyTokenizer, num: int):
        self.bpe = isinstance(tokenizer, BPETokenizer)
        self.end_id = tokenizer.vocab_size  # what -1 maps to
        if isinstance(tokenizer, BPETokenizer):
            self.table = np.array(tokenizer.token_bytes + [b""], dtype=object)  # (BOS is b"")
            self.utf8 = [codecs.getincrementaldecoder("utf-8")("replace") for _ in range(num)]
        else:
            self.table = np.array(tokenizer.chars + ["", ""], dtype=object)  # BOS and -1 map to ""
            self.utf8 = []

    def add(self, tokens: np.ndarray) -> list[str]:
        rows = self.table[np.where(tokens < 0, self.end_id, tokens)]
        if not self.bpe:
            return ["".join(row) for row in rows]
        return [d.decode(b"".join(row)) for d, row in zip(self.utf8, rows)]

    def end(self, sample: int) -> str:
        """What is left when a sample ends: an unfinished character (it ended inside one) as U+FFFD, else ""."""
        return self.utf8[sample].decode(b"", final=True) if self.bpe else ""


class Generation:
    """``num`` samples of ``prompt`` being generated together: ``generate`` runs one to its end, and a caller that
    may stop early (the sample command on Ctrl-C) can use what it has.

    Iterating runs the C++ generator call by call (CHUNK_SECONDS each) and yields each call's new text of every
    sample (a list of ``num`` str; "" for a sample that has ended). Meanwhile ``texts()`` is prompt + each sample's
    text so far — never part of a character — and ``ended[i]`` says whether sample i is whole (it reached
    ``length``, or in lines mode drew BOS or filled the block): a whole sample's text is final."""

    def __init__(self, model: Model, tokenizer: AnyTokenizer, prompt: str, length: int, num: int, temperature: float,
                 top_k: Optional[int], seed: Optional[int], mode: str):
        temp = _check(model, tokenizer, length, num, temperature, top_k, mode)
        self.length, self.num, self.block = length, num, model.config.block_size
        self.ended = [False] * num
        self._parts = [[prompt] for _ in range(num)]
        self._stop = tokenizer.bos if corpus_class(mode).framed else None  # lines mode: a document ends at BOS
        self._decoder = _Decoder(tokenizer, num)
        self._by_chars = self._decoder.bpe and self._stop is None  # length counts characters, not tokens
        self._gen = _generator(model, tokenizer, prompt, num, temp, top_k, seed, mode) if num else None

    def texts(self) -> list[str]:
        return ["".join(parts) for parts in self._parts]

    def __iter__(self) -> Iterator[list[str]]:
        gen, length = self._gen, self.length
        have, step = [0] * self.num, 1  # new tokens (by_chars: characters) of each sample; tokens of the next call
        while gen is not None and min(have) < length:
            count, at = min(step, length - min(have)), gen.length
            if at <= self.block:  # tokens past the block cost a forward of the whole window each: a new pace
                count = min(count, self.block + 1 - at)
            t0 = time.perf_counter()
            new = gen.next(count)
            took = time.perf_counter() - t0
            if new.shape[1] == 0:  # (lines mode: every document ended)
                break
            step = 1 if gen.length == self.block + 1 else \
                min(2 * count, max(1, int(count * CHUNK_SECONDS / max(took, 1e-9))))
            pieces = self._decoder.add(new)
            if self._by_chars:
                pieces = [p[:length - h] for p, h in zip(pieces, have)]
                have = [h + len(p) for h, p in zip(have, pieces)]
            else:
                have = [h + new.shape[1] for h in have]
            done = [] if self._stop is None else \
                np.flatnonzero(((new == self._stop) | (new < 0)).any(axis=1)).tolist()  # documents that ended
            for s in done:
                pieces[s] += self._decoder.end(s)
            yield from self._add(pieces, done)
        # an unfinished character at the end (by_chars: past the cut, so not part of the text); the decoders of the
        # documents that ended are empty
        tails = [""] * self.num if self._by_chars else [self._decoder.end(s) for s in range(self.num)]
        yield from self._add(tails, range(self.num), every=any(tails))

    def _add(self, pieces: list[str], done: Iterable[int], every: bool = True) -> Iterator[list[str]]:
        """Record ``pieces`` (yielding them unless every is False), then mark the samples ``done`` as whole."""
        for parts, piece in zip(self._parts, pieces):
            if piece:
                parts.append(piece)
        for s in done:
            self.ended[s] = True
        if every:
            yield pieces


def generate(model: Model, tokenizer: AnyTokenizer, prompt: str = "", length: int = 500, num: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = 0, *,
             stream: bool = False, mode: str = "text") -> Union[list[str], Iterator]:
    """``num`` continuations of ``prompt``: each is prompt + ``length`` new characters (lines mode: at most
    ``length`` new tokens, fewer when a document ends). Each next token is drawn from softmax(logits /
    temperature), restricted to the ``top_k`` likeliest when given. ``seed=None`` draws fresh entropy.

    With ``stream=True`` returns an iterator instead, yielding the text as it is generated: first the prompt,
    then the new characters piece by piece — a str per piece when ``num == 1``, else a list of ``num`` pieces.
    See the module docstring for the context rules of each ``mode``."""
    run = Generation(model, tokenizer, prompt, length, num, temperature, top_k, seed, mode)
    if stream:
        return _pieces(run, prompt, num)
    for _ in run:
        pass
    return run.texts()


def _pieces(run: Generation, prompt: str, num: int) -> Iterator:
    if num == 0:
        return
    yield prompt if num == 1 else [prompt] * num
    for pieces in run:
        yield pieces[0] if num == 1 else pieces


def sample(model: Model, tokenizer: AnyTokenizer, num: int = 20, temperature: float = 0.5,
           top_k: Optional[int] = None, prompt: str = "", seed: Optional[int] = 0) -> list[str]:
    """microgpt's documents: ``num`` samples that start from BOS (+ ``prompt``) and stop at BOS or after
    block_size positions. Returns prompt + generated text. The same seed gives the same samples."""
    block = model.config.block_size
    return generate(model, tokenizer, prompt, length=block, num=num, temperature=temperature, top_k=top_k,
                    seed=seed, mode="lines")  # type: ignore[return-value]


__all__ = ["Generation", "generate", "sample"]
