"""``blasgpt eval``: a checkpoint's mean loss on its run's validation split or on a given file."""

from __future__ import annotations

import argparse
import json
from typing import Optional

from ..checkpoint import Checkpoint
from ..corpus import Corpus, DataChanged, corpus_class, load_corpus
from ..data import DataError, display_path
from ..train_config import TrainConfig
from .common import EXIT_OK, load_for_text, positive_int


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    ev = sub.add_parser("eval", help="mean loss of a checkpoint on held-out or given text",
                        description="Text mode: the mean cross-entropy in nats per token over every target of "
                                    "the text, in consecutive non-overlapping windows of block_size (each target "
                                    "counted once). Lines mode: the mean over documents of each document's loss. "
                                    "Both also give nats and bits per character of the original text (the nats of "
                                    "every target over the characters they cover: one scale for any tokenizer; a "
                                    "character tokenizer's token is a character) and tokens/char. Default data: the "
                                    "run's validation split.")
    ev.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by 'train'")
    ev.add_argument("--data", metavar="FILE", help="evaluate on all of this file (or named dataset) instead")
    ev.add_argument("--json", action="store_true", help="print one JSON object: loss, bits_per_char, nats_per_char, "
                    "tokens_per_char, targets, ...")
    ev.add_argument("--threads", type=positive_int, default=1, help="worker threads (default 1)")


def eval_data(ck: Checkpoint, run: TrainConfig, spec: Optional[str]) -> tuple[str, Corpus]:
    """(description, corpus) to evaluate: all of ``spec`` in file order, else the run's validation split, rebuilt
    from its file (refused if the file changed since)."""
    if spec is not None:
        return spec, load_corpus(spec, run.data_mode, tokenizer=ck.tokenizer)
    source = display_path(run.data or corpus_class(run.data_mode).default_data)  # (stored absolute)
    if run.val_fraction <= 0:
        raise DataError("the run held out no validation data (--val-fraction 0); pass --data FILE to evaluate")
    try:
        data = load_corpus(run.data, run.data_mode, seed=run.seed, tokenizer=ck.tokenizer,
                           expect={"data_sha256": ck.extra.get("data_sha256")} if ck.extra.get("data_sha256") else {})
    except DataChanged:
        raise DataError(f"{source} changed since the run trained on it (its sha256 differs), so its validation "
                        f"split cannot be rebuilt; pass --data FILE to evaluate on a file") from None
    return f"{source} (validation split)", data.split(run.val_fraction, ck.model.config.block_size)[1]


def run(args: argparse.Namespace) -> int:
    ck = load_for_text(args.checkpoint)
    ck.model.threads = args.threads
    settings = TrainConfig.from_checkpoint(ck.extra, ck.step)
    what, data = eval_data(ck, settings, args.data)
    try:
        result, line = data.evaluation(ck.model)
    except (MemoryError, DataError):
        raise
    except ValueError as e:  # too short to evaluate: the data's fault (exit 1), not the flags'
        raise DataError(f"{what}: {e}") from None
    result.update({"mode": settings.data_mode, "data": what, "checkpoint": str(args.checkpoint), "step": ck.step})
    print(json.dumps(result) if args.json else f"{what}: {line}")
    return EXIT_OK
