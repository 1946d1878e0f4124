"""``blasgpt train``: a TrainConfig from the flags (or from the checkpoint being resumed), a corpus from
blasgpt.corpus, then blasgpt.train.fit, a final checkpoint and a few samples."""

from __future__ import annotations

import argparse
import math
import signal
import sys
import textwrap
import time
from pathlib import Path
from typing import Optional

from .. import __version__, rundir
from .._core import blas_info, native_isa
from ..bpe import MIN_VOCAB_SIZE, TOKENIZERS, BPETokenizer
from ..checkpoint import Checkpoint, CheckpointError, load_checkpoint
from ..config import Config, check_memory, memory_estimate
from ..corpus import MODES, Corpus, DataChanged, load_corpus
from ..data import DATASETS, DataError
from ..generate import generate
from ..model import BACKENDS, Model
from ..presets import PRESETS
from ..schedule import SCHEDULES
from ..train import LATEST_CHECKPOINT, METRICS_FILE, History, fit, plan_run, save_rotating
from ..train_config import TrainConfig
from .common import EXIT_INTERRUPTED, EXIT_OK, MissingDependency, UsageError, interrupting, nonneg_int, positive_int

SIZE_DEFAULTS = {"n_embd": 16, "n_head": 4, "n_layer": 1, "block_size": 16}
DEFAULT_BPE_VOCAB = 1024
OPTIONS = ("weight_decay", "grad_clip", "grad_accum", "dropout")  # TrainConfig's training options, flags alike
FIXED_WHEN_RESUMING = ("preset", *SIZE_DEFAULTS, "dtype", "seed", "batch_size", "val_fraction", *OPTIONS,
                       "tie_embeddings")  # flags that name the run
