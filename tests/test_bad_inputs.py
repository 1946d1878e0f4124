"""Bad input of every kind, from the command line (real ``python -m blasgpt`` subprocesses) and the Python API.

Every command-line case asserts the exact exit code (2: usage error, a bad flag value or combination; 1: a data,
file, IO or model error), that stderr is one ``error:`` line (for usage errors, followed at most by a hint line
pointing to --help; never argparse's usage block) holding a phrase that says what is wrong, that there is no
traceback, and that nothing was left behind: no new file or directory under the working directory except the ones
the case expects, and no ``*.tmp`` anywhere.
Every API case asserts the exception type and its message.

175 cases, 113 command line and 62 API (test_cli_bad_input unless named):
  data file    missing; empty; whitespace-only; NUL bytes; not UTF-8; a directory; a sparse 1 GiB + 1 byte file
               (test_cli_refuses_a_file_over_1_gib_without_reading_it: refused at once under a 1 GiB address-space
               limit); exactly 1 GiB (test_cli_refuses_exactly_1_gib); an endless character device
               (test_cli_refuses_a_character_device); one single character (test_single_character_corpus: it
               trains, and samples only that character)
  sizes        --n-embd 0, 1.5 and 100000; --n-head -1 and 32 (> n_embd); --n-layer 0; --block-size 0;
               --batch-size 0; --steps -5; --n-head 4 with --n-embd 10 (does not divide)
  train flags  --lr nan, -0.1, inf, abc; --lr 1e300 (training diverges: exit 1, no checkpoint); --warmup-steps -1
               and as many as --steps; --lr-schedule step; --weight-decay -1; --grad-clip 0; --dropout 1 and nan;
               --grad-accum 0;
               --val-fraction 1.0, -0.5; --temperature 0, -2; unknown subcommand; no subcommand
  output       --out under a regular file; --out under /proc/version; --out that is a regular file; disk full
               while writing the checkpoint (test_cli_disk_full_*: RLIMIT_FSIZE, EFBIG); --out that holds a run
               (checkpoint + metrics; metrics only); --overwrite of the run being resumed; --out locked by another
               live process (test_cli_refuses_a_run_directory_in_use)
  memory       --n-embd 4096 --n-layer 64 --n-head 16 (384 GiB); --batch-size 100000000000; --threads 256 at d2048;
               a 2.4 GiB batch under a 1 GiB address-space limit (test_cli_refuses_a_run_over_the_address_space_limit)
  --resume     missing file; a directory; random bytes; truncated checkpoint; foreign safetensors file; checkpoint
               without a vocabulary; changed --n-embd; different --data; --steps before the checkpoint's step; another
               --lr-schedule; --dropout (the options come from the checkpoint)
  sample       prompt outside the vocabulary; --temperature 0, -1; --top-k vocab + 1, 0; prompt as long as
               block_size; --checkpoint that is a directory; checkpoint without a vocabulary
  plot         directory without metrics.jsonl; metrics.jsonl whose only line is truncated, a JSON array, a row
               missing train_loss, or bytes that are not UTF-8 (no row to plot)
  text mode    train: a text shorter than block_size + 1; a validation split of 0 and of 1 character; an empty
               file; NUL bytes; --data-mode words; resuming a text checkpoint in lines mode and a lines one in text
               mode; resuming with another text. eval: a character outside the vocabulary (text and lines
               checkpoints) and a 1-character file (data errors: exit 1); a missing --data file; a run without
               validation data; a text changed since training; a missing checkpoint. sample: a prompt outside the
               vocabulary or with undecodable bytes; --length -1 and 10**8; --num 70000; --num 65536 with --length
               2**24; --length > block_size on a lines checkpoint
  tokenizer    --vocab-size 256 and 0; --vocab-size more than the text (and the documents) allow (with the
               tokenizers package); --tokenizer words; --vocab-size with the char tokenizer (named and default);
               resuming a char checkpoint with --tokenizer bpe, a BPE one with another --vocab-size or --tokenizer
               char; a prompt with undecodable bytes for a BPE checkpoint
  memory       a model too large under a 1 GiB address-space limit (test_cli_out_of_memory_is_one_line); small
               files in both modes train under that limit (test_cli_small_data_trains_under_an_address_space_limit)
  Python API   (test_api_bad_input) Model.forward with float tokens, id == vocab, id 2**32 + 1; train_step with a
               tuple; Batch with non-contiguous / int32 / 2-D offsets, 2-D doc_ids, uint8 tokens; loss with a
               token id >= vocab; load_docs of a directory, a missing file, a NUL file; Tokenizer.encode of an
               unseen character; sample with a prompt of block_size characters, top_k 0, temperature nan;
               train() with batch_size 0, steps True, an unseen character; Config with a bool and a float field;
               load_checkpoint of a directory. Text mode: train() on a stream shorter than a window, a 1-token
               validation stream, a validation id >= vocab, documents mixed with a stream (either way),
               window_seed 1.5, a 2-D and a float stream, an id == vocab; evaluate_text of 1 token; window_starts
               of too short a text; TextData.split(1.0); of_windows with 2-D starts; a window start past the end;
               encode_text of an unseen character and of a lone surrogate; load_text of an empty file; generate
               with length -1, 2**24 + 1, 5.0, 2**23 for 3 samples (and -1 with stream=True: refused at the call),
               mode 'words', a prompt over 2**20 characters, a lines prompt of block_size, a prompt outside the
               vocabulary, another tokenizer, num -1, top_k 5, seed 1.5, temperature inf
               load_checkpoint of a directory; Model of 384 GiB; train() with batch_size 10**11. The tokenizer:
               TrainConfig with bpe and vocab_size 256 or none, char with a vocab_size, an unknown kind;
               load_corpus with bpe_vocab_size 256, and with both a tokenizer and bpe_vocab_size

When first written, eleven of these cases exposed defects (a directory taken for a missing checkpoint, tracebacks
from malformed metrics files, a 1 GiB file and /dev/zero read into memory, a disk-full error naming no file, int64
token ids wrapping to int32); the package was fixed and the cases now guard those paths. The text-mode cases
exposed three more in train(): a validation stream with an id >= vocab failed only at the end, after training
had changed the model; document val_docs with a token stream were silently ignored; and a token-stream val_docs
with documents died on numpy's 'truth value of an array is ambiguous'. And three elsewhere: every data file was
read with read(1 GiB), which sets aside 1 GiB at once (failing under an address-space limit); a memory error was a
traceback; `sample --num 65536 --length 16777216` passed the checks and died in std::bad_alloc. A prompt with
undecodable bytes gave Python's codec message about 'utf-32-le'.
"""

from __future__ import annotations

import functools
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pytest

import blasgpt
from blasgpt.bpe import BPETokenizer
from blasgpt.data import TextData, encode_text
from blasgpt.train_config import TrainConfig
from blasgpt.train import evaluate_text, window_starts
from conftest import ONE_BLAS_THREAD, blasgpt_cli
from test_bpe import needs_hf

