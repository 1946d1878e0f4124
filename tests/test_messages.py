"""What a user sees when something is wrong: usage errors of every command are one line (``blasgpt CMD: error:
...``) and a hint, never argparse's whole usage; model errors are one line; $BLASGPT_ISA is checked like
$BLASGPT_GEMM; a bare string is not a list of documents; exit codes follow the README (1 data, file or model
error, 2 usage error).

The usage errors run in this process through ``blasgpt.cli.main`` (the code ``python -m blasgpt`` runs), the rest
as real subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt import _core, cli
from blasgpt.cli.common import one_line
from conftest import BENCH_DIR, ONE_BLAS_THREAD, blasgpt_cli

HINT = re.compile(r"\(see (python -m )?blasgpt( \w+)? --help\)")
DOCS = ["anna", "bob", "clara", "dave", "eve", "frank"]


def usage_error(code: int, stderr: str, command: str) -> str:
    """The error line of a usage error, after checking its shape: exit 2, one ``blasgpt CMD: error:`` line and at
    most the hint line (no usage block, no traceback)."""
    lines = stderr.splitlines()
    assert code == 2, f"exit {code}; stderr:\n{stderr}"
    assert 1 <= len(lines) <= 2, f"expected at most 2 lines, got {len(lines)}:\n{stderr}"
    assert lines[0].startswith(f"{command}: error: "), lines[0]
    assert len(lines) == 1 or HINT.fullmatch(lines[1]), lines[1]
    assert "usage:" not in stderr and "Traceback" not in stderr, stderr
    return lines[0]


USAGE_CASES = [  # (argv, the command that must name itself, a phrase of the message)
    ([], "blasgpt", "the following arguments are required: COMMAND"),
    (["frobnicate"], "blasgpt", "invalid choice: 'frobnicate'"),
    (["--bogus"], "blasgpt", "the following arguments are required: COMMAND"),
    (["train", "--data-mode", "words"], "blasgpt train", "argument --data-mode: invalid choice: 'words'"),
    (["train", "--steps", "x"], "blasgpt train", "argument --steps: expected a whole number, got 'x'"),
    (["train", "--lr", "abc"], "blasgpt train", "argument --lr: invalid float value: 'abc'"),
    (["train", "--data"], "blasgpt train", "argument --data: expected one argument"),
    (["train", "--bogus", "1"], "blasgpt train", "unrecognized arguments: --bogus 1"),
    (["--bogus", "train"], "blasgpt train", "unrecognized arguments: --bogus"),
    (["train", "--lr", "nan"], "blasgpt train", "--lr must be a finite number >= 0, got nan"),  # the command's own
    (["sample"], "blasgpt sample", "the following arguments are required: --checkpoint"),
    (["sample", "--checkpoint"], "blasgpt sample", "argument --checkpoint: expected one argument"),
    (["sample", "--checkpoint", "c", "--top-k", "0"], "blasgpt sample", "argument --top-k: must be >= 1, got 0"),
    (["sample", "--checkpoint", "c", "--bogus"], "blasgpt sample", "unrecognized arguments: --bogus"),
    (["eval"], "blasgpt eval", "the following arguments are required: --checkpoint"),
    (["eval", "--checkpoint", "c", "--threads", "x"], "blasgpt eval", "argument --threads: expected a whole number"),
    (["eval", "--checkpoint", "c", "--json", "yes"], "blasgpt eval", "unrecognized arguments: yes"),
    (["plot"], "blasgpt plot", "the following arguments are required: RUN_DIR"),
    (["plot", "a", "b"], "blasgpt plot", "unrecognized arguments: b"),
    (["sweep", "--jobs", "0"], "blasgpt sweep", "argument --jobs: must be >= 1, got 0"),
    (["sweep", "--out"], "blasgpt sweep", "argument --out: expected one argument"),
    (["sweep", "--lr", "fast"], "blasgpt sweep", "--lr must be a comma-separated list of numbers"),  # its own
    (["bench", "--bench-dir"], "blasgpt bench", "argument --bench-dir: expected one argument"),
]


@pytest.mark.parametrize("argv, command, phrase", USAGE_CASES, ids=[" ".join(c[0]) or "(none)" for c in USAGE_CASES])
def test_usage_errors_are_one_line(tmp_path: Path, monkeypatch, capsys, argv: list[str], command: str,
                                   phrase: str) -> None:
    monkeypatch.chdir(tmp_path)
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse's own errors leave through sys.exit
        code = e.code  # type: ignore[assignment]
    out, err = capsys.readouterr()
    assert out == ""
    assert phrase in usage_error(code, err, command)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("argv, phrase", [
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["bench", "--only", "d999"], "argument --only: invalid choice: 'd999'"),  # the benchmark's own parser
    (["bench", "--quick", "--bogus"], "unrecognized arguments: --bogus"),
], ids=["top-level", "bench-only", "bench-unknown-flag"])
def test_usage_errors_are_one_line_from_the_command(tmp_path: Path, argv: list[str], phrase: str) -> None:
    """The same through ``python -m blasgpt`` itself, and the benchmark's parser (its own, in bench/)."""
    r = blasgpt_cli(argv, tmp_path, timeout=120, env={"BLASGPT_BENCH_DIR": str(BENCH_DIR)})
    assert phrase in usage_error(r.returncode, r.stderr, "blasgpt" if argv[0] != "bench" else "blasgpt bench")
    assert r.stdout == ""


