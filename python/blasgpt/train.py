"""The training loop: microgpt's schedule (one pass in order over seed-shuffled documents, Adam with a linear
learning-rate decay to zero), over batches of any size; in text mode over seeded random windows of one token
stream (nanoGPT's get_batch), with the same schedule."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .checkpoint import save_checkpoint
from .config import Config, MemoryEstimate, check_memory, memory_estimate
from .data import Batch, TextData, Tokenizer
from .model import Model


METRICS_FILE = "metrics.jsonl"
LATEST_CHECKPOINT = "ckpt.safetensors"
CHUNK_STEPS = 256  # steps per C++ call in train(): Python overhead vanishes, Ctrl-C still answers quickly


class TrainingError(RuntimeError):
    """Training cannot continue (the loss became NaN or infinite)."""


@dataclasses.dataclass
class History:
    """What one ``train`` call did: the loss of every step (before its update), wall time spent training (held-out
    evaluation excluded), documents seen and the held-out losses it measured."""

    losses: list[float]
    seconds: float
    docs: int
    val_losses: list[tuple[int, float]] = dataclasses.field(default_factory=list)  # (step, held-out loss)

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


def split_validation(docs: Sequence[str], fraction: float) -> tuple[list[str], list[str]]:
    """(train, validation): the validation set is the *tail* ``fraction`` of ``docs`` (already shuffled), so no
    random numbers are drawn and the training documents keep microgpt's order."""
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction!r}")
    n_val = int(len(docs) * fraction)
    if len(docs) - n_val < 1:
        raise ValueError(f"no training documents left after holding out {n_val} of {len(docs)} for validation")
    return list(docs[:len(docs) - n_val]), list(docs[len(docs) - n_val:])


def microgpt_start(docs: Sequence[str], seed: int = 42, dtype: Any = "float64",
                   **config: int) -> tuple[list[str], Tokenizer, Model]:
    """microgpt's exact beginning: ``random.seed(seed)``, shuffle the documents, build the vocabulary, then draw the
    weights from the same random stream. Returns (shuffled docs, tokenizer, model); ``config`` overrides sizes."""
    shuffled, rng = shuffle_docs(docs, seed)
    tokenizer = Tokenizer.from_docs(shuffled)
    cfg = Config(vocab_size=tokenizer.vocab_size, **config)
    return shuffled, tokenizer, Model(cfg, dtype=dtype, init_rng=rng)


EVAL_CHUNK_DOCS = 256  # documents per loss() call in evaluation: bounds the activation workspace
EVAL_CHUNK_TOKENS = 1 << 15  # text mode: positions per loss() call
EVAL_DURING_TRAINING = 1 << 15  # text mode: targets of the periodic validation figure (the final one: all)
WINDOW_DRAW_STEPS = 1024  # text mode: window starts are drawn per block of this many steps (see window_starts)


