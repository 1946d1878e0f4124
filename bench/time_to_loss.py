"""Time to nanoGPT's quality: the nanoGPT reference (nanogpt_ref.py) runs nanoGPT's shakespeare_char CPU recipe to
its end, and its best validation loss becomes the target; then blasgpt trains with ``--preset nanogpt-cpu`` and with
``--preset fast-text`` until it reaches that loss. Every side is measured on one scale — nats per character of the
whole validation split (the tail 10 % of the text's characters), evaluated outside the timed training — and each
runs in its own process (PyTorch's idle threads would otherwise share the cores).

Seconds: wall and process CPU time of training; evaluations are not timed, except that the reference's total also
gives the seconds with its own periodic estimates (20 random batches of each split every 250 iterations, as
nanoGPT's CPU command runs). blasgpt's seconds include its start: reading the text and, for BPE, training the
tokenizer on the training split. The sides' curves (seconds, val nats/char) also draw docs/recipe.png
(recipe_curve.py).
"""

from __future__ import annotations

import math
import subprocess
import time
from typing import Any, Optional

import numpy as np

import blasgpt
from blasgpt.presets import preset
from blasgpt.train import plan_run
from recipe import TIME_TO_LOSS, VAL_FRACTION
from report import Report
from scaling import run_worker
from workloads import TextStream, check_model

TIMEOUT = 900  # seconds per side


