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
from typing import Iterator, Optional, Union

import numpy as np

from .bpe import AnyTokenizer, BPETokenizer
from .corpus import MODES, corpus_class
from .model import Model

MAX_LENGTH = 1 << 24      # characters one call may generate (num x length)
MAX_PROMPT = 1 << 20      # characters of prompt (only the last block_size of them condition the first token)
STREAM_FIRST = 1          # tokens per C++ call when streaming: the first characters appear at once ...
STREAM_MAX = 32           # ... and later calls take up to this many (fewer Python round trips, still smooth)


def _check(model: Model, tokenizer: AnyTokenizer, length: int, num: int, temperature: float,
           top_k: Optional[int], mode: str) -> float:
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

    def end(self) -> list[str]:
        """What is left at the end: an unfinished character (a document ended inside it) as U+FFFD."""
        return [d.decode(b"", final=True) for d in self.utf8]


def _run(gen, decoder: _Decoder, length: int, num: int, by_chars: bool, first: int, most: int) -> Iterator[list[str]]:
    """Each sample's new text, piece by piece: ``length`` tokens (``by_chars``: characters, tokens being drawn until
    every sample has that many, each cut there), ``first`` tokens in the first C++ call, then doubling to ``most``."""
    have, step = [0] * num, first
    while min(have, default=length) < length:
        new = gen.next(min(step, length - min(have)))
        if new.shape[1] == 0:  # (lines mode: every document ended)
            break
        step = min(most, step * 2)
        pieces = decoder.add(new)
        if by_chars:
            pieces = [p[:length - h] for p, h in zip(pieces, have)]
            have = [h + len(p) for h, p in zip(have, pieces)]
        else:
            have = [h + new.shape[1] for h in have]
        yield pieces
    if not by_chars and any(decoder.end()):
        yield decoder.end()


def generate(model: Model, tokenizer: AnyTokenizer, prompt: str = "", length: int = 500, num: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = 0, *,
             stream: bool = False, mode: str = "text") -> Union[list[str], Iterator]:
    """``num`` continuations of ``prompt``: each is prompt + ``length`` new characters (lines mode: at most
    ``length`` new tokens, fewer when a document ends). Each next token is drawn from softmax(logits /
    temperature), restricted to the ``top_k`` likeliest when given. ``seed=None`` draws fresh entropy.

    With ``stream=True`` returns an iterator instead, yielding the text as it is generated: first the prompt,
    then the new characters piece by piece — a str per piece when ``num == 1``, else a list of ``num`` pieces.
    See the module docstring for the context rules of each ``mode``."""
    temp = _check(model, tokenizer, length, num, temperature, top_k, mode)
    if num == 0:
        return iter(()) if stream else []
    gen = _generator(model, tokenizer, prompt, num, temp, top_k, seed, mode)
    decoder = _Decoder(tokenizer, num)
    by_chars = decoder.bpe and not corpus_class(mode).framed
    if stream:
        return _pieces(_run(gen, decoder, length, num, by_chars, STREAM_FIRST, STREAM_MAX), prompt, num)
    texts = [prompt] * num
    for pieces in _run(gen, decoder, length, num, by_chars, max(length, 1), MAX_LENGTH):
        texts = [t + p for t, p in zip(texts, pieces)]
    return texts


def _pieces(run: Iterator[list[str]], prompt: str, num: int) -> Iterator:
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


__all__ = ["generate", "sample"]
