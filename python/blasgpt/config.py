"""Model configuration: one frozen dataclass, validated where the values enter."""

from __future__ import annotations

import dataclasses
import os
import resource
from typing import Any, Mapping, Optional

_MAX_DIM = 1 << 16


@dataclasses.dataclass(frozen=True)
class Config:
    """Sizes of the GPT. Defaults are microgpt's (4,192 parameters with the 27-symbol names vocabulary).

    vocab_size: number of token ids (characters + BOS).
    n_embd:     embedding width C; attention and residual stream are (positions, C).
    n_head:     attention heads; must divide n_embd (head_dim = n_embd / n_head).
    n_layer:    transformer blocks.
    block_size: maximum positions per document (the model trains on the first min(block_size, len - 1)).
    tie_embeddings: the output layer is the token embedding (logits = x · wteᵀ; no ``lm_head`` parameter).
                Off by default (microgpt's untied head); checkpoints without the field load untied.
    """

    vocab_size: int = 27
    n_embd: int = 16
    n_head: int = 4
    n_layer: int = 1
    block_size: int = 16
    tie_embeddings: bool = False

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name == "tie_embeddings":
                if not isinstance(value, bool):
                    raise ValueError(f"Config.tie_embeddings must be True or False, got {value!r}")
            elif isinstance(value, bool) or not isinstance(value, int):
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

    def to_dict(self) -> dict[str, Any]:
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
    """Matmul FLOPs of one forward+backward over documents with the given position counts n (docs/MATH.md's formula):
    3 * (2n(L*12C^2 + C*V) + L*2C*n(n+1)) summed over documents."""
    total = 0.0
    C, L = cfg.n_embd, cfg.n_layer
    for n in doc_positions:
        n = int(n)
        total += 3 * (2 * n * (L * 12 * C * C + C * cfg.vocab_size) + L * 2 * C * n * (n + 1))
    return total


class MemoryLimitError(MemoryError, ValueError):
    """A model (or a batch for it) that needs more memory than this machine has available; refused before
    anything is allocated. The message says how much it needs and how much there is."""


NEAR_LIMIT = 0.8  # a run that needs more than this fraction of the available memory gets a warning


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a model needs: its parameters (and as much again for the gradients, twice for Adam's m and v), one
    more gradient buffer per extra thread, and the activation workspaces of ``sequences`` sequences per call."""

    params: int
    thread_grads: int
    activations: int
    sequences: int
    threads: int

    @property
    def total(self) -> int:
        return 4 * self.params + self.thread_grads + self.activations

    def breakdown(self) -> str:
        parts = [f"parameters {format_bytes(self.params)}", f"gradients {format_bytes(self.params)}",
                 f"Adam moments {format_bytes(2 * self.params)}"]
        if self.thread_grads:
            parts.append(f"{self.threads - 1} more thread gradient(s) {format_bytes(self.thread_grads)}")
        if self.sequences:
            parts.append(f"activations for {self.sequences:,} sequence(s) at once {format_bytes(self.activations)}")
        return " + ".join(parts)


def memory_estimate(cfg: Config, dtype: Any = "float64", batch_size: int = 0, threads: int = 1,
                    positions: Optional[int] = None) -> MemoryEstimate:
    """What a model of ``cfg`` in ``dtype`` needs, from sizes alone (nothing is allocated). With ``batch_size``
    (sequences per training or evaluation call) it includes the activation workspaces: the sequences are split
    across ``threads`` (each thread at least one), each of up to ``positions`` positions (default and at most
    block_size: a sequence trains on at most that many)."""
    import numpy as np

    from . import _core

    itemsize = np.dtype(dtype).itemsize
    params = cfg.num_params * itemsize
    activations = 0
    if batch_size:
        groups = min(threads, batch_size)
        # a thread's share: about batch_size / groups sequences (shares are cut by positions, so one more at most)
        per_seq = cfg.block_size if positions is None else max(1, min(positions, cfg.block_size))
        rows = min(batch_size, -(-batch_size // groups) + (groups > 1)) * per_seq
        sizes = cfg.to_dict()
        (f0, i0), (f1, i1) = (_core.workspace_size(**sizes, rows=r) for r in (0, 1))  # linear in rows: no overflow
        activations = groups * ((f0 + (f1 - f0) * rows) * itemsize + (i0 + (i1 - i0) * rows) * 4)
    return MemoryEstimate(params, (threads - 1) * params, activations, batch_size, threads)


def available_memory() -> tuple[int, str]:
    """(bytes this process can still allocate, where that figure comes from): /proc/meminfo's MemAvailable
    (else the free physical pages), lowered to the room left under the address-space limit (ulimit -v)."""
    avail, source = None, "MemAvailable"
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail, source = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "free physical memory"
        except (OSError, ValueError):
            avail, source = 1 << 62, "unknown"
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    if limit != resource.RLIM_INFINITY:
        room = max(0, limit - _vm_size())
        if room < avail:
            avail, source = room, f"the room left under the {format_bytes(limit)} address-space limit, ulimit -v"
    return avail, source


def _vm_size() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmSize:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def check_memory(est: MemoryEstimate, what: str = "this model", resident: int = 0) -> Optional[str]:
    """Raise MemoryLimitError if ``est`` (less ``resident`` bytes already allocated) does not fit in the available
    memory; return a warning when it needs more than 80% of it, else None."""
    need = est.total - resident
    avail, source = available_memory()
    if need > avail:
        fixes = ["smaller sizes"] + ["fewer threads"] * (est.threads > 1) + ["a smaller batch"] * (est.sequences > 1)
        hint = " or ".join([", ".join(fixes[:-1]), fixes[-1]]) if len(fixes) > 1 else fixes[0]
        held = f", {format_bytes(resident)} of it already allocated" if resident else ""
        raise MemoryLimitError(f"{what} needs {format_bytes(est.total)} of memory ({est.breakdown()}{held}), but "
                               f"only {format_bytes(avail)} is available ({source}); use {hint}")
    if need > NEAR_LIMIT * avail:
        return f"memory: needs {format_bytes(est.total)} of {format_bytes(avail)} available ({source}), " \
               f"close to the limit"
    return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


__all__ = ["Config", "MemoryEstimate", "MemoryLimitError", "available_memory", "check_memory", "memory_estimate",
           "training_flops"]
