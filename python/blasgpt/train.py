"""The training loop: microgpt's schedule (one pass in order over seed-shuffled documents, Adam with a linear
learning-rate decay to zero), over batches of any size; in text mode over seeded random windows of one token
stream (nanoGPT's get_batch), with the same schedule.

``fit`` runs a TrainConfig on a corpus (blasgpt.corpus: what step s trains on, how validation is measured) as a
short loop over small parts: the schedule (blasgpt.schedule), memory admission (Model.reserve), a Reporter
(progress bar or lines, metrics.jsonl), an Evaluator and a Checkpointer (rotation of numbered checkpoints).
``train`` is the same for documents or a token stream given directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from . import rundir
from .bpe import AnyTokenizer, BPETokenizer
from .checkpoint import save_checkpoint
from .config import Config
from .corpus import (EVAL_CHUNK_DOCS, EVAL_CHUNK_TOKENS, EVAL_DURING_TRAINING, WINDOW_DRAW_STEPS, Corpus, Documents,
                     Feed, as_corpus, check_model_and_tokenizer, evaluate, evaluate_text, shuffle_docs,
                     split_validation, window_starts)
from .data import TextData, Tokenizer
from .calibrate import Plan
from .model import Model
from .rundir import METRICS_FILE, RunDirError, RunLock
from .schedule import lr_at, make_schedule
from .train_config import TrainConfig

LATEST_CHECKPOINT = "ckpt.safetensors"
CHUNK_STEPS = 256  # steps per C++ call in fit(): Python overhead vanishes, Ctrl-C still answers quickly


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
    # (step, held-out nats per character of the original text; None: no character): one scale for any tokenizer
    val_nats_per_char: list[tuple[int, Optional[float]]] = dataclasses.field(default_factory=list)

    @property
    def docs_per_second(self) -> float:
        return self.docs / self.seconds if self.seconds > 0 else math.inf


def microgpt_start(docs: Sequence[str], seed: int = 42, dtype: Any = "float64",
                   **config: int) -> tuple[list[str], Tokenizer, Model]:
    """microgpt's exact beginning: ``random.seed(seed)``, shuffle the documents, build the vocabulary, then draw the
    weights from the same random stream. Returns (shuffled docs, tokenizer, model); ``config`` overrides sizes."""
    shuffled, rng = shuffle_docs(docs, seed)
    tokenizer = Tokenizer.from_docs(shuffled)
    cfg = Config(vocab_size=tokenizer.vocab_size, **config)
    return shuffled, tokenizer, Model(cfg, dtype=dtype, init_rng=rng)


class Reporter:
    """Progress for people (a tqdm bar on a terminal, else plain lines) and for files (metrics.jsonl)."""

    def __init__(self, start: int, total: int, steps: int, per_step: int, unit: str, log: Callable[[str], None],
                 bar: bool, metrics: Optional[Path], show_chars: bool = False):
        # per_step: documents (lines mode) or tokens (text mode) a step trains on; show_chars: the lines give the
        # validation bits per character too (a subword tokenizer: the loss is per token)
        self.total, self.per_step, self.unit, self.log, self.metrics = total, per_step, unit, log, metrics
        self.show_chars = show_chars
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

    def record(self, step: int, lr: float, val: Optional[float], line: bool, eval_seconds: float,
               val_nats_per_char: Optional[float] = None) -> None:
        now = time.perf_counter()
        rate = (step - self.last_s) * self.per_step / max(now - self.last_t - eval_seconds, 1e-12)
        train_loss = float(np.mean(self.losses_since)) if self.losses_since else float("nan")
        bpc = None if val_nats_per_char is None else val_nats_per_char / math.log(2)
        if self.metrics is not None:
            row = {"step": step, "train_loss": train_loss, "val_loss": val, "lr": lr, f"{self.unit}_per_s": rate,
                   "elapsed": now - self.t0, "val_nats_per_char": val_nats_per_char, "val_bits_per_char": bpc}
            with open(self.metrics, "a", encoding="utf-8") as f:
                f.write(json.dumps(row) + "\n")
        val_text = "" if val is None else f" | val {val:.4f}"
        if val is not None and self.show_chars and bpc is not None:
            val_text += f" ({bpc:.4f} bits/char)"
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


def save_rotating(model: Model, tokenizer: AnyTokenizer, out_dir: Path, keep: int, extra: dict[str, Any]) -> Path:
    """Write ckpt-<step>.safetensors, point ckpt.safetensors at it, keep the newest ``keep`` numbered ones up to this
    step. Numbered checkpoints past this step (left by a run this one resumed before the end of) are never counted
    as newer: rotating by step alone deleted the one just written when they outnumbered ``keep``."""
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
    old = sorted((q for q in out_dir.glob("ckpt-*.safetensors") if _ckpt_step(q) <= model.step), key=_ckpt_step)
    for q in old[:-keep] if keep > 0 else old:
        q.unlink()
    return latest


def _ckpt_step(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return -1


def _due(every: int, start: int, s: int) -> bool:
    return every > 0 and (s - start) % every == 0


class Checkpointer:
    """Writes the run's checkpoints into ``out`` (None: nowhere) every ``every`` steps and at the end."""

    def __init__(self, out: Optional[Path], every: int, keep: int, tokenizer: AnyTokenizer, extra: dict[str, Any]):
        self.out, self.every, self.keep, self.tokenizer, self.extra = out, every, keep, tokenizer, extra
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(".ckpt*.tmp"):  # left by a process killed mid-save; never a complete checkpoint
                stale.unlink()

    def after(self, model: Model, start: int, last: bool) -> None:
        if self.out is not None and self.every and (_due(self.every, start, model.step) or last):
            save_rotating(model, self.tokenizer, self.out, self.keep, self.extra)