DOCS = ["anna", "bob", "clara", "dave", "eve", "frank"]  # 12 characters + BOS: vocabulary 13, no 'z'
QUICK = ["--steps", "2", "--samples", "0", "--log-every", "0"]
TRAIN = ["train", "--data", "small.txt", *QUICK, "--out", "run"]
RESUME = ["train", "--data", "small.txt", "--samples", "0", "--log-every", "0", "--out", "resumed", "--resume"]
GiB = 1 << 30
BOOK = ("\n".join(DOCS) + "\n") * 4  # text mode: 120 characters, the vocabulary of small.txt plus a newline
TEXT = ["--data-mode", "text"]
TEXT_TRAIN = ["train", "--data", "book.txt", *TEXT, *QUICK, "--out", "run"]


# -- helpers -------------------------------------------------------------------------------------------------------
run_cli = functools.partial(blasgpt_cli, timeout=60, env=ONE_BLAS_THREAD)


def tree(root: Path) -> set[str]:
    """Every file and directory under root (hidden ones included), relative, '/'-separated."""
    out = set()
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            out.add(Path(dirpath, name).relative_to(root).as_posix())
    return out


def error_line(r: subprocess.CompletedProcess, code: int) -> str:
    """The one error line of a failed command, after checking the exit code and the shape of stderr."""
    assert r.returncode == code, f"exit {r.returncode}, expected {code}; stderr:\n{r.stderr}"
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.splitlines()
    assert "usage:" not in r.stderr, r.stderr
    if code == 2 and len(lines) == 2 and re.fullmatch(r"\(see blasgpt( \w+)? --help\)", lines[1]):  # the hint
        lines = lines[:1]
    assert len(lines) == 1, f"expected one error line, got {len(lines)}:\n{r.stderr}"
    assert lines[0].startswith("blasgpt") and ": error: " in lines[0], lines[0]
    return lines[0]


def assert_left_behind(root: Path, before: set[str], expected: Sequence[str] = ()) -> None:
    after = tree(root)
    assert after - before == set(expected), f"new paths {sorted(after - before)}, expected {sorted(expected)}"
    assert before <= after, f"paths vanished: {sorted(before - after)}"
    assert not [p for p in after if p.endswith(".tmp")], sorted(after)


def sparse_file(path: Path, size: int) -> Path:
    path.touch()
    os.truncate(path, size)
    if path.stat().st_blocks * 512 > 1 << 20:
        path.unlink()
        pytest.skip("this filesystem does not keep sparse files sparse")
    return path


def limit_address_space(limit: int = GiB) -> Callable[[], None]:
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    return apply


# -- fixture files -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Small input files of every kind, built once and copied into each test's working directory."""
    lib = tmp_path_factory.mktemp("library")
    (lib / "small.txt").write_text("\n".join(DOCS) + "\n", encoding="utf-8")
    (lib / "other.txt").write_text("\n".join(DOCS[:-1] + ["frankie"]) + "\n", encoding="utf-8")
    (lib / "one.txt").write_text("a", encoding="utf-8")
    (lib / "empty.txt").write_bytes(b"")
    (lib / "blank.txt").write_bytes(b" \n\t\n  \r\n\n")
    (lib / "nul.bin").write_bytes(b"ab\x00cd\n")
    (lib / "latin1.txt").write_bytes("café\nbob\n".encode("latin-1"))
    (lib / "adir").mkdir()
    r = run_cli(TRAIN, cwd=lib)  # a real checkpoint of a 2-step run on small.txt, made the way a user makes one
    assert r.returncode == 0, r.stderr
    shutil.move(lib / "run" / "ckpt.safetensors", lib / "ckpt.safetensors")
    shutil.rmtree(lib / "run")
    raw = (lib / "ckpt.safetensors").read_bytes()
    (lib / "trunc.safetensors").write_bytes(raw[:-100])
    (lib / "rand.safetensors").write_bytes(np.random.default_rng(0).bytes(5000))
    from safetensors.numpy import save_file

    save_file({"w": np.ones((3, 4), dtype=np.float32)}, str(lib / "foreign.safetensors"))
    no_vocab = blasgpt.Model(blasgpt.Config(vocab_size=len(set("".join(DOCS))) + 1))
    blasgpt.save_checkpoint(lib / "novocab.safetensors", no_vocab)
    (lib / "oldrun").mkdir()  # a run directory: refused as --out unless resumed or overwritten
    shutil.copy(lib / "ckpt.safetensors", lib / "oldrun" / "ckpt.safetensors")
    (lib / "oldrun" / "metrics.jsonl").write_text('{"step": 2, "train_loss": 2.5, "val_loss": null}\n')
    (lib / "book.txt").write_text(BOOK, encoding="utf-8")
    (lib / "other_book.txt").write_text(BOOK.replace("frank", "zelda"), encoding="utf-8")  # a 'z' too
    (lib / "short.txt").write_text("abcdefghi\n", encoding="utf-8")  # 10 characters: no window of 17
    (lib / "zed.txt").write_text("bz\n", encoding="utf-8")
    (lib / "changing.txt").write_text(BOOK, encoding="utf-8")
    for name, data, more in [("text", "book.txt", []), ("text_noval", "book.txt", ["--val-fraction", "0"]),
                             ("changed", "changing.txt", [])]:  # text-mode checkpoints of 2-step runs
        r = run_cli(["train", "--data", data, *TEXT, *QUICK, *more, "--out", "trun"], cwd=lib)
        assert r.returncode == 0, r.stderr
        shutil.move(lib / "trun" / "ckpt.safetensors", lib / f"{name}.safetensors")
        shutil.rmtree(lib / "trun")
    (lib / "changing.txt").write_text(BOOK[::-1], encoding="utf-8")  # the same characters, another text
    # a text-mode BPE checkpoint of book.txt (merges written out: no training library needed), vocabulary 258
    bpe = BPETokenizer([[ord("a"), ord("n")]])
    blasgpt.save_checkpoint(lib / "bpe.safetensors", blasgpt.Model(blasgpt.Config(vocab_size=bpe.vocab_size)), bpe,
                            TrainConfig(data="book.txt", data_mode="text", tokenizer="bpe", vocab_size=258).to_dict())
    (lib / "plot_empty").mkdir()
    for name, content in [
        ("plot_truncated", b'{"step": 2, "train_lo\n'),  # (beside whole rows it is skipped: test_runs.py)
        ("plot_array", b"[1, 2]\n"),
        ("plot_nokey", b'{"step": 1, "val_loss": null}\n'),
        ("plot_latin1", '{"step": 1, "train_loss": 2.5, "note": "café"}\n'.encode("latin-1")),
    ]:
        (lib / name).mkdir()
        (lib / name / "metrics.jsonl").write_bytes(content)
    return lib


@pytest.fixture
def cwd(tmp_path: Path, library: Path) -> Path:
    shutil.copytree(library, tmp_path, dirs_exist_ok=True)
    return tmp_path


