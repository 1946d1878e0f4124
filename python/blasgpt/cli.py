"""Command line: ``python -m blasgpt train | sample | eval | bench | plot | sweep`` (also the ``blasgpt`` command).

Exit codes: 0 success, 1 data / file / model error, 2 usage error, 130 interrupted (after saving a checkpoint).
A user error prints one line to stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from . import __version__, rundir
from ._core import blas_info, native_isa
from .bench import WORKLOADS as BENCH_PARTS
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import Config, MemoryLimitError, check_memory, memory_estimate
from .data import DATASETS, DataError, Tokenizer, data_path, encode_text, load_docs, read_text, text_vocabulary
from .generate import MAX_LENGTH, generate, sample
from .model import BACKENDS, Model
from .parallel import MPIUnavailable, abort_on_error, world
from .train import (LATEST_CHECKPOINT, METRICS_FILE, TrainingError, evaluate, evaluate_text, run_memory,
                    save_rotating, shuffle_docs, split_validation, train)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SIZE_DEFAULTS = {"n_embd": 16, "n_head": 4, "n_layer": 1, "block_size": 16}
DATA_MODES = ("lines", "text")
DEFAULT_DATA = {"lines": "names", "text": "shakespeare"}  # the named dataset each mode trains on without --data


class UsageError(Exception):
    """Bad flag values: reported with exit code 2."""


class MissingDependency(Exception):
    """An optional dependency a command needs is not installed: reported with exit code 1."""


def _int_at_least(lo: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= lo, with a message that says which rule was broken."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be >= {lo}, got {value}")
        return value

    return parse


_positive_int, _nonneg_int = _int_at_least(1), _int_at_least(0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="blasgpt",
        description="Train a tiny character-level GPT (Karpathy's microgpt, exactly) and sample from it. "
                    "With no data file it learns to invent names from the bundled names.txt.",
        epilog="Examples:\n"
               "  python -m blasgpt train                       # microgpt: names, d16, 1000 steps, prints names\n"
               "  python -m blasgpt train --data my.txt --steps 5000 --batch-size 16 --dtype float32\n"
               "  python -m blasgpt sample --checkpoint runs/DATE/ckpt.safetensors --num 10 --prompt ma\n"
               "  python -m blasgpt train --data shakespeare --data-mode text --n-embd 128 --n-layer 4 \\\n"
               "      --block-size 64 --batch-size 12 --dtype float32 --steps 2000 --lr 0.003 --out runs/book\n"
               "  python -m blasgpt sample --checkpoint runs/book/ckpt.safetensors --length 500 --prompt ROMEO:",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"blasgpt {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    t = sub.add_parser("train", help="train a model and save a checkpoint",
                       description="Train on a text file (one document per line; default: the bundled names.txt). "
                                   "The defaults reproduce microgpt exactly: seed-42 shuffle, 16-wide 1-layer GPT, "
                                   "1000 Adam steps of one document, lr 0.01 decaying linearly to 0.")
    t.add_argument("--data", metavar="FILE", help="UTF-8 text file, or a named dataset: " + ", ".join(DATASETS) +
                   " (downloaded once, sha256-checked; default: names in lines mode, shakespeare in text mode)")
    t.add_argument("--data-mode", choices=DATA_MODES, default=None,
                   help="lines (default, microgpt): every line is a document [BOS] line [BOS]; text: the whole file "
                        "is one token stream, trained on random windows of block_size + 1 characters (nanoGPT)")
    t.add_argument("--steps", type=_nonneg_int, default=None,
                   help="total optimisation steps of the run (default 1000; with --resume: the checkpoint's total)")
    t.add_argument("--batch-size", type=_positive_int, default=None,
                   help="documents (text mode: windows) per step (default 1)")
    t.add_argument("--lr", type=float, default=None, help="peak learning rate, decays linearly to 0 (default 0.01)")
    t.add_argument("--dtype", choices=("float64", "float32"), default=None, help="arithmetic (default float64)")
    for name, default in SIZE_DEFAULTS.items():
        t.add_argument("--" + name.replace("_", "-"), type=_positive_int, default=None,
                       help=f"model size (default {default})")
    t.add_argument("--seed", type=int, default=None, help="shuffle and initialisation seed (default 42)")
    t.add_argument("--out", metavar="RUN_DIR", help="directory for the checkpoint (default runs/<timestamp>)")
    t.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint, bit-exactly "
                                                    "(default --out: the checkpoint's directory; default --data: "
                                                    "the run's)")
    t.add_argument("--overwrite", action="store_true",
                   help="if --out already holds a run, remove its files and start over (default: refuse)")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this tail fraction of the shuffled documents (text mode: of the text) for "
                        "validation (default 0.1)")
    t.add_argument("--eval-every", type=_nonneg_int, default=None,
                   help="validation loss every N steps (default: with each progress line) and at the end")
    t.add_argument("--checkpoint-every", type=_nonneg_int, default=0,
                   help="also save ckpt-<step>.safetensors every N steps (default 0: only at the end)")
    t.add_argument("--keep-checkpoints", type=_positive_int, default=3,
                   help="numbered checkpoints to keep (default 3; ckpt.safetensors is always the latest)")
    t.add_argument("--log-every", type=_nonneg_int, default=100, help="print progress every N steps (0: never)")
    t.add_argument("--samples", type=_nonneg_int, default=None,
                   help="samples to print after training (default 20 names; text mode: 1 passage)")
    t.add_argument("--sample-length", type=_nonneg_int, default=300,
                   help="text mode: characters per printed passage (default 300)")
    t.add_argument("--temperature", type=float, default=0.5, help="sampling temperature for those (default 0.5)")
    t.add_argument("--gemm", choices=BACKENDS, default=None, help="matmul backend (default $BLASGPT_GEMM or native)")
    t.add_argument("--threads", type=_positive_int, default=1,
                   help="split each batch across N threads (default 1; useful with --batch-size >= 8)")

    s = sub.add_parser("sample", help="generate text from a checkpoint",
                       description="Sample from a trained model, drawing each next character from "
                                   "softmax(logits / temperature) in C++ with a KV cache. Lines-mode models start at "
                                   "BOS (plus --prompt) and stop at BOS or block_size; text-mode models continue "
                                   "--prompt (empty: a newline) for --length characters, sliding the context window "
                                   "past block_size. One sample on a terminal appears as it is generated; the speed "
                                   "goes to stderr.")
    s.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by 'train'")
    s.add_argument("--num", type=_nonneg_int, default=None, help="how many samples (default 20; text mode 1)")
    s.add_argument("--length", type=_nonneg_int, default=None,
                   help=f"new characters per sample (text mode, default 500; --num x --length at most {MAX_LENGTH:,}; "
                        "lines mode: at most block_size, the default)")
    s.add_argument("--temperature", type=float, default=None,
                   help="> 0; lower is more conservative (default 0.5; text mode 0.8)")
    s.add_argument("--top-k", type=_positive_int, default=None, help="sample only among the K likeliest tokens")
    s.add_argument("--prompt", default="", help="text every sample starts with")
    s.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ev = sub.add_parser("eval", help="mean loss of a checkpoint on held-out or given text",
                        description="Text mode: the mean cross-entropy in nats per character over every target of "
                                    "the text, in consecutive non-overlapping windows of block_size (each target "
                                    "counted once); also bits/char. Lines mode: the mean over documents of each "
                                    "document's loss. Default data: the run's validation split.")
    ev.add_argument("--checkpoint", required=True, metavar="CKPT", help="a checkpoint written by 'train'")
    ev.add_argument("--data", metavar="FILE", help="evaluate on all of this file (or named dataset) instead")
    ev.add_argument("--json", action="store_true", help="print one JSON object: loss, bits_per_char, targets, ...")
    ev.add_argument("--threads", type=_positive_int, default=1, help="worker threads (default 1)")
    b = sub.add_parser("bench", help="benchmark tables: training and generation speed vs NumPy and PyTorch",
                       description="Time whole training steps (d16 and d64 on names.txt, text windows at d128 and "
                                   "d384), the Python call paths, thread and MPI scaling and generation, each row "
                                   "checked against blasgpt's float64 loss and gradients first.")
    b.add_argument("--quick", action="store_true", help="a smoke run (about 20 s)")
    b.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    b.add_argument("--only", choices=BENCH_PARTS, help="one part only")
    b.add_argument("--mpi", action="store_true", help="data-parallel scaling over 1 and 2 MPI ranks instead")
    sw = sub.add_parser("sweep", help="train a grid of settings in parallel processes and compare them",
                        description="Train one run per combination of --lr and --n-embd values (each in its own "
                                    "process and run directory, --jobs at a time) and print their final validation "
                                    "losses. Any other option is passed to every 'train' run, e.g. --steps 2000 "
                                    "--batch-size 16 --dtype float32 --data my.txt.")
    sw.add_argument("--lr", default="0.003,0.01,0.03", help="comma-separated learning rates (default 0.003,0.01,0.03)")
    sw.add_argument("--n-embd", default="16,32", help="comma-separated embedding widths (default 16,32)")
    sw.add_argument("--jobs", type=_positive_int, default=os.cpu_count() or 1,
                    help="runs at the same time (default: one per core)")
    sw.add_argument("--out", metavar="SWEEP_DIR", help="parent of the run directories (default sweeps/<timestamp>)")
    pl = sub.add_parser("plot", help="draw a run's train and validation loss to RUN_DIR/loss.png",
                        description="Read RUN_DIR/metrics.jsonl (written by 'train') and draw loss.png beside it. "
                                    "Needs matplotlib: pip install 'blasgpt[plot]'.")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a directory given to 'train --out'")
    return parser


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import main as bench_main

    argv = (["--quick"] if args.quick else []) + (["--json", args.json] if args.json else []) + \
        (["--only", args.only] if args.only else []) + (["--mpi"] if args.mpi else [])
    return bench_main(argv)


def _data_fingerprint(docs: list[str]) -> str:
    return hashlib.sha256("\n".join(docs).encode("utf-8")).hexdigest()


def _rng_state(rng: random.Random) -> list:
    version, state, gauss_next = rng.getstate()
    return [version, list(state), gauss_next]


def _checkpoint_mode(ck: Checkpoint) -> str:
    mode = ck.extra.get("data_mode", "lines")
    return mode if mode in DATA_MODES else "lines"


class _Data:
    """What a run trains and validates on: documents (lines mode) or token streams (text mode)."""

    def __init__(self, mode: str, spec: Optional[str], tokenizer: Optional[Tokenizer], seed: int,
                 val_fraction: float, block: int):
        self.mode = mode
        self.source = spec or ("names.txt (bundled)" if mode == "lines" else DEFAULT_DATA[mode])
        self.rng_state: Optional[list] = None
        self.rng: Optional[random.Random] = None
        if mode == "lines":
            docs = load_docs(spec)
            self.fingerprint = _data_fingerprint(docs)
            shuffled, self.rng = shuffle_docs(docs, seed)  # the stream microgpt draws its weights from next
            self.rng_state = _rng_state(self.rng)
            self.tokenizer = tokenizer or Tokenizer.from_docs(shuffled)
            self.train, self.val = split_validation(shuffled, val_fraction)
            self.summary = f"{len(self.train):,} train + {len(self.val):,} val docs"
            return
        path = data_path(spec or DEFAULT_DATA[mode])
        text, self.fingerprint = read_text(path)
        self.tokenizer = tokenizer or text_vocabulary(text)
        self._text = text
        n_val = int(len(text) * val_fraction)
        if len(text) - n_val < block + 1:
            raise DataError(f"{path} has {len(text) - n_val:,} characters to train on; text mode needs at least "
                            f"block_size + 1 = {block + 1}")
        if val_fraction > 0 and n_val < 2:
            raise DataError(f"{path}: the validation split ({val_fraction:g} of {len(text):,} characters) is too short "
                            f"for one target; use a larger --val-fraction or 0")
        self.summary = f"{len(text) - n_val:,} train + {n_val:,} val characters (text mode)"
        self.n_val = n_val

    def encode(self) -> None:
        """Text mode: tokenize (after the fingerprint check, so changed text is reported as such)."""
        if self.mode == "text":
            tokens = encode_text(self._text, self.tokenizer)
            del self._text
            self.train, self.val = tokens[:tokens.size - self.n_val], tokens[tokens.size - self.n_val:]


def _cmd_train(args: argparse.Namespace) -> int:
    resume = load_checkpoint(args.resume) if args.resume else None
    if resume is not None:
        changed = [f"--{k.replace('_', '-')}" for k in (*SIZE_DEFAULTS, "dtype", "seed", "batch_size",
                                                         "val_fraction") if getattr(args, k) is not None]
        if changed:
            raise UsageError(f"{', '.join(changed)} cannot change when resuming; they come from the checkpoint")
        if resume.tokenizer is None:
            raise CheckpointError(f"{args.resume}: has no vocabulary, so training cannot resume from it")
        extra = resume.extra
        mode = _checkpoint_mode(resume)
        if args.data_mode is not None and args.data_mode != mode:
            raise UsageError(f"--data-mode {args.data_mode} does not match the checkpoint, which was trained in "
                             f"{mode} mode")
        seed, batch_size = int(extra.get("seed", 42)), int(extra.get("batch_size", 1))
        val_fraction = float(extra.get("val_fraction", 0.0))
        lr = args.lr if args.lr is not None else float(extra.get("lr", 0.01))
        total = args.steps if args.steps is not None else int(extra.get("total_steps", resume.step))
    else:
        mode = args.data_mode or "lines"
        seed = 42 if args.seed is None else args.seed
        batch_size = args.batch_size or 1
        val_fraction = 0.1 if args.val_fraction is None else args.val_fraction
        lr = 0.01 if args.lr is None else args.lr
        total = 1000 if args.steps is None else args.steps
    try:
        sizes = {k: getattr(args, k) or v for k, v in SIZE_DEFAULTS.items()}
        Config(**sizes)  # validate the sizes before reading any data
    except ValueError as e:
        raise UsageError(str(e)) from None
    if not (lr >= 0 and lr < float("inf")):
        raise UsageError(f"--lr must be a finite number >= 0, got {lr}")
    if not 0 <= val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {val_fraction}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.threads > 256:
        raise UsageError(f"--threads must be at most 256, got {args.threads}")

    block = resume.model.config.block_size if resume is not None else sizes["block_size"]
    spec = args.data
    if spec is None and resume is not None:  # a resumed run trains on the run's own data unless told otherwise
        spec = resume.extra.get("data") or None
    out_dir = Path(args.out) if args.out else Path(args.resume).parent if resume is not None else \
        Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    resuming_here = resume is not None and out_dir.resolve() == Path(args.resume).resolve().parent
    root = args.comm is None or args.comm.Get_rank() == 0
    if root:  # refuse a directory in use or holding another run now, before any work (and again under the lock)
        rundir.check(out_dir, resuming_here, args.overwrite)
    data = _Data(mode, spec, resume.tokenizer if resume is not None else None, seed, val_fraction, block)
    if resume is not None:
        model, tok = resume.model, resume.tokenizer
        same = resume.extra.get("data_sha256", data.fingerprint) == data.fingerprint and \
            resume.extra.get("rng_state", data.rng_state) == data.rng_state
        if not same:
            raise DataError(f"{args.resume}: the data differs from the run being resumed (its "
                            f"{'documents or their number' if mode == 'lines' else 'text'} changed), so the resumed "
                            f"run could not continue the same sequence")
        if total < model.step:
            raise UsageError(f"--steps {total} is before the checkpoint's step {model.step}")
        mem_note = _memory_note(model.config, model.dtype, batch_size, args, data,
                                resident=memory_estimate(model.config, model.dtype).total)
    else:
        tok = data.tokenizer
        cfg = Config(vocab_size=tok.vocab_size, **sizes)
        mem_note = _memory_note(cfg, args.dtype or "float64", batch_size, args, data)
        # lines mode is microgpt_start spelled out: weights drawn from the stream left by the shuffle
        model = Model(cfg, dtype=args.dtype or "float64", seed=seed, init_rng=data.rng)
    data.encode()
    assert tok is not None
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is not a directory (it is an existing file)")
    if root:  # create it now (fail now, not after training) and lock it; _run releases the lock
        args.run_lock = rundir.acquire(out_dir, resuming_here, args.overwrite)
        if args.run_lock.stale:
            print(f"took over the lock of {out_dir} left by {args.run_lock.stale}, which is no longer running")
    if args.gemm:
        model.backend = args.gemm
    model.threads = args.threads
    cfg = model.config
    print(f"blasgpt {__version__} | data {data.source}: {data.summary}, "
          f"vocab {tok.vocab_size} | d{cfg.n_embd} h{cfg.n_head} L{cfg.n_layer} block {cfg.block_size}: "
          f"{model.num_params:,} params | {model.dtype.name} | batch {batch_size} x {model.threads} thread(s) | "
          f"gemm {model.backend} ({native_isa() if model.backend == 'native' else blas_info().split(' | ')[-1]})"
          f"{mem_note}")
    if resume is not None:
        print(f"resuming {args.resume} at step {model.step} of {total}")
    if args.comm is not None:
        print(f"data-parallel over {args.comm.Get_size()} MPI ranks: each step's {batch_size} "
              f"{'documents' if mode == 'lines' else 'windows'} are split between them")

    run_state = {"seed": seed, "batch_size": batch_size, "lr": lr, "total_steps": total,
                 "val_fraction": val_fraction, "data": str(spec) if spec else None,
                 "data_sha256": data.fingerprint, "data_mode": mode}
    if data.rng_state is not None:
        run_state["rng_state"] = data.rng_state
    steps = total - model.step
    eval_every = args.log_every if args.eval_every is None else args.eval_every
    has_val = len(data.val) > 0
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        hist = train(model, tok, data.train, steps=steps, batch_size=batch_size, lr=lr, schedule_steps=total,
                     log_every=args.log_every, val_docs=data.val if has_val else None, eval_every=eval_every,
                     window_seed=seed, out_dir=out_dir, checkpoint_every=args.checkpoint_every,
                     keep_checkpoints=args.keep_checkpoints, checkpoint_extra=run_state,
                     progress_bar=sys.stderr.isatty() and args.log_every > 0, comm=args.comm)
    except KeyboardInterrupt:
        if not root:
            return EXIT_INTERRUPTED
        ckpt = save_rotating(model, tok, out_dir, args.keep_checkpoints, run_state)
        print(f"\ninterrupted at step {model.step}; saved {ckpt} (continue with --resume {ckpt})", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not root:
        return EXIT_OK
    ckpt = out_dir / LATEST_CHECKPOINT
    if not (args.checkpoint_every and steps):
        ckpt = save_rotating(model, tok, out_dir, args.keep_checkpoints, run_state)
    if steps:
        tail = hist.losses[-min(100, len(hist.losses)):]
        val = f" | val loss {hist.val_losses[-1][1]:.4f}" if hist.val_losses else ""
        rate = f"{hist.docs_per_second:,.0f} docs/s" if mode == "lines" else \
            f"{hist.docs_per_second * cfg.block_size:,.0f} tok/s"
        print(f"trained {steps} steps in {hist.seconds:.2f} s ({rate}, "
              f"{hist.seconds / steps * 1e6:.1f} µs/step) | final loss {hist.losses[-1]:.4f} | "
              f"mean of last {len(tail)} {sum(tail) / len(tail):.4f}{val}")
    print(f"saved {ckpt}; metrics in {out_dir / METRICS_FILE}")
    num = args.samples if args.samples is not None else (20 if mode == "lines" else 1)
    if num and mode == "lines":
        print(f"--- {num} samples (temperature {args.temperature}) ---")
        for text in sample(model, tok, num=num, temperature=args.temperature, seed=seed):
            print(text)
    elif num:
        print(f"--- {num} sample(s) of {args.sample_length} characters (temperature {args.temperature}) ---")
        for text in generate(model, tok, length=args.sample_length, num=num, temperature=args.temperature,
                             seed=seed):
            print(text)
    return EXIT_OK


def _memory_note(cfg: Config, dtype: object, batch_size: int, args: argparse.Namespace, data: "_Data",
                 resident: int = 0) -> str:
    """Refuse a run that cannot fit in memory before it is allocated (MemoryLimitError: what it needs, what there
    is); for one that fits but comes close, the warning to append to the start line."""
    ranks = args.comm.Get_size() if args.comm is not None else 1
    if data.mode == "text":
        need = run_memory(cfg, dtype, batch_size, args.threads, data.n_val, ranks, text=True)
    else:
        longest = max(map(len, [*data.train, *data.val]))
        need = run_memory(cfg, dtype, batch_size, args.threads, len(data.val), ranks, longest)
    note = check_memory(need, "this run", resident)
    return f" | {note}" if note else ""


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM: leave like Ctrl-C, saving a checkpoint first


def _parse_list(flag: str, text: str, kind: type) -> list:
    try:
        values = [kind(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"{flag} must be a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{flag} needs at least one value")
    return values


def _cmd_sweep(args: argparse.Namespace) -> int:
    from concurrent.futures import ThreadPoolExecutor

    lrs = _parse_list("--lr", args.lr, float)
    widths = _parse_list("--n-embd", args.n_embd, int)
    passthrough = list(args.extra)
    for flag in ("--lr", "--n-embd", "--out", "--resume"):
        if flag in passthrough:
            raise UsageError(f"{flag} is set by the sweep itself")
    heads = int(passthrough[passthrough.index("--n-head") + 1]) if "--n-head" in passthrough else 4
    for lr in lrs:
        if not (lr >= 0 and lr < float("inf")):
            raise UsageError(f"--lr values must be finite numbers >= 0, got {lr}")
    for d in widths:
        try:
            Config(n_embd=d, n_head=heads)
        except ValueError as e:
            raise UsageError(f"--n-embd {d}: {e}") from None
    sweep_dir = Path(args.out) if args.out else Path("sweeps") / time.strftime("%Y%m%d-%H%M%S")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    grid = [(lr, d) for d in widths for lr in lrs]
    print(f"sweep of {len(grid)} runs in {sweep_dir}, {args.jobs} at a time")

    def one(point: tuple[float, int]) -> dict:
        lr, d = point
        run_dir = sweep_dir / f"lr{lr:g}-d{d}"
        cmd = [sys.executable, "-m", "blasgpt", "train", *passthrough, "--lr", repr(lr), "--n-embd", str(d),
               "--out", str(run_dir), "--samples", "0", "--log-every", "0"]
        t0 = time.perf_counter()
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "w", encoding="utf-8") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        row = {"lr": lr, "n_embd": d, "run_dir": str(run_dir), "exit_code": code,
               "seconds": time.perf_counter() - t0, "train_loss": None, "val_loss": None}
        metrics = run_dir / METRICS_FILE
        if code == 0 and metrics.is_file():
            last = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            if last:
                row["train_loss"], row["val_loss"] = last[-1]["train_loss"], last[-1]["val_loss"]
        else:
            tail = (run_dir / "train.log").read_text(errors="replace").strip().splitlines()
            row["error"] = tail[-1] if tail else f"exit code {code}"
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each worker waits on its own train process
        rows = list(pool.map(one, grid))
    ok = sorted((r for r in rows if r["exit_code"] == 0), key=lambda r: (r["val_loss"] is None, r["val_loss"] or 0))
    print(f"{'lr':>8} {'n_embd':>6} {'val loss':>9} {'train loss':>10} {'seconds':>8}  run")
    for r in ok:
        val = f"{r['val_loss']:.4f}" if r["val_loss"] is not None else "-"
        train_loss = f"{r['train_loss']:.4f}" if r["train_loss"] is not None else "-"
        print(f"{r['lr']:>8g} {r['n_embd']:>6} {val:>9} {train_loss:>10} {r['seconds']:>8.1f}  {r['run_dir']}")
    for r in rows:
        if r["exit_code"] != 0:
            print(f"{r['lr']:>8g} {r['n_embd']:>6}  failed ({r['error']}); see {r['run_dir']}/train.log")
    from .data import atomic_write_bytes

    atomic_write_bytes(sweep_dir / "results.json", json.dumps(rows, indent=1).encode())
    return EXIT_OK if len(ok) == len(rows) else EXIT_ERROR


def _cmd_plot(args: argparse.Namespace) -> int:
    run_dir = Path(args.run_dir)
    metrics = run_dir / METRICS_FILE
    if not metrics.is_file():
        raise FileNotFoundError(f"no {METRICS_FILE} in {run_dir} (train with --out {run_dir} first)")
    try:
        text = metrics.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{metrics} is not valid UTF-8 (byte offset {e.start}); was it written by blasgpt?") from None
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            raise DataError(f"{metrics}:{n}: not a JSON line") from None
        ok = isinstance(row, dict) and all(isinstance(row.get(k), (int, float)) for k in ("step", "train_loss")) \
            and isinstance(row.get("val_loss"), (int, float, type(None)))
        if not ok:
            raise DataError(f"{metrics}:{n}: not a metrics row (needs numeric step and train_loss, and val_loss a "
                            f"number or null)")
        rows.append(row)
    if not rows:
        raise DataError(f"{metrics} holds no measurements yet")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise MissingDependency("plotting needs matplotlib: pip install 'blasgpt[plot]'") from None
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    steps = [r["step"] for r in rows]
    ax.plot(steps, [r["train_loss"] for r in rows], label="train (mean since previous point)")
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("val_loss") is not None]
    if val:
        ax.plot(*zip(*val), marker="o", markersize=3, label="validation")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(f"blasgpt run {run_dir.name}")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    out = run_dir / "loss.png"
    tmp = run_dir / ".loss.png.tmp"
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        if tmp.exists():
            tmp.unlink()
    print(f"wrote {out}")
    return EXIT_OK


def _load_for_text(path: str) -> Checkpoint:
    ck = load_checkpoint(path)
    if ck.tokenizer is None:
        raise CheckpointError(f"{path}: has no vocabulary, so its tokens cannot be turned into text")
    return ck


def _cmd_sample(args: argparse.Namespace) -> int:
    ck = _load_for_text(args.checkpoint)
    model, tok, mode = ck.model, ck.tokenizer, _checkpoint_mode(ck)
    assert tok is not None
    block = model.config.block_size
    if mode == "lines" and args.length is not None and args.length > block:
        raise UsageError(f"--length {args.length}: {args.checkpoint} was trained in lines mode, so its samples are "
                         f"documents of at most block_size ({block}) characters; train with --data-mode text for "
                         f"long text")
    lines = mode == "lines"
    num = args.num if args.num is not None else (20 if lines else 1)
    length = args.length if args.length is not None else (block if lines else 500)
    temperature = args.temperature if args.temperature is not None else (0.5 if lines else 0.8)
    common = dict(num=num, temperature=temperature, top_k=args.top_k, seed=args.seed, mode=mode)
    t0 = time.perf_counter()
    if num == 1 and sys.stdout.isatty():  # one sample on a terminal: characters as they come
        chars = 0
        for piece in generate(model, tok, args.prompt, length, stream=True, **common):  # type: ignore[arg-type]
            sys.stdout.write(piece)
            sys.stdout.flush()
            chars += len(piece)
        sys.stdout.write("\n")
        made = chars - len(args.prompt)
    else:
        texts = generate(model, tok, args.prompt, length, **common)  # type: ignore[arg-type]
        for text in texts:
            print(text)
        made = sum(len(t) - len(args.prompt) for t in texts)
    seconds = time.perf_counter() - t0
    if not lines:
        print(f"generated {made:,} characters in {seconds:.2f} s ({made / max(seconds, 1e-9):,.0f} tokens/s, "
              f"{num} sample(s) together, KV cache)", file=sys.stderr)
    return EXIT_OK


def _eval_data(ck: Checkpoint, spec: Optional[str]) -> tuple[str, object]:
    """(description, data) to evaluate: all of ``spec``, else the run's validation split, rebuilt from its file."""
    mode, extra, tok = _checkpoint_mode(ck), ck.extra, ck.tokenizer
    assert tok is not None
    if spec is not None:
        if mode == "lines":
            return spec, tok.batch(load_docs(spec), block_size=ck.model.config.block_size)
        text, _ = read_text(data_path(spec))
        return spec, encode_text(text, tok)
    source = extra.get("data") or DEFAULT_DATA[mode]
    val_fraction = float(extra.get("val_fraction", 0.0))
    if val_fraction <= 0:
        raise DataError("the run held out no validation data (--val-fraction 0); pass --data FILE to evaluate")
    changed = DataError(f"{source} changed since the run trained on it (its sha256 differs), so its validation "
                        f"split cannot be rebuilt; pass --data FILE to evaluate on a file")
    if mode == "lines":
        docs = load_docs(extra.get("data"))
        if extra.get("data_sha256") not in (None, _data_fingerprint(docs)):
            raise changed
        shuffled, _ = shuffle_docs(docs, int(extra.get("seed", 42)))
        _, val = split_validation(shuffled, val_fraction)
        return f"{source} (validation split)", tok.batch(val, block_size=ck.model.config.block_size)
    text, digest = read_text(data_path(source))
    if extra.get("data_sha256") not in (None, digest):
        raise changed
    n_val = int(len(text) * val_fraction)
    return f"{source} (validation split)", encode_text(text[len(text) - n_val:], tok)


