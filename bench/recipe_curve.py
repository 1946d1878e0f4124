"""The recipe's curve: validation bits per character of the held-out text against seconds of training, for
blasgpt's ``--preset fast-text`` (one run per ``--steps`` value: each point is the end of a whole cosine schedule of
that length, the recipe at that time budget), blasgpt with nanoGPT's configuration (``--preset nanogpt-cpu``,
evaluated every 100 steps of its 2000) and the nanoGPT reference (nanogpt_ref.py, at its evaluations every 250
iterations), drawn to docs/recipe.png. Run in a source checkout, on a quiet machine (about 4 minutes on 2 cores):

    python bench/recipe_curve.py

Each side runs in its own process, one after the other (bench.py's time-to-loss worker, time_to_loss.py); every
point is the loss over the whole validation split, evaluated outside the timed training; blasgpt's seconds include
reading the text and training its tokenizer. ``--json FILE`` keeps the numbers (written after each side);
``--threads 1`` runs every side on one thread (a machine shared with other work: PyTorch's threads spin while they
wait for each other).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from scaling import run_worker  # noqa: E402
from time_to_loss import TIMEOUT  # noqa: E402
from timing import SINGLE_THREAD_ENV  # noqa: E402

FAST_STEPS = (50, 100, 200, 400, 800)
NANOGPT_EVAL_EVERY = 100


def measure(data: str, threads: Optional[int], fast_steps: Sequence[int], timeout: float,
            keep: Optional[Path]) -> dict[str, Any]:
    """Every side in turn; with ``keep``, the measurements so far are written there after each side."""
    env = dict(os.environ, **{k: "1" for k in SINGLE_THREAD_ENV})  # BLAS pools: one thread each (bench.py's rule)
    extra = {} if threads is None else {"threads": threads}
    t0 = time.perf_counter()
    m: dict[str, Any] = {"data": data, "threads": threads, "loadavg_start": os.getloadavg(), "fast_text": []}

    def side(key: str, args: dict[str, Any]) -> None:
        got = run_worker("time-to-loss", {"data": data, "quick": False, **args}, timeout, env=env)
        if key == "fast_text":
            m[key].append(got)
        else:
            m[key] = got
        m["seconds"], m["loadavg_end"] = time.perf_counter() - t0, os.getloadavg()
        if keep is not None:
            keep.write_text(json.dumps(m, indent=1))

    side("reference", {"side": "reference", "changes": extra})
    side("nanogpt_cpu", {"side": "blasgpt", "preset": "nanogpt-cpu", "target": None, "eval_every": NANOGPT_EVAL_EVERY,
                         "changes": extra})
    for n in fast_steps:
        side("fast_text", {"side": "blasgpt", "preset": "fast-text", "target": None, "eval_every": n,
                           "changes": {"total_steps": n, **extra}})
    return m


def curves(m: dict[str, Any]) -> dict[str, list[tuple[float, float, float]]]:
    """Per side: (wall seconds, CPU seconds, val bits/char) points."""
    ln2 = math.log(2)
    ref = [(p["train_seconds"], p.get("train_cpu_seconds", p["cpu_seconds"]), p["val_loss"] / ln2)
           for p in m["reference"]["points"]]
    nano = [(p["seconds"], p["cpu_seconds"], p["val_nats_per_char"] / ln2)
            for p in m.get("nanogpt_cpu", {"points": []})["points"][1:]]  # (a partial --json: the sides so far)
    fast = [(p["seconds"], p["cpu_seconds"], p["val_nats_per_char"] / ln2)
            for p in (side["points"][-1] for side in m["fast_text"])]
    return {"nanoGPT reference (PyTorch; nanoGPT's model and recipe)": ref[1:],
            "blasgpt --preset nanogpt-cpu": nano,
            "blasgpt --preset fast-text --steps N (end of each run)": fast}


def plot(m: dict[str, Any], out: Path, cpu: bool = False) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5), dpi=110)
    for (label, pts), marker in zip(curves(m).items(), ("s", "o", "D")):
        ax.plot([p[1 if cpu else 0] for p in pts], [p[2] for p in pts], marker=marker, markersize=4, label=label)
    best = min(p["val_loss"] for p in m["reference"]["points"]) / math.log(2)
    ax.axhline(best, color="grey", linestyle="--", linewidth=0.8)
    ax.annotate(f"nanoGPT reference's best: {best:.3f} bits/char", (0.3, best), xycoords=("axes fraction", "data"),
                xytext=(0, 3), textcoords="offset points", fontsize=8, color="grey")
    for side in m["fast_text"]:
        p = side["points"][-1]
        x = p["cpu_seconds" if cpu else "seconds"]
        ax.annotate(str(side["total_steps"]), (x, p["val_nats_per_char"] / math.log(2)), xytext=(3, 3),
                    textcoords="offset points", fontsize=7)
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    clock = "CPU" if cpu else "wall"
    ax.set_xlabel(f"{clock} seconds of training (evaluation excluded; blasgpt: with reading the text and its "
                  "tokenizer)")
    ax.set_ylabel("validation bits per character")
    threads = m["threads"] or 2
    load = (m["loadavg_start"][0] + m["loadavg_end"][0]) / 2
    name = Path(m["data"]).name
    ax.set_title(f"{name}, {os.cpu_count()}-core CPU, {threads} thread(s) per side, load average {load:.1f}",
                 fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


def table(m: dict[str, Any]) -> str:
    lines = [f"{'side':56s} {'wall s':>8s} {'CPU s':>8s} {'bits/char':>9s}"]
    for label, pts in curves(m).items():
        for wall, cpu, bpc in pts:
            lines.append(f"{label[:56]:56s} {wall:8.2f} {cpu:8.2f} {bpc:9.4f}")
    lines.append(f"whole command: {m['seconds']:.0f} s; load average {m['loadavg_start'][0]:.2f} at the start, "
                 f"{m['loadavg_end'][0]:.2f} at the end")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--data", default="shakespeare", help="the text (default: the shakespeare named dataset)")
    p.add_argument("--out", default=str(BENCH.parent / "docs" / "recipe.png"),
                   help="the plot (default docs/recipe.png)")
    p.add_argument("--json", metavar="FILE", help="also write the measurements as JSON")
    p.add_argument("--threads", type=int, default=None, help="threads of every side (default: each recipe's, 2)")
    p.add_argument("--timeout", type=float, default=TIMEOUT, help=f"seconds per side (default {TIMEOUT})")
    p.add_argument("--cpu", action="store_true", help="plot against CPU seconds (a busy machine: wall time then "
                                                      "measures the other jobs too)")
    p.add_argument("--from-json", metavar="FILE", help="plot the measurements of an earlier --json instead")
    args = p.parse_args(argv)
    try:
        if args.from_json:
            m = json.loads(Path(args.from_json).read_text())
        else:
            m = measure(args.data, args.threads, FAST_STEPS, args.timeout, Path(args.json) if args.json else None)
        plot(m, Path(args.out), args.cpu)
    except (RuntimeError, OSError, ValueError, subprocess.TimeoutExpired) as e:
        print(f"recipe_curve.py: error: {e}", file=sys.stderr)
        return 1
    print(table(m))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