# -- the command line ----------------------------------------------------------------------------------------------
CLI_CASES = [
    # data files: exit 1, nothing created (the run directory is made only after the data has loaded)
    pytest.param(["train", "--data", "missing.txt", *QUICK, "--out", "run"], 1,
                 "data file not found: missing.txt", id="data-missing"),
    pytest.param(["train", "--data", "empty.txt", *QUICK, "--out", "run"], 1,
                 "empty.txt holds no documents (it is empty or only whitespace)", id="data-empty"),
    pytest.param(["train", "--data", "blank.txt", *QUICK, "--out", "run"], 1,
                 "blank.txt holds no documents (it is empty or only whitespace)", id="data-whitespace-only"),
    pytest.param(["train", "--data", "nul.bin", *QUICK, "--out", "run"], 1,
                 "nul.bin looks like a binary file (it contains NUL bytes)", id="data-nul-bytes"),
    pytest.param(["train", "--data", "latin1.txt", *QUICK, "--out", "run"], 1,
                 "latin1.txt is not valid UTF-8 (byte 0xe9 at offset 3)", id="data-not-utf8"),
    pytest.param(["train", "--data", "adir", *QUICK, "--out", "run"], 1,
                 "adir is a directory, not a text file", id="data-directory"),
    pytest.param(["train", "--data", "", *QUICK, "--out", "run"], 1,
                 "the data file name is empty: give a text file or one of names, shakespeare", id="data-empty-name"),
    # sizes: exit 2
    pytest.param([*TRAIN, "--n-embd", "0"], 2, "argument --n-embd: must be >= 1, got 0", id="n-embd-0"),
    pytest.param([*TRAIN, "--n-embd", "1.5"], 2, "argument --n-embd: expected a whole number, got '1.5'",
                 id="n-embd-1.5"),
    pytest.param([*TRAIN, "--n-embd", "100000"], 2, "n_embd must be between 1 and 65536, got 100000",
                 id="n-embd-100000"),
    pytest.param([*TRAIN, "--n-head", "-1"], 2, "argument --n-head: must be >= 1, got -1", id="n-head-negative"),
    pytest.param([*TRAIN, "--n-head", "32"], 2, "n_head must be between 1 and 16, got 32", id="n-head-over-n-embd"),
    pytest.param([*TRAIN, "--n-embd", "10", "--n-head", "4"], 2, "n_head (4) must divide n_embd (10)",
                 id="n-head-not-dividing"),
    pytest.param([*TRAIN, "--n-layer", "0"], 2, "argument --n-layer: must be >= 1, got 0", id="n-layer-0"),
    pytest.param([*TRAIN, "--block-size", "0"], 2, "argument --block-size: must be >= 1, got 0", id="block-size-0"),
    pytest.param([*TRAIN, "--batch-size", "0"], 2, "argument --batch-size: must be >= 1, got 0", id="batch-size-0"),
    pytest.param([*TRAIN, "--steps", "-5"], 2, "argument --steps: must be >= 0, got -5", id="steps-negative"),
    # other training flags: exit 2
    pytest.param([*TRAIN, "--lr", "nan"], 2, "--lr must be a finite number >= 0, got nan", id="lr-nan"),
    pytest.param([*TRAIN, "--lr", "-0.1"], 2, "--lr must be a finite number >= 0, got -0.1", id="lr-negative"),
    pytest.param([*TRAIN, "--lr", "inf"], 2, "--lr must be a finite number >= 0, got inf", id="lr-inf"),
    pytest.param([*TRAIN, "--lr", "abc"], 2, "argument --lr: invalid float value: 'abc'", id="lr-abc"),
    pytest.param([*TRAIN, "--warmup-steps", "-1"], 2, "argument --warmup-steps: must be >= 0, got -1",
                 id="warmup-negative"),
    pytest.param([*TRAIN, "--steps", "5", "--warmup-steps", "5"], 2,
                 "--warmup-steps 5 must be fewer than the run's 5 steps", id="warmup-covers-the-run"),
    pytest.param([*TRAIN, "--lr-schedule", "step"], 2, "argument --lr-schedule: invalid choice: 'step'",
                 id="lr-schedule-unknown"),
    pytest.param([*TRAIN, "--weight-decay", "-1"], 2, "--weight-decay must be a finite number >= 0, got -1.0",
                 id="weight-decay-negative"),
    pytest.param([*TRAIN, "--grad-clip", "0"], 2, "--grad-clip must be a finite number > 0, got 0.0",
                 id="grad-clip-0"),
    pytest.param([*TRAIN, "--dropout", "1"], 2, "--dropout must be a number in [0, 1), got 1.0", id="dropout-1"),
    pytest.param([*TRAIN, "--dropout", "nan"], 2, "--dropout must be a number in [0, 1), got nan", id="dropout-nan"),
    pytest.param([*TRAIN, "--grad-accum", "0"], 2, "argument --grad-accum: must be >= 1, got 0", id="grad-accum-0"),
    pytest.param([*TRAIN, "--val-fraction", "1.0"], 2, "--val-fraction must be in [0, 1), got 1.0",
                 id="val-fraction-1"),
    pytest.param([*TRAIN, "--val-fraction", "-0.5"], 2, "--val-fraction must be in [0, 1), got -0.5",
                 id="val-fraction-negative"),
    pytest.param([*TRAIN, "--temperature", "0"], 2, "--temperature must be > 0, got 0.0", id="train-temperature-0"),
    pytest.param([*TRAIN, "--temperature", "-2"], 2, "--temperature must be > 0, got -2.0",
                 id="train-temperature-negative"),
    pytest.param(["frobnicate"], 2, "invalid choice: 'frobnicate'", id="unknown-subcommand"),
    pytest.param([], 2, "the following arguments are required: COMMAND", id="no-subcommand"),
    # the output directory: exit 1, before any training
    pytest.param(["train", "--data", "small.txt", *QUICK, "--out", "small.txt/run"], 1,
                 "Not a directory: 'small.txt/run'", id="out-under-a-file"),
    pytest.param(["train", "--data", "small.txt", *QUICK, "--out", "/proc/version/run"], 1,
                 "Not a directory: '/proc/version/run'", id="out-under-proc"),
    pytest.param(["train", "--data", "small.txt", *QUICK, "--out", "small.txt"], 1,
                 "small.txt is not a directory", id="out-is-a-file"),
    # a run directory that holds a run: exit 2, nothing touched (--resume continues it, --overwrite replaces it)
    pytest.param(["train", "--data", "small.txt", *QUICK, "--out", "oldrun"], 2,
                 "--out oldrun already holds a run (ckpt.safetensors, metrics.jsonl); use --resume "
                 "oldrun/ckpt.safetensors to continue it, or --overwrite to start over (which removes the old run's "
                 "files first)", id="out-holds-a-run"),
    pytest.param(["train", "--data", "small.txt", *QUICK, "--out", "plot_nokey"], 2,
                 "--out plot_nokey already holds a run (metrics.jsonl); use --resume CKPT to continue it, or "
                 "--overwrite to start over", id="out-holds-metrics-only"),
    pytest.param(["train", "--data", "small.txt", *QUICK, "--resume", "oldrun/ckpt.safetensors", "--overwrite"], 2,
                 "--overwrite would remove the run being resumed in oldrun; resume it without --overwrite, or give "
                 "another --out", id="overwrite-the-run-being-resumed"),
    # memory: exit 1, refused before anything is allocated (one line: what it needs, what there is)
    pytest.param([*TRAIN, "--n-embd", "4096", "--n-layer", "64", "--n-head", "16"], 1,
                 "this run needs 384.2 GiB of memory (parameters 96.0 GiB + gradients 96.0 GiB + Adam moments "
                 "192.0 GiB + activations for 1 sequence(s) at once 182.1 MiB), but only ", id="model-too-big"),
    pytest.param([*TRAIN, "--batch-size", "100000000000"], 1,
                 "this run needs 2036.5 TiB of memory (parameters 29.2 KiB + gradients 29.2 KiB + Adam moments "
                 "58.5 KiB + activations for 100,000,000,000 sequence(s) at once 2036.5 TiB), but only ",
                 id="batch-too-big"),
    pytest.param([*TRAIN, "--threads", "256", "--n-embd", "2048", "--n-layer", "8"], 1,
                 "+ 255 more thread gradient(s) 765.2 GiB + activations for 1 sequence(s) at once 12.3 MiB), but only ",
                 id="threads-too-many-for-memory"),
    # --resume: bad checkpoints exit 1, bad flag combinations exit 2; nothing created
    pytest.param([*RESUME, "nothere.safetensors"], 1, "checkpoint not found: nothere.safetensors",
                 id="resume-missing"),
    pytest.param([*RESUME, "adir"], 1, "adir is a directory", id="resume-directory"),
    pytest.param([*RESUME, "rand.safetensors"], 1, "rand.safetensors: not a readable safetensors file",
                 id="resume-random-bytes"),
    pytest.param([*RESUME, "trunc.safetensors"], 1, "trunc.safetensors: not a readable safetensors file",
                 id="resume-truncated"),
    pytest.param([*RESUME, "foreign.safetensors"], 1,
                 "foreign.safetensors: a safetensors file, but not a blasgpt checkpoint", id="resume-foreign"),
    pytest.param([*RESUME, "novocab.safetensors"], 1,
                 "novocab.safetensors: has no vocabulary, so training cannot resume from it", id="resume-no-vocab"),
    pytest.param([*RESUME, "ckpt.safetensors", "--n-embd", "32"], 2,
                 "--n-embd cannot change when resuming; they come from the checkpoint", id="resume-changed-n-embd"),
    pytest.param(["train", "--data", "other.txt", "--samples", "0", "--log-every", "0", "--out", "resumed",
                  "--resume", "ckpt.safetensors"], 1,
                 "ckpt.safetensors: the data differs from the run being resumed", id="resume-different-data"),
    pytest.param([*RESUME, "ckpt.safetensors", "--steps", "1"], 2, "--steps 1 is before the checkpoint's step 2",
                 id="resume-steps-before-checkpoint"),
    pytest.param([*RESUME, "ckpt.safetensors", "--lr-schedule", "cosine"], 2,
                 "--lr-schedule cosine does not match the checkpoint's run (linear); a resumed run keeps its schedule",
                 id="resume-changed-schedule"),
    pytest.param([*RESUME, "ckpt.safetensors", "--dropout", "0.2"], 2,
                 "--dropout cannot change when resuming; they come from the checkpoint", id="resume-changed-dropout"),
    # sample: options that do not fit the model exit 2, unusable checkpoints exit 1
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--prompt", "bz"], 2,
                 "1 character(s) not in the vocabulary: 'z'", id="sample-prompt-outside-vocab"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--temperature", "0"], 2,
                 "temperature must be a finite number > 0, got 0.0", id="sample-temperature-0"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--temperature", "-1"], 2,
                 "temperature must be a finite number > 0, got -1.0", id="sample-temperature-negative"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--top-k", "14"], 2,
                 "top_k must be an integer between 1 and the vocabulary size 13, got 14", id="sample-top-k-over-vocab"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--top-k", "0"], 2,
                 "argument --top-k: must be >= 1, got 0", id="sample-top-k-0"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--prompt", "a" * 16], 2,
                 "prompt has 16 characters; it must be shorter than block_size (16)", id="sample-prompt-too-long"),
    pytest.param(["sample", "--checkpoint", "adir"], 1, "adir is a directory", id="sample-checkpoint-directory"),
    pytest.param(["sample", "--checkpoint", "novocab.safetensors"], 1,
                 "novocab.safetensors: has no vocabulary, so its tokens cannot be turned into text",
                 id="sample-no-vocab"),
    # plot: exit 1, no loss.png and no temp file
    pytest.param(["plot", "plot_empty"], 1, "no metrics.jsonl in plot_empty", id="plot-no-metrics"),
    pytest.param(["plot", "plot_truncated"], 1, "plot_truncated/metrics.jsonl:1: not a JSON line; the file holds no "
                 "metrics row to plot", id="plot-truncated-line"),
    pytest.param(["plot", "plot_array"], 1, "plot_array/metrics.jsonl:1", id="plot-json-array-line"),
    pytest.param(["plot", "plot_nokey"], 1, "plot_nokey/metrics.jsonl:1", id="plot-row-without-train-loss"),
    pytest.param(["plot", "plot_latin1"], 1, "plot_latin1/metrics.jsonl", id="plot-metrics-not-utf8"),
    # text mode (--data-mode text): data that cannot train or be evaluated exits 1, bad flags and prompts exit 2
    pytest.param(["train", "--data", "short.txt", *TEXT, *QUICK, "--out", "run"], 1,
                 "short.txt has 9 characters to train on; text mode needs at least block_size + 1 = 17",
                 id="text-shorter-than-a-window"),
    pytest.param([*TEXT_TRAIN, "--val-fraction", "0.001"], 1,
                 "the validation split (0.001 of 120 characters) is too short for one target", id="text-val-empty"),
    pytest.param([*TEXT_TRAIN, "--val-fraction", "0.01"], 1,
                 "the validation split (0.01 of 120 characters) is too short for one target",
                 id="text-val-one-character"),
    pytest.param(["train", "--data", "empty.txt", *TEXT, *QUICK, "--out", "run"], 1, "empty.txt is empty",
                 id="text-empty-file"),
    pytest.param(["train", "--data", "nul.bin", *TEXT, *QUICK, "--out", "run"], 1,
                 "nul.bin looks like a binary file (it contains NUL bytes), not running text", id="text-nul-bytes"),
    pytest.param([*TRAIN, "--data-mode", "words"], 2, "argument --data-mode: invalid choice: 'words'",
                 id="data-mode-unknown"),
    pytest.param(["train", "--data", "book.txt", "--data-mode", "lines", "--samples", "0", "--log-every", "0",
                  "--out", "resumed", "--resume", "text.safetensors"], 2,
                 "--data-mode lines does not match the checkpoint, which was trained in text mode",
                 id="resume-text-checkpoint-in-lines-mode"),
    pytest.param([*RESUME, "ckpt.safetensors", *TEXT], 2,
                 "--data-mode text does not match the checkpoint, which was trained in lines mode",
                 id="resume-lines-checkpoint-in-text-mode"),
    pytest.param(["train", "--data", "other_book.txt", "--samples", "0", "--log-every", "0", "--out", "resumed",
                  "--resume", "text.safetensors"], 1,
                 "text.safetensors: the data differs from the run being resumed (its text changed)",
                 id="resume-text-other-text"),
    pytest.param(["eval", "--checkpoint", "text.safetensors", "--data", "zed.txt"], 1,
                 "1 character(s) not in the vocabulary: 'z'", id="eval-text-outside-vocab"),
    pytest.param(["eval", "--checkpoint", "ckpt.safetensors", "--data", "zed.txt"], 1,
                 "1 character(s) not in the vocabulary: 'z'", id="eval-lines-outside-vocab"),
    pytest.param(["eval", "--checkpoint", "text.safetensors", "--data", "one.txt"], 1,
                 "a text of 1 token(s) has no target to evaluate", id="eval-text-one-character"),
    pytest.param(["eval", "--checkpoint", "text.safetensors", "--data", "missing.txt"], 1,
                 "data file not found: missing.txt", id="eval-data-missing"),
    pytest.param(["eval", "--checkpoint", "text_noval.safetensors"], 1,
                 "the run held out no validation data (--val-fraction 0); pass --data FILE", id="eval-no-validation"),
    pytest.param(["eval", "--checkpoint", "changed.safetensors"], 1,
                 "changing.txt changed since the run trained on it (its sha256 differs)", id="eval-text-changed"),
    pytest.param(["eval", "--checkpoint", "nothere.safetensors"], 1, "checkpoint not found: nothere.safetensors",
                 id="eval-checkpoint-missing"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--prompt", "zz"], 2,
                 "1 character(s) not in the vocabulary: 'z'", id="sample-text-prompt-outside-vocab"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--prompt", "ab\udcff"], 2,
                 "the text holds '\\udcff' at position 2, a lone surrogate and not a character",
                 id="sample-prompt-undecodable-bytes"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--length", "-1"], 2,
                 "argument --length: must be >= 0, got -1", id="sample-length-negative"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--length", "100000000"], 2,
                 "length must be an integer between 0 and 16777216, got 100000000", id="sample-length-absurd"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--num", "65536", "--length", "16777216"], 2,
                 "num x length is 1,099,511,627,776 characters; one call generates at most 16,777,216",
                 id="sample-num-times-length-absurd"),
    pytest.param(["sample", "--checkpoint", "text.safetensors", "--num", "70000"], 2,
                 "num must be an integer between 0 and 65536, got 70000", id="sample-num-absurd"),
    pytest.param(["sample", "--checkpoint", "ckpt.safetensors", "--length", "17"], 2,
                 "--length 17: ckpt.safetensors was trained in lines mode, so its samples are documents of at most "
                 "block_size (16) characters", id="sample-lines-checkpoint-as-text"),
    # the tokenizer (--tokenizer, --vocab-size): bad flags exit 2, a vocabulary the corpus cannot fill exits 1
    pytest.param([*TEXT_TRAIN, "--tokenizer", "bpe", "--vocab-size", "256"], 2,
                 "--vocab-size 256: a BPE vocabulary holds the 256 bytes and BOS, so it must be at least 257",
                 id="bpe-vocab-size-256"),
    pytest.param([*TEXT_TRAIN, "--tokenizer", "bpe", "--vocab-size", "0"], 2, "argument --vocab-size: must be >= 1",
                 id="bpe-vocab-size-0"),
    pytest.param([*TEXT_TRAIN, "--tokenizer", "bpe", "--vocab-size", "100000"], 1,
                 "the corpus allows a vocabulary of at most", id="bpe-vocab-size-over-the-corpus",
                 marks=needs_hf),
    pytest.param([*TRAIN, "--tokenizer", "bpe", "--vocab-size", "5000"], 1,
                 "the corpus allows a vocabulary of at most", id="bpe-lines-vocab-size-over-the-corpus",
                 marks=needs_hf),
    pytest.param([*TEXT_TRAIN, "--tokenizer", "words"], 2, "argument --tokenizer: invalid choice: 'words'",
                 id="tokenizer-unknown"),
    pytest.param([*TEXT_TRAIN, "--tokenizer", "char", "--vocab-size", "300"], 2,
                 "--vocab-size is for --tokenizer bpe", id="char-with-vocab-size"),
    pytest.param([*TRAIN, "--vocab-size", "300"], 2, "--vocab-size is for --tokenizer bpe",
                 id="default-char-with-vocab-size"),
    pytest.param([*RESUME, "ckpt.safetensors", "--tokenizer", "bpe"], 2,
                 "--tokenizer/--vocab-size do not match the checkpoint, which was trained with --tokenizer char",
                 id="resume-char-checkpoint-as-bpe"),
    pytest.param(["train", "--samples", "0", "--log-every", "0", "--out", "resumed", "--resume", "bpe.safetensors",
                  "--vocab-size", "300"], 2, "do not match the checkpoint, which was trained with --tokenizer bpe "
                 "--vocab-size 258", id="resume-bpe-checkpoint-other-vocab-size"),
    pytest.param(["train", "--samples", "0", "--log-every", "0", "--out", "resumed", "--resume", "bpe.safetensors",
                  "--tokenizer", "char"], 2, "do not match the checkpoint, which was trained with --tokenizer bpe",
                 id="resume-bpe-checkpoint-as-char"),
    pytest.param(["sample", "--checkpoint", "bpe.safetensors", "--prompt", "ab\udcff"], 2,
                 "the text holds '\\udcff' at position 2, a lone surrogate", id="sample-bpe-prompt-undecodable"),
]


