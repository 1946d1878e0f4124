"""Named training recipes: the settings of a run (TrainConfig's fields) and of its model (Config's sizes) in one
table, so ``blasgpt train --preset NAME`` and Python get the same values.

    from blasgpt.presets import preset
    p = preset("fast-text")
    config = p.train_config(total_steps=400)      # a TrainConfig; keywords change any field
    sizes = p.model_config(vocab_size=1024)       # a Config (the vocabulary comes from the data)

A preset only fills defaults: flags given with it (keywords here) win. A checkpoint records the resulting values,
not the preset's name. How the recipes were chosen and what they reach: docs/RECIPE.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from .config import Config
from .train_config import TrainConfig


@dataclasses.dataclass(frozen=True)
class Preset:
    """A recipe: ``settings`` (TrainConfig fields) and ``sizes`` (Config fields other than vocab_size)."""

    name: str
    summary: str  # one line, for ``train --help``
    settings: Mapping[str, Any]
    sizes: Mapping[str, Any]

    def train_config(self, **changes: Any) -> TrainConfig:
        """The recipe's TrainConfig, with ``changes`` (any TrainConfig field) applied over it."""
        return TrainConfig(**{**self.settings, **changes})

    def model_config(self, vocab_size: int, **changes: Any) -> Config:
        """The recipe's model sizes for a vocabulary of ``vocab_size`` ids, with ``changes`` applied over them."""
        return Config(vocab_size=vocab_size, **{**self.sizes, **changes})


PRESETS: dict[str, Preset] = {p.name: p for p in (
    # the best text per second of training found on a 2-core CPU (docs/RECIPE.md): subwords, a small wide-batch
    # model and a short cosine schedule with a large learning rate
    Preset("fast-text", "the most text quality per second: BPE 1024, d64 L1 H4 T32 B32, lr 0.01 cosine, 200 steps",
           settings=dict(data_mode="text", tokenizer="bpe", vocab_size=1024, batch_size=32, lr=0.01,
                         schedule="cosine", warmup_steps=20, total_steps=200, dtype="float32", threads=2),
           sizes=dict(n_embd=64, n_layer=1, n_head=4, block_size=32)),
    # nanoGPT's shakespeare_char CPU command (its README): its shapes and schedule as near as blasgpt's options go.
    # blasgpt's Adam keeps betas (0.85, 0.99) where nanoGPT's config uses (0.9, 0.99), and its cosine decays to 0
    # where nanoGPT's decays to lr/10; the architecture stays blasgpt's (RMSNorm, ReLU, no biases).
    Preset("nanogpt-cpu", "nanoGPT's shakespeare_char CPU run: chars, d128 L4 H4 T64 B12, lr 1e-3 cosine, 2000 "
                          "steps",
           settings=dict(data_mode="text", tokenizer="char", batch_size=12, lr=1e-3, schedule="cosine",
                         warmup_steps=100, weight_decay=0.1, grad_clip=1.0, dropout=0.0, total_steps=2000,
                         dtype="float32", threads=2),
           sizes=dict(n_embd=128, n_layer=4, n_head=4, block_size=64, tie_embeddings=True)),
)}


def preset(name: str) -> Preset:
    """The preset called ``name`` (ValueError naming the known ones otherwise)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; the presets are {', '.join(PRESETS)}")
    return PRESETS[name]


__all__ = ["PRESETS", "Preset", "preset"]
