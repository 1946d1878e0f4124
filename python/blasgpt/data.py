"""Documents, the character tokenizer and packed batches.

A corpus is any UTF-8 text file with one document per line (microgpt's names.txt ships with the package). The
tokenizer maps each distinct character to an id in sorted order and adds BOS (id = number of characters). A
document trains as ``[BOS] + chars + [BOS]``. Batches are *packed*: the token ids of all documents concatenated
into one int32 array plus int64 offsets, so the C++ core runs every linear layer as one matrix product.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import urllib.request
from pathlib import Path
from typing import Iterable, Optional, Sequence, Union

import numpy as np

PathLike = Union[str, "os.PathLike[str]"]

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
BUNDLED_NAMES = Path(__file__).resolve().parent / "datasets" / "names.txt"
MAX_FILE_BYTES = 1 << 30  # a corpus is read into memory; refuse anything larger than 1 GiB with a clear message


class DataError(ValueError):
    """A data file that cannot be used as a corpus (missing, empty, binary, not UTF-8, too large)."""


def cache_dir() -> Path:
    """Where a downloaded names.txt is kept: $XDG_CACHE_HOME/blasgpt or ~/.cache/blasgpt."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "blasgpt"


def read_docs(path: PathLike) -> list[str]:
    """Documents of a UTF-8 text file: its stripped, non-empty lines, in file order (no dedupe, no shuffle)."""
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"data file not found: {p}")
    if p.is_dir():
        raise DataError(f"{p} is a directory, not a text file")
    if not p.is_file():
        raise DataError(f"{p} is not a regular file (a device, pipe or socket cannot be a corpus)")
    size = p.stat().st_size
    too_big = f"{p} is {size / 2**30:.1f} GiB; corpora are read into memory and must be under 1 GiB"
    if size >= MAX_FILE_BYTES:
        raise DataError(too_big)
    with open(p, "rb") as f:  # in pieces (read(n) reserves n bytes first), capped: a growing file cannot blow up memory
        chunks, got = [], 0
        while got < MAX_FILE_BYTES and (chunk := f.read(min(1 << 24, MAX_FILE_BYTES - got))):
            chunks.append(chunk)
            got += len(chunk)
        raw = b"".join(chunks)
    if len(raw) >= MAX_FILE_BYTES:
        raise DataError(f"{p} is at least 1 GiB; corpora are read into memory and must be under 1 GiB")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is an encoding marker, not a character of the first document
    if b"\x00" in raw:
        raise DataError(f"{p} looks like a binary file (it contains NUL bytes), not one document per line")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    docs = [line.strip() for line in text.splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"{p} holds no documents (it is empty or only whitespace)")
    return docs