@pytest.mark.parametrize("args, code, phrase", CLI_CASES)
def test_cli_bad_input(cwd: Path, args: list[str], code: int, phrase: str) -> None:
    before = tree(cwd)
    r = run_cli(args, cwd)
    assert phrase in error_line(r, code)
    assert_left_behind(cwd, before)


def test_cli_refuses_a_file_over_1_gib_without_reading_it(cwd: Path) -> None:
    """A sparse 1 GiB + 1 byte file (no disk used): refused from its size, at once, in a process that could not
    even hold the file in memory."""
    sparse_file(cwd / "big.txt", GiB + 1)
    before = tree(cwd)
    t0 = time.monotonic()
    r = run_cli(["train", "--data", "big.txt", *QUICK, "--out", "run"], cwd, preexec_fn=limit_address_space())
    assert time.monotonic() - t0 < 30
    assert "big.txt is 1.0 GiB; corpora are read into memory and must be under 1 GiB" in error_line(r, 1)
    assert_left_behind(cwd, before)


def test_cli_refuses_exactly_1_gib(cwd: Path) -> None:
    sparse_file(cwd / "big.txt", GiB)
    before = tree(cwd)
    r = run_cli(["train", "--data", "big.txt", *QUICK, "--out", "run"], cwd, preexec_fn=limit_address_space())
    assert "must be under 1 GiB" in error_line(r, 1)
    assert_left_behind(cwd, before)