def run_memory(cfg: Config, dtype: Any, batch_size: int, threads: int = 1, n_val: int = 0, ranks: int = 1,
               longest: Optional[int] = None, text: bool = False) -> MemoryEstimate:
    """Memory a ``train`` run needs: the model, and the activations of its largest call, which is either one
    process's share of a training batch or one evaluation chunk of the ``n_val`` held-out documents (documents of
    at most ``longest`` characters, when given, train on at most longest + 1 positions). ``text``: ``n_val`` counts
    held-out tokens, evaluated in windows of block_size, EVAL_CHUNK_TOKENS positions per call."""
    if text:
        evals = min(max(1, EVAL_CHUNK_TOKENS // cfg.block_size), -(-n_val // cfg.block_size))
    else:
        evals = min(EVAL_CHUNK_DOCS, n_val)
    return memory_estimate(cfg, dtype, max(-(-batch_size // ranks), evals), threads,
                           None if longest is None else longest + 1)


def evaluate(model: Model, batch: Batch) -> float:
    """Mean over documents of each document's loss, in chunks; gradients and Adam state are untouched."""
    n = batch.num_docs
    total = 0.0
    for lo in range(0, n, EVAL_CHUNK_DOCS):
        ids = np.arange(lo, min(n, lo + EVAL_CHUNK_DOCS), dtype=np.int64)
        total += model.loss(batch.select(ids)) * ids.size
    return total / n


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
    stream = tokens[:targets + 1]  # the last target's window ends here
    starts = np.arange(0, targets, T, dtype=np.int64)
    full = starts[:targets // T]  # windows of T targets each; a final partial one follows when T does not divide
    per_call = max(1, EVAL_CHUNK_TOKENS // T)
    total = 0.0
    for lo in range(0, full.size, per_call):
        chunk = full[lo:lo + per_call]
        total += model.loss(Batch.of_windows(stream, chunk)) * chunk.size * T
    if starts.size > full.size:
        rest = targets - full.size * T
        total += model.loss(Batch.of_windows(stream, starts[-1:])) * rest
    return total / targets, targets


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


class _Reporter:
    """Progress for people (a tqdm bar on a terminal, else plain lines) and for files (metrics.jsonl)."""

    def __init__(self, start: int, total: int, steps: int, per_step: int, unit: str, log: Callable[[str], None],
                 bar: bool, metrics: Optional[Path]):
        # per_step: documents (lines mode) or tokens (text mode) a step trains on
        self.total, self.per_step, self.unit, self.log, self.metrics = total, per_step, unit, log, metrics
        self.t0 = self.last_t = time.perf_counter()
        self.last_s = start
        self.losses_since: list[float] = []
        self.bar = None
        if bar:
            from tqdm import tqdm

            self.bar = tqdm(total=steps, unit="step", dynamic_ncols=True, leave=True)

    def steps_done(self, losses: list[float]) -> None:
        self.losses_since.extend(losses)
        if self.bar is not None:
            self.bar.update(len(losses))

    def record(self, step: int, lr: float, val: Optional[float], line: bool, eval_seconds: float) -> None:
        now = time.perf_counter()
        rate = (step - self.last_s) * self.per_step / max(now - self.last_t - eval_seconds, 1e-12)
        train_loss = float(np.mean(self.losses_since)) if self.losses_since else float("nan")
        if self.metrics is not None:
            row = {"step": step, "train_loss": train_loss, "val_loss": val, "lr": lr, f"{self.unit}_per_s": rate,
                   "elapsed": now - self.t0}
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        val_text = "" if val is None else f" | val {val:.4f}"
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {train_loss:.4f}{val_text} | lr {lr:.2e} | {rate:,.0f} {self.unit}/s")
        elif line:
            self.log(f"step {step:5d} / {self.total} | loss {train_loss:.4f}{val_text} | lr {lr:.2e} | "
                     f"{rate:,.0f} {self.unit}/s")
        self.losses_since.clear()
        self.last_t, self.last_s = now, step

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def save_rotating(model: Model, tokenizer: Tokenizer, out_dir: Path, keep: int, extra: dict[str, Any]) -> Path:
    """Write ckpt-<step>.safetensors, point ckpt.safetensors at it, keep the newest ``keep`` numbered ones."""
    numbered = out_dir / f"ckpt-{model.step}.safetensors"
    save_checkpoint(numbered, model, tokenizer, extra)
    latest = out_dir / LATEST_CHECKPOINT
    tmp = out_dir / f".{LATEST_CHECKPOINT}.{os.getpid()}.tmp"
    try:
        os.link(numbered, tmp)  # same bytes, no second write; the rename below is atomic
        os.replace(tmp, latest)
    except OSError:
        if tmp.exists():
            tmp.unlink()
        save_checkpoint(latest, model, tokenizer, extra)
    old = sorted(out_dir.glob("ckpt-*.safetensors"), key=lambda q: _ckpt_step(q))
    for q in old[:-keep] if keep > 0 else old:
        q.unlink()
    return latest


def _ckpt_step(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


TextLike = Union[np.ndarray, TextData]


def _stream(data: Any) -> Optional[np.ndarray]:
    """The token stream of text-mode data (a TextData or an int array), or None for documents."""
    if isinstance(data, TextData):
        return data.tokens
    if isinstance(data, np.ndarray):
        if data.ndim != 1 or data.dtype.kind not in "iu":
            raise ValueError(f"a token stream must be a 1-D integer array, got {data.dtype}{list(data.shape)}")
        return np.ascontiguousarray(data, dtype=np.int32)
    return None


def train(model: Model, tokenizer: Tokenizer, docs: Union[Sequence[str], TextLike], steps: int = 1000,
          batch_size: int = 1, lr: float = 0.01, *, schedule_steps: Optional[int] = None, log_every: int = 0,
          log: Callable[[str], None] = print, val_docs: Optional[Union[Sequence[str], TextLike]] = None,
          eval_every: int = 0, window_seed: int = 0,
          out_dir: Optional[Union[str, "os.PathLike[str]"]] = None, checkpoint_every: int = 0,
          keep_checkpoints: int = 3, checkpoint_extra: Optional[dict[str, Any]] = None,
          progress_bar: bool = False, comm: Optional[Any] = None) -> History:
    """Run ``steps`` Adam steps on ``docs`` (in the given order, cycling) and return the losses.

    Global step s (``model.step`` before the update) trains on documents ``(s*B + i) % len(docs)``, i < B, with
    learning rate ``lr * (1 - s / schedule_steps)``. Text mode — ``docs`` a token stream (a TextData or a 1-D int
    array), ``val_docs`` too if given — trains step s on B windows of block_size + 1 tokens at the offsets
    ``window_starts(window_seed, s, ...)`` (all block_size positions of each), and validates with evaluate_text
    (periodically on its first EVAL_DURING_TRAINING targets, at the end on all of them). ``schedule_steps``
    defaults to ``model.step + steps``, so a
    fresh model reproduces microgpt and a resumed run passes its original total to continue the same schedule.

    Optional, each only when asked: a progress line every ``log_every`` steps (``progress_bar`` shows a tqdm bar
    instead); the loss on ``val_docs`` every ``eval_every`` steps and at the end (never touching gradients or
    Adam state); with ``out_dir``, ``metrics.jsonl`` there (one JSON object per report: step, train_loss — the
    mean since the previous report —, val_loss, lr, docs_per_s, elapsed) and, every ``checkpoint_every`` steps,
    ``ckpt-<step>.safetensors`` plus ``ckpt.safetensors`` (the latest), keeping ``keep_checkpoints`` numbered
    ones; ``checkpoint_extra`` is stored in them. Raises TrainingError if the loss stops being finite (that step is
    not applied, so the model and every checkpoint stay valid).

    With ``comm`` (an mpi4py communicator of several processes, each calling train with the same arguments), each
    step's batch is split across the ranks and their gradients summed (blasgpt.parallel): the same updates as one
    process on the whole batch. Only rank 0 logs, evaluates and writes files.
    """
    for name, value, lo in (("steps", steps, 0), ("batch_size", batch_size, 1), ("log_every", log_every, 0),
                            ("eval_every", eval_every, 0), ("checkpoint_every", checkpoint_every, 0),
                            ("keep_checkpoints", keep_checkpoints, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < lo:
            raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
    if not (isinstance(lr, (int, float)) and math.isfinite(lr) and lr >= 0):
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    if isinstance(window_seed, bool) or not isinstance(window_seed, int):
        raise ValueError(f"window_seed must be an integer, got {window_seed!r}")
    stream = _stream(docs)
    if len(docs) == 0:
        raise ValueError("no documents to train on")
    if tokenizer.vocab_size != model.config.vocab_size:
        raise ValueError(f"tokenizer has {tokenizer.vocab_size} symbols but the model expects "
                         f"{model.config.vocab_size}")
    if checkpoint_every and out_dir is None:  # (checked on every rank, before any collective call)
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoints)")
    val_given = val_docs is not None and len(val_docs) > 0
    val_tokens = _stream(val_docs) if val_given else None
    if val_given and (val_tokens is None) != (stream is None):
        raise ValueError("val_docs must be of the same kind as docs: a token stream (text mode) or documents")
    ranks = comm.Get_size() if comm is not None else 1
    if stream is not None:
        n_val, longest = (len(val_docs) if val_docs is not None else 0), None
    else:
        longest = max(max(map(len, docs)), max(map(len, val_docs or [""])))  # type: ignore[arg-type]
        n_val = len(val_docs or ())
    need = run_memory(model.config, model.dtype, batch_size, model.threads, n_val, ranks, longest,
                      text=stream is not None)
    held = memory_estimate(model.config, model.dtype, threads=model.threads).total + model._activations_sized
    check_memory(need, "this training run", resident=min(held, need.total))  # (workspaces only grow: held stays)
    model._activations_sized = max(model._activations_sized, need.activations)
    start = model.step
    total = start + steps if schedule_steps is None else schedule_steps
    if total < start + steps:
        raise ValueError(f"schedule_steps ({total}) must cover this run (model at step {start}, {steps} more)")

    distributed = comm is not None and comm.Get_size() > 1
    root = not distributed or comm.Get_rank() == 0
    block = model.config.block_size
    if stream is not None:  # text mode: windows of one stream, never copied
        if stream.size < block + 1:
            raise ValueError(f"the text has {stream.size} tokens; training windows need block_size + 1 = "
                             f"{block + 1}")
        corpus = Batch.of_windows(stream, np.zeros(1, dtype=np.int64))
        val_stream = val_tokens if root else None
        if val_stream is not None and val_stream.size < 2:
            raise ValueError(f"the validation text has {val_stream.size} token(s); it needs at least 2 (one target)")
        if val_stream is not None:  # checked now, not when the first evaluation comes after training
            bad = val_stream[(val_stream < 0) | (val_stream >= tokenizer.vocab_size)]
            if bad.size:
                raise ValueError(f"the validation text holds token id {int(bad[0])}, out of range "
                                 f"[0, {tokenizer.vocab_size})")
        val_batch = None
    else:
        n_docs = len(docs)
        # Pack only the documents this run reads: ordinals start*B ... (start + steps)*B - 1, cyclic (a short run on
        # a large corpus must not pay for all of it); every document is still checked against the vocabulary.
        first, used = start * batch_size % n_docs, min(n_docs, max(1, steps * batch_size))
        read = list(docs[first:first + used])
        read += docs[:used - len(read)]
        if used < n_docs:
            tokenizer.encode("".join(docs))  # type: ignore[arg-type]
        corpus = tokenizer.batch(read, block_size=block)
        val_batch = tokenizer.batch(val_docs, block_size=block) if val_docs and root else None  # type: ignore
        val_stream = None
    out = Path(out_dir) if out_dir is not None and root else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".ckpt*.tmp"):  # left by a process killed mid-save; never a complete checkpoint
            stale.unlink()
    extra = dict(checkpoint_extra or {})
    lane = np.arange(batch_size, dtype=np.int64)
    losses: list[float] = []
    val_losses: list[tuple[int, float]] = []
    per_step, unit = (batch_size * block, "tok") if stream is not None else (batch_size, "docs")
    report = _Reporter(start, total, steps, per_step, unit, log if root else (lambda _: None), progress_bar and root,
                       out / METRICS_FILE if out else None)
    end_all = start + steps
    eval_seconds = 0.0

    def due(every: int, s: int) -> bool:
        return every > 0 and (s - start) % every == 0

    try:
        s = start
        while s < end_all:
            # a chunk of steps runs in one C++ call; chunks end where something is due and stay short for Ctrl-C
            end = min(end_all, s + CHUNK_STEPS)
            for every in (log_every, eval_every, checkpoint_every):
                if every:
                    end = min(end, start + ((s - start) // every + 1) * every)
            idx = np.arange(s, end, dtype=np.int64)
            if stream is not None:
                doc_ids = window_starts(window_seed, s, end - s, batch_size, stream.size, block)
            else:  # index into the packed documents this run reads
                doc_ids = (idx[:, None] * batch_size + lane - start * batch_size) % n_docs
            lrs = lr * (1 - idx / total)  # lr_at, vectorized (the same float64 operations)
            if distributed:
                from .parallel import data_parallel_step

                chunk = []
                for k in range(end - s):
                    chunk.append(data_parallel_step(model, corpus, doc_ids[k], float(lrs[k]), comm))
                    if not math.isfinite(chunk[-1]):
                        break
            else:
                chunk = model.train_steps(corpus, doc_ids, lrs).tolist()
            losses.extend(chunk)
            report.steps_done(chunk)
            if len(chunk) < end - s or not math.isfinite(chunk[-1]):
                raise TrainingError(f"loss became {losses[-1]} at step {s + len(chunk)}; stopping before applying "
                                    f"it (the model keeps step {model.step}; try a lower learning rate)")
            s = end
            last = s == end_all
            val, t_eval = None, time.perf_counter()
            if (val_batch is not None or val_stream is not None) and (due(eval_every, s) or last):
                if val_stream is not None:
                    val = evaluate_text(model, val_stream, None if last else EVAL_DURING_TRAINING)[0]
                else:
                    val = evaluate(model, val_batch)  # type: ignore[arg-type]
                val_losses.append((s, val))
            t_eval = time.perf_counter() - t_eval
            eval_seconds += t_eval
            if root and (due(log_every, s) or val is not None or (last and (log_every or out))):
                report.record(s, float(lrs[-1]), val, line=bool(log_every), eval_seconds=t_eval)
            if out is not None and checkpoint_every and (due(checkpoint_every, s) or last):
                save_rotating(model, tokenizer, out, keep_checkpoints, extra)  # type: ignore[arg-type]
    finally:
        report.close()
    return History(losses, time.perf_counter() - report.t0 - eval_seconds, steps * batch_size, val_losses)


__all__ = ["History", "TrainingError", "evaluate", "evaluate_text", "lr_at", "microgpt_start", "run_memory",
           "save_rotating", "shuffle_docs", "split_validation", "train", "window_starts"]