@pytest.mark.parametrize("command", ["", *(c for c in cli.COMMANDS if c != "bench")])  # (bench --help: its own)
def test_help_is_argparse_usage_and_exit_0(command: str, capsys) -> None:
    """--help still prints the full usage and help (the one-line errors change only errors)."""
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"] if command else ["--help"])
    out, err = capsys.readouterr()
    assert info.value.code == 0 and err == ""
    assert out.startswith(f"usage: blasgpt {command}".rstrip()) and "options:" in out and "-h, --help" in out


def test_a_failed_sweep_run_reports_its_error_line(tmp_path: Path) -> None:
    """A sweep run that fails on a usage error: the summary quotes the error line, not the hint after it."""
    r = blasgpt_cli(["sweep", "--lr", "0.01", "--n-embd", "8", "--jobs", "1", "--out", "sw", "--steps", "x"],
                    tmp_path, timeout=120)
    assert r.returncode == 1, r.stderr
    assert "failed (blasgpt train: error: argument --steps: expected a whole number, got 'x')" in r.stdout


# -- model errors: one line ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def model() -> blasgpt.Model:
    return blasgpt.Model(blasgpt.Config(vocab_size=5, n_embd=8, n_head=2, block_size=4))


@pytest.mark.parametrize("call, message", [
    (lambda m: setattr(m, "backend", 3), r"^unknown gemm backend 3: expected 'blas', 'native' or 'auto'$"),
    (lambda m: setattr(m, "backend", None), r"^unknown gemm backend None: expected"),
    (lambda m: blasgpt.Model(m.config, backend=3),  # type: ignore[arg-type]
     r"^unknown gemm backend 3: expected 'blas', 'native' or 'auto'$"),
    (lambda m: setattr(m, "step", 2**70),
     r"^step must be an integer between 0 and 2\*\*63 - 1, got 1180591620717411303424$"),
    (lambda m: setattr(m, "step", 1.5), r"^step must be an integer between 0 and 2\*\*63 - 1, got 1\.5$"),
    (lambda m: setattr(m, "step", -1), r"^step must be an integer between 0 and 2\*\*63 - 1, got -1$"),
], ids=["backend-int", "backend-none", "model-backend-int", "step-2**70", "step-float", "step-negative"])
def test_model_errors_are_one_line(model: blasgpt.Model, call, message: str) -> None:
    """These reached the binding, whose TypeError lists its signatures over several lines (or, for a float step,
    truncated it silently)."""
    step, backend = model.step, model.backend
    with pytest.raises(ValueError, match=message) as info:
        call(model)
    assert "\n" not in str(info.value)
    assert model.step == step and model.backend == backend
    model.step = np.int64(3)  # numpy integers are integers
    assert model.step == 3
    model.step = step