def test_cli_refuses_a_character_device(cwd: Path) -> None:
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    before = tree(cwd)
    r = run_cli(["train", "--data", "/dev/zero", *QUICK, "--out", "run"], cwd, preexec_fn=limit_address_space())
    assert "/dev/zero is not a regular file" in error_line(r, 1)
    assert_left_behind(cwd, before)


def test_cli_out_of_memory_is_one_line(cwd: Path) -> None:
    """A model too large for the memory the process may use (d2048 L4 with Adam: about 5 GB, under a 1 GiB
    address-space limit): exit 1, one line saying so, no traceback, no run directory."""
    before = tree(cwd)
    r = run_cli(["train", "--data", "small.txt", *QUICK, "--out", "run", "--n-embd", "2048", "--n-head", "16",
                 "--n-layer", "4"], cwd, preexec_fn=limit_address_space())
    assert "of memory" in error_line(r, 1)  # refused before allocating, or an allocation that failed
    assert_left_behind(cwd, before)


@pytest.mark.parametrize("args", [["--data", "small.txt"], ["--data", "book.txt", *TEXT]], ids=["lines", "text"])
def test_cli_small_data_trains_under_an_address_space_limit(cwd: Path, args: list[str]) -> None:
    """Reading a small data file must not set aside the 1 GiB size cap (read(1 GiB) did, and failed under this
    limit before any training)."""
    r = run_cli(["train", *args, *QUICK, "--out", "run"], cwd, preexec_fn=limit_address_space())
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_cli_refuses_a_run_over_the_address_space_limit(cwd: Path) -> None:
    """A batch whose activations (2.1 GiB) fit in the machine but not under ulimit -v 1 GiB: before, a numpy or
    std::bad_alloc traceback; now the limit is named."""
    before = tree(cwd)
    r = run_cli([*TRAIN, "--batch-size", "100000"], cwd, preexec_fn=limit_address_space())
    assert re.search(r"this run needs 2\.1 GiB of memory \(.*\), but only [\d.]+ MiB is available \(the room left "
                     r"under the 1\.0 GiB address-space limit, ulimit -v\); use smaller sizes or a smaller batch$",
                     error_line(r, 1))
    assert_left_behind(cwd, before)