PRESET_FLAGS = {"total_steps": "steps", "schedule": "lr_schedule"}  # a preset's field -> its flag's name, if other


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    presets = "\n".join(f"  {p.name}: {p.summary}" for p in PRESETS.values())
    t = sub.add_parser("train", help="train a model and save a checkpoint",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description=textwrap.fill(
                           "Train on a text file (one document per line; default: the bundled names.txt). The "
                           "defaults reproduce microgpt exactly: seed-42 shuffle, 16-wide 1-layer GPT, 1000 Adam "
                           "steps of one document, lr 0.01 decaying linearly to 0.", 100),
                       epilog=f"presets (--preset NAME; flags given with it win):\n{presets}")
    t.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="start from a named recipe's settings (listed below; docs/RECIPE.md); any flag given "
                        "explicitly overrides the preset's value")
    t.add_argument("--data", metavar="FILE", help="UTF-8 text file, or a named dataset: " + ", ".join(DATASETS) +
                   " (downloaded once, sha256-checked; default: names in lines mode, shakespeare in text mode)")
    t.add_argument("--data-mode", choices=MODES, default=None,
                   help="lines (default, microgpt): every line is a document [BOS] line [BOS]; text: the whole file "
                        "is one token stream, trained on random windows of block_size + 1 characters (nanoGPT)")
    t.add_argument("--tokenizer", choices=TOKENIZERS, default=None,
                   help="char (default): one token per character of the data; bpe: byte-level BPE trained on the "
                        "training split (needs pip install \"blasgpt[bpe]\"; the checkpoint keeps it)")
    t.add_argument("--vocab-size", type=positive_int, default=None,
                   help=f"bpe: ids in the vocabulary, 256 bytes + merges + BOS (>= {MIN_VOCAB_SIZE}; default "
                        f"{DEFAULT_BPE_VOCAB})")
    t.add_argument("--steps", type=nonneg_int, default=None,
                   help="total optimisation steps of the run (default 1000; with --resume: the checkpoint's total)")
    t.add_argument("--batch-size", type=positive_int, default=None,
                   help="documents (text mode: windows) per step (default 1)")
    t.add_argument("--lr", type=float, default=None,
                   help="peak learning rate (default 0.01), following --lr-schedule")
    t.add_argument("--lr-schedule", choices=tuple(SCHEDULES), default=None,
                   help="after warmup: linear (default, microgpt) decays to 0 at the last step; cosine along half a "
                        "cosine to 0; wsd holds the peak, then decays linearly to 0 over the last fifth")
    t.add_argument("--warmup-steps", type=nonneg_int, default=None,
                   help="raise the learning rate linearly from lr/N to lr over the first N steps (default 0)")
    t.add_argument("--weight-decay", type=float, default=None, metavar="W",
                   help="AdamW's decoupled weight decay on the weight matrices, not the embeddings (default 0: off)")
    t.add_argument("--grad-clip", type=float, default=None, metavar="G",
                   help="scale each step's whole gradient to L2 norm at most G > 0 (default: no clipping)")
    t.add_argument("--grad-accum", type=positive_int, default=None, metavar="K",
                   help="a step trains on K micro-batches of --batch-size, one update: the batch of K x batch size "
                        "with one micro-batch's memory (default 1)")
    t.add_argument("--dropout", type=float, default=None, metavar="P",
                   help="dropout probability in [0, 1) after the embedding and each residual branch, in training only; "
                        "masks keyed by --seed (default 0: off)")
    t.add_argument("--tie-embeddings", action=argparse.BooleanOptionalAction, default=None,
                   help="the output layer is the token embedding wte (no separate lm_head; default: untied)")
    t.add_argument("--dtype", choices=("float64", "float32"), default=None, help="arithmetic (default float64)")
    for name, default in SIZE_DEFAULTS.items():
        t.add_argument("--" + name.replace("_", "-"), type=positive_int, default=None,
                       help=f"model size (default {default})")
    t.add_argument("--seed", type=int, default=None, help="shuffle and initialisation seed (default 42)")
    t.add_argument("--out", metavar="RUN_DIR", help="directory for the checkpoint (default runs/<timestamp>, or "
                                                    "runs/<timestamp>-2 ... when that is taken)")
    t.add_argument("--resume", metavar="CKPT", help="continue a run from its checkpoint, bit-exactly "
                                                    "(default --out: the checkpoint's directory; default --data: "
                                                    "the run's)")
    t.add_argument("--overwrite", action="store_true",
                   help="if --out already holds a run, remove its files and start over (default: refuse)")
    t.add_argument("--val-fraction", type=float, default=None,
                   help="hold out this tail fraction of the shuffled documents (text mode: of the text) for "
                        "validation (default 0.1)")
    t.add_argument("--eval-every", type=nonneg_int, default=None,
                   help="validation loss every N steps (default: with each progress line) and at the end")
    t.add_argument("--checkpoint-every", type=nonneg_int, default=0,
                   help="also save ckpt-<step>.safetensors every N steps (default 0: only at the end)")
    t.add_argument("--keep-checkpoints", type=positive_int, default=3,
                   help="numbered checkpoints to keep (default 3; ckpt.safetensors is always the latest)")
    t.add_argument("--log-every", type=nonneg_int, default=100, help="print progress every N steps (0: never)")
    t.add_argument("--samples", type=nonneg_int, default=None,
                   help="samples to print after training (default 20 names; text mode: 1 passage)")
    t.add_argument("--sample-length", type=nonneg_int, default=300,
                   help="text mode: characters per printed passage (default 300)")
    t.add_argument("--temperature", type=float, default=0.5, help="sampling temperature for those (default 0.5)")
    t.add_argument("--gemm", choices=BACKENDS, default=None,
                   help="matmul backend: auto (per product shape the faster of the two, measured once per machine), "
                   "native or blas (default $BLASGPT_GEMM or auto)")
    t.add_argument("--threads", type=positive_int, default=None,
                   help="split each batch across N threads (default 1; useful with --batch-size >= 8)")


