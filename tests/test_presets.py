"""Named recipes (blasgpt.presets, ``blasgpt train --preset NAME``, docs/RECIPE.md): a preset fills the run's
settings and model sizes, flags given with it win, the checkpoint records the resulting values, an unknown name is a
one-line usage error, and a resumed run refuses a preset like any other flag that names the run."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

import blasgpt
from blasgpt.cli import build_parser
from blasgpt.cli.train import settings
from blasgpt.presets import PRESETS, preset
from blasgpt.train_config import TrainConfig
from conftest import ONE_BLAS_THREAD, blasgpt_cli
from test_bad_inputs import error_line
from test_text_cli import QUIET, ok, write_text

run = functools.partial(blasgpt_cli, env=ONE_BLAS_THREAD)


def cli_settings(*flags: str) -> tuple[TrainConfig, blasgpt.Config]:
    """The TrainConfig and model sizes ``blasgpt train *flags`` would run (nothing read or trained)."""
    return settings(build_parser().parse_args(["train", *flags]), None)


def test_fast_text_preset_fills_the_recipe():
    cfg, sizes = cli_settings("--preset", "fast-text")
    assert (cfg.data_mode, cfg.tokenizer, cfg.vocab_size) == ("text", "bpe", 1024)
    assert (sizes.n_embd, sizes.n_layer, sizes.n_head, sizes.block_size, sizes.tie_embeddings) == (64, 1, 4, 32, False)
    assert (cfg.batch_size, cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.total_steps) == (32, 0.01, "cosine", 20, 200)
    assert (cfg.dtype, cfg.threads) == ("float32", 2)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.grad_accum, cfg.dropout) == (0.0, None, 1, 0.0)


def test_nanogpt_cpu_preset_is_nanogpts_shakespeare_char_cpu_run():
    cfg, sizes = cli_settings("--preset", "nanogpt-cpu")
    assert (cfg.data_mode, cfg.tokenizer, cfg.vocab_size) == ("text", "char", None)
    assert (sizes.n_embd, sizes.n_layer, sizes.n_head, sizes.block_size, sizes.tie_embeddings) == (128, 4, 4, 64, True)
    assert (cfg.batch_size, cfg.lr, cfg.schedule, cfg.warmup_steps, cfg.total_steps) == (12, 1e-3, "cosine", 100, 2000)
    assert (cfg.weight_decay, cfg.grad_clip, cfg.grad_accum, cfg.dropout) == (0.1, 1.0, 1, 0.0)
    assert (cfg.dtype, cfg.threads) == ("float32", 2)


@pytest.mark.parametrize("name", list(PRESETS))
def test_the_cli_and_the_library_give_the_same_values(name):
    cfg, sizes = cli_settings("--preset", name)
    p = preset(name)
    # (what the CLI adds: how the run is logged and checkpointed, which are no part of a recipe)
    assert cfg == p.train_config(log_every=cfg.log_every, eval_every=cfg.eval_every)
    assert sizes == p.model_config(vocab_size=sizes.vocab_size)


def test_explicit_flags_win_over_the_preset():
    cfg, sizes = cli_settings("--preset", "nanogpt-cpu", "--lr", "0.003", "--steps", "500", "--lr-schedule", "wsd",
                              "--warmup-steps", "0", "--n-embd", "64", "--no-tie-embeddings", "--weight-decay", "0",
                              "--batch-size", "4", "--threads", "1", "--dtype", "float64")
    assert (cfg.lr, cfg.total_steps, cfg.schedule, cfg.warmup_steps) == (0.003, 500, "wsd", 0)
    assert (sizes.n_embd, sizes.n_layer, sizes.tie_embeddings) == (64, 4, False)  # the rest stays the preset's
    assert (cfg.weight_decay, cfg.grad_clip, cfg.batch_size, cfg.threads, cfg.dtype) == (0.0, 1.0, 4, 1, "float64")
    # a tokenizer given with fast-text replaces the preset's BPE, and its vocabulary size goes with it
    cfg, _ = cli_settings("--preset", "fast-text", "--tokenizer", "char")
    assert (cfg.tokenizer, cfg.vocab_size) == ("char", None)
    cfg, _ = cli_settings("--preset", "fast-text", "--vocab-size", "512")
    assert (cfg.tokenizer, cfg.vocab_size) == ("bpe", 512)


def test_without_a_preset_the_defaults_stay_microgpts():
    cfg, sizes = cli_settings()
    assert cfg == TrainConfig(log_every=100, eval_every=100)
    assert sizes == blasgpt.Config()


def test_library_preset_changes_and_unknown_name():
    p = preset("fast-text")
    assert p.train_config(total_steps=400).total_steps == 400
    assert p.model_config(vocab_size=300, n_layer=2) == blasgpt.Config(vocab_size=300, n_embd=64, n_head=4,
                                                                        n_layer=2, block_size=32)
    with pytest.raises(ValueError) as e:
        preset("fastest")
    assert str(e.value) == "unknown preset 'fastest'; the presets are fast-text, nanogpt-cpu"


def test_cli_run_with_a_preset_records_its_values(tmp_path: Path):
    """A short run with nanoGPT's preset (fewer steps and a smaller model by flag): the checkpoint holds the values."""
    write_text(tmp_path / "book.txt", 1, 300)
    ok(run(["train", "--preset", "nanogpt-cpu", "--data", "book.txt", "--steps", "3", "--warmup-steps", "1",
            "--n-embd", "16", "--n-layer", "1", "--block-size", "16", "--threads", "1", "--out", "r", *QUIET],
           tmp_path))
    ck = blasgpt.load_checkpoint(tmp_path / "r" / "ckpt.safetensors")
    cfg = TrainConfig.from_checkpoint(ck.extra, ck.step, ck.model.dtype.name)
    assert (cfg.data_mode, cfg.tokenizer, cfg.batch_size, cfg.lr, cfg.schedule) == ("text", "char", 12, 1e-3, "cosine")
    assert (cfg.total_steps, cfg.warmup_steps, cfg.weight_decay, cfg.grad_clip, cfg.dtype) == (3, 1, 0.1, 1.0,
                                                                                               "float32")
    c = ck.model.config
    assert (c.n_embd, c.n_head, c.n_layer, c.block_size, c.tie_embeddings) == (16, 4, 1, 16, True)
    assert "lm_head" not in ck.model.params and ck.step == 3 and math.isfinite(ck.model.params["wte"].sum())


def test_unknown_preset_is_a_one_line_usage_error(tmp_path: Path):
    r = run(["train", "--preset", "fastest", "--out", "r", *QUIET], tmp_path)
    line = error_line(r, 2)  # (argparse's wording; whether it quotes the choices depends on the Python version)
    assert line.startswith("blasgpt train: error: argument --preset: invalid choice: 'fastest' (choose from ")
    assert all(name in line for name in PRESETS)
    assert list(tmp_path.iterdir()) == []


def test_resume_with_a_preset_is_refused(tmp_path: Path):
    ok(run(["train", "--steps", "2", "--out", "r", *QUIET], tmp_path))
    before = sorted(p.name for p in (tmp_path / "r").iterdir())
    r = run(["train", "--resume", "r/ckpt.safetensors", "--steps", "4", "--preset", "fast-text", *QUIET], tmp_path)
    assert error_line(r, 2) == ("blasgpt train: error: --preset cannot change when resuming; they come from the "
                                "checkpoint")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == before


def test_train_help_lists_each_preset_on_one_line(tmp_path: Path):
    out = ok(run(["train", "--help"], tmp_path)).stdout.splitlines()
    for p in PRESETS.values():
        assert f"  {p.name}: {p.summary}" in out
