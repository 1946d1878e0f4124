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
    for s in range(start, start + steps):
        batch = corpus.select((s * batch_size + lane) % n_docs)
        lr_t = lr_at(s, lr, total)
        loss = model.train_step(batch, lr_t)
        if not math.isfinite(loss):
            raise TrainingError(f"loss became {loss} at step {s + 1}; stopping (try a lower learning rate)")
        losses.append(loss)
        if log_every and ((s + 1 - start) % log_every == 0 or s + 1 == start + steps):
            now = time.perf_counter()
            rate = (s + 1 - last_s) * batch_size / max(now - last_t, 1e-12)
            log(f"step {s + 1:5d} / {total} | loss {loss:.4f} | lr {lr_t:.2e} | {rate:,.0f} docs/s")
            last_t, last_s = now, s + 1
    return History(losses, time.perf_counter() - t0, steps * batch_size)


__all__ = ["History", "TrainingError", "lr_at", "microgpt_start", "shuffle_docs", "train"]
