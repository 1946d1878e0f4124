"""TrainConfig: the settings of a training run, in one frozen dataclass.

It is what ``blasgpt train`` builds from its flags, what ``fit`` runs and what every checkpoint of the run stores
(as JSON in its ``extra`` metadata, beside the data's fingerprint); a resumed run reads it back with
``TrainConfig.from_checkpoint`` — the one place where checkpoints written before a setting existed get its value.
New settings are new fields with a default that keeps today's behaviour.
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any, Mapping, Optional

from .bpe import MAX_VOCAB_SIZE, MIN_VOCAB_SIZE, TOKENIZERS
from .corpus import MODES
from .data import absolute_data
from .schedule import SCHEDULES

# What a checkpoint without run settings (written by save_checkpoint from Python, or before a field existed) means:
# microgpt's seed, batch and learning rate, no validation split, lines mode, microgpt's schedule.
LEGACY: dict[str, Any] = {"seed": 42, "batch_size": 1, "lr": 0.01, "val_fraction": 0.0, "data": None,
                          "data_mode": "lines", "schedule": "linear", "warmup_steps": 0,
                          "tokenizer": "char", "vocab_size": None,
                          "weight_decay": 0.0, "grad_clip": None, "grad_accum": 1, "dropout": 0.0}


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """A run's settings. The run: ``seed`` (lines mode: the shuffle and the weights; text mode: the windows),
    ``batch_size``, peak ``lr`` and its ``schedule`` over ``total_steps`` after ``warmup_steps`` (blasgpt.schedule),
    the data (``data``: a file — kept as its absolute path, so the run resumes from any directory — or a named
    dataset, None for the mode's default; ``data_mode``: "lines" or "text"), the tail ``val_fraction`` held out
    and the ``tokenizer`` ("char": the data's characters; "bpe": byte-level BPE of ``vocab_size`` ids trained on the
    training split, blasgpt.bpe). Training options (docs/TRAINING_OPTIONS.md),
    off by default: AdamW's ``weight_decay``, global-norm ``grad_clip`` (None: off), ``grad_accum`` micro-batches of
    ``batch_size`` per step (a step trains on grad_accum × batch_size sequences) and ``dropout`` (masks keyed by
    ``seed``). How it is run (may change when resuming): ``log_every``, ``eval_every``, ``checkpoint_every`` and
    ``keep_checkpoints`` (0: never), ``dtype``, ``threads``, ``backend`` (None: the default)."""

    seed: int = 42
    batch_size: int = 1
    lr: float = 0.01
    total_steps: int = 1000
    schedule: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    grad_clip: Optional[float] = None
    grad_accum: int = 1
    dropout: float = 0.0
    data: Optional[str] = None
    data_mode: str = "lines"
    val_fraction: float = 0.1
    tokenizer: str = "char"
    vocab_size: Optional[int] = None  # bpe only: bytes + merges + BOS
    log_every: int = 100
    eval_every: int = 100
    checkpoint_every: int = 0
    keep_checkpoints: int = 3
    dtype: str = "float64"
    threads: int = 1
    backend: Optional[str] = None

    def __post_init__(self) -> None:
        for name, lo in (("batch_size", 1), ("total_steps", 0), ("log_every", 0), ("eval_every", 0),
                         ("checkpoint_every", 0), ("keep_checkpoints", 1), ("threads", 1), ("warmup_steps", 0),
                         ("grad_accum", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < lo:
                raise ValueError(f"{name} must be an integer >= {lo}, got {value!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a finite number >= 0, got {self.lr!r}")
        _check_options(self.weight_decay, self.grad_clip, self.dropout)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        if not (isinstance(self.val_fraction, (int, float)) and 0 <= self.val_fraction < 1):
            raise ValueError(f"the validation fraction must be in [0, 1), got {self.val_fraction!r}")
        if self.data is not None:
            if not isinstance(self.data, (str, os.PathLike)):
                raise ValueError(f"data must be a file name or a named dataset, got {self.data!r}")
            object.__setattr__(self, "data", absolute_data(self.data))  # (frozen: set once, here)
        if self.data_mode not in MODES:
            raise ValueError(f"the data mode must be one of {', '.join(MODES)}, got {self.data_mode!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"the learning-rate schedule must be one of {', '.join(SCHEDULES)}, "
                             f"got {self.schedule!r}")
        if self.warmup_steps and self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be fewer than the run's total steps "
                             f"({self.total_steps})")
        if self.tokenizer not in TOKENIZERS:
            raise ValueError(f"the tokenizer must be one of {', '.join(TOKENIZERS)}, got {self.tokenizer!r}")
        if self.tokenizer == "char" and self.vocab_size is not None:
            raise ValueError("the char tokenizer's vocabulary is the data's characters: vocab_size is for bpe only")
        if self.tokenizer == "bpe" and (isinstance(self.vocab_size, bool) or not isinstance(self.vocab_size, int)
                                        or not MIN_VOCAB_SIZE <= self.vocab_size <= MAX_VOCAB_SIZE):
            raise ValueError(f"a BPE vocabulary holds the {MIN_VOCAB_SIZE - 1} bytes, merges and BOS: vocab_size must "
                             f"be an integer in [{MIN_VOCAB_SIZE}, {MAX_VOCAB_SIZE}], got {self.vocab_size!r}")

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-ready values (what a checkpoint stores)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_checkpoint(cls, extra: Mapping[str, Any], step: int, dtype: str = "float64") -> "TrainConfig":
        """The settings a checkpoint's run had: its ``extra`` metadata, with LEGACY values for what it lacks, the
        total steps defaulting to the checkpoint's own ``step``, and the dtype its parameters have. Keys that are no
        setting (the data's fingerprint, notes of the caller) are ignored; an unknown data mode reads as lines."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {**LEGACY, "total_steps": step, **{k: v for k, v in extra.items() if k in names}, "dtype": dtype}
        if values["data_mode"] not in MODES:
            values["data_mode"] = "lines"
        values["seed"], values["batch_size"] = int(values["seed"]), int(values["batch_size"])
        values["lr"], values["val_fraction"] = float(values["lr"]), float(values["val_fraction"])
        values["total_steps"], values["warmup_steps"] = int(values["total_steps"]), int(values["warmup_steps"])
        values["data"] = values["data"] or None
        values["vocab_size"] = None if values["vocab_size"] is None else int(values["vocab_size"])
        values["weight_decay"], values["dropout"] = float(values["weight_decay"]), float(values["dropout"])
        values["grad_accum"] = int(values["grad_accum"])
        values["grad_clip"] = None if values["grad_clip"] is None else float(values["grad_clip"])
        return cls(**values)


def _check_options(weight_decay: Any, grad_clip: Any, dropout: Any) -> None:
    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if not (number(weight_decay) and weight_decay >= 0):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay!r}")
    if grad_clip is not None and not (number(grad_clip) and grad_clip > 0):
        raise ValueError(f"grad_clip must be a finite number > 0, got {grad_clip!r}")
    if not (number(dropout) and 0 <= dropout < 1):
        raise ValueError(f"dropout must be a number in [0, 1), got {dropout!r}")


__all__ = ["LEGACY", "TrainConfig"]
