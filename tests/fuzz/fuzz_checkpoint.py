"""Fuzz target: blasgpt.load_checkpoint on arbitrary file contents.

The contract: whatever the bytes, load_checkpoint returns a Checkpoint whose model runs, or raises CheckpointError
(or another ValueError, or FileNotFoundError) with a message. Another exception type, a crash, a sanitizer report,
a hang past libFuzzer's -timeout or memory past -rss_limit_mb is a finding.

An input is a whole file. Half of the mutations change only the JSON header of a safetensors file and rewrite its
length prefix, so they get past the header parser into blasgpt's own checks (checksums, format, version, config,
shapes; the format-1 seeds have no metadata checksum, so their mutations reach the checks beyond it);
checkpoint.dict gives the mutator the words of that header.

Run by .ci/fuzz. By hand, in the venv it builds and with its LD_PRELOAD and options:
    python tests/fuzz/fuzz_checkpoint.py NEW_CORPUS_DIR tests/fuzz/corpus/checkpoint -dict=tests/fuzz/checkpoint.dict
    python tests/fuzz/fuzz_checkpoint.py crash-FILE        # run one input again
"""

from __future__ import annotations

import os
import sys
import tempfile
import warnings

import atheris

with atheris.instrument_imports(include=["blasgpt"]):
    import blasgpt

import numpy as np

from fuzzlib import Finding, allowed_error

ALLOWED = (ValueError, FileNotFoundError)  # CheckpointError is a ValueError
PATH = os.path.join(tempfile.mkdtemp(prefix="fuzz-checkpoint-"), "ckpt.safetensors")
warnings.simplefilter("ignore", blasgpt.CheckpointWarning)  # format-1 inputs load with one; not a finding


def split_header(data: bytes) -> tuple[bytes, bytes] | None:
    """(JSON header, rest) of a safetensors file: an 8-byte little-endian length, the header, the tensor bytes."""
    if len(data) < 8:
        return None
    n = int.from_bytes(data[:8], "little")
    if n > len(data) - 8:
        return None
    return data[8:8 + n], data[8 + n:]


def test_one_input(data: bytes) -> None:
    with open(PATH, "wb") as f:
        f.write(data)
    try:
        ck = blasgpt.load_checkpoint(PATH)
    except Exception as e:
        allowed_error(e, ALLOWED)
        return
    # Loaded: the model must be whole and usable.
    model = ck.model
    V = model.config.vocab_size
    logits = model.forward(np.array([V - 1], dtype=np.int32))
    if logits.shape != (1, V):
        raise Finding(f"forward of a loaded model gave shape {logits.shape}, expected (1, {V})")
    if ck.tokenizer is not None and ck.tokenizer.vocab_size != V:
        raise Finding(f"tokenizer has {ck.tokenizer.vocab_size} symbols, model {V}")
    if not isinstance(ck.extra, (dict, list, str, int, float, bool, type(None))):
        raise Finding(f"extra is a {type(ck.extra).__name__}")


def mutate(data: bytes, max_size: int, seed: int) -> bytes:
    """libFuzzer's mutations; every other time applied to the JSON header alone, with its length prefix fixed."""
    parts = split_header(data) if seed % 2 else None
    if parts:
        header, rest = parts
        header = atheris.Mutate(header, len(header) + 64)
        out = len(header).to_bytes(8, "little") + header + rest
        if len(out) <= max_size:
            return out
    return atheris.Mutate(data, max_size)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input, custom_mutator=mutate)
    atheris.Fuzz()
