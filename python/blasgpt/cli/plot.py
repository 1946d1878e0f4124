"""``blasgpt plot``: a run's train and validation loss, drawn from its metrics.jsonl to loss.png."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ..data import DataError
from ..train import METRICS_FILE
from .common import EXIT_OK, MissingDependency


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    pl = sub.add_parser("plot", help="draw a run's train and validation loss to RUN_DIR/loss.png",
                        description="Read RUN_DIR/metrics.jsonl (written by 'train') and draw loss.png beside it. "
                                    "Needs matplotlib: pip install 'blasgpt[plot]'.")
    pl.add_argument("run_dir", metavar="RUN_DIR", help="a directory given to 'train --out'")


def run(args: argparse.Namespace) -> int:
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
