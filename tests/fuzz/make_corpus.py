"""Write the seed corpora in tests/fuzz/corpus/ (run in the fuzz venv: it imports the harnesses).

The seeds are small valid inputs the fuzzer mutates from: checkpoints of a tiny model (float32 with vocabulary and
extra state, also in format 1, float64 without), a truncated one and a safetensors file that is not a checkpoint;
and for fuzz_batch, one input per target in its byte format; for fuzz_bpe, merges that chain and overlap ("th",
"the", " the", "ll", a two-byte character) over text in several scripts, invalid UTF-8 and NUL-separated documents.
Safetensors writes metadata in hash order, so the checkpoint bytes differ from run to run; nothing depends on that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import blasgpt
from fuzz_batch import I32, I64, TARGETS, Writer

HERE = Path(__file__).resolve().parent


def checkpoint_seeds(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tok = blasgpt.Tokenizer("ab")
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=2, n_head=1, n_layer=1, block_size=2)
    model = blasgpt.Model(cfg, dtype="float32", seed=1)
    model.train_step(tok.batch(["ab", "b"]), lr=0.01)  # non-zero Adam state and step
    blasgpt.save_checkpoint(out / "valid-f32.safetensors", model, tok, {"note": "seed"})
    blasgpt.save_checkpoint(out / "valid-f64-novocab.safetensors", blasgpt.Model(cfg, dtype="float64", seed=2))
    raw = (out / "valid-f32.safetensors").read_bytes()
    (out / "truncated.safetensors").write_bytes(raw[: len(raw) // 2])
    from safetensors.numpy import save

    (out / "foreign.safetensors").write_bytes(save({"w": np.zeros(3, dtype=np.float32)}))
    # format 1 (no metadata checksum): mutations of its header reach the checks beyond the checksums
    (out / "valid-f32-format1.safetensors").write_bytes(with_metadata(raw, format_version="1", meta_checksum=None))
    # reproducers of the known loader problems (fuzzlib.KNOWN): valid tensors and checksums, hostile metadata
    bomb = dict(vocab_size=1 << 24, n_embd=64, n_head=1, n_layer=1, block_size=2)  # ~34 GB of buffers
    (out / "known-config-allocates.safetensors").write_bytes(with_metadata(raw, config=json.dumps(bomb)))
    (out / "known-json-recursion.safetensors").write_bytes(with_metadata(raw, extra="[" * 5000))


def with_metadata(raw: bytes, **changes: str | None) -> bytes:
    """The safetensors file ``raw`` with some metadata entries replaced (None: removed); tensors kept, and the
    metadata checksum, if it has one, made to match."""
    from blasgpt.checkpoint import metadata_checksum

    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    meta = {k: v for k, v in {**header["__metadata__"], **changes}.items() if v is not None}
    if "meta_checksum" in meta:
        meta["meta_checksum"] = metadata_checksum(meta)
    header["__metadata__"] = meta
    text = json.dumps(header).encode()
    return len(text).to_bytes(8, "little") + text + raw[8 + n:]


def batch_seeds(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    # three documents of a 7-symbol vocabulary (BOS = 6), the third longer than every model's block
    tokens = [6, 0, 1, 6, 6, 2, 6, 6, 3, 4, 5, 0, 1, 2, 3, 4, 5, 6]
    offsets = [0, 4, 7, 18]

    def head(target: str, model: int) -> Writer:
        return Writer().byte(TARGETS.index(target)).byte(model)

    def corpus(w: Writer) -> Writer:
        return w.array(tokens, I32).array(offsets, I64)

    none = {"values": [], "layout": "none"}
    seeds = {
        "tokenizer": head("tokenizer", 0).byte(0).text("abc").byte(1),
        "tokenizer-block3": head("tokenizer", 1).byte(64 + 3).text("abcde").byte(1),
        "loss": corpus(head("batch", 0)).array(**none).byte(0).byte(0).byte(10),
        "gather-mean-over": corpus(head("batch", 1)).array([2, 0], I64).byte(1).byte(64 + 4).byte(10),
        "core-train-step": corpus(head("core", 2)).array(**none).byte(2).byte(0).byte(10),
        "core-loss-3-threads": corpus(head("core", 3)).array([0, 1, 2, 2, 1], I64).byte(0).byte(0).byte(0),
        "train-steps": corpus(head("train_steps", 1)).array([[0, 1], [2, 0]], I64, "2d", rows=2)
        .array([0.01, 0.005], np.float64),
        "forward": head("forward", 0).array([6, 1, 2], I32),
        "forward-list": head("forward", 2).array([6, 3], I64, "list"),
    }
    docs = {"tokenizer": b"ab\nc\nabcab", "tokenizer-block3": b"edcba\na\n"}
    for name, w in seeds.items():
        (out / name).write_bytes(w.bytes() + docs.get(name, b""))


def bpe_seeds(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    ids = {bytes([b]): b for b in range(256)}
    merges = b""
    pairs = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the"), (b"l", b"l"), (b"e", b"ll"), (b"\xc3", b"\xa9"),
             (b"a", b"a"), (b"aa", b"aa")]
    for left, right in pairs:
        merges += ids[left].to_bytes(2, "little") + ids[right].to_bytes(2, "little")
        ids[left + right] = len(ids)  # 256 + the merges so far
    head = bytes([len(pairs)]) + merges
    texts = {
        "bpe-english": b"the theme of the hello\n\nthe  end, 1234 tells!",
        "bpe-scripts": "héllo wörld — 中文 😀 naïve café\r\n\tthe".encode(),
        "bpe-invalid-utf8": b"the \xff\xc3 aaaa\xe4\xb8 \x80the",
        "bpe-documents": b"the\x00hello\x00\x00aaaaaa the",
    }
    for name, text in texts.items():
        (out / name).write_bytes(head + text)
    (out / "bpe-no-merges").write_bytes(b"\x00plain bytes \xf0\x9f\x98\x80")


if __name__ == "__main__":
    root = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "corpus"
    checkpoint_seeds(root / "checkpoint")
    batch_seeds(root / "batch")
    bpe_seeds(root / "bpe")
    print(f"seeds written under {root}")
