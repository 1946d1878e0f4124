"""Checkpoints: one safetensors file holding everything needed to continue a run exactly.

Tensors: each parameter under its own name (``wte``, ``layer0.attn_wq``, ...; readable by any safetensors tool),
plus Adam's moments as flat buffers ``adam.m`` and ``adam.v``. Metadata (strings): format, format_version,
config (JSON), dtype, step, the tokenizer (may be absent): ``tokenizer`` = its kind, char or bpe (char if absent),
with ``vocab`` = the JSON list of a char tokenizer's characters or ``bpe`` = a BPE tokenizer's JSON (bpe.py); extra
(JSON: caller's run state), gemm_plan (may be absent), and two checksums: checksum (sha256 over the tensors' names
and bytes in key order) and meta_checksum (sha256 over every other metadata key and value, as JSON with sorted keys),
so that a changed byte anywhere — a weight, the vocabulary, the learning rate — is refused. Format version 1 (before
meta_checksum) is still read, with a CheckpointWarning. Files are written to a temp file, fsynced and renamed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

from . import _core
from . import model as model_module
from .config import Config
from .calibrate import Plan
from .bpe import AnyTokenizer, tokenizer_from_metadata, tokenizer_metadata
from .data import atomic_write_bytes
from .model import Model

PathLike = Union[str, "os.PathLike[str]"]
FORMAT = "blasgpt-checkpoint"
FORMAT_VERSION = 2  # 2: the metadata has a checksum too
READABLE_VERSIONS = ("1", "2")  # 1: only the tensors are checksummed (loaded with a CheckpointWarning)
CHECKSUM_KEYS = ("checksum", "meta_checksum")


class CheckpointError(ValueError):
    """A file that is not a usable blasgpt checkpoint; the message names the file and the problem."""


class CheckpointWarning(UserWarning):
    """A checkpoint that loads but cannot be checked as fully as a current one (written before metadata
    checksums)."""


@dataclasses.dataclass
class Checkpoint:
    model: Model
    tokenizer: Optional[AnyTokenizer]
    extra: dict[str, Any]

    @property
    def step(self) -> int:
        return self.model.step


def _checksum(tensors: Mapping[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for key in sorted(tensors):
        h.update(key.encode())
        h.update(np.ascontiguousarray(tensors[key]).tobytes())
    return h.hexdigest()


def metadata_checksum(metadata: Mapping[str, str]) -> str:
    """sha256 of every metadata key and value except the checksums themselves, as JSON with sorted keys (ASCII)."""
    body = {k: v for k, v in metadata.items() if k not in CHECKSUM_KEYS}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def save_checkpoint(path: PathLike, model: Model, tokenizer: Optional[AnyTokenizer] = None,
                    extra: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model`` (params, Adam m/v, step), its config, tokenizer and ``extra`` to ``path`` atomically."""
    from safetensors.numpy import save

    flat = model.flat_params  # the live buffer the core computes with (model.params are views into it)
    tensors = {name: flat[off:off + rows * cols].reshape(rows, cols).copy() for name, (rows, cols), off in
               model.param_table}
    tensors["adam.m"] = np.array(model.adam_m)
    tensors["adam.v"] = np.array(model.adam_v)
    try:
        extra_json = json.dumps(dict(extra or {}), sort_keys=True)
    except TypeError as e:
        raise ValueError(f"checkpoint extra metadata must be JSON-serialisable: {e}") from None
    metadata = {
        "format": FORMAT,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(model.config.to_dict(), sort_keys=True),
        "dtype": model.dtype.name,
        "step": str(model.step),
        "extra": extra_json,
        "checksum": _checksum(tensors),
    }
    if tokenizer is not None:
        metadata.update(tokenizer_metadata(tokenizer))
    if model.gemm_plan is not None:  # the auto backend's kernel per product: a resumed run computes the same
        metadata["gemm_plan"] = model.gemm_plan.to_json()
    metadata["meta_checksum"] = metadata_checksum(metadata)
    path = Path(path)
    atomic_write_bytes(path, save(tensors, metadata=metadata))
    return path