def test_cli_error_lines_fold_a_message_of_several_lines() -> None:
    assert one_line("first line\n    1. second\n\nthird") == "first line; 1. second; third"


# -- $BLASGPT_ISA ----------------------------------------------------------------------------------------------------
def _isa_child(isa: str, code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], env=dict(os.environ, BLASGPT_ISA=isa), capture_output=True,
                          text=True, timeout=120)


MAKE_A_MODEL = """
import blasgpt
try:
    blasgpt.Model(blasgpt.Config())
except ValueError as e:
    print(e)
    raise SystemExit(3)
print(blasgpt._core.native_isa())
"""


def test_an_unknown_isa_is_refused_at_the_first_model() -> None:
    """Like an unknown $BLASGPT_GEMM: importing works, the first model is refused with one line listing the values
    this CPU accepts (it used to fall back to the widest kernels silently)."""
    widest = _core.native_isa()  # (this process has no BLASGPT_ISA)
    accepted = ", ".join(["avx512", "avx2", "base"][["avx512", "avx2", "base"].index(widest):])
    r = _isa_child("sse9", MAKE_A_MODEL)
    assert r.returncode == 3 and r.stderr == "", r.stderr
    assert r.stdout == (f"BLASGPT_ISA must be one of {accepted} (the instruction sets this CPU runs), got 'sse9'\n")


@pytest.mark.parametrize("isa", ["", "base"])
def test_a_usable_isa_is_taken(isa: str) -> None:
    r = _isa_child(isa, MAKE_A_MODEL)
    assert r.returncode == 0 and r.stdout.strip() == (isa or _core.native_isa()), r.stdout + r.stderr


def test_an_isa_this_cpu_lacks_is_refused() -> None:
    widest = _core.native_isa()
    if widest == "avx512":
        pytest.skip("this CPU runs every instruction set blasgpt is built for")
    wider = "avx512" if widest == "avx2" else "avx2"
    r = _isa_child(wider, MAKE_A_MODEL)
    assert r.returncode == 3 and f"BLASGPT_ISA={wider}: this CPU does not run {wider}; it must be one of " in r.stdout


@pytest.mark.parametrize("variable, value, message", [
    ("BLASGPT_ISA", "sse9", "BLASGPT_ISA must be one of "),
    ("BLASGPT_GEMM", "cuda", "BLASGPT_GEMM must be one of auto, native, blas, got 'cuda'"),
])
def test_cli_refuses_a_bad_kernel_variable_as_a_usage_error(tmp_path: Path, variable: str, value: str,
                                                            message: str) -> None:
    """Both variables are refused alike by every command: one line, exit 2 (a bad setting, like a bad flag), before
    any run directory is made."""
    (tmp_path / "small.txt").write_text("\n".join(DOCS) + "\n")
    r = blasgpt_cli(["train", "--data", "small.txt", "--steps", "1", "--samples", "0", "--out", "run"], tmp_path,
                    timeout=120, env={variable: value, **ONE_BLAS_THREAD})
    assert r.returncode == 2 and r.stderr.startswith(f"blasgpt train: error: {message}"), r.stderr
    assert len(r.stderr.splitlines()) == 1 and not (tmp_path / "run").exists()


# -- blasgpt.train(model, tok, "emma") -------------------------------------------------------------------------------
@pytest.mark.parametrize("docs, val_docs, name", [("emma", None, "docs"), (b"emma", None, "docs"),
                                                  (["emma"], "ma", "val_docs")], ids=["str", "bytes", "val-str"])