def test_cli_refuses_a_run_directory_in_use(cwd: Path) -> None:
    """Another live process holds the run directory's lock: exit 1, naming its pid; its lock file stays as it is."""
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from blasgpt import rundir; rundir.acquire(Path('busy')); print('locked', flush=True); "
                               "time.sleep(120)"], cwd=cwd, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        before = tree(cwd)
        r = run_cli(["train", "--data", "small.txt", *QUICK, "--out", "busy"], cwd)
        assert error_line(r, 1) == (f"blasgpt train: error: --out busy is in use by another training run (pid "
                                    f"{holder.pid} on host {socket.gethostname()}, lock busy/train.lock); wait for it "
                                    f"to end, or give another --out")
        assert_left_behind(cwd, before)
        assert (cwd / "busy" / "train.lock").read_text().split()[0] == str(holder.pid)
    finally:
        holder.kill()
        holder.wait()


def test_cli_diverging_training_fails_without_writing_a_checkpoint(cwd: Path) -> None:
    """--lr 1e300 is a valid flag, but the loss becomes NaN: exit 1, one line, and no checkpoint (the run
    directory, made before training on purpose, stays empty)."""
    before = tree(cwd)
    r = run_cli(["train", "--data", "small.txt", "--steps", "5", "--samples", "0", "--log-every", "0",
                 "--out", "run", "--lr", "1e300"], cwd)
    assert "loss became nan at step" in error_line(r, 1)
    assert_left_behind(cwd, before, ["run"])


def _disk_full() -> None:  # in the child: files may grow to 16 KiB; writing past that fails with EFBIG
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (16384, 16384))


def test_cli_disk_full_while_saving_leaves_no_partial_checkpoint(cwd: Path) -> None:
    """The checkpoint (about 100 kB) cannot be written: exit 1, one line, and only the complete metrics.jsonl."""
    before = tree(cwd)
    r = run_cli(["train", "--data", "small.txt", *QUICK, "--out", "run"], cwd, preexec_fn=_disk_full)
    assert "File too large" in error_line(r, 1)
    assert_left_behind(cwd, before, ["run", "run/metrics.jsonl"])
    rows = [json.loads(line) for line in (cwd / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [2]


def test_cli_disk_full_error_names_the_checkpoint(cwd: Path) -> None:
    r = run_cli(["train", "--data", "small.txt", *QUICK, "--out", "run"], cwd, preexec_fn=_disk_full)
    assert re.search(r"run/ckpt(-2)?\.safetensors", error_line(r, 1))


def test_single_character_corpus(cwd: Path) -> None:
    """A file holding the one character 'a' is a valid corpus (vocabulary 'a' + BOS): it trains, saves, and samples
    nothing but a's; a prompt with another character is then refused."""
    before = tree(cwd)
    r = run_cli(["train", "--data", "one.txt", "--steps", "2", "--samples", "3", "--log-every", "0", "--out", "run"],
                cwd)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert "1 train + 0 val docs, vocab 2" in r.stdout
    samples = r.stdout.split("--- 3 samples (temperature 0.5) ---\n")[1].splitlines()
    assert len(samples) == 3 and all(re.fullmatch("a*", s) for s in samples), samples
    assert_left_behind(cwd, before, ["run", "run/ckpt.safetensors", "run/ckpt-2.safetensors", "run/metrics.jsonl"])
    r = run_cli(["sample", "--checkpoint", "run/ckpt.safetensors", "--num", "3", "--top-k", "2"], cwd)
    assert r.returncode == 0 and all(re.fullmatch("a*", s) for s in r.stdout.splitlines()), r.stderr
    r = run_cli(["sample", "--checkpoint", "run/ckpt.safetensors", "--prompt", "b"], cwd)
    assert "1 character(s) not in the vocabulary: 'b'" in error_line(r, 2)


# -- the Python API ------------------------------------------------------------------------------------------------
VOCAB = "abc"  # ids 0..2, BOS = 3, vocab_size 4
BLOCK = 6


@pytest.fixture(scope="module")
def api():
    tok = blasgpt.Tokenizer(list(VOCAB))
    model = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, n_layer=1,
                                         block_size=BLOCK))
    return model, tok


def i32(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int32)


def i64(*v: int) -> np.ndarray:
    return np.array(v, dtype=np.int64)


