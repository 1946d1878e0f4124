"""Learning-rate schedules: a schedule maps global steps to learning rates, ``schedule(steps) -> lrs`` (float64).

microgpt's is ``linear``: lr decays from its peak at step 0 to 0 at the run's total steps. nanoGPT-style runs add a
linear warmup of ``warmup`` steps, then ``cosine`` (half a cosine from the peak to 0) or ``wsd`` (warmup, stable,
decay: the peak held until the last WSD_DECAY_FRACTION of the steps, then a linear decay to 0). A schedule depends
only on (step, total, warmup), so a resumed run continues it exactly.

With w = warmup, T = total and p = (s − w) / (T − w) the progress after warmup, for step s:
    s < w:     lr · (s + 1) / w                       (reaches the peak at the last warmup step)
    linear:    lr · (1 − p)                           (w = 0: microgpt's lr · (1 − s / T), the same float64 operations)
    cosine:    lr · ½ (1 + cos(π p))
    wsd:       lr · min(1, (1 − p) / WSD_DECAY_FRACTION)
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

WSD_DECAY_FRACTION = 0.2  # wsd decays over the last fifth of the steps after warmup


def lr_at(step: int, lr: float, schedule_steps: int) -> float:
    """microgpt's schedule: lr decays linearly from ``lr`` at step 0 to 0 at ``schedule_steps``."""
    return lr * (1 - step / schedule_steps)


@dataclasses.dataclass(frozen=True)
class Schedule:
    """Peak ``lr`` over ``total`` steps after ``warmup`` warmup steps; subclasses give the decay of progress p."""

    lr: float
    total: int
    warmup: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.warmup, bool) or not isinstance(self.warmup, int) or self.warmup < 0:
            raise ValueError(f"warmup steps must be an integer >= 0, got {self.warmup!r}")
        if self.warmup and self.warmup >= self.total:
            raise ValueError(f"warmup steps ({self.warmup}) must be fewer than the run's total steps ({self.total})")

    def decay(self, p: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, steps: np.ndarray) -> np.ndarray:
        steps = np.asarray(steps, dtype=np.int64)
        if not self.warmup:  # the exact float64 operations of lr_at for the microgpt default
            return self.lr * self.decay(steps / self.total)
        after = self.lr * self.decay((steps - self.warmup) / (self.total - self.warmup))
        return np.where(steps < self.warmup, self.lr * (steps + 1) / self.warmup, after)


class Linear(Schedule):
    """lr · (1 − p): microgpt's decay to zero (with no warmup, the same float64 operations as lr_at)."""

    def decay(self, p: np.ndarray) -> np.ndarray:
        return 1 - p


class Cosine(Schedule):
    """lr · ½ (1 + cos(π p)): from the peak to 0 along half a cosine."""

    def decay(self, p: np.ndarray) -> np.ndarray:
        return 0.5 * (1 + np.cos(np.pi * p))


class WarmupStableDecay(Schedule):
    """The peak until the last WSD_DECAY_FRACTION of the steps, then linearly to 0."""

    def decay(self, p: np.ndarray) -> np.ndarray:
        return np.minimum(1.0, (1 - p) / WSD_DECAY_FRACTION)


SCHEDULES: dict[str, Callable[..., Schedule]] = {"linear": Linear, "cosine": Cosine, "wsd": WarmupStableDecay}


def make_schedule(name: str, lr: float, total: int, warmup: int = 0) -> Schedule:
    """The schedule ``name`` (see SCHEDULES) peaking at ``lr`` over ``total`` steps, after ``warmup`` steps."""
    if name not in SCHEDULES:
        raise ValueError(f"the learning-rate schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](lr, total, warmup)


__all__ = ["Cosine", "Linear", "SCHEDULES", "Schedule", "WSD_DECAY_FRACTION", "WarmupStableDecay", "lr_at",
           "make_schedule"]
