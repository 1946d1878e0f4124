"""``blasgpt plot``: a run's train and validation loss, drawn from its metrics.jsonl to loss.png."""

from __future__ import annotations

import argparse
import json
import os
import sys
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
    rows, damaged = read_rows(metrics)
    if not rows:
        if damaged:
            n, why = damaged[0]
            raise DataError(f"{metrics}:{n}: {why}; the file holds no metrics row to plot")
        raise DataError(f"{metrics} holds no measurements yet")
    if damaged:  # e.g. the last line of a run killed mid-write: the rest still plots
        where = (f"{metrics}:{damaged[0][0]}: skipped a damaged line ({damaged[0][1]})" if len(damaged) == 1 else
                 f"{metrics}: skipped {len(damaged)} damaged lines (lines "
                 f"{', '.join(str(n) for n, _ in damaged[:5])}{', ...' if len(damaged) > 5 else ''})")
        print(f"blasgpt plot: warning: {where}", file=sys.stderr)
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


def read_rows(metrics: Path) -> tuple[list[dict], list[tuple[int, str]]]:
    """(the metrics rows of the file, its damaged lines as (line number, what is wrong)); blank lines are neither."""
    rows: list[dict] = []
    damaged: list[tuple[int, str]] = []
    for n, raw in enumerate(metrics.read_bytes().split(b"\n"), 1):
        if not raw.strip():
            continue
        try:
            row = json.loads(raw.decode("utf-8"))
        except UnicodeDecodeError as e:
            damaged.append((n, f"not valid UTF-8 (byte {e.start} of the line)"))
            continue
        except json.JSONDecodeError:
            damaged.append((n, "not a JSON line"))
            continue
        if isinstance(row, dict) and all(_number(row.get(k)) for k in ("step", "train_loss")) \
                and (row.get("val_loss") is None or _number(row["val_loss"])):
            rows.append(row)
        else:
            damaged.append((n, "not a metrics row: needs numeric step and train_loss, and val_loss a number or null"))
    return rows, damaged


def _number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
