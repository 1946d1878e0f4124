"""Generation: ``num`` samples of one prompt advanced together by the C++ core, one batched call per token, with
every layer's keys and values cached while the context fits in block_size.

Two modes, as in training. ``"text"`` (running text): the context is exactly ``tokenizer.encode(prompt)``; an
empty prompt starts from a newline when the vocabulary has one (as nanoGPT's sample.py does), else from BOS, and
that start token is not part of the result; BOS is never drawn (no training window contains it); past block_size
the context slides to the last block_size tokens, as nanoGPT's (recomputed in C++, batched: learned absolute
positions shift with the window). ``"lines"`` (microgpt's documents): the context is BOS + the prompt, a sample
ends at BOS or when the context fills block_size + 1 positions.

Sample i draws from its own random stream seeded by (seed, i): the same seed gives the same samples, and sample i
does not depend on ``num``. ``top_k=1`` is greedy: token for token ``argmax(model.forward(context)[-1])``.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Union

import numpy as np

from .corpus import MODES, corpus_class
from .data import Tokenizer
from .model import Model

MAX_LENGTH = 1 << 24      # characters one call may generate (num x length)
MAX_PROMPT = 1 << 20      # characters of prompt (only the last block_size of them condition the first token)
STREAM_FIRST = 1          # tokens per C++ call when streaming: the first characters appear at once ...
STREAM_MAX = 32           # ... and later calls take up to this many (fewer Python round trips, still smooth)


def _check(model: Model, tokenizer: Tokenizer, length: int, num: int, temperature: float,
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


def _start(model: Model, tokenizer: Tokenizer, prompt: str, mode: str) -> np.ndarray:
    """The context ids generation starts from (see the module docstring); a start token it adds is not text."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a str, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT:
        raise ValueError(f"prompt has {len(prompt):,} characters; at most {MAX_PROMPT:,} are allowed")
    ids = tokenizer.encode(prompt)
    block = model.config.block_size
    if corpus_class(mode).framed:  # a document: BOS, then the prompt
        if ids.size >= block:
            raise ValueError(f"prompt has {ids.size} characters; it must be shorter than block_size ({block})")
        return np.concatenate([[tokenizer.bos], ids]).astype(np.int32)
    if ids.size:
        return ids
    start = tokenizer.chars.index("\n") if "\n" in tokenizer.chars else tokenizer.bos
    return np.array([start], dtype=np.int32)


def _seed(seed: Optional[int]) -> int:
    if seed is None:
        return int(np.random.SeedSequence().entropy) & (2**64 - 1)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    return seed & (2**64 - 1)


def _generator(model: Model, tokenizer: Tokenizer, prompt: str, num: int, temperature: float,
               top_k: Optional[int], seed: Optional[int], mode: str):
    ctx = _start(model, tokenizer, prompt, mode)
    framed = corpus_class(mode).framed  # documents end at BOS; a stream never draws it and slides past the block
    return model._core.generator(ctx, num, _seed(seed), temperature, top_k or 0,
                                 stop_token=tokenizer.bos if framed else -1,
                                 ban_token=-1 if framed else tokenizer.bos, slide=not framed)


def _decode_rows(tokenizer: Tokenizer, tokens: np.ndarray) -> list[str]:
    """Text of each row of new tokens (-1 after a sample ended, BOS ending a document: both dropped)."""
    chars = np.array(tokenizer.chars + ["", ""], dtype=object)  # BOS and -1 map to ""
    idx = np.where(tokens < 0, tokenizer.bos + 1, tokens)
    return ["".join(row) for row in chars[idx]]


def generate(model: Model, tokenizer: Tokenizer, prompt: str = "", length: int = 500, num: int = 1,
             temperature: float = 1.0, top_k: Optional[int] = None, seed: Optional[int] = 0, *,
             stream: bool = False, mode: str = "text") -> Union[list[str], Iterator]:
    """``num`` continuations of ``prompt``: each is prompt + ``length`` new characters (lines mode: fewer when a
    document ends). Each next token is drawn from softmax(logits / temperature), restricted to the ``top_k``
    likeliest when given. ``seed=None`` draws fresh entropy.

    With ``stream=True`` returns an iterator instead, yielding the text as it is generated: first the prompt,
    then the new characters piece by piece — a str per piece when ``num == 1``, else a list of ``num`` pieces.
    See the module docstring for the context rules of each ``mode``."""
    temp = _check(model, tokenizer, length, num, temperature, top_k, mode)
    if num == 0:
        return iter(()) if stream else []
    gen = _generator(model, tokenizer, prompt, num, temp, top_k, seed, mode)
    if stream:
        return _pieces(gen, tokenizer, prompt, length, num)
    return [prompt + piece for piece in _decode_rows(tokenizer, gen.next(length))]


def _pieces(gen, tokenizer: Tokenizer, prompt: str, length: int, num: int) -> Iterator:
    yield prompt if num == 1 else [prompt] * num
    done, step = 0, STREAM_FIRST
    while done < length:
        new = gen.next(min(step, length - done))
        if new.shape[1] == 0:
            return
        done += new.shape[1]
        step = min(STREAM_MAX, step * 2)
        pieces = _decode_rows(tokenizer, new)
        yield pieces[0] if num == 1 else pieces


def sample(model: Model, tokenizer: Tokenizer, num: int = 20, temperature: float = 0.5,
           top_k: Optional[int] = None, prompt: str = "", seed: Optional[int] = 0) -> list[str]:
    """microgpt's documents: ``num`` samples that start from BOS (+ ``prompt``) and stop at BOS or after
    block_size positions. Returns prompt + generated text. The same seed gives the same samples."""
    block = model.config.block_size
    return generate(model, tokenizer, prompt, length=block, num=num, temperature=temperature, top_k=top_k,
                    seed=seed, mode="lines")  # type: ignore[return-value]


__all__ = ["generate", "sample"]