class Evaluator:
    """The validation loss every ``every`` steps and at the end (nothing without validation data)."""

    def __init__(self, val: Optional[Corpus], every: int):
        self.val, self.every = val, every
        self.seconds = 0.0  # spent evaluating (not training)
        self.losses: list[tuple[int, float]] = []
        self.nats_per_char: list[tuple[int, Optional[float]]] = []

    def after(self, model: Model, start: int, last: bool) -> tuple[Optional[float], Optional[float], float]:
        """(the loss now if one is due, else None; its nats per character of the text; seconds it took)."""
        t0 = time.perf_counter()
        val = npc = None
        if self.val is not None and (_due(self.every, start, model.step) or last):
            val, npc = self.val.score(model, final=last)
            self.losses.append((model.step, val))
            self.nats_per_char.append((model.step, npc))
        took = time.perf_counter() - t0
        self.seconds += took
        return val, npc, took


def step_options(config: TrainConfig) -> dict[str, Any]:
    """The training options of ``config`` as Model.train_step's keywords (dropout masks keyed by the run's seed)."""
    return {"weight_decay": config.weight_decay, "grad_clip": config.grad_clip, "dropout": config.dropout,
            "dropout_seed": config.seed % (1 << 64) if config.dropout else 0}


def _run_steps(model: Model, feed: Feed, s: int, end: int, lrs: np.ndarray, comm: Optional[Any],
               config: TrainConfig, sums: Optional[Any] = None) -> list[float]:
    """Steps s .. end - 1 (one C++ call, or one step at a time: data-parallel, or in grad_accum micro-batches);
    stops after a non-finite loss."""
    rows, opts, K = feed.rows(s, end), step_options(config), config.grad_accum
    if comm is None or comm.Get_size() <= 1:
        if K == 1:
            return model.train_steps(feed.batch, rows, lrs, **opts).tolist()

        def step(k: int) -> float:
            return model.train_step([feed.batch.select(part) for part in np.array_split(rows[k], K)],
                                    float(lrs[k]), **opts)
    else:
        from .parallel import data_parallel_step, share_bounds

        bounds = share_bounds(feed.batch, rows, comm.Get_size(), model.config.block_size)  # the chunk's, at once

        def step(k: int) -> float:
            return data_parallel_step(model, feed.batch, rows[k], float(lrs[k]), comm, K, sums=sums,
                                      bounds=bounds[k], **opts)
    losses: list[float] = []
    for k in range(end - s):
        losses.append(step(k))
        if not math.isfinite(losses[-1]):
            break
    return losses


