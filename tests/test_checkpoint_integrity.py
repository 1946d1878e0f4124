"""What a checkpoint can be trusted with: a changed byte anywhere (header metadata or tensors) is refused by the
loader and every command; format-1 files (no metadata checksum) still load, with a warning; ``model.params`` cannot
be rebound away from the buffer that forward and save use; a run's data file is found from any directory."""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt.checkpoint import CheckpointError, CheckpointWarning
from conftest import blasgpt_cli, rewrite_checkpoint

NAMES = ["Kate", "Kim", "anna", "bob", "karl", "moe", "sue", "tom", "Kai", "lee", "ida", "ben"]  # a K, no J
SMALL = ["--n-embd", "8", "--n-head", "2", "--block-size", "8", "--samples", "0", "--log-every", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with t.txt and run/ckpt.safetensors: 20 steps of a small model trained on it at lr 0.01."""
    d = tmp_path_factory.mktemp("run")
    (d / "t.txt").write_text("\n".join(NAMES) + "\n")
    r = blasgpt_cli(["train", "--data", "t.txt", "--steps", "20", "--lr", "0.01", *SMALL, "--out", "run"], cwd=d)
    assert r.returncode == 0, r.stderr
    return d


def header(raw: bytes) -> tuple[int, int]:
    """(start, end) of a safetensors file's JSON header, without its padding."""
    n = struct.unpack("<Q", raw[:8])[0]
    return 8, 8 + len(raw[8:8 + n].rstrip(b" "))


def flip(raw: bytes, pattern: bytes, new: bytes) -> bytes:
    """``raw`` with the one byte that ``pattern``'s group matches, at its one match in the header, set to ``new``."""
    start, end = header(raw)
    found = list(re.finditer(pattern, raw[start:end]))
    assert len(found) == 1 and len(found[0].group(1)) == 1 and found[0].group(1) != new, (pattern, found)
    i = start + found[0].start(1)
    return raw[:i] + new + raw[i + 1:]


def one_error_line(r, command: str, path: str, problem: str) -> str:
    assert r.returncode == 1, f"exit {r.returncode}; stdout {r.stdout!r}; stderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr and not r.stdout.strip(), r.stdout + r.stderr
    assert r.stderr.splitlines() == [f"blasgpt {command}: error: {path}: {problem}: the file is corrupted"], r.stderr
    return r.stderr.strip()


# -- a changed byte anywhere is refused ---------------------------------------------------------------------------

# one byte of the header that leaves valid JSON with the same keys: what a corrupted disk block or a careless edit
# does; before metadata checksums each of these loaded (a "K" sampled as "J", a resumed run at lr 0.05)
HEADER_FLIPS = {
    "vocab": (rb'\[\\"(K)\\", ', b"J"),
    "lr": (rb'\\"lr\\": 0\.0(1)', b"5"),
    "config": (rb'\\"n_head\\": (2)', b"1"),
    "step": (rb'"step":"2(0)"', b"1"),
    "gemm_plan": (rb'\\"doc_len\\": ([0-8])', b"9"),
    "format_version": (rb'"format_version":"(2)"', b"1"),
}


@pytest.mark.parametrize("what", [*HEADER_FLIPS, "tensor"])
def test_a_flipped_byte_is_refused_by_every_command(run_dir: Path, what: str, tmp_path: Path) -> None:
    raw = (run_dir / "run" / "ckpt.safetensors").read_bytes()
    if what == "tensor":
        damaged, problem = raw[:-3] + bytes([raw[-3] ^ 0x10]) + raw[-2:], "checksum mismatch in its tensors"
    else:
        if what == "gemm_plan" and b"gemm_plan" not in raw:
            pytest.skip("a forced gemm backend keeps no plan")
        damaged, problem = flip(raw, *HEADER_FLIPS[what]), "checksum mismatch in its metadata"
    bad = run_dir / f"bad-{what}.safetensors"
    bad.write_bytes(damaged)
    with pytest.raises(CheckpointError) as e:
        blasgpt.load_checkpoint(bad)
    assert str(e.value) == f"{bad}: {problem}: the file is corrupted"
    name = bad.name
    commands = {"sample": ["--checkpoint", name, "--num", "2"], "eval": ["--checkpoint", name],
                "train": ["--resume", name, "--steps", "30", *SMALL[-4:], "--out", str(tmp_path / "o")]}
    procs = {c: subprocess.Popen([sys.executable, "-m", "blasgpt", c, *args], cwd=run_dir, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True) for c, args in commands.items()}  # (at once)
    for command, proc in procs.items():
        out, err = proc.communicate(timeout=300)
        one_error_line(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), command, name, problem)
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_any_flipped_header_byte_is_refused(run_dir: Path, tmp_path: Path) -> None:
    """Bytes all over the header (its length, JSON syntax, tensor entries, metadata keys and values, the checksums):
    each flipped is refused with a one-line CheckpointError naming the file — whether the header still parses
    or not —, never loaded, never another exception."""
    raw = (run_dir / "run" / "ckpt.safetensors").read_bytes()
    _, end = header(raw)
    bad = tmp_path / "bad.safetensors"
    problems = set()
    for i in [*range(0, 8), *range(8, end, 41), end - 1]:
        bad.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1:])
        with pytest.raises(CheckpointError) as e:
            blasgpt.load_checkpoint(bad)
        message = str(e.value)
        assert message.startswith(f"{bad}: ") and "\n" not in message, (i, message)
        problems.add(message.split(": ")[1])
    assert {"checksum mismatch in its metadata", "not a readable safetensors file (SafetensorError"} <= problems


