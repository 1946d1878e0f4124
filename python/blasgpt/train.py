"""The training loop: microgpt's schedule (one pass in order over seed-shuffled documents, Adam with a linear
learning-rate decay to zero), over batches of any size."""

from __future__ import annotations

import dataclasses
import math
import random
import time
from typing import Any, Callable, Optional, Sequence

import numpy as np

from .config import Config
from .data import Tokenizer
from .model import Model


CHUNK_STEPS = 256  # steps per C++ call in train(): Python overhead vanishes, Ctrl-C still answers quickly


class TrainingError(RuntimeError):
    """Training cannot continue (the loss became NaN or infinite)."""


@dataclasses.dataclass
class History:
    """What one ``train`` call did: the loss of every step (before its update), wall time and documents seen."""

    losses: list[float]
    seconds: float
    docs: int

    @property
    def docs_per_second(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else math.inf


def lr_at(step: int, lr: float, schedule_steps: int) -> float:
    """microgpt's schedule: lr decays linearly from ``lr`` at step 0 to 0 at ``schedule_steps``."""
    return lr * (1 - step / schedule_steps)


def shuffle_docs(docs: Sequence[str], seed: int = 42) -> tuple[list[str], random.Random]:
    """A copy of ``docs`` shuffled as microgpt does (``random.seed(seed); random.shuffle(docs)``), and the random
    stream after the shuffle (microgpt draws its weights from it next)."""
    rng = random.Random(seed)
    shuffled = list(docs)
    rng.shuffle(shuffled)
    return shuffled, rng


def microgpt_start(docs: Sequence[str], seed: int = 42, dtype: Any = "float64",
                   **config: int) -> tuple[list[str], Tokenizer, Model]:
    """microgpt's exact beginning: ``random.seed(seed)``, shuffle the documents, build the vocabulary, then draw the
    weights from the same random stream. Returns (shuffled docs, tokenizer, model); ``config`` overrides sizes."""
    shuffled, rng = shuffle_docs(docs, seed)
    tokenizer = Tokenizer.from_docs(shuffled)
    cfg = Config(vocab_size=tokenizer.vocab_size, **config)
    return shuffled, tokenizer, Model(cfg, dtype=dtype, init_rng=rng)


def train(model: Model, tokenizer: Tokenizer, docs: Sequence[str], steps: int = 1000, batch_size: int = 1,
          lr: float = 0.01, *, schedule_steps: Optional[int] = None, log_every: int = 0,
          log: Callable[[str], None] = print) -> History:
    """Run ``steps`` Adam steps on ``docs`` (in the given order, cycling) and return the losses.

    Global step s (``model.step`` before the update) trains on documents ``(s*B + i) % len(docs)``, i < B, with
    learning rate ``lr * (1 - s / schedule_steps)``; ``schedule_steps`` defaults to ``model.step + steps``, so a
    fresh model reproduces microgpt and a resumed run passes its original total to continue the same schedule.
    Logs a line every ``log_every`` steps (0: never). Raises TrainingError if the loss stops being finite.
    """
    for name, value, lo in (("steps", steps, 0), ("batch_size", batch_size, 1), ("log_every", log_every, 0)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if len(docs) == 0:
        raise ValueError("no documents to train on")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} symbols but the model expects "
                         f"{model.config.vocab_size}")
    start = model.step
    total = start + steps if schedule_steps is None else schedule_steps
    if total < start + steps:
        raise ValueError(f"schedule_steps ({total}) must cover this run (model at step {start}, {steps} more)")

    corpus = tokenizer.batch(docs, block_size=model.config.block_size)  # tokenized once
    n_docs = len(docs)
    lane = np.arange(batch_size, dtype=np.int64)
    losses: list[float] = []
    t0 = time.perf_counter()
    last_t, last_s = t0, start
    s = start
    while s < start + steps:
        # a chunk of steps runs in one C++ call; chunks end at log lines and stay short enough for Ctrl-C
        end = min(start + steps, s + CHUNK_STEPS)
        if log_every:
            end = min(end, start + ((s - start) // log_every + 1) * log_every)
        idx = np.arange(s, end, dtype=np.int64)
        doc_ids = (idx[:, None] * batch_size + lane) % n_docs
        lrs = lr * (1 - idx / total)  # lr_at, vectorized (the same float64 operations)
        chunk = model.train_steps(corpus, doc_ids, lrs)
        losses.extend(chunk.tolist())
        if chunk.size < end - s or not math.isfinite(losses[-1]):
            bad = s + chunk.size
            raise TrainingError(f"loss became {losses[-1]} at step {bad}; stopping before applying it "
                                f"(the model keeps step {model.step}; try a lower learning rate)")
        s = end
        if log_every and ((s - start) % log_every == 0 or s == start + steps):
            now = time.perf_counter()
            rate = (s - last_s) * batch_size / max(now - last_t, 1e-12)
            log(f"step {s:5d} / {total} | loss {losses[-1]:.4f} | lr {lrs[-1]:.2e} | {rate:,.0f} docs/s")
            last_t, last_s = now, s
    return History(losses, time.perf_counter() - t0, steps * batch_size)


__all__ = ["History", "TrainingError", "lr_at", "microgpt_start", "shuffle_docs", "train"]