def reference_side(data: str, quick: bool, changes: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """nanoGPT's run to its end (``changes`` to its NanoRecipe): its evaluation points with the whole-split loss of
    each."""
    import torch

    import nanogpt_ref

    stream = TextStream(data)
    train, val = stream.split(VAL_FRACTION)
    if int(stream.tokens.max()) >= stream.tok.vocab_size - 1:
        raise AssertionError("expected the character vocabulary to end with BOS, which a text never holds")
    V = stream.tok.vocab_size - 1  # the text's characters (nanoGPT's vocabulary has no BOS)
    r = nanogpt_ref.NanoRecipe(**{**TIME_TO_LOSS[quick]["reference"], **(changes or {})})
    model, points = nanogpt_ref.train(train, val, V, r)
    # checks: nanoGPT's parameter count for these shapes, its schedule's corners, a first loss near ln V
    C, L, T = r.n_embd, r.n_layer, r.block_size
    want = V * C + T * C + L * (12 * C * C + 2 * C) + C + (L * 11 * C + C if r.bias else 0)
    got = sum(p.numel() for p in model.parameters())
    if got != want:
        raise AssertionError(f"nanoGPT reference: {got} parameters, nanoGPT's shapes have {want}")
    corners = (r.lr_at(0), r.lr_at(r.warmup_iters), r.lr_at(r.lr_decay_iters))
    if not np.allclose(corners, (r.lr / (r.warmup_iters + 1), r.lr, r.min_lr)):
        raise AssertionError(f"nanoGPT reference: the schedule's corners are {corners}")
    first = points[0].val_loss
    assert first is not None
    if abs(first - math.log(V)) > 0.1:
        raise AssertionError(f"nanoGPT reference: initial validation loss {first:.3f}, not near ln {V}")
    return {"side": "nanoGPT reference", "points": [nanogpt_ref.as_dict(p) for p in points],
            "torch": torch.__version__, "threads": r.threads, "params": got,
            "checked": f"{got:,} parameters as nanoGPT's shapes; schedule corners; initial val {first:.3f} "
                       f"(ln {V} = {math.log(V):.3f})"}


def blasgpt_side(name: str, data: str, target: Optional[float], eval_every: int,
                 changes: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """A preset's run (with ``changes`` to its TrainConfig), stopped at the first evaluation (every ``eval_every``
    steps, over the whole validation split) at or below ``target`` nats/char; None: to the end."""
    p = preset(name)
    cfg = p.train_config(data=data, log_every=0, eval_every=0, **(changes or {}))
    t0, c0 = time.perf_counter(), time.process_time()
    corpus = blasgpt.load_corpus(data, cfg.data_mode, seed=cfg.seed, val_fraction=cfg.val_fraction,
                                 bpe_vocab_size=cfg.vocab_size if cfg.tokenizer == "bpe" else None)
    train, val = corpus.split(cfg.val_fraction, p.sizes["block_size"])
    start = (time.perf_counter() - t0, time.process_time() - c0)
    mcfg = p.model_config(corpus.tokenizer.vocab_size)
    model = blasgpt.Model(mcfg, dtype=cfg.dtype, seed=cfg.seed, threads=cfg.threads)
    # check the first step's loss and gradients against a float64 model with the same weights (planned first for
    # training, so the check does not choose the gemm plan)
    plan_run(model, train, cfg.batch_size)
    first = train.feed(0, 1, cfg.batch_size, mcfg.block_size, cfg.seed)
    batch = blasgpt.Batch.of_windows(first.batch.tokens, first.rows(0, 1)[0])
    ref = blasgpt.Model(mcfg, "float64", init=False)
    for k, v in model.params.items():
        ref.params[k][...] = v
    ref_loss = ref.forward_backward(batch)
    checked = check_model(f"blasgpt {name}", model, batch, ref_loss, {k: v.copy() for k, v in ref.grads.items()})
    points = [_point(0, 0.0, 0.0, start, val.score(model)[1])]
    wall = cpu = 0.0
    while model.step < cfg.total_steps and (target is None or points[-1]["val_nats_per_char"] > target):
        steps = min(eval_every, cfg.total_steps - model.step)
        t0, c0 = time.perf_counter(), time.process_time()
        blasgpt.fit(model, train, cfg, steps=steps, log=lambda _: None)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        points.append(_point(model.step, wall, cpu, start, val.score(model)[1]))
    flags = "".join(f" --{k.replace('_', '-').replace('total-', '')} {v}" for k, v in (changes or {}).items())
    return {"side": f"blasgpt --preset {name}{flags}", "preset": name, "total_steps": cfg.total_steps,
            "start_seconds": start[0], "start_cpu_seconds": start[1], "points": points, "checked": checked,
            "gemm": model.gemm_plan.summary() if model.gemm_plan is not None else model.backend}


def _point(step: int, wall: float, cpu: float, start: tuple[float, float], npc: Optional[float]) -> dict[str, Any]:
    assert npc is not None
    return {"step": step, "train_seconds": wall, "seconds": start[0] + wall, "cpu_seconds": start[1] + cpu,
            "val_nats_per_char": npc}


def worker(args: dict[str, Any]) -> dict[str, Any]:
    if args["side"] == "reference":
        return reference_side(args["data"], args["quick"], args.get("changes"))
    return blasgpt_side(args["preset"], args["data"], args["target"], args["eval_every"], args.get("changes"))


def reached(side: dict[str, Any], target: float) -> Optional[dict[str, Any]]:
    """The side's first point at or below ``target`` (None: never)."""
    key = "val_loss" if "iter" in side["points"][0] else "val_nats_per_char"
    return next((p for p in side["points"] if p[key] <= target), None)


def time_to_loss_rows(rep: Report, quick: bool, data: str, have_torch: bool) -> None:
    if not have_torch:
        rep.notes.append("time-to-loss skipped: the nanoGPT reference needs PyTorch")
        return
    run = TIME_TO_LOSS[quick]
    try:
        ref = run_worker("time-to-loss", {"side": "reference", "data": data, "quick": quick}, TIMEOUT)
        best = min(ref["points"], key=lambda p: p["val_loss"])
        target = best["val_loss"]
        sides = []
        for name, every, tries in run["blasgpt"]:
            for changes in tries:  # a longer schedule only if the shorter one ended above the target
                side = run_worker("time-to-loss", {"side": "blasgpt", "preset": name, "data": data, "quick": quick,
                                                   "target": target, "eval_every": every, "changes": changes},
                                  TIMEOUT)
                if reached(side, target) is not None:
                    break
            sides.append(side)
    except subprocess.TimeoutExpired as e:
        rep.notes.append(f"time-to-loss skipped: a side did not finish within {TIMEOUT} s ({e.cmd[-1]})")
        return
    rows = [{"side": ref["side"], "step": best["iter"], "val_nats_per_char": target, "seconds": best["train_seconds"],
             "cpu_seconds": best["train_cpu_seconds"], "with_evals": best["wall_seconds"],
             "cpu_with_evals": best["cpu_seconds"], "checked": ref["checked"]}]
    for side in sides:
        hit = reached(side, target)
        row = {"side": side["side"], "total_steps": side["total_steps"], "checked": side["checked"],
               "start_seconds": side["start_seconds"], "gemm": side["gemm"]}
        if hit is None:
            last = side["points"][-1]
            rep.notes.append(f"time-to-loss: {side['side']} ended its {side['total_steps']}-step schedule at "
                             f"{last['val_nats_per_char']:.4f} nats/char, above the target {target:.4f}")
            row.update(step=last["step"], val_nats_per_char=last["val_nats_per_char"], reached=False)
        else:
            row.update(step=hit["step"], val_nats_per_char=hit["val_nats_per_char"], seconds=hit["seconds"],
                       cpu_seconds=hit["cpu_seconds"], reached=True, speedup=best["train_seconds"] / hit["seconds"],
                       speedup_cpu=best["train_cpu_seconds"] / hit["cpu_seconds"],
                       speedup_with_evals=best["wall_seconds"] / hit["seconds"])
            rep.comparisons.append(
                f"time to {target:.4f} val nats/char (the nanoGPT reference's best, iteration {best['iter']}: "
                f"{best['train_seconds']:.1f} s wall training, {best['wall_seconds']:.1f} s with its evaluations, "
                f"{best['train_cpu_seconds']:.1f} s CPU training): {side['side']} {hit['seconds']:.2f} s wall, "
                f"{hit['cpu_seconds']:.2f} s CPU (step {hit['step']} of {side['total_steps']}) = "
                f"{row['speedup']:.1f}x wall ({row['speedup_with_evals']:.1f}x against its run with evaluations), "
                f"{row['speedup_cpu']:.1f}x CPU")
        rows.append(row)
    rep.extra["time_to_loss"] = {"target": target, "rows": rows, "curves": [ref, *sides]}


__all__ = ["blasgpt_side", "reached", "reference_side", "time_to_loss_rows", "worker"]