def test_a_checkpoint_without_its_metadata_checksum_is_refused(run_dir: Path, tmp_path: Path) -> None:
    bad = rewrite_checkpoint(run_dir / "run" / "ckpt.safetensors", tmp_path / "c.safetensors", {},
                             drop=["meta_checksum"])
    with pytest.raises(CheckpointError, match="its metadata checksum is missing: the file is corrupted"):
        blasgpt.load_checkpoint(bad)


# -- format 1 (before metadata checksums) -------------------------------------------------------------------------

def test_a_format_1_checkpoint_loads_with_one_warning(run_dir: Path, tmp_path: Path) -> None:
    """A checkpoint as blasgpt wrote it before metadata checksums (format_version 1, no meta_checksum) loads the
    same model, with a CheckpointWarning from the API and one warning line from each command, which work as
    before; a run resumed from it writes the current format; a flipped tensor byte is still refused."""
    path = run_dir / "run" / "ckpt.safetensors"
    old = rewrite_checkpoint(path, run_dir / "old.safetensors", {"format_version": "1"}, drop=["meta_checksum"])
    with pytest.warns(CheckpointWarning, match=f"^{old}: predates metadata checksums") as caught:
        ck = blasgpt.load_checkpoint(old)
    assert len(caught) == 1
    new = blasgpt.load_checkpoint(path)
    np.testing.assert_array_equal(ck.model.flat_params, new.model.flat_params)
    assert ck.step == new.step and ck.extra == new.extra and ck.tokenizer == new.tokenizer
    warning = ("blasgpt {}: warning: old.safetensors: predates metadata checksums (format version 1), so a change "
               "to its vocabulary, config or run settings would go unnoticed; checkpoints saved from it have them")
    for command, args in [("sample", ["--num", "2"]), ("eval", []),
                          ("train", ["--steps", "30", *SMALL[-4:], "--out", str(tmp_path / "o")])]:
        flag = "--resume" if command == "train" else "--checkpoint"
        r = blasgpt_cli([command, flag, "old.safetensors", *args], cwd=run_dir)
        assert r.returncode == 0, r.stderr
        assert [line for line in r.stderr.splitlines() if "warning" in line] == [warning.format(command)], r.stderr
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the resumed run's checkpoint has a metadata checksum: no warning
        assert blasgpt.load_checkpoint(tmp_path / "o" / "ckpt.safetensors").step == 30
    raw = old.read_bytes()  # format 1's checksum covers the tensors: a flipped tensor byte is refused as before
    old.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0x01]))
    with pytest.raises(CheckpointError, match="checksum mismatch in its tensors"):
        blasgpt.load_checkpoint(old)


# -- model.params: the live buffer --------------------------------------------------------------------------------