def run(args: argparse.Namespace) -> int:
    resume = _resumed(args)
    cfg, sizes = settings(args, resume)
    new_dir = not args.out and resume is None  # a new directory under runs/, made when the run starts
    out_dir = Path(args.out) if args.out else Path(args.resume).parent if resume is not None else \
        Path("runs") / time.strftime("%Y%m%d-%H%M%S")
    resuming_here = resume is not None and out_dir.resolve() == Path(args.resume).resolve().parent
    root = args.comm is None or args.comm.Get_rank() == 0
    if root and not new_dir:  # refuse a directory in use or holding another run now, before any work (and again
        rundir.check(out_dir, resuming_here, args.overwrite)  # under the lock)
    corpus = _load(args, cfg, resume)
    data, val = corpus.split(cfg.val_fraction, resume.model.config.block_size if resume else sizes.block_size)
    model, note = _model(args, cfg, sizes, resume, data, val)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"--out {out_dir} is not a directory (it is an existing file)")
    if root:  # create it now (fail now, not after training) and lock it; the command's runner releases the lock
        if new_dir:  # its own: runs started in the same second get <timestamp>-2, -3, ...
            out_dir = rundir.new_dir(out_dir.parent, out_dir.name)
        args.run_lock = rundir.acquire(out_dir, resuming_here, args.overwrite)
        if args.run_lock.stale:
            print(f"took over the lock of {out_dir} left by {args.run_lock.stale}, which is no longer running")
    if cfg.backend:
        model.backend = cfg.backend
    model.threads = cfg.threads
    _announce(args, cfg, corpus, data, val, model, note)
    run_state = {**cfg.to_dict(), **corpus.identity()}  # what every checkpoint of the run stores
    steps = cfg.total_steps - model.step
    try:
        with interrupting(signal.SIGTERM, signal.SIGHUP):  # like Ctrl-C (SIGHUP: the terminal was closed)
            hist = fit(model, data, cfg, val=val if len(val) else None, out_dir=out_dir, checkpoint_extra=run_state,
                       progress_bar=sys.stderr.isatty() and cfg.log_every > 0, comm=args.comm,
                       lock=getattr(args, "run_lock", None))
    except KeyboardInterrupt:
        if root:
            ckpt = save_rotating(model, corpus.tokenizer, out_dir, cfg.keep_checkpoints, run_state)
            print(f"\ninterrupted at step {model.step}; saved {ckpt} (continue with --resume {ckpt})",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    if root:
        _finish(args, cfg, corpus, model, hist, steps, out_dir, run_state)
    return EXIT_OK


def _resumed(args: argparse.Namespace) -> Optional[Checkpoint]:
    """The checkpoint of --resume, checked against the flags (which must not rename the run), or None."""
    if not args.resume:
        return None
    resume = load_checkpoint(args.resume)
    changed = [f"--{k.replace('_', '-')}" for k in FIXED_WHEN_RESUMING if getattr(args, k) is not None]
    if changed:
        raise UsageError(f"{', '.join(changed)} cannot change when resuming; they come from the checkpoint")
    if resume.tokenizer is None:
        raise CheckpointError(f"{args.resume}: has no vocabulary, so training cannot resume from it")
    return resume


def settings(args: argparse.Namespace, resume: Optional[Checkpoint]) -> tuple[TrainConfig, Config]:
    """(the run's TrainConfig, the model sizes of the flags): from the flags, or the checkpoint's run with the flags
    that may change (--lr, --steps, --data and how the run is logged, checkpointed and computed). A --preset
    first fills the flags not given."""
    if args.preset is not None:
        p = PRESETS[args.preset]
        filled = set()
        for field, value in {**p.settings, **p.sizes}.items():
            if getattr(args, PRESET_FLAGS.get(field, field)) is None:
                setattr(args, PRESET_FLAGS.get(field, field), value)
                filled.add(field)
        if "vocab_size" in filled and "tokenizer" not in filled and args.tokenizer != "bpe":
            args.vocab_size = None  # the preset's BPE size goes with its tokenizer, which a flag replaced
    if args.threads is None:
        args.threads = 1
    try:
        sizes = Config(**{k: getattr(args, k) or v for k, v in SIZE_DEFAULTS.items()},  # checked before any data
                       tie_embeddings=bool(args.tie_embeddings))
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.val_fraction is not None and not 0 <= args.val_fraction < 1:
        raise UsageError(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    if resume is not None:
        base = TrainConfig.from_checkpoint(resume.extra, resume.step, resume.model.dtype.name)
        if isinstance(resume.tokenizer, BPETokenizer):  # the checkpoint's own tokenizer decides (run state or not)
            base = base.replace(tokenizer="bpe", vocab_size=resume.tokenizer.vocab_size)
        if args.data_mode is not None and args.data_mode != base.data_mode:
            raise UsageError(f"--data-mode {args.data_mode} does not match the checkpoint, which was trained in "
                             f"{base.data_mode} mode")
        for flag, asked, had in (("--lr-schedule", args.lr_schedule, base.schedule),
                                 ("--warmup-steps", args.warmup_steps, base.warmup_steps)):
            if asked is not None and asked != had:
                raise UsageError(f"{flag} {asked} does not match the checkpoint's run ({had}); a resumed run keeps "
                                 f"its schedule")
        tok = base.tokenizer + ("" if base.vocab_size is None else f" --vocab-size {base.vocab_size}")
        if (args.tokenizer or base.tokenizer) != base.tokenizer or args.vocab_size not in (None, base.vocab_size):
            raise UsageError(f"--tokenizer/--vocab-size do not match the checkpoint, which was trained with "
                             f"--tokenizer {tok}")
    else:
        kind = args.tokenizer or "char"
        if kind == "char" and args.vocab_size is not None:
            raise UsageError("--vocab-size is for --tokenizer bpe (the char tokenizer's vocabulary is the data's "
                             "characters)")
        vocab = (args.vocab_size or DEFAULT_BPE_VOCAB) if kind == "bpe" else None
        if vocab is not None and vocab < MIN_VOCAB_SIZE:
            raise UsageError(f"--vocab-size {vocab}: a BPE vocabulary holds the 256 bytes and BOS, so it must be at "
                             f"least {MIN_VOCAB_SIZE}")
        base = TrainConfig(data_mode=args.data_mode or "lines", seed=42 if args.seed is None else args.seed,
                           batch_size=args.batch_size or 1, dtype=args.dtype or "float64",
                           val_fraction=0.1 if args.val_fraction is None else args.val_fraction,
                           schedule=args.lr_schedule or "linear", tokenizer=kind, vocab_size=vocab)
        try:
            base = base.replace(**{k: getattr(args, k) for k in OPTIONS if getattr(args, k) is not None})
        except ValueError as e:
            raise UsageError(f"--{str(e).replace('_', '-', 1)}") from None
    lr = base.lr if args.lr is None else args.lr
    if not (lr >= 0 and lr < float("inf")):
        raise UsageError(f"--lr must be a finite number >= 0, got {lr}")
    if not args.temperature > 0:
        raise UsageError(f"--temperature must be > 0, got {args.temperature}")
    if args.threads > 256:
        raise UsageError(f"--threads must be at most 256, got {args.threads}")
    total = args.steps if args.steps is not None else base.total_steps if resume is not None else 1000
    if resume is not None and total < resume.step:
        raise UsageError(f"--steps {total} is before the checkpoint's step {resume.step}")
    warmup = base.warmup_steps if args.warmup_steps is None else args.warmup_steps
    if warmup and warmup >= total:
        raise UsageError(f"--warmup-steps {warmup} must be fewer than the run's {total} steps")
    data = args.data if args.data is not None else base.data
    return base.replace(lr=lr, total_steps=total, warmup_steps=warmup, data=data, log_every=args.log_every,
                        eval_every=args.log_every if args.eval_every is None else args.eval_every,
                        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints,
                        threads=args.threads, backend=args.gemm), sizes


def _load(args: argparse.Namespace, cfg: TrainConfig, resume: Optional[Checkpoint]) -> Corpus:
    """The run's corpus (a resumed run: the same data as before, or DataError)."""
    fresh_bpe = resume is None and cfg.tokenizer == "bpe"
    try:
        return load_corpus(cfg.data, cfg.data_mode, seed=cfg.seed, tokenizer=resume.tokenizer if resume else None,
                           expect=resume.extra if resume else None,
                           bpe_vocab_size=cfg.vocab_size if fresh_bpe else None, val_fraction=cfg.val_fraction)
    except ImportError as e:  # training a BPE tokenizer without the optional extra
        raise MissingDependency(str(e)) from None
    except DataChanged as e:
        raise DataError(f"{args.resume}: {e}, so the resumed run could not continue the same sequence") from None


def _model(args: argparse.Namespace, cfg: TrainConfig, sizes: Config, resume: Optional[Checkpoint], data: Corpus,
           val: Corpus) -> tuple[Model, str]:
    """(the model: resumed, or new with weights drawn as the corpus says; the memory note for the start line).
    A run that cannot fit in memory is refused before the model is allocated (MemoryLimitError)."""
    vocab = data.tokenizer.vocab_size
    model_cfg = resume.model.config if resume else Config(**{**sizes.to_dict(), "vocab_size": vocab})
    ranks = args.comm.Get_size() if args.comm is not None else 1
    need = data.memory(model_cfg, cfg.dtype, cfg.batch_size, cfg.threads, ranks, val)
    note = check_memory(need, "this run", memory_estimate(model_cfg, cfg.dtype).total if resume else 0)
    model = resume.model if resume else Model(model_cfg, dtype=cfg.dtype, seed=cfg.seed, init_rng=data.init_rng)
    return model, f" | {note}" if note else ""


def _announce(args: argparse.Namespace, cfg: TrainConfig, corpus: Corpus, data: Corpus, val: Corpus, model: Model,
              note: str) -> None:
    c = model.config
    kind = " (bpe)" if isinstance(corpus.tokenizer, BPETokenizer) else ""
    plan = plan_run(model, data, cfg.batch_size, args.comm.Get_size() if args.comm is not None else 1)
    isa = {"native": native_isa(), "blas": blas_info().split(" | ")[-1],
           "auto": f"{native_isa()} | OpenBLAS {blas_info().split(' | ')[-1]}: {plan.summary() if plan else ''}"
           }[model.backend]
    print(f"blasgpt {__version__} | data {corpus.source}: {data.summary(val)}, vocab {c.vocab_size}{kind} | "
          f"d{c.n_embd} h{c.n_head} L{c.n_layer} block {c.block_size}: {model.num_params:,} params | "
          f"{model.dtype.name} | batch {cfg.batch_size} x {model.threads} thread(s) | gemm {model.backend} "
          f"({isa}){note}")
    if args.resume:
        print(f"resuming {args.resume} at step {model.step} of {cfg.total_steps}")
    if args.comm is not None:
        print(f"data-parallel over {args.comm.Get_size()} MPI ranks: each step's {cfg.batch_size} "
              f"{corpus.sequences} are split between them")


def _finish(args: argparse.Namespace, cfg: TrainConfig, corpus: Corpus, model: Model, hist: History, steps: int,
            out_dir: Path, run_state: dict) -> None:
    """The last checkpoint (unless the run just wrote it), a summary line and the samples."""
    ckpt = out_dir / LATEST_CHECKPOINT
    if not (cfg.checkpoint_every and steps):
        ckpt = save_rotating(model, corpus.tokenizer, out_dir, cfg.keep_checkpoints, run_state)
    block = model.config.block_size
    if steps:
        tail = hist.losses[-min(100, len(hist.losses)):]
        val = f" | val loss {hist.val_losses[-1][1]:.4f}" if hist.val_losses else ""
        npc = hist.val_nats_per_char[-1][1] if hist.val_nats_per_char else None
        if isinstance(corpus.tokenizer, BPETokenizer) and npc is not None:
            val += f" ({npc / math.log(2):.4f} bits/char)"
        print(f"trained {steps} steps in {hist.seconds:.2f} s "
              f"({hist.docs_per_second * corpus.per_step(1, block):,.0f} {corpus.unit}/s, "
              f"{hist.seconds / steps * 1e6:.1f} µs/step) | final loss {hist.losses[-1]:.4f} | "
              f"mean of last {len(tail)} {sum(tail) / len(tail):.4f}{val}")
    print(f"saved {ckpt}; metrics in {out_dir / METRICS_FILE}")
    num = args.samples if args.samples is not None else corpus.sample_num
    if num:
        length = block if corpus.framed else args.sample_length
        print(corpus.samples_title.format(num=num, length=length, temperature=args.temperature))
        for text in generate(model, corpus.tokenizer, length=length, num=num, temperature=args.temperature,
                             seed=cfg.seed, mode=corpus.mode):
            print(text)
