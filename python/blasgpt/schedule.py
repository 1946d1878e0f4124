"""Learning-rate schedules: a schedule maps global steps to learning rates, ``schedule(steps) -> lrs`` (float64).

microgpt's is ``linear``: lr decays from its peak at step 0 to 0 at the run's total steps. A schedule depends only
on (step, total), so a resumed run continues it exactly; more kinds slot into SCHEDULES by name.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np


def lr_at(step: int, lr: float, schedule_steps: int) -> float:
    """microgpt's schedule: lr decays linearly from ``lr`` at step 0 to 0 at ``schedule_steps``."""
    return lr * (1 - step / schedule_steps)


@dataclasses.dataclass(frozen=True)
class Linear:
    """lr * (1 - step / total): microgpt's decay to zero (the same float64 operations as lr_at)."""

    lr: float
    total: int

    def __call__(self, steps: np.ndarray) -> np.ndarray:
        return self.lr * (1 - steps / self.total)


SCHEDULES: dict[str, Callable[[float, int], Callable[[np.ndarray], np.ndarray]]] = {"linear": Linear}


def make_schedule(name: str, lr: float, total: int) -> Callable[[np.ndarray], np.ndarray]:
    """The schedule ``name`` (see SCHEDULES) peaking at ``lr`` over ``total`` steps."""
    if name not in SCHEDULES:
        raise ValueError(f"the learning-rate schedule must be one of {', '.join(SCHEDULES)}, got {name!r}")
    return SCHEDULES[name](lr, total)


__all__ = ["Linear", "SCHEDULES", "lr_at", "make_schedule"]
