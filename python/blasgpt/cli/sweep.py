"""``blasgpt sweep``: a grid of training runs in parallel processes, compared by their final validation loss."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from ..config import Config
from ..data import atomic_write_bytes
from ..rundir import new_dir
from ..train import METRICS_FILE
from .common import EXIT_ERROR, EXIT_OK, UsageError, positive_int


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    sw = sub.add_parser("sweep", help="train a grid of settings in parallel processes and compare them",
                        description="Train one run per combination of --lr and --n-embd values (each in its own "
                                    "process and run directory, --jobs at a time) and print their final validation "
                                    "losses and bits per character of the text. Any other option is passed to every "
                                    "'train' run, e.g. --steps 2000 --batch-size 16 --dtype float32 --data my.txt, or "
                                    "--preset fast-text (whose --lr and --n-embd the grid replaces).")
    sw.add_argument("--lr", default="0.003,0.01,0.03", help="comma-separated learning rates (default 0.003,0.01,0.03)")
    sw.add_argument("--n-embd", default="16,32", help="comma-separated embedding widths (default 16,32)")
    sw.add_argument("--jobs", type=positive_int, default=os.cpu_count() or 1,
                    help="runs at the same time (default: one per core)")
    sw.add_argument("--out", metavar="SWEEP_DIR", help="parent of the run directories (default sweeps/<timestamp>)")


def _parse_list(flag: str, text: str, kind: type) -> list:
    """The values of a comma-separated list, each once (equal numbers however spelled, 0.01 and 1e-2, would train
    the same run twice, into one directory)."""
    items = [v.strip() for v in text.split(",") if v.strip()]
    try:
        values = [kind(v) for v in items]
    except ValueError:
        raise UsageError(f"{flag} must be a comma-separated list of numbers, got {text!r}") from None
    if not values:
        raise UsageError(f"{flag} needs at least one value")
    first: dict = {}  # value -> how it was first spelled
    for item, value in zip(items, values):
        if value in first:
            what = f"{item} twice" if item == first[value] else f"the same value twice ({first[value]}, {item})"
            raise UsageError(f"{flag} lists {what}; give each value once")
        first[value] = item
    return values


def _run_name(lr: float, d: int) -> str:
    """A grid point's directory: lr as %g unless that would round it (then every digit), so distinct points never
    share one."""
    short = f"{lr:g}"
    return f"lr{short if float(short) == lr else repr(lr)}-d{d}"


def run(args: argparse.Namespace) -> int:
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
    if args.out:
        sweep_dir = Path(args.out)
        sweep_dir.mkdir(parents=True, exist_ok=True)
    else:  # its own: sweeps started in the same second get <timestamp>-2, -3, ...
        sweep_dir = new_dir(Path("sweeps"), time.strftime("%Y%m%d-%H%M%S"))
    grid = [(lr, d) for d in widths for lr in lrs]
    print(f"sweep of {len(grid)} runs in {sweep_dir}, {args.jobs} at a time")

    def one(point: tuple[float, int]) -> dict:
        lr, d = point
        run_dir = sweep_dir / _run_name(lr, d)
        cmd = [sys.executable, "-m", "blasgpt", "train", *passthrough, "--lr", repr(lr), "--n-embd", str(d),
               "--out", str(run_dir), "--samples", "0", "--log-every", "0"]
        t0 = time.perf_counter()
        run_dir.mkdir(parents=True, exist_ok=True)
        with open(run_dir / "train.log", "w", encoding="utf-8") as log:
            code = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode
        row = {"lr": lr, "n_embd": d, "run_dir": str(run_dir), "exit_code": code,
               "seconds": time.perf_counter() - t0, "train_loss": None, "val_loss": None, "val_bits_per_char": None}
        metrics = run_dir / METRICS_FILE
        if code == 0 and metrics.is_file():
            last = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
            if last:
                row["train_loss"], row["val_loss"] = last[-1]["train_loss"], last[-1]["val_loss"]
                row["val_bits_per_char"] = last[-1].get("val_bits_per_char")  # one scale for any tokenizer
        else:
            tail = (run_dir / "train.log").read_text(errors="replace").strip().splitlines()
            said = [line for line in tail if ": error: " in line] or tail  # (a usage error's hint line follows it)
            row["error"] = said[-1] if said else f"exit code {code}"
        return row

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each worker waits on its own train process
        rows = list(pool.map(one, grid))
    ok = sorted((r for r in rows if r["exit_code"] == 0), key=lambda r: (r["val_loss"] is None, r["val_loss"] or 0))
    print(f"{'lr':>8} {'n_embd':>6} {'val loss':>9} {'bits/char':>9} {'train loss':>10} {'seconds':>8}  run")
    for r in ok:
        val, bpc, train_loss = (f"{r[k]:.4f}" if r[k] is not None else "-"
                                for k in ("val_loss", "val_bits_per_char", "train_loss"))
        print(f"{r['lr']:>8g} {r['n_embd']:>6} {val:>9} {bpc:>9} {train_loss:>10} {r['seconds']:>8.1f}  "
              f"{r['run_dir']}")
    for r in rows:
        if r["exit_code"] != 0:
            print(f"{r['lr']:>8g} {r['n_embd']:>6}  failed ({r['error']}); see {r['run_dir']}/train.log")
    atomic_write_bytes(sweep_dir / "results.json", json.dumps(rows, indent=1).encode())
    return EXIT_OK if len(ok) == len(rows) else EXIT_ERROR