API_CASES = [
    pytest.param(lambda m, t, d: m.forward([3.0, 1.0]), ValueError, "tokens must be integer ids, got dtype float64",
                 id="forward-float-tokens"),
    pytest.param(lambda m, t, d: m.forward([3, 4]), ValueError, r"token id 4 is out of range \[0, 4\)",
                 id="forward-id-equal-to-vocab"),
    pytest.param(lambda m, t, d: m.forward([3, 2**32 + 1]), ValueError, "4294967297 is out of range",
                 id="forward-id-beyond-int32"),
    pytest.param(lambda m, t, d: m.train_step((i32(3, 0, 3), i64(0, 3)), 0.01), ValueError,
                 r"batch must be a blasgpt.Batch \(e.g. tokenizer.batch\(docs\)\), got tuple", id="train-step-tuple"),
    pytest.param(lambda m, t, d: blasgpt.Batch(i32(3, 0, 3), i64(0, 9, 3, 9)[::2]), ValueError,
                 r"offsets must be C-contiguous", id="batch-offsets-non-contiguous"),
    pytest.param(lambda m, t, d: blasgpt.Batch(i32(3, 0, 3), np.array([0, 3], dtype=np.int32)), ValueError,
                 "offsets must have dtype int64, got int32", id="batch-offsets-int32"),
    pytest.param(lambda m, t, d: blasgpt.Batch(i32(3, 0, 3), np.array([[0, 3]], dtype=np.int64)), ValueError,
                 r"offsets must be 1-D, got shape \(1, 2\)", id="batch-offsets-2d"),
    pytest.param(lambda m, t, d: blasgpt.Batch(i32(3, 0, 3), i64(0, 3), np.zeros((1, 1), dtype=np.int64)),
                 ValueError, r"doc_ids must be 1-D, got shape \(1, 1\)", id="batch-doc-ids-2d"),
    pytest.param(lambda m, t, d: blasgpt.Batch(np.array([3, 0, 3], dtype=np.uint8), i64(0, 3)), ValueError,
                 "tokens must have dtype int32, got uint8", id="batch-tokens-uint8"),
    pytest.param(lambda m, t, d: m.loss(blasgpt.Batch(i32(3, 4, 3), i64(0, 3))), ValueError,
                 r"token id 4 at position 1 is out of range \[0, 4\)", id="loss-id-equal-to-vocab"),
    pytest.param(lambda m, t, d: blasgpt.load_docs(d / "adir"), blasgpt.DataError,
                 "adir is a directory, not a text file", id="load-docs-directory"),
    pytest.param(lambda m, t, d: blasgpt.load_corpus(""), blasgpt.DataError, "the data file name is empty",
                 id="load-corpus-empty-name"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, None), TypeError,
                 "tokenizer must be a blasgpt.Tokenizer or BPETokenizer, got NoneType", id="generate-no-tokenizer"),
    pytest.param(lambda m, t, d: blasgpt.generate(None, t), TypeError, "model must be a blasgpt.Model, got NoneType",
                 id="generate-no-model"),
    pytest.param(lambda m, t, d: blasgpt.train(None, t, ["ab"], steps=1), TypeError,
                 "model must be a blasgpt.Model, got NoneType", id="train-no-model"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, [1, 2], steps=1), TypeError,
                 r"docs\[0\] is int, not a document \(str\)", id="train-docs-of-ints"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab"], steps=1, val_docs=[b"ab"]), TypeError,
                 r"val_docs\[0\] is bytes, not a document \(str\)", id="train-val-docs-of-bytes"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, 5, steps=1), TypeError,
                 "docs must be a list of documents", id="train-docs-int"),
    pytest.param(lambda m, t, d: m.use_plan("auto"), TypeError, "use_plan takes a blasgpt.Plan", id="use-plan-str"),
    pytest.param(lambda m, t, d: blasgpt.load_docs(d / "missing.txt"), FileNotFoundError,
                 "data file not found: .*missing.txt", id="load-docs-missing"),
    pytest.param(lambda m, t, d: blasgpt.load_docs(d / "nul.bin"), blasgpt.DataError,
                 r"looks like a binary file \(it contains NUL bytes\)", id="load-docs-nul-bytes"),
    pytest.param(lambda m, t, d: t.encode("abé"), ValueError, r"1 character\(s\) not in the vocabulary: 'é'",
                 id="encode-unseen-character"),
    pytest.param(lambda m, t, d: blasgpt.sample(m, t, num=1, prompt="a" * BLOCK), ValueError,
                 r"prompt has 6 characters; it must be shorter than block_size \(6\)", id="sample-prompt-too-long"),
    pytest.param(lambda m, t, d: blasgpt.sample(m, t, num=1, top_k=0), ValueError,
                 "top_k must be an integer between 1 and the vocabulary size 4, got 0", id="sample-top-k-0"),
    pytest.param(lambda m, t, d: blasgpt.sample(m, t, num=1, temperature=float("nan")), ValueError,
                 "temperature must be a finite number > 0, got nan", id="sample-temperature-nan"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab"], steps=1, batch_size=0), ValueError,
                 "batch_size must be an integer >= 1, got 0", id="train-batch-size-0"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab"], steps=True), ValueError,
                 "steps must be an integer >= 0, got True", id="train-steps-bool"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab", "abz"], steps=1), ValueError,
                 r"1 character\(s\) not in the vocabulary: 'z'", id="train-unseen-character"),
    pytest.param(lambda m, t, d: blasgpt.Config(n_embd=True), ValueError, "Config.n_embd must be an integer, got True",
                 id="config-bool"),
    pytest.param(lambda m, t, d: blasgpt.Config(n_layer=1.0),  # type: ignore[arg-type]
                 ValueError, r"Config.n_layer must be an integer, got 1\.0", id="config-float"),
    pytest.param(lambda m, t, d: blasgpt.load_checkpoint(d / "adir"), blasgpt.CheckpointError, "adir is a directory",
                 id="load-checkpoint-directory"),
    # text mode: token streams, windows, evaluation and generation
    pytest.param(lambda m, t, d: blasgpt.train(m, t, i32(0, 1, 2, 0, 1, 2), steps=1), ValueError,
                 r"the text has 6 tokens; training windows need block_size \+ 1 = 7", id="train-text-too-short"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros(20, np.int32), steps=1, val_docs=i32(1)), ValueError,
                 r"the validation text has 1 token\(s\); it needs at least 2 \(one target\)", id="train-text-val-1"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros(20, np.int32), steps=1, val_docs=i32(0, 1, 7)),
                 ValueError, r"the validation text holds token id 7, out of range \[0, 4\)", id="train-val-bad-id"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros(20, np.int32), steps=1, val_docs=["ab"]), ValueError,
                 "val_docs must be of the same kind as docs", id="train-text-with-document-val"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab", "ca"], steps=1, val_docs=i32(0, 1, 2)), ValueError,
                 "val_docs must be of the same kind as docs", id="train-docs-with-stream-val"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros(20, np.int32), steps=1, window_seed=1.5), ValueError,
                 "window_seed must be an integer, got 1.5", id="train-text-window-seed-float"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros((2, 10), np.int32), steps=1), ValueError,
                 r"a token stream must be a 1-D integer array, got int32\[2, 10\]", id="train-text-2d-stream"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.zeros(10), steps=1), ValueError,
                 r"a token stream must be a 1-D integer array, got float64\[10\]", id="train-text-float-stream"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, np.full(20, 4, np.int32), steps=1), ValueError,
                 r"token id 4 at position \d+ is out of range \[0, 4\)", id="train-text-id-equal-to-vocab"),
    pytest.param(lambda m, t, d: evaluate_text(m, i32(1)), ValueError,
                 r"a text of 1 token\(s\) has no target to evaluate", id="evaluate-text-1-token"),
    pytest.param(lambda m, t, d: window_starts(0, 0, 1, 1, 6, 6), ValueError,
                 r"the text has 6 tokens; a training window needs block_size \+ 1 = 7", id="window-starts-too-short"),
    pytest.param(lambda m, t, d: TextData(i32(0, 1), "", "x").split(1.0), ValueError,
                 r"the validation fraction must be in \[0, 1\), got 1.0", id="text-split-fraction-1"),
    pytest.param(lambda m, t, d: blasgpt.Batch.of_windows(i32(0, 1, 2), np.zeros((1, 1), dtype=np.int64)), ValueError,
                 "starts must be 1-D", id="of-windows-2d-starts"),
    pytest.param(lambda m, t, d: m.loss(blasgpt.Batch.of_windows(i32(0, 1, 2), i64(2))), ValueError,
                 r"window start 2 is out of range \[0, 2\)", id="loss-window-start-past-the-end"),
    pytest.param(lambda m, t, d: encode_text("abz", t), ValueError, r"1 character\(s\) not in the vocabulary: 'z'",
                 id="encode-text-unseen-character"),
    pytest.param(lambda m, t, d: encode_text("a" * 9 + "\ud800", t), ValueError,
                 "the text holds '\\\\ud800' at position 9, a lone surrogate", id="encode-text-lone-surrogate"),
    pytest.param(lambda m, t, d: blasgpt.load_text(d / "empty.txt"), blasgpt.DataError, "empty.txt is empty",
                 id="load-text-empty"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", length=-1), ValueError,
                 "length must be an integer between 0 and 16777216, got -1", id="generate-length-negative"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", length=2**24 + 1), ValueError,
                 "length must be an integer between 0 and 16777216, got 16777217", id="generate-length-absurd"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", length=5.0), ValueError,  # type: ignore[arg-type]
                 "length must be an integer between 0 and 16777216, got 5.0", id="generate-length-float"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", length=-1, stream=True), ValueError,
                 "length must be an integer", id="generate-stream-refused-at-once"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", length=2**23, num=3), ValueError,
                 "num x length is 25,165,824 characters; one call generates at most 16,777,216",
                 id="generate-num-times-length-absurd"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", mode="words"), ValueError,
                 "mode must be one of text, lines, got 'words'", id="generate-mode-unknown"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a" * (2**20 + 1), length=1), ValueError,
                 "prompt has 1,048,577 characters; at most 1,048,576 are allowed", id="generate-prompt-too-long"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a" * BLOCK, length=1, mode="lines"), ValueError,
                 r"prompt has 6 characters; it must be shorter than block_size \(6\)", id="generate-lines-long-prompt"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "az"), ValueError,
                 r"1 character\(s\) not in the vocabulary: 'z'", id="generate-prompt-outside-vocab"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, blasgpt.Tokenizer(list("ab")), "a"), ValueError,
                 "tokenizer has 3 symbols but the model expects 4", id="generate-tokenizer-mismatch"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", num=-1), ValueError,
                 "num must be an integer between 0 and 65536, got -1", id="generate-num-negative"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", top_k=5), ValueError,
                 "top_k must be an integer between 1 and the vocabulary size 4, got 5", id="generate-top-k-over-vocab"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", seed=1.5), ValueError,  # type: ignore[arg-type]
                 "seed must be an integer or None, got 1.5", id="generate-seed-float"),
    pytest.param(lambda m, t, d: blasgpt.generate(m, t, "a", temperature=float("inf")), ValueError,
                 "temperature must be a finite number > 0, got inf", id="generate-temperature-inf"),
    pytest.param(lambda m, t, d: TrainConfig(tokenizer="bpe", vocab_size=256), ValueError,
                 r"vocab_size must be an integer in \[257, 1048576\], got 256", id="train-config-bpe-vocab-256"),
    pytest.param(lambda m, t, d: TrainConfig(tokenizer="bpe"), ValueError,
                 r"vocab_size must be an integer in \[257, 1048576\], got None", id="train-config-bpe-no-vocab"),
    pytest.param(lambda m, t, d: TrainConfig(vocab_size=300), ValueError, "vocab_size is for bpe only",
                 id="train-config-char-vocab-size"),
    pytest.param(lambda m, t, d: TrainConfig(tokenizer="words"), ValueError,
                 "the tokenizer must be one of char, bpe, got 'words'", id="train-config-tokenizer-unknown"),
    pytest.param(lambda m, t, d: blasgpt.load_corpus(d / "small.txt", bpe_vocab_size=256), ValueError,
                 r"the vocabulary size must be in \[257, 1048576\], got 256", id="load-corpus-bpe-vocab-256"),
    pytest.param(lambda m, t, d: blasgpt.load_corpus(d / "small.txt", tokenizer=t, bpe_vocab_size=300), ValueError,
                 "give a tokenizer or a BPE vocabulary size to train one, not both", id="load-corpus-two-tokenizers"),
    pytest.param(lambda m, t, d: blasgpt.Model(blasgpt.Config(vocab_size=27, n_embd=4096, n_head=16, n_layer=64)),
                 blasgpt.MemoryLimitError, r"^a float64 model of 12,885,188,608 parameters needs 384\.0 GiB of "
                 r"memory \(parameters 96\.0 GiB \+ gradients 96\.0 GiB \+ Adam moments 192\.0 GiB\), but only "
                 r"[\d.]+ [MG]iB is available \(MemAvailable\); use smaller sizes$", id="model-too-big"),
    pytest.param(lambda m, t, d: blasgpt.train(m, t, ["ab"], steps=1, batch_size=10**11), blasgpt.MemoryLimitError,
                 r"^this training run needs [\d.]+ TiB of memory \(.* \+ activations for 100,000,000,000 sequence\(s\) "
                 r"at once [\d.]+ TiB, [\d.]+ KiB of it already allocated\), but only", id="train-batch-too-big"),
]


@pytest.mark.parametrize("call, exc, match", API_CASES)
def test_api_bad_input(api, library: Path, call, exc: type, match: str) -> None:
    model, tok = api
    step, params = model.step, model.flat_params.copy()
    with pytest.raises(exc, match=match) as info:
        call(model, tok, library)
    if exc is not ValueError:  # DataError, CheckpointError, FileNotFoundError: that class exactly
        assert type(info.value) is exc, type(info.value)
    assert model.step == step and np.array_equal(model.flat_params, params)  # a refused call changes nothing