def test_params_cannot_be_rebound_and_in_place_writes_reach_forward_and_save(tmp_path: Path) -> None:
    """Rebinding a name (``model.params["wte"] = w``, which used to be accepted: forward kept the old weights and
    save wrote the new array, or a file that could not be loaded) raises TypeError and changes nothing; writing
    in place is what forward computes with and what a checkpoint holds."""
    cfg = blasgpt.Config(vocab_size=7, n_embd=8, n_head=2, n_layer=1, block_size=6)
    model = blasgpt.Model(cfg, seed=3)
    before, logits = model.flat_params.copy(), model.forward([0, 1, 2])
    for mapping in ("params", "grads"):
        views = getattr(model, mapping)
        with pytest.raises(TypeError, match=rf"model\.{mapping} is read-only.*model\.{mapping}\['wte'\]\[\.\.\.\] ="):
            views["wte"] = np.zeros((7, 8))
        with pytest.raises(TypeError, match=rf"model\.{mapping} is read-only"):
            views["wte"] = np.zeros((3, 3))  # (a wrong shape used to save a checkpoint that could not be loaded)
        with pytest.raises(TypeError, match=rf"model\.{mapping} is read-only"):
            del views["lm_head"]
        with pytest.raises(AttributeError):
            setattr(model, mapping, {})
        assert list(views) == [name for name, _, _ in model.param_table]
    np.testing.assert_array_equal(model.flat_params, before)
    np.testing.assert_array_equal(model.forward([0, 1, 2]), logits)

    w = np.random.default_rng(0).normal(0.0, 0.5, (7, 8))
    model.params["wte"][...] = w
    assert np.shares_memory(model.params["wte"], model.flat_params)
    changed = model.forward([0, 1, 2])
    assert not np.array_equal(changed, logits)
    back = blasgpt.Model.load(model.save(tmp_path / "c.safetensors"), backend=model.backend)
    np.testing.assert_array_equal(back.params["wte"], w)
    np.testing.assert_array_equal(back.flat_params, model.flat_params)
    np.testing.assert_array_equal(back.forward([0, 1, 2]), changed)


# -- the run's data file, from any directory ----------------------------------------------------------------------

def test_eval_and_resume_find_the_data_from_another_directory(run_dir: Path, tmp_path: Path) -> None:
    """The checkpoint records the absolute path of ``--data t.txt``, so eval and --resume from another directory
    read the same file; messages show it relative to the working directory when that is shorter."""
    ck = blasgpt.load_checkpoint(run_dir / "run" / "ckpt.safetensors")
    assert ck.extra["data"] == str((run_dir / "t.txt").resolve())
    elsewhere = tmp_path / "b"
    elsewhere.mkdir()
    ckpt = str(run_dir / "run" / "ckpt.safetensors")
    shown = os.path.relpath(ck.extra["data"], elsewhere)  # ../../<run dir>/t.txt
    shown = shown if len(shown) < len(ck.extra["data"]) else ck.extra["data"]
    r = blasgpt_cli(["eval", "--checkpoint", ckpt, "--json"], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["data"] == f"{shown} (validation split)"
    here = json.loads(blasgpt_cli(["eval", "--checkpoint", "run/ckpt.safetensors", "--json"], cwd=run_dir).stdout)
    assert here["data"] == "t.txt (validation split)" and here["loss"] == json.loads(r.stdout)["loss"]
    r = blasgpt_cli(["train", "--resume", ckpt, "--steps", "25", *SMALL[-4:], "--out", "resumed"], cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert f"| data {shown}: " in r.stdout
    assert blasgpt.load_checkpoint(elsewhere / "resumed" / "ckpt.safetensors").extra["data"] == ck.extra["data"]


def test_a_checkpoint_with_a_relative_data_path_works_as_before(run_dir: Path, tmp_path: Path) -> None:
    """Checkpoints written before data paths were absolute hold --data as typed: from the directory it was typed
    in they evaluate and resume as they did (and the resumed run records the absolute path)."""
    path = run_dir / "run" / "ckpt.safetensors"
    extra = {**blasgpt.load_checkpoint(path).extra, "data": "t.txt"}
    rewrite_checkpoint(path, run_dir / "relative.safetensors", {"extra": json.dumps(extra, sort_keys=True)})
    r = blasgpt_cli(["eval", "--checkpoint", "relative.safetensors"], cwd=run_dir)
    assert r.returncode == 0 and r.stdout.startswith("t.txt (validation split): "), r.stdout + r.stderr
    r = blasgpt_cli(["train", "--resume", "relative.safetensors", "--steps", "25", *SMALL[-4:],
                     "--out", str(tmp_path / "o")], cwd=run_dir)
    assert r.returncode == 0 and "| data t.txt: " in r.stdout, r.stdout + r.stderr
    assert blasgpt.load_checkpoint(tmp_path / "o" / "ckpt.safetensors").extra["data"] == str(
        (run_dir / "t.txt").resolve())