def _admit(model: Model, data: Corpus, val: Optional[Corpus], config: TrainConfig, steps: int,
           out_dir: Optional[Union[str, "os.PathLike[str]"]], comm: Optional[Any], resume: bool = False,
           overwrite: bool = False) -> None:
    """Refuse a run that cannot start (ValueError, MemoryLimitError) before anything is allocated or written; the
    same checks on every rank, before any collective call."""
    tok, start = data.tokenizer, model.step
    if len(data) == 0:
        raise ValueError("no documents to train on")
    if tok.vocab_size != model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} symbols but the model expects {model.config.vocab_size}")
    if config.checkpoint_every and out_dir is None:
        raise ValueError("checkpoint_every needs out_dir (where to write the checkpoints)")
    if (resume or overwrite) and out_dir is None:
        raise ValueError(f"{'resume' if resume else 'overwrite'}=True is about out_dir's run, but no out_dir was given")
    if val is not None and type(val) is not type(data):
        raise ValueError("val_docs must be of the same kind as docs: a token stream (text mode) or documents")
    ranks = comm.Get_size() if comm is not None else 1
    model.reserve(data.memory(model.config, model.dtype, config.batch_size, model.threads, ranks, val),
                  "this training run")
    if config.total_steps < start + steps:
        raise ValueError(f"schedule_steps ({config.total_steps}) must cover this run (model at step {start}, "
                         f"{steps} more)")
    data.check(model.config.block_size)


def _claim(out: Optional[Path], shared: bool, resume: bool, overwrite: bool, held: Optional[RunLock],
           comm: Optional[Any], log: Callable[[str], None]) -> Optional[RunLock]:
    """Lock ``out`` for this call (rundir.acquire: refused while another run trains there, or when it holds a run
    that is neither resumed nor overwritten) unless the caller ``held`` its lock already; returns the lock taken
    (None: none needed). With ``shared`` (out_dir given on every rank), the other ranks of ``comm`` learn of a
    refusal on rank 0 and raise it too, so none waits for a collective call that never comes."""
    taken, error = None, None
    if out is not None and held is None:
        try:
            taken = rundir.acquire(out, resume, overwrite, rundir.API)
        except Exception as e:
            error = e
    if shared and comm is not None and comm.Get_size() > 1:
        told = comm.bcast(None if error is None else (str(error), getattr(error, "code", 1)), root=0)
        if error is None and told is not None:
            error = RunDirError(*told)
    if error is not None:
        raise error
    if taken is not None and taken.stale:
        log(f"took over the lock of {out} left by {taken.stale}, which is no longer running")
    return taken


