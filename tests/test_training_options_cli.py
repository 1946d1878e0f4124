"""The training options as run settings (docs/TRAINING_OPTIONS.md): TrainConfig's fields, fit()/train() passing them
to the model, and ``blasgpt train --weight-decay --grad-clip --grad-accum --dropout --tie-embeddings`` with a resume
that takes them from the checkpoint and continues bit-exactly. (Bad values: tests/test_bad_inputs.py.)"""

from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from blasgpt.train_config import TrainConfig
from conftest import blasgpt_cli
from test_text_cli import QUIET, SMALL, ok, same_state, write_text

OPTIONS = {"weight_decay": 0.1, "grad_clip": 0.5, "grad_accum": 2, "dropout": 0.1}
FLAGS = ["--weight-decay", "0.1", "--grad-clip", "0.5", "--grad-accum", "2", "--dropout", "0.1", "--tie-embeddings"]


def test_train_config_records_the_options_and_old_checkpoints_read_as_off():
    cfg = TrainConfig(total_steps=20, **OPTIONS)
    assert TrainConfig.from_checkpoint(cfg.to_dict(), 20) == cfg
    old = TrainConfig.from_checkpoint({"seed": 1, "batch_size": 2, "lr": 0.1}, 50)
    assert (old.weight_decay, old.grad_clip, old.grad_accum, old.dropout) == (0.0, None, 1, 0.0)
    assert TrainConfig() == TrainConfig(weight_decay=0.0, grad_clip=None, grad_accum=1, dropout=0.0)


@pytest.mark.parametrize("kwargs, message", [
    ({"weight_decay": -0.1}, "weight_decay must be a finite number >= 0, got -0.1"),
    ({"weight_decay": float("nan")}, "weight_decay must be a finite number >= 0, got nan"),
    ({"grad_clip": 0.0}, "grad_clip must be a finite number > 0, got 0.0"),
    ({"grad_clip": float("inf")}, "grad_clip must be a finite number > 0, got inf"),
    ({"grad_accum": 0}, "grad_accum must be an integer >= 1, got 0"),
    ({"dropout": 1.0}, "dropout must be a number in [0, 1), got 1.0"),
    ({"dropout": True}, "dropout must be a number in [0, 1), got True"),
])
def test_bad_options_are_refused(kwargs, message):
    with pytest.raises(ValueError) as e:
        TrainConfig(**kwargs)
    assert str(e.value) == message


@pytest.mark.parametrize("threads", (1, 2))
def test_grad_accum_k_of_batch_b_is_the_batch_of_k_times_b(threads):
    """train(grad_accum=K, batch_size=B) makes the updates of batch_size K·B (same sequences; the sums differ only
    in the order of additions), with clipping, decay and dropout on."""
    docs = blasgpt.load_docs()[:200]
    shuffled, tok, micro = blasgpt.microgpt_start(docs, n_embd=8, n_head=2)
    _, _, whole = blasgpt.microgpt_start(docs, n_embd=8, n_head=2)
    micro.threads = whole.threads = threads
    opts = {"weight_decay": 0.1, "grad_clip": 0.5, "dropout": 0.1, "window_seed": 3, "log": lambda _: None}
    a = blasgpt.train(micro, tok, shuffled, steps=6, batch_size=2, grad_accum=3, **opts)
    b = blasgpt.train(whole, tok, shuffled, steps=6, batch_size=6, **opts)
    assert a.docs == b.docs == 36
    np.testing.assert_allclose(a.losses, b.losses, rtol=1e-12)
    np.testing.assert_allclose(micro.flat_params, whole.flat_params, rtol=0, atol=1e-12)


def test_train_without_options_is_unchanged_and_with_them_differs():
    """The options' defaults are the plain run, bit for bit; each option on changes the trajectory."""
    docs = blasgpt.load_docs()[:100]
    runs = {}
    for name, kw in [("plain", {}), ("defaults", {"weight_decay": 0.0, "grad_clip": None, "grad_accum": 1,
                                                  "dropout": 0.0}),
                     ("weight_decay", {"weight_decay": 0.5}), ("grad_clip", {"grad_clip": 0.05}),
                     ("dropout", {"dropout": 0.2})]:
        shuffled, tok, model = blasgpt.microgpt_start(docs)
        blasgpt.train(model, tok, shuffled, steps=5, batch_size=2, log=lambda _: None, **kw)
        runs[name] = model.flat_params.copy()
    assert np.array_equal(runs["plain"], runs["defaults"])
    for name in ("weight_decay", "grad_clip", "dropout"):
        assert not np.allclose(runs[name], runs["plain"], rtol=0, atol=1e-9), name


@pytest.mark.parametrize("mode, threads", [("lines", "1"), ("text", "2")])
def test_cli_trains_with_every_option_and_resumes_bit_exactly(tmp_path, mode, threads):
    """All options on, a checkpoint every 4 steps; resuming from the first lands on the uninterrupted run's
    parameters and Adam moments bit for bit (float64), taking every option from the checkpoint."""
    write_text(tmp_path / "t.txt", 2, 60)
    common = ["train", "--data", "t.txt", "--data-mode", mode, *SMALL, "--batch-size", "3", "--threads", threads,
              *QUIET]
    ok(blasgpt_cli([*common, *FLAGS, "--steps", "12", "--checkpoint-every", "4", "--keep-checkpoints", "5",
                    "--out", "full"], cwd=tmp_path))
    r = ok(blasgpt_cli(["train", "--resume", "full/ckpt-4.safetensors", "--out", "resumed", "--threads", threads,
                        *QUIET], cwd=tmp_path))
    assert "resuming full/ckpt-4.safetensors at step 4 of 12" in r.stdout
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors")
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors")
    assert full.model.step == 12 and full.model.dtype == np.float64
    assert full.model.config.tie_embeddings and "lm_head" not in full.model.params
    assert {k: resumed.extra[k] for k in OPTIONS} == OPTIONS  # so a further resume keeps them too
    assert same_state(resumed.model, full.model)
    ok(blasgpt_cli([*common, "--steps", "12", "--out", "plain"], cwd=tmp_path))
    plain = blasgpt.load_checkpoint(tmp_path / "plain" / "ckpt.safetensors")
    assert plain.extra["grad_accum"] == 1 and not plain.model.config.tie_embeddings
    assert plain.model.num_params > full.model.num_params  # lm_head


def test_cli_help_names_the_options(tmp_path):
    r = ok(blasgpt_cli(["train", "--help"], cwd=tmp_path))
    for flag in ("--weight-decay W", "--grad-clip G", "--grad-accum K", "--dropout P", "--tie-embeddings"):
        assert flag in r.stdout, flag
