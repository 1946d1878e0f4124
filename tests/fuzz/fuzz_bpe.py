"""Fuzz target: the compiled byte-level BPE encoder (csrc/bpe.cpp) behind blasgpt.bpe.BPETokenizer.

An input is merges then text: the first byte gives the number of merges (its value mod 64), each merge is two
2-byte little-endian ids taken mod (256 + its index + 2) — so most merges are valid and some name a token that
does not exist yet —, and the rest is the text: any bytes, UTF-8 or not, documents separated by NUL bytes.

The contract: BPETokenizer(merges) either refuses them with a ValueError (an id out of range, a pair given twice)
or encodes every byte string so that
  - the pre-tokens the core cuts concatenate back to the text;
  - the ids are in [0, 256 + merges) and decode back to the text, byte for byte;
  - they equal a plain-Python BPE over those pre-tokens (repeatedly merge the leftmost pair of lowest rank);
  - encode_documents gives each document as [BOS] + its ids + [BOS], with matching offsets;
  - for UTF-8 text, the pre-tokens are those of the documented regular expression (PRETOKEN_PATTERN).
Another exception, a crash or a sanitizer report is a finding.

Run by .ci/fuzz. By hand, in the venv it builds and with its LD_PRELOAD and options:
    python tests/fuzz/fuzz_bpe.py NEW_CORPUS_DIR tests/fuzz/corpus/bpe
"""

from __future__ import annotations

import re
import sys

import atheris

with atheris.instrument_imports(include=["blasgpt"]):
    from blasgpt import _core
    from blasgpt.bpe import NUM_BYTES, PRETOKEN_PATTERN, BPETokenizer

import numpy as np

from fuzzlib import Finding, allowed_error

MAX_MERGES = 64


def parse(data: bytes) -> tuple[list[tuple[int, int]], bytes]:
    """(merges, text) of an input (see the module docstring); missing bytes read as 0."""
    count = data[0] % MAX_MERGES if data else 0
    merges, pos = [], 1
    for i in range(count):
        raw = data[pos:pos + 4].ljust(4, b"\0")
        pos += 4
        span = NUM_BYTES + i + 2
        merges.append((int.from_bytes(raw[:2], "little") % span, int.from_bytes(raw[2:], "little") % span))
    return merges, data[pos:]


def reference(merges: list[tuple[int, int]], pieces: list[bytes]) -> list[int]:
    rank = {pair: i for i, pair in enumerate(merges)}
    out: list[int] = []
    for piece in pieces:
        syms = list(piece)
        while len(syms) > 1:
            best = min(((rank[p], i) for i, p in enumerate(zip(syms, syms[1:])) if p in rank), default=None)
            if best is None:
                break
            r, i = best
            syms[i:i + 2] = [NUM_BYTES + r]
        out.extend(syms)
    return out


def test_one_input(data: bytes) -> None:
    merges, text = parse(data)
    try:
        tok = BPETokenizer(np.array(merges, dtype=np.int32).reshape(-1, 2))
    except Exception as e:
        allowed_error(e, (ValueError,))
        return
    pieces = _core.BpeEncoder.pretokens(text)
    if b"".join(pieces) != text:
        raise Finding(f"the pre-tokens {pieces!r} do not make up the text {text!r}")
    ids = tok._encoder.encode(text)
    if ids.dtype != np.int32 or ids.ndim != 1 or (ids.size and not 0 <= ids.min() <= ids.max() < tok.bos):
        raise Finding(f"ids {ids.tolist()} ({ids.dtype}) are not token ids below BOS {tok.bos}")
    if tok.decode_bytes(ids) != text:
        raise Finding(f"{text!r} encodes to {ids.tolist()}, which decodes to {tok.decode_bytes(ids)!r}")
    expect = reference([tuple(m) for m in tok.merges.tolist()], pieces)
    if ids.tolist() != expect:
        raise Finding(f"{text!r} encodes to {ids.tolist()}, plain BPE gives {expect}")
    docs = text.split(b"\0")
    tokens, offsets = tok._encoder.encode_documents(docs, tok.bos)
    want = [t for d in docs for t in [tok.bos, *tok._encoder.encode(d).tolist(), tok.bos]]
    lengths = [tok._encoder.encode(d).size + 2 for d in docs]
    if tokens.tolist() != want or offsets.tolist() != np.concatenate([[0], np.cumsum(lengths)]).tolist():
        raise Finding(f"encode_documents of {docs!r} gave {tokens.tolist()} at {offsets.tolist()}")
    try:
        as_text = text.decode("utf-8")
    except UnicodeDecodeError:
        return
    expect_pieces = [p.encode("utf-8") for p in re.findall(PRETOKEN_PATTERN, as_text, flags=re.DOTALL)]
    if pieces != expect_pieces:
        raise Finding(f"pre-tokens {pieces!r} differ from PRETOKEN_PATTERN's {expect_pieces!r}")


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