def test_train_refuses_a_bare_string_as_documents(docs, val_docs, name: str) -> None:
    tok = blasgpt.Tokenizer(list("aem"))
    m = blasgpt.Model(blasgpt.Config(vocab_size=tok.vocab_size, n_embd=8, n_head=2, block_size=8))
    before = m.flat_params.copy()
    with pytest.raises(ValueError, match=rf"^{name} is a single (str|bytes), not a list of documents: pass a list "
                                         r"\(e\.g\. \['(emma|ma)'\] for one document\) or, for running text, its "
                                         r"token stream \(tokenizer\.encode_text\(text\)\) or a Corpus"):
        blasgpt.train(m, tok, docs, steps=1, val_docs=val_docs)
    assert m.step == 0 and np.array_equal(m.flat_params, before)
    blasgpt.train(m, tok, ["emma"], steps=1)  # what was meant: one document
    blasgpt.train(m, tok, tok.encode_text("emma" * 4), steps=1)  # or running text
    assert m.step == 2


# -- exit codes: a data file the checkpoint cannot read is a data error (1) -----------------------------------------
@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = tmp_path_factory.mktemp("ckpts")
    (lib / "small.txt").write_text("\n".join(DOCS) + "\n")
    (lib / "zed.txt").write_text("bz\n")
    (lib / "one.txt").write_text("a")
    for mode in ("lines", "text"):
        r = blasgpt_cli(["train", "--data", "small.txt", "--data-mode", mode, "--block-size", "4", "--steps", "2",
                         "--samples", "0", "--log-every", "0", "--out", mode], lib, env=ONE_BLAS_THREAD)
        assert r.returncode == 0, r.stderr
    ck = blasgpt.load_checkpoint(lib / "lines" / "ckpt.safetensors")  # a run that did not record its data
    blasgpt.save_checkpoint(lib / "noid.safetensors", ck.model, ck.tokenizer,
                            {k: v for k, v in ck.extra.items() if k not in ("data_sha256", "rng_state")})
    return lib


@pytest.mark.parametrize("args, message", [
    (["eval", "--checkpoint", "lines/ckpt.safetensors", "--data", "zed.txt"],
     "blasgpt eval: error: zed.txt: 1 character(s) not in the vocabulary: 'z'"),
    (["eval", "--checkpoint", "text/ckpt.safetensors", "--data", "zed.txt"],
     "blasgpt eval: error: zed.txt: 1 character(s) not in the vocabulary: 'z'"),
    (["eval", "--checkpoint", "text/ckpt.safetensors", "--data", "one.txt"],
     "blasgpt eval: error: one.txt: a text of 1 token(s) has no target to evaluate (it needs at least 2)"),
    (["train", "--resume", "noid.safetensors", "--data", "zed.txt", "--steps", "4", "--samples", "0", "--out", "rz"],
     "blasgpt train: error: zed.txt: 1 character(s) not in the vocabulary: 'z'"),
], ids=["eval-lines-outside-vocab", "eval-text-outside-vocab", "eval-text-one-character", "resume-outside-vocab"])
def test_data_the_checkpoint_cannot_read_is_a_data_error(tmp_path: Path, checkpoints: Path, args: list[str],
                                                         message: str) -> None:
    """Exit 1 (they went through the usage-error path, exit 2); a resumed run whose data holds characters outside
    the vocabulary is refused before its run directory is made (it used to fail mid-run, leaving it behind)."""
    shutil.copytree(checkpoints, tmp_path, dirs_exist_ok=True)
    r = blasgpt_cli(args, tmp_path, timeout=120, env=ONE_BLAS_THREAD)
    assert r.returncode == 1 and r.stderr == message + "\n", r.stderr
    assert not (tmp_path / "rz").exists()


def test_a_prompt_outside_the_vocabulary_stays_a_usage_error(tmp_path: Path, checkpoints: Path) -> None:
    """--prompt is a flag value: exit 2 (README: a prompt the checkpoint cannot encode is a bad flag value)."""
    r = blasgpt_cli(["sample", "--checkpoint", str(checkpoints / "lines" / "ckpt.safetensors"), "--prompt", "bz"],
                    tmp_path, timeout=120, env=ONE_BLAS_THREAD)
    assert r.returncode == 2 and r.stderr == "blasgpt sample: error: 1 character(s) not in the vocabulary: 'z'\n"