def _cmd_eval(args: argparse.Namespace) -> int:
    ck = _load_for_text(args.checkpoint)
    ck.model.threads = args.threads
    mode = _checkpoint_mode(ck)
    what, data = _eval_data(ck, args.data)
    if mode == "text":
        loss, targets = evaluate_text(ck.model, data)  # type: ignore[arg-type]
        result = {"loss": loss, "bits_per_char": loss / math.log(2), "targets": targets}
        line = (f"{what}: {loss:.4f} nats/char | {result['bits_per_char']:.4f} bits/char | {targets:,} targets "
                f"(text mode, windows of {ck.model.config.block_size})")
    else:
        batch = data
        loss = evaluate(ck.model, batch)  # type: ignore[arg-type]
        lengths = np.diff(batch.offsets)  # type: ignore[attr-defined]
        targets = int(np.minimum(lengths - 1, ck.model.config.block_size).sum())
        result = {"loss": loss, "bits_per_char": loss / math.log(2), "targets": targets,
                  "documents": int(lengths.size)}
        line = (f"{what}: {loss:.4f} nats/token | {result['bits_per_char']:.4f} bits/token | mean over "
                f"{lengths.size:,} documents ({targets:,} targets, lines mode)")
    result.update({"mode": mode, "data": what, "checkpoint": str(args.checkpoint), "step": ck.step})
    print(json.dumps(result) if args.json else line)
    return EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "sweep":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    command = {"train": _cmd_train, "sample": _cmd_sample, "eval": _cmd_eval, "bench": _cmd_bench,
               "plot": _cmd_plot, "sweep": _cmd_sweep}[args.command]
    try:
        args.comm = world() if args.command == "train" else None
    except MPIUnavailable as e:
        print(f"blasgpt {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if args.comm is not None:
        return _main_mpi(command, args, parser)
    return _run(command, args, parser)


def _main_mpi(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
              parser: argparse.ArgumentParser) -> int:
    """Under mpiexec: rank 0 alone talks to the user; any rank that fails ends the whole job (no hang)."""
    comm = args.comm
    if comm.Get_rank() != 0:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (for the life of this process)
    with abort_on_error(comm):
        code = _run(command, args, parser)
        if code not in (EXIT_OK, EXIT_INTERRUPTED):
            raise SystemExit(code)  # abort_on_error ends the other ranks too
        return code


def _run(command: Callable[[argparse.Namespace], int], args: argparse.Namespace,
         parser: argparse.ArgumentParser) -> int:
    try:
        return command(args)
    except UsageError as e:
        parser.print_usage(sys.stderr)  # (the top-level usage: the subcommand's own is one --help away)
        print(f"blasgpt {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except rundir.RunDirError as e:
        print(f"blasgpt {args.command}: error: {e}", file=sys.stderr)
        return e.code
    except MemoryError as e:  # refused before allocating (says what it needs), or an allocation that failed anyway
        detail = f" ({e})" if str(e) else ""
        text = e if isinstance(e, MemoryLimitError) else f"out of memory{detail}; try a smaller model, batch or request"
        print(f"blasgpt {args.command}: error: {text}", file=sys.stderr)
        return EXIT_ERROR
    except (DataError, CheckpointError, TrainingError, MissingDependency, OSError) as e:
        print(f"blasgpt {args.command}: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as e:  # e.g. sampling options that do not fit this model (top-k > vocab, long prompt)
        print(f"blasgpt {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"blasgpt {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if getattr(args, "run_lock", None) is not None:
            args.run_lock.release()


if __name__ == "__main__":
    raise SystemExit(main())