def plan_run(model: Model, data: Corpus, batch_size: int, ranks: int = 1) -> Optional[Plan]:
    """With the auto gemm backend, the model's plan (Model.plan_gemm) for training on ``data`` in batches of
    ``batch_size`` split over ``ranks`` processes: positions per step and thread from the batch and the documents'
    mean length (all of them, so a resumed run plans the same), or block_size in text mode. None for the others."""
    if model.backend != "auto":
        return None
    block = model.config.block_size
    n = block
    if isinstance(data, Documents) and len(data):  # a document of c characters trains on c + 1 positions, <= block
        lengths = np.fromiter(map(len, data.docs), np.int64, len(data))
        n = int(round(float(np.minimum(block, lengths + 1).mean())))
    per_rank = -(-batch_size // ranks)
    return model.plan_gemm(max(1, per_rank * n // max(1, min(model.threads, per_rank))), n)


def fit(model: Model, data: Corpus, config: TrainConfig, *, val: Optional[Corpus] = None, steps: Optional[int] = None,
        out_dir: Optional[Union[str, "os.PathLike[str]"]] = None, checkpoint_extra: Optional[dict[str, Any]] = None,
        log: Callable[[str], None] = print, progress_bar: bool = False, comm: Optional[Any] = None,
        resume: bool = False, overwrite: bool = False, lock: Optional[RunLock] = None) -> History:
    """Train ``model`` on ``data`` as ``config`` says, from its step to ``config.total_steps`` (or ``steps`` steps
    within that schedule), validating on ``val``; the checkpoints store ``checkpoint_extra``. See ``train`` (also
    for ``out_dir``'s lock, ``resume`` and ``overwrite``); ``lock`` is out_dir's lock when the caller holds it
    already (the train command takes it before loading the model), so fit neither takes nor releases it."""
    start = model.step
    steps = config.total_steps - start if steps is None else steps
    tok, block = data.tokenizer, model.config.block_size
    B = config.batch_size * config.grad_accum  # sequences per step (in grad_accum micro-batches of batch_size)
    root = comm is None or comm.Get_size() <= 1 or comm.Get_rank() == 0
    _admit(model, data, val, config, steps, out_dir, comm, resume, overwrite)
    plan_run(model, data, config.batch_size, comm.Get_size() if comm is not None else 1)
    val = val if root else None  # only rank 0 validates
    if val is not None:
        val.check(block, validation=True)
    feed = data.feed(start, steps, B, block, config.seed)
    schedule = make_schedule(config.schedule, config.lr, config.total_steps, config.warmup_steps)
    out = Path(out_dir) if out_dir is not None and root else None
    with contextlib.ExitStack() as held:  # on any exit: the report closed, then out_dir's lock released
        taken = _claim(out, out_dir is not None, resume, overwrite, lock, comm, log)
        if taken is not None:
            held.callback(taken.release)
        if out is not None:  # rows after the model's step belong to a future this run replaces
            dropped = rundir.trim_metrics(out, start)
            if dropped:
                log(dropped)
        saver = Checkpointer(out, config.checkpoint_every, config.keep_checkpoints, tok, dict(checkpoint_extra or {}))
        evaluator = Evaluator(val, config.eval_every)
        report = Reporter(start, config.total_steps, steps, data.per_step(B, block), data.unit,
                          log if root else (lambda _: None), progress_bar and root, out / METRICS_FILE if out else None,
                          show_chars=isinstance(tok, BPETokenizer))
        held.callback(report.close)
        sums = None
        if comm is not None and comm.Get_size() > 1:  # where the ranks add up their gradients, for the whole run
            from .parallel import GradientSum

            sums = held.enter_context(GradientSum(comm, model.flat_grads))
        losses: list[float] = []
        end_all = start + steps
        s = start
        while s < end_all:
            # a chunk of steps runs in one C++ call; chunks end where something is due and stay short for Ctrl-C
            end = min(end_all, s + CHUNK_STEPS)
            for every in (config.log_every, config.eval_every, config.checkpoint_every):
                if every:
                    end = min(end, start + ((s - start) // every + 1) * every)
            lrs = schedule(np.arange(s, end, dtype=np.int64))
            chunk = _run_steps(model, feed, s, end, lrs, comm, config, sums)
            losses.extend(chunk)
            report.steps_done(chunk)
            if len(chunk) < end - s or not math.isfinite(chunk[-1]):
                raise TrainingError(f"loss became {losses[-1]} at step {s + len(chunk)}; stopping before applying "
                                    f"it (the model keeps step {model.step}; try a lower learning rate)")
            s = end
            last = s == end_all
            val_loss, val_npc, t_eval = evaluator.after(model, start, last)
            if root and (_due(config.log_every, start, s) or val_loss is not None or
                         (last and (config.log_every or out))):
                report.record(s, float(lrs[-1]), val_loss, line=bool(config.log_every), eval_seconds=t_eval,
                              val_nats_per_char=val_npc)
            saver.after(model, start, last)
    return History(losses, time.perf_counter() - report.t0 - evaluator.seconds, steps * B, evaluator.losses,
                   evaluator.nats_per_char)


TextLike = Union[np.ndarray, TextData]


def train(model: Model, tokenizer: AnyTokenizer, docs: Union[Sequence[str], TextLike, Corpus], steps: int = 1000,
          batch_size: int = 1, lr: float = 0.01, *, schedule_steps: Optional[int] = None, schedule: str = "linear",
          warmup_steps: int = 0, weight_decay: float = 0.0, grad_clip: Optional[float] = None, grad_accum: int = 1,
          dropout: float = 0.0, log_every: int = 0,
          log: Callable[[str], None] = print, val_docs: Optional[Union[Sequence[str], TextLike, Corpus]] = None,
          eval_every: int = 0, window_seed: int = 0,
          out_dir: Optional[Union[str, "os.PathLike[str]"]] = None, checkpoint_every: int = 0,
          keep_checkpoints: int = 3, checkpoint_extra: Optional[dict[str, Any]] = None,
          progress_bar: bool = False, comm: Optional[Any] = None, resume: bool = False,
          overwrite: bool = False) -> History:
    """Run ``steps`` Adam steps on ``docs`` (in the given order, cycling) and return the losses.

    Global step s (``model.step`` before the update) trains on documents ``(s*B + i) % len(docs)``, i < B, with
    learning rate ``lr * (1 - s / schedule_steps)`` (``schedule`` "cosine" or "wsd", and ``warmup_steps`` of linear
    warmup, give the other schedules of blasgpt.schedule). Text mode — ``docs`` a token stream (a TextData or a 1-D int
    array), ``val_docs`` too if given — trains step s on B windows of block_size + 1 tokens at the offsets
    ``window_starts(window_seed, s, ...)`` (all block_size positions of each), and validates with evaluate_text
    (periodically on its first EVAL_DURING_TRAINING targets, at the end on all of them). ``docs`` and ``val_docs``
    may also be corpora (blasgpt.corpus). ``schedule_steps`` defaults to ``model.step + steps``, so a fresh model
    reproduces microgpt and a resumed run passes its original total to continue the same schedule.
    ``weight_decay``, ``grad_clip``, ``grad_accum`` (each step then trains on grad_accum micro-batches of
    ``batch_size``) and ``dropout`` (masks keyed by ``window_seed``) are TrainConfig's training options, all off
    by default (docs/TRAINING_OPTIONS.md).

    Optional, each only when asked: a progress line every ``log_every`` steps (``progress_bar`` shows a tqdm bar
    instead); the loss on ``val_docs`` every ``eval_every`` steps and at the end (never touching gradients or
    Adam state); with ``out_dir``, ``metrics.jsonl`` there (one JSON object per report: step, train_loss — the
    mean since the previous report —, val_loss, lr, docs_per_s (text mode: tok_per_s), elapsed, val_nats_per_char
    and val_bits_per_char — of the original text, for any tokenizer) and, every
    ``checkpoint_every`` steps, ``ckpt-<step>.safetensors`` plus ``ckpt.safetensors`` (the latest), keeping
    ``keep_checkpoints`` numbered ones; ``checkpoint_extra`` is stored in them. Raises TrainingError if the loss
    stops being finite (that step is not applied, so the model and every checkpoint stay valid).

    ``out_dir`` belongs to one run, as with ``blasgpt train --out``: the call holds its lock (``train.lock``) until
    it returns or raises, and raises RunDirError, writing nothing, while another process trains there, or when the
    directory already holds a run (a checkpoint or metrics.jsonl) and neither ``resume=True`` (the model continues
    that run, e.g. loaded from its ckpt.safetensors; the rows of its metrics.jsonl after ``model.step`` are dropped,
    saying so through ``log``) nor ``overwrite=True`` (its checkpoints, metrics.jsonl and loss.png are removed
    first) is given.

    With ``comm`` (an mpi4py communicator of several processes, each calling train with the same arguments), each
    step's batch is split across the ranks and their gradients summed (blasgpt.parallel): the same updates as one
    process on the whole batch. Only rank 0 logs, evaluates and writes files.
    """
    check_model_and_tokenizer(model, tokenizer)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    if isinstance(window_seed, bool) or not isinstance(window_seed, int):
        raise ValueError(f"window_seed must be an integer, got {window_seed!r}")
    total = model.step + steps if schedule_steps is None else schedule_steps
    if total < model.step + steps:
        raise ValueError(f"schedule_steps ({total}) must cover this run (model at step {model.step}, {steps} more)")
    config = TrainConfig(seed=window_seed, batch_size=batch_size, lr=lr, total_steps=total, schedule=schedule,
                         warmup_steps=warmup_steps, weight_decay=weight_decay, grad_clip=grad_clip,
                         grad_accum=grad_accum, dropout=dropout, val_fraction=0.0,
                         log_every=log_every, eval_every=eval_every, checkpoint_every=checkpoint_every,
                         keep_checkpoints=keep_checkpoints, dtype=model.dtype.name, threads=model.threads)
    data = as_corpus(docs, tokenizer)
    val = as_corpus(val_docs, tokenizer, "val_docs") if val_docs is not None and len(val_docs) > 0 else None
    return fit(model, data, config, val=val, steps=steps, out_dir=out_dir, checkpoint_extra=checkpoint_extra,
               log=log, progress_bar=progress_bar, comm=comm, resume=resume, overwrite=overwrite)


__all__ = ["EVAL_CHUNK_DOCS", "EVAL_CHUNK_TOKENS", "EVAL_DURING_TRAINING", "History", "TrainingError",
           "WINDOW_DRAW_STEPS", "evaluate", "evaluate_text", "fit", "lr_at", "microgpt_start", "plan_run",
           "save_rotating", "shuffle_docs", "split_validation", "step_options", "train", "window_starts"]
