"""Long-running use: held-out evaluation, metrics, plots, rotating checkpoints that survive kill -9, SIGTERM and
bit-exact resume from periodic checkpoints."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.train import evaluate, split_validation
from conftest import blasgpt_cli, interrupt_training, make_setup



@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    p = tmp_path / "words.txt"
    p.write_text("\n".join(f"{a}{b}{c}" for a in "abcde" for b in "aeiou" for c in "lmnrs") + "\n")
    return p


def test_train_reads_the_documents_of_a_train_step_loop():
    """train() packs only the documents a run reads (from model.step on, cycling): runs that start mid-corpus, wrap
    around it or read less than all of it give exactly the losses of a train_step loop over those documents."""
    model, tok, docs = make_setup(62, 8, 2, 1, 6, n_docs=7)
    loop = blasgpt.Model(model.config, backend=model.backend)
    loop.flat_params[...] = model.flat_params
    total, s = 1 + 2 + 5, 0
    for steps, batch in ((1, 2), (2, 3), (5, 4)):  # 2 of 7 documents; from 2 on, 6 of them; from 8 on, wrapping
        got = blasgpt.train(model, tok, docs, steps=steps, batch_size=batch, schedule_steps=total).losses
        want = [loop.train_step(tok.batch([docs[(k * batch + i) % len(docs)] for i in range(batch)]),
                                blasgpt.lr_at(k, 0.01, total)) for k in range(s, s + steps)]
        assert got == want
        s += steps
    np.testing.assert_array_equal(model.flat_params, loop.flat_params)


def test_eval_leaves_gradients_and_adam_alone():
    model, tok, docs = make_setup(61, 8, 2, 1, 6)
    blasgpt.train(model, tok, docs, steps=3, batch_size=2)
    state = [a.copy() for a in (model.flat_params, model.flat_grads, model.adam_m, model.adam_v)]
    step = model.step
    val = evaluate(model, tok.batch(docs))
    assert np.isfinite(val) and model.step == step
    for before, now in zip(state, (model.flat_params, model.flat_grads, model.adam_m, model.adam_v)):
        np.testing.assert_array_equal(before, now)


def test_validation_split_is_the_tail_and_keeps_microgpts_order():
    docs = [f"d{i}" for i in range(10)]
    train_docs, val_docs = split_validation(docs, 0.3)
    assert train_docs == docs[:7] and val_docs == docs[7:]
    assert split_validation(docs, 0.0) == (docs, [])
    with pytest.raises(ValueError, match="must be in \\[0, 1\\)"):
        split_validation(docs, 1.0)


def test_metrics_checkpoints_and_plot(tmp_path, corpus):
    r = blasgpt_cli(["train", "--data", str(corpus), "--steps", "50", "--batch-size", "4", "--out", "run", "--samples",
                     "0", "--log-every", "10", "--eval-every", "20", "--checkpoint-every", "10", "--keep-checkpoints",
                     "2"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    rundir = tmp_path / "run"
    assert sorted(p.name for p in rundir.glob("ckpt*.safetensors")) == [
        "ckpt-40.safetensors", "ckpt-50.safetensors", "ckpt.safetensors"]
    assert blasgpt.load_checkpoint(rundir / "ckpt.safetensors").step == 50
    rows = [json.loads(line) for line in (rundir / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [10, 20, 30, 40, 50]
    assert [row["val_loss"] is not None for row in rows] == [False, True, False, True, True]
    assert all(set(row) == {"step", "train_loss", "val_loss", "lr", "docs_per_s", "elapsed", "val_nats_per_char",
                            "val_bits_per_char"} for row in rows)
    assert all((row["val_nats_per_char"] is None) == (row["val_loss"] is None) for row in rows)
    assert rows[0]["lr"] > rows[-1]["lr"] > 0
    assert "val" in r.stdout
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install .[plot]")
    r = blasgpt_cli(["plot", "run"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    png = (rundir / "loss.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.jsonl").write_text('{"step": 1, "train_loss": 3.0, "val_loss": null}\n')
    code = ("import sys; sys.modules['matplotlib'] = None; from blasgpt.cli import main; "
            "sys.exit(main(['plot', 'run']))")
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "pip install 'blasgpt[plot]'" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "loss.png").exists()


ROW = '{"step": %d, "train_loss": 3.0, "val_loss": null}\n'


def test_plot_skips_a_damaged_line_with_a_warning(tmp_path):
    """The last line of a run killed mid-write is cut short: plot used to refuse the whole file. Now it draws the
    other rows and names the line it skipped in a one-line warning (several damaged lines: one line listing them)."""
    pytest.importorskip("matplotlib", reason="matplotlib not installed: pip install .[plot]")
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(ROW % 1 + ROW % 2 + '{"step": 3, "train_lo')
    r = blasgpt_cli(["plot", "run"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "blasgpt plot: warning: run/metrics.jsonl:3: skipped a damaged line (not a JSON line)\n"
    assert r.stdout == "wrote run/loss.png\n" and (run / "loss.png").read_bytes()[:4] == b"\x89PNG"
    (run / "metrics.jsonl").write_text(ROW % 1 + "[1, 2]\n" + ROW % 2 + '{"step": 3}\n' + ROW % 4 + '{"st')
    r = blasgpt_cli(["plot", "run"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr == "blasgpt plot: warning: run/metrics.jsonl: skipped 3 damaged lines (lines 2, 4, 6)\n"


def test_resume_from_a_periodic_checkpoint_is_bit_exact(tmp_path, corpus):
    common = ["--data", str(corpus), "--batch-size", "3", "--steps", "60", "--samples", "0", "--log-every", "0"]
    assert blasgpt_cli(["train", *common, "--out", "full"], cwd=tmp_path).returncode == 0
    r = blasgpt_cli(["train", *common, "--out", "part", "--checkpoint-every", "20", "--keep-checkpoints", "5"],
                     cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    r = blasgpt_cli(["train", "--data", str(corpus), "--resume", "part/ckpt-20.safetensors", "--out", "resumed",
                     "--samples", "0", "--log-every", "0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    full = blasgpt.load_checkpoint(tmp_path / "full" / "ckpt.safetensors").model
    resumed = blasgpt.load_checkpoint(tmp_path / "resumed" / "ckpt.safetensors").model
    assert resumed.step == full.step == 60
    for a, b in ((resumed.flat_params, full.flat_params), (resumed.adam_m, full.adam_m),
                 (resumed.adam_v, full.adam_v)):
        np.testing.assert_array_equal(a, b)


def test_resume_refuses_different_data(tmp_path, corpus):
    r = blasgpt_cli(["train", "--data", str(corpus), "--steps", "5", "--out", "run", "--samples", "0"], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().replace("aal", "aam"))
    r = blasgpt_cli(["train", "--data", str(other), "--resume", "run/ckpt.safetensors", "--samples", "0"], cwd=tmp_path)
    assert r.returncode == 1 and "data differs from the run being resumed" in r.stderr


def test_sigterm_saves_a_checkpoint_and_exits_130(tmp_path, corpus):
    r = interrupt_training(["--data", str(corpus), "--steps", "200000", "--batch-size", "4", "--out", "run",
                            "--samples", "0", "--log-every", "1000"], tmp_path, signal.SIGTERM)
    assert r.returncode == 130, r.stderr
    ck = blasgpt.load_checkpoint(tmp_path / "run" / "ckpt.safetensors")
    assert 0 < ck.step < 200000


SAVER = """
import sys, numpy as np, blasgpt
from blasgpt.train import save_rotating
from pathlib import Path
cfg = blasgpt.Config(vocab_size=30, n_embd=256, n_head=4, n_layer=2, block_size=16)
model = blasgpt.Model(cfg, init=False)
tok = blasgpt.Tokenizer(sorted("abcdefghijklmnopqrstuvwxyz.,;"))
out = Path(sys.argv[1])
i = 0
while True:
    i += 1
    model.flat_params[...] = i
    model.step = i
    save_rotating(model, tok, out, 2, {"i": i})
    print(i, flush=True)
"""


def test_kill_9_mid_save_leaves_a_readable_checkpoint(tmp_path):
    """A real process saving ~13 MB checkpoints in a loop is killed with SIGKILL at arbitrary moments; the
    latest checkpoint must always load, whole and self-consistent."""
    out = tmp_path / "run"
    script = tmp_path / "saver.py"
    script.write_text(SAVER)
    rng = np.random.default_rng(0)
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip(), "the saver died before its first save"
        time.sleep(float(rng.uniform(0.0, 0.15)))
        proc.kill()
        proc.wait(timeout=60)
        ck = blasgpt.load_checkpoint(out / "ckpt.safetensors")  # checksum verified inside
        assert ck.step >= 1 and np.all(ck.model.flat_params == ck.extra["i"])
    # the next run in this directory (continuing it: the directory holds a run) sweeps away what a killed save left
    model, tok, docs = make_setup(62, 8, 2, 1, 6)
    blasgpt.train(model, tok, docs, steps=1, out_dir=out, resume=True)
    assert not list(out.glob(".*.tmp"))
