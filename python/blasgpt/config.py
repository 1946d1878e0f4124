"""Model configuration: one frozen dataclass, validated where the values enter."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

_MAX_DIM = 1 << 16


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the GPT. Defaults are microgpt's (4,192 parameters with the 27-symbol names vocabulary).

    vocab_size: number of token ids (characters + BOS).
    n_embd:     embedding width C; attention and residual stream are (positions, C).
    n_head:     attention heads; must divide n_embd (head_dim = n_embd / n_head).
    n_layer:    transformer blocks.
    block_size: maximum positions per document (the model trains on the first min(block_size, len - 1)).
    """

    vocab_size: int = 27
    n_embd: int = 16
    n_head: int = 4
    n_layer: int = 1
    block_size: int = 16

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Config.{field.name} must be an integer, got {value!r}")
        _check_range("vocab_size", self.vocab_size, 2, 1 << 24)
        _check_range("n_embd", self.n_embd, 1, _MAX_DIM)
        _check_range("n_head", self.n_head, 1, self.n_embd)
        if self.n_embd % self.n_head:
            raise ValueError(f"n_head ({self.n_head}) must divide n_embd ({self.n_embd})")
        _check_range("n_layer", self.n_layer, 1, 1024)
        _check_range("block_size", self.block_size, 1, _MAX_DIM)

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def num_params(self) -> int:
        """Parameters of this config, from the core's one parameter table (nothing is allocated)."""
        from . import _core

        return int(_core.num_params(**self.to_dict()))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown Config fields: {', '.join(sorted(unknown))}")
        return cls(**dict(d))


def _check_range(name: str, value: int, lo: int, hi: int) -> None:
    if not lo <= value <= hi:
        raise ValueError(f"{name} must be between {lo} and {hi}, got {value}")


def training_flops(cfg: Config, doc_positions: "list[int] | Any") -> float:
    """Matmul FLOPs of one forward+backward over documents with the given position counts n (MATH.md's formula):
    3 * (2n(L*12C^2 + C*V) + L*2C*n(n+1)) summed over documents."""
    total = 0.0
    C, L = cfg.n_embd, cfg.n_layer
    for n in doc_positions:
        n = int(n)
        total += 3 * (2 * n * (L * 12 * C * C + C * cfg.vocab_size) + L * 2 * C * n * (n + 1))
    return total


__all__ = ["Config", "training_flops"]