def download_names(dest: PathLike, url: Optional[str] = None, sha256: Optional[str] = None,
                   timeout: float = 60.0) -> Path:
    """Fetch makemore's names.txt to ``dest``, verifying its sha256, written atomically (temp file + rename).

    ``url`` (default NAMES_URL) may be any URL urllib opens (https://, file://); ``sha256`` defaults to
    NAMES_SHA256. On a checksum mismatch nothing is written.
    """
    dest = Path(dest)
    url = url or NAMES_URL
    sha256 = sha256 or NAMES_SHA256
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (the URL is the caller's choice)
        data = resp.read()
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(f"download from {url} has sha256 {got}, expected {sha256}; nothing was written")
    atomic_write_bytes(dest, data)
    return dest


def current_umask() -> int:
    """This process's umask, read without changing it (/proc/self/status; elsewhere set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def atomic_write_bytes(dest: PathLike, data: bytes) -> None:
    """Write ``data`` to ``dest`` so that readers see the old file or the whole new one, never a part."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), 0o666 & ~current_umask())  # mkstemp's 0600 -> what any new file of the user gets
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, dest)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError) and e.filename is None:  # say which file could not be written (disk full, ...)
            raise OSError(e.errno, f"cannot write {dest}: {e.strerror or e}") from None
        raise
    try:  # make the rename itself durable
        dfd = os.open(dest.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def load_docs(path: Optional[PathLike] = None) -> list[str]:
    """Load a corpus: ``path`` → $BLASGPT_DATA → the bundled names.txt → the user cache → download into the cache.

    Returns the stripped, non-empty lines in file order.
    """
    if path is not None:
        return read_docs(path)
    env = os.environ.get("BLASGPT_DATA")
    if env:
        return read_docs(env)
    if BUNDLED_NAMES.is_file():
        return read_docs(BUNDLED_NAMES)
    cached = cache_dir() / "names.txt"
    if not cached.is_file():
        download_names(cached)
    return read_docs(cached)


@dataclasses.dataclass(frozen=True)
class Batch:
    """Packed sequences over one int32 token array, in one of two layouts.

    Documents (lines mode): document i is ``tokens[offsets[d]:offsets[d+1]]`` with ``d = doc_ids[i]`` (or ``i``).
    Windows (text mode, ``windows=True``, made by ``Batch.of_windows``): window i is
    ``tokens[s:s + block_size + 1]`` with ``s = doc_ids[i]`` a start offset into the token stream (cut at its end);
    ``offsets`` is None. Either way a sequence of n + 1 tokens trains on its first ``min(block_size, n)``
    positions, and the batch's loss is the mean over its sequences.

    tokens:  int32 (total_tokens,)  documents are [BOS, c1, ..., cn, BOS]; a text stream is its characters
    offsets: int64 (num_docs + 1,)  non-decreasing, offsets[0] == 0 (None for windows)
    doc_ids: int64 (batch_size,) or None: which documents form the batch (a gather without copying tokens), or
             the window starts
    """

    tokens: np.ndarray
    offsets: Optional[np.ndarray]
    doc_ids: Optional[np.ndarray] = None
    windows: bool = False

    def __post_init__(self) -> None:
        _check_array("tokens", self.tokens, np.int32)
        if self.windows:
            if self.offsets is not None:
                raise ValueError("a batch of windows has no offsets (offsets=None)")
            if self.doc_ids is None:
                raise ValueError("a batch of windows needs their start offsets (doc_ids)")
            _check_array("starts", self.doc_ids, np.int64)
            return
        _check_array("offsets", self.offsets, np.int64)
        if self.offsets.size < 1:  # type: ignore[union-attr]
            raise ValueError("offsets must hold at least one entry")
        if self.doc_ids is not None:
            _check_array("doc_ids", self.doc_ids, np.int64)

    @classmethod
    def of_windows(cls, tokens: np.ndarray, starts: Union[Sequence[int], np.ndarray]) -> "Batch":
        """Windows of a token stream starting at ``starts`` (text mode): no token is copied."""
        ids = np.ascontiguousarray(starts, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("starts must be 1-D")
        return cls(tokens, None, ids, windows=True)

    @property
    def num_docs(self) -> int:
        """Sequences (documents or windows) in this batch (its batch size)."""
        if self.doc_ids is not None:
            return int(self.doc_ids.size)
        return int(self.offsets.size - 1)  # type: ignore[union-attr]

    def select(self, doc_ids: Union[Sequence[int], np.ndarray]) -> "Batch":
        """The batch of documents ``doc_ids`` of this corpus (or, for windows, windows starting at ``doc_ids``),
        sharing its token storage."""
        ids = np.ascontiguousarray(doc_ids, dtype=np.int64)
        if ids.ndim != 1:
            raise ValueError("doc_ids must be 1-D")
        return Batch(self.tokens, self.offsets, ids, self.windows)


def _check_array(name: str, a: object, dtype: type) -> None:
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array of {np.dtype(dtype).name}, got {type(a).__name__}")
    if a.dtype != dtype:
        raise ValueError(f"{name} must have dtype {np.dtype(dtype).name}, got {a.dtype}")
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {a.shape}")
    if not a.flags.c_contiguous:
        raise ValueError(f"{name} must be C-contiguous (use numpy.ascontiguousarray)")
    if not a.flags.aligned:
        raise ValueError(f"{name} must be aligned to its element size (copy it: numpy.array(x))")


class Tokenizer:
    """Characters ↔ ids. ``chars`` are the vocabulary in sorted order; ``bos = len(chars)``."""

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if not chars:
            raise ValueError("a tokenizer needs at least one character")
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"vocabulary entries must be single characters, got {c!r}")
        if chars != sorted(set(chars)):
            raise ValueError("vocabulary characters must be unique and sorted")
        self.chars: list[str] = chars
        self._codes = np.array([ord(c) for c in chars], dtype=np.uint32)

    @classmethod
    def from_docs(cls, docs: Iterable[str]) -> "Tokenizer":
        """Vocabulary = the sorted set of characters appearing in ``docs``."""
        chars = sorted(set("".join(docs)))
        if not chars:
            raise ValueError("cannot build a vocabulary from no text")
        return cls(chars)

    @property
    def bos(self) -> int:
        return len(self.chars)

    @property
    def vocab_size(self) -> int:
        return len(self.chars) + 1

    def __repr__(self) -> str:
        return f"Tokenizer(vocab_size={self.vocab_size}, chars={''.join(self.chars)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Tokenizer) and other.chars == self.chars

    def __hash__(self) -> int:
        return hash(tuple(self.chars))

    def encode(self, text: str) -> np.ndarray:
        """Ids (int32) of the characters of ``text``; ValueError naming any character outside the vocabulary."""
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        ids = np.searchsorted(self._codes, codes)
        ok = ids < self._codes.size
        ok[ok] = self._codes[ids[ok]] == codes[ok]
        if not ok.all():
            unseen = sorted({chr(c) for c in codes[~ok]})
            shown = ", ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            raise ValueError(f"{len(unseen)} character(s) not in the vocabulary: {shown}")
        return ids.astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """Text of ``ids``; BOS ids are skipped."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.bos:
                continue
            if not 0 <= i < self.bos:
                raise ValueError(f"token id {i} is out of range [0, {self.vocab_size})")
            out.append(self.chars[i])
        return "".join(out)

    def batch(self, docs: Sequence[str], block_size: Optional[int] = None) -> Batch:
        """Pack ``docs`` as ``[BOS] + chars + [BOS]`` each. With ``block_size``, each document is cut to its first
        ``block_size + 1`` tokens (all the model reads: it trains on ``min(block_size, len - 1)`` positions)."""
        if isinstance(docs, str):
            raise ValueError("batch expects a sequence of documents, not a single str")
        if len(docs) == 0:
            raise ValueError("the batch is empty: it needs at least one document")
        if block_size is not None and not (isinstance(block_size, int) and 1 <= block_size <= 1 << 30):
            raise ValueError(f"block_size must be an integer between 1 and 2**30, got {block_size!r}")
        lens = np.fromiter((len(d) + 2 for d in docs), dtype=np.int64, count=len(docs))
        ids = self.encode("".join(docs))
        tokens = np.full(int(lens.sum()), self.bos, dtype=np.int32)
        starts = np.zeros(len(docs) + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        # characters of doc i go to tokens[starts[i] + 1 : starts[i + 1] - 1]
        char_pos = np.arange(ids.size, dtype=np.int64) + 1 + 2 * np.repeat(np.arange(len(docs)), lens - 2)
        tokens[char_pos] = ids
        if block_size is None:
            return Batch(tokens, starts)
        keep = np.minimum(lens, block_size + 1)
        offsets = np.zeros_like(starts)
        np.cumsum(keep, out=offsets[1:])
        sel = np.arange(int(keep.sum()), dtype=np.int64) + np.repeat(starts[:-1] - offsets[:-1], keep)
        return Batch(np.ascontiguousarray(tokens[sel]), offsets)


__all__ = [
    "Batch",
    "DataError",
    "NAMES_SHA256",
    "NAMES_URL",
    "Tokenizer",
    "atomic_write_bytes",
    "cache_dir",
    "download_names",
    "load_docs",
    "read_docs",
]