def load_checkpoint(path: PathLike, backend: Optional[str] = None) -> Checkpoint:
    """Read a checkpoint written by ``save_checkpoint``; CheckpointError on anything wrong with the file."""
    from safetensors import safe_open

    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a directory, not a checkpoint file (try {path / 'ckpt.safetensors'})")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")

    def bad(problem: str) -> CheckpointError:
        return CheckpointError(f"{path}: {problem}")

    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for truncated, damaged or foreign bytes
        detail = " ".join(f"{type(e).__name__}: {e}".split())  # one line, and short (it can list every dtype)
        if len(detail) > 150:
            detail = detail[:150] + "..."
        raise bad(f"not a readable safetensors file ({detail})") from None
    # the metadata checksum first: a changed byte in the header is reported as corruption, whatever it changed
    if "meta_checksum" in meta and meta["meta_checksum"] != metadata_checksum(meta):
        raise bad("checksum mismatch in its metadata: the file is corrupted")
    if meta.get("format") != FORMAT:
        raise bad("a safetensors file, but not a blasgpt checkpoint (no 'format: blasgpt-checkpoint' metadata)")
    version = meta.get("format_version")
    if version not in READABLE_VERSIONS:
        raise bad(f"checkpoint format version {version!r}; this blasgpt reads {' and '.join(READABLE_VERSIONS)}")
    if version != "1" and "meta_checksum" not in meta:
        raise bad("its metadata checksum is missing: the file is corrupted")
    if meta.get("checksum") != _checksum(tensors):
        raise bad("checksum mismatch in its tensors: the file is corrupted")
    try:
        config = Config.from_dict(json.loads(meta["config"]))
        dtype = np.dtype(meta["dtype"])
        step = int(meta["step"])
        extra = json.loads(meta.get("extra", "{}"))
        tokenizer = tokenizer_from_metadata(meta)
        plan = Plan.from_json(meta["gemm_plan"]) if "gemm_plan" in meta else None
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError) as e:
        raise bad(f"invalid metadata ({type(e).__name__}: {e})") from None
    if dtype not in (np.float32, np.float64) or step < 0 or not isinstance(extra, dict):
        raise bad(f"invalid metadata (dtype {meta['dtype']!r}, step {step}, extra of type {type(extra).__name__})")
    # compare the file's tensors with the config *before* allocating anything: the config is only metadata
    table = _core.param_table(**config.to_dict())
    expected = {name: (rows, cols) for name, (rows, cols), _ in table}
    total = sum(rows * cols for rows, cols in expected.values())
    expected["adam.m"] = expected["adam.v"] = (total,)  # type: ignore[assignment]
    if set(tensors) != set(expected):
        missing, unknown = set(expected) - set(tensors), set(tensors) - set(expected)
        raise bad(f"tensors do not match the config (missing: {sorted(missing)}, unexpected: {sorted(unknown)})")
    for name, shape in expected.items():
        t = tensors[name]
        if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
            raise bad(f"tensor {name} is {t.dtype}{list(t.shape)}, expected {dtype.name}{list(shape)}")
    model = Model(config, dtype=dtype, backend=backend, init=False)
    for name in model.params:
        model.params[name][...] = tensors[name]
    model.adam_m[...] = tensors["adam.m"]
    model.adam_v[...] = tensors["adam.v"]
    model.step = step
    if plan is not None:
        if plan.dtype != dtype.name:
            raise bad(f"its gemm plan is for {plan.dtype}, its parameters are {dtype.name}")
        model.use_plan(dataclasses.replace(plan, source="kept from the checkpoint"))
    if tokenizer is not None and tokenizer.vocab_size != config.vocab_size:
        raise bad(f"vocabulary has {tokenizer.vocab_size} symbols but the config says {config.vocab_size}")
    if "meta_checksum" not in meta:
        warnings.warn(f"{path}: predates metadata checksums (format version 1), so a change to its vocabulary, "
                      f"config or run settings would go unnoticed; checkpoints saved from it have them",
                      CheckpointWarning, stacklevel=2)
    return Checkpoint(model, tokenizer, extra)


model_module.CHECKPOINT_IO.update(save=save_checkpoint, load=load_checkpoint)  # Model.save / Model.load

__all__ = ["Checkpoint", "CheckpointError", "CheckpointWarning", "FORMAT_VERSION", "load_checkpoint",
           "metadata_checksum", "save_checkpoint"]
