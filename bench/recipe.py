"""What the benchmark trains, in one place: Adam's constants (blasgpt's own, which every baseline uses too), the
model sizes of each part, and the settings of the long runs.

Sizes are (n_embd, n_layer, n_head, block_size, batch). The text sizes are nanoGPT's: its shakespeare-char CPU
configuration (d128, 4 layers, 4 heads, 64 positions, batch 12) and a larger one (d384, 6 layers, 6 heads, 256
positions, batch 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# blasgpt's Adam (microgpt's constants; the defaults of the core's apply_adam): every baseline is given the same
ADAM = dict(beta1=0.85, beta2=0.99, eps=1e-8)

NANOGPT_CPU = (128, 4, 4, 64, 12)
TEXT = {"text-d128": NANOGPT_CPU, "text-d384": (384, 6, 6, 256, 8)}
TEXT_INIT_STD = 0.02  # the text speed rows' weights, N(0, 0.02^2): microgpt's 0.08 gives a d384 model huge logits
VAL_FRACTION = 0.1  # the tail of a text that is held out (as `blasgpt train --data-mode text` does)


@dataclass(frozen=True)
class LongRun:
    """One schedule of ``steps`` Adam steps (lr decaying linearly from ``lr`` to 0), timed in chunks of ``chunk``."""

    steps: int
    chunk: int
    lr: float


# steady state: float32 training of names d64 batch 32 and a small text model, the first chunk against the last
STEADY = {False: LongRun(4000, 1000, 0.01), True: LongRun(200, 50, 0.01)}  # keyed by --quick
STEADY_TEXT = (64, 2, 4, 64, 12)


@dataclass(frozen=True)
class WholeRun:
    """Text mode, nanoGPT's CPU size, float32: train until the validation loss (nats per character, the mean over
    the first ``val_targets`` targets of the validation split) reaches ``target``, evaluating every
    ``eval_every`` steps, on one schedule of ``steps`` steps."""

    steps: int
    lr: float
    target: float
    eval_every: int
    val_targets: int
    threads: int


# a 1000-step schedule reaches 1.90 around step 700 and ends near 1.79 (float32, this recipe, tinyshakespeare):
# the row takes about a minute a side on a quiet 2-core machine
WHOLE_RUN = {False: WholeRun(steps=1000, lr=3e-3, target=1.90, eval_every=50, val_targets=128 * 64, threads=2),
             True: WholeRun(steps=60, lr=3e-3, target=3.2, eval_every=10, val_targets=16 * 64, threads=2)}

# time to nanoGPT's quality (time_to_loss.py): the nanoGPT reference's recipe (nanogpt_ref.NanoRecipe; {} is nanoGPT's
# own run of 2000 iterations), then per blasgpt preset: evaluations every N steps and the TrainConfig changes to try
# in turn ({}: the preset as it is; a longer schedule only if the one before ended above the target)
TIME_TO_LOSS: dict[bool, dict[str, Any]] = {
    False: {"reference": {}, "blasgpt": [("nanogpt-cpu", 50, [{}]),
                                         ("fast-text", 10, [{}, {"total_steps": 400}, {"total_steps": 800}])]},
    # --quick: a few iterations on one thread each (PyTorch's two threads crawl on a busy machine)
    True: {"reference": dict(max_iters=20, lr_decay_iters=20, warmup_iters=5, eval_interval=10, eval_iters=2,
                             threads=1),
           "blasgpt": [("nanogpt-cpu", 20, [{"total_steps": 40, "warmup_steps": 5, "threads": 1}]),
                       ("fast-text", 20, [{"threads": 1}])]},
}

# data-parallel training over a long run: names d64, batch 32, float32, one schedule
MPI_RUN = {False: LongRun(4000, 1000, 0.01), True: LongRun(100, 50, 0.01)}
