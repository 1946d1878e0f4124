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
from typing import Iterable, Optional, Sequence, TypeVar, Union

import numpy as np

from . import _core

PathLike = Union[str, "os.PathLike[str]"]

NAMES_URL = "https://raw.githubusercontent.com/karpathy/makemore/master/names.txt"
NAMES_SHA256 = "0a30b5557f192f32ab962680889aac5f6fda0f4cecf40a6d0b5694f58ea8cc4d"
BUNDLED_NAMES = Path(__file__).resolve().parent / "datasets" / "names.txt"
# char-rnn's tinyshakespeare (MIT): 40,000 lines of Shakespeare, the classic text-mode corpus
SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
MAX_FILE_BYTES = 1 << 30  # a corpus is read into memory; refuse anything larger than 1 GiB with a clear message


class DataError(ValueError):
    """A data file that cannot be used as a corpus (missing, empty, binary, not UTF-8, too large)."""


def cache_dir() -> Path:
    """Where a downloaded names.txt is kept: $XDG_CACHE_HOME/blasgpt or ~/.cache/blasgpt."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "blasgpt"


def _read_utf8(path: PathLike, what: str) -> tuple[str, bytes]:
    """(text, raw bytes) of a UTF-8 file that can be a corpus, or DataError / FileNotFoundError saying why not.
    ``what`` ends the binary-file message (what the file should have been)."""
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
    with open(p, "rb") as f:
        # read(n) sets aside n bytes at once: ask for the size stat gave (+1 to notice a file that grew), not for
        # the 1 GiB cap, which fails under an address-space limit or strict overcommit even for a tiny file
        raw = f.read(size + 1)
        if len(raw) > size:  # it grew (or stat cannot tell, as in /proc): read on in pieces, capped
            parts, total = [raw], len(raw)
            while total < MAX_FILE_BYTES:
                piece = f.read(min(1 << 24, MAX_FILE_BYTES - total))
                if not piece:
                    break
                parts.append(piece)
                total += len(piece)
            raw = b"".join(parts)
    if len(raw) >= MAX_FILE_BYTES:
        raise DataError(f"{p} is at least 1 GiB; corpora are read into memory and must be under 1 GiB")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]  # a UTF-8 byte-order mark is an encoding marker, not a character of the text
    if b"\x00" in raw:
        raise DataError(f"{p} looks like a binary file (it contains NUL bytes), not {what}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{p} is not valid UTF-8 (byte {raw[e.start]:#04x} at offset {e.start})") from None
    return text, raw


def read_docs(path: PathLike) -> list[str]:
    """Documents of a UTF-8 text file: its stripped, non-empty lines, in file order (no dedupe, no shuffle)."""
    text, _ = _read_utf8(path, "one document per line")
    docs = [line.strip() for line in text.splitlines()]
    docs = [d for d in docs if d]
    if not docs:
        raise DataError(f"{Path(path)} holds no documents (it is empty or only whitespace)")
    return docs


def download(url: str, dest: PathLike, sha256: str, timeout: float = 60.0) -> Path:
    """Fetch ``url`` (any URL urllib opens: https://, http://, file://) to ``dest``, verifying its sha256, written
    atomically (temp file + rename). On a checksum mismatch or a failed transfer nothing is written."""
    dest = Path(dest)
    parts, total = [], 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 (the URL is the caller's choice)
            while piece := resp.read(1 << 20):  # in pieces, capped: a wrong URL cannot fill memory
                total += len(piece)
                if total >= MAX_FILE_BYTES:
                    raise DataError(f"download from {url} passed {MAX_FILE_BYTES:,} bytes, the most a corpus may "
                                    f"have; nothing was written")
                parts.append(piece)
    except OSError as e:  # URLError, HTTPError, timeouts
        raise DataError(f"could not download {url}: {getattr(e, 'reason', None) or e}") from None
    data = b"".join(parts)
    del parts
    got = hashlib.sha256(data).hexdigest()
    if got != sha256:
        raise DataError(f"download from {url} has sha256 {got}, expected {sha256}; nothing was written")
    atomic_write_bytes(dest, data)
    return dest


def download_names(dest: PathLike, url: Optional[str] = None, sha256: Optional[str] = None,
                   timeout: float = 60.0) -> Path:
    """Fetch makemore's names.txt to ``dest`` (``url`` default NAMES_URL, ``sha256`` default NAMES_SHA256)."""
    return download(url or NAMES_URL, dest, sha256 or NAMES_SHA256, timeout)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A named corpus: shipped in the package (``bundled``) or downloaded on first use into cache_dir()/``file``,
    sha256-checked. ``$BLASGPT_<NAME>_URL`` overrides the download URL (a mirror, or a local server in tests).
    The names entry reads NAMES_URL, NAMES_SHA256 and BUNDLED_NAMES when used (so they can be redirected)."""

    name: str
    file: str
    mode: str  # the data mode it is meant for: "lines" or "text"
    url: str = ""
    sha256: str = ""

    def _source(self) -> tuple[str, str, Optional[Path]]:
        if self.name == "names":
            return NAMES_URL, NAMES_SHA256, BUNDLED_NAMES
        return self.url, self.sha256, None

    def path(self, timeout: float = 60.0) -> Path:
        """A verified local copy: the bundled file, else the cached one, else downloaded into the cache now."""
        url, sha256, bundled = self._source()
        if bundled is not None and bundled.is_file():
            return bundled
        cached = cache_dir() / self.file
        if cached.is_file() and hashlib.sha256(cached.read_bytes()).hexdigest() == sha256:
            return cached
        return download(os.environ.get(f"BLASGPT_{self.name.upper()}_URL") or url, cached, sha256, timeout)


DATASETS = {
    "names": Dataset("names", "names.txt", "lines"),
    "shakespeare": Dataset("shakespeare", "tinyshakespeare.txt", "text", SHAKESPEARE_URL, SHAKESPEARE_SHA256),
}


def data_path(spec: PathLike) -> Path:
    """The file ``spec`` names: an existing path as it is, else a named dataset (see DATASETS), fetched if need be."""
    if not os.fspath(spec):  # (Path("") is ".", the working directory)
        raise DataError("the data file name is empty: give a text file or one of " + ", ".join(DATASETS))
    p = Path(spec)
    if not p.exists() and str(spec) in DATASETS:
        return DATASETS[str(spec)].path()
    return p


def absolute_data(spec: PathLike) -> str:
    """How a run records its data (``spec`` as data_path reads it): an existing file by its absolute path, so that
    the run can be evaluated or resumed from any directory; anything else — a named dataset — as it is."""
    return os.path.abspath(spec) if os.fspath(spec) and Path(spec).exists() else os.fspath(spec)


def display_path(path: PathLike) -> str:
    """A path for messages: an absolute path relative to the working directory when that is shorter (always so
    inside it), anything else as it is."""
    p = Path(path)
    if p.is_absolute():
        try:
            rel = os.path.relpath(p)
        except ValueError:  # (another drive)
            return str(p)
        if len(rel) < len(str(p)):
            return rel
    return str(p)


SeqT = TypeVar("SeqT")  # anything sliced like a list: documents, a token array


def split_tail(items: SeqT, fraction: float) -> tuple[SeqT, SeqT]:
    """(head, tail) of ``items``: the tail ``int(len(items) * fraction)`` of them is the validation split — of
    shuffled documents or of a text by position —, so holding it out draws no random numbers."""
    if not (isinstance(fraction, (int, float)) and 0 <= fraction < 1):
        raise ValueError(f"the validation fraction must be in [0, 1), got {fraction!r}")
    n = len(items)  # type: ignore[arg-type]
    cut = n - int(n * fraction)
    return items[:cut], items[cut:]  # type: ignore[index]


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
        return read_docs(data_path(path))
    env = os.environ.get("BLASGPT_DATA")
    if env:
        return read_docs(data_path(env))
    return read_docs(DATASETS["names"].path())


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
        if self.windows:
            if self.offsets is not None:
                raise ValueError("a batch of windows has no offsets (offsets=None)")
            if self.doc_ids is None:
                raise ValueError("a batch of windows needs their start offsets (doc_ids)")
        # dtype, 1-D, C-contiguous, aligned, offsets not empty: the binding's own checks and messages, in one C call
        # (a batch may be made per training step)
        _core.check_batch(self.tokens, self.offsets, self.doc_ids, self.windows)

    @classmethod
    def _packed(cls, tokens: np.ndarray, offsets: np.ndarray) -> "Batch":
        """A batch of documents whose arrays were just made right (Tokenizer.batch): no checks, no __init__."""
        b = object.__new__(cls)
        b.__dict__.update(tokens=tokens, offsets=offsets, doc_ids=None, windows=False)
        return b

    @classmethod
    def of_windows(cls, tokens: np.ndarray, starts: Union[Sequence[int], np.ndarray]) -> "Batch":
        """Windows of a token stream starting at ``starts`` (text mode): no token is copied."""
        given = np.asarray(starts)
        if given.size and given.dtype.kind not in "iu":
            raise ValueError(f"starts must be integer offsets, got dtype {given.dtype}")
        ids = np.ascontiguousarray(given, dtype=np.int64)
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


def _code_points(text: str, offset: int = 0) -> np.ndarray:
    """The code points of ``text`` (uint32); ValueError for a lone surrogate (say, undecodable bytes of a command
    line argument), which is no character of any text file."""
    try:
        return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    except UnicodeEncodeError as e:
        raise ValueError(f"the text holds {text[e.start]!r} at position {offset + e.start}, a lone surrogate and not "
                         f"a character (undecodable bytes?)") from None


def check_batch_args(docs: Sequence[str], block_size: Optional[int]) -> None:
    """The arguments of a tokenizer's batch(): a non-empty sequence of documents, an optional positive block size."""
    if isinstance(docs, str):
        raise ValueError("batch expects a sequence of documents, not a single str")
    if len(docs) == 0:
        raise ValueError("the batch is empty: it needs at least one document")
    if block_size is not None and not (isinstance(block_size, int) and 1 <= block_size <= 1 << 30):
        raise ValueError(f"block_size must be an integer between 1 and 2**30, got {block_size!r}")


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
        # Encoding is a table lookup in C, never a Python loop over characters. A vocabulary of at most 255
        # characters below U+0100 (names, ASCII text) uses bytes.translate on the text's latin-1 bytes: each
        # character becomes its id, characters outside the vocabulary are deleted (so a shorter result means one was
        # there), and one byte outside the vocabulary, _sep, becomes BOS, so batch() packs every document with one
        # str.join. Other vocabularies use a dense code-point table below U+10000, else a binary search.
        self._sep: Optional[str] = None
        top = int(self._codes[-1])
        if top < 256 and len(chars) <= 255:
            table = bytearray(256)
            for i, c in enumerate(chars):
                table[ord(c)] = i
            known = set(map(ord, chars))
            free = [b for b in range(256) if b not in known]
            table[free[0]] = self.bos
            self._sep, self._bos_byte = chr(free[0]), bytes([self.bos])
            self._table, self._drop = bytes(table), bytes(free[1:])
        self._lut: Optional[np.ndarray] = None
        if top < 1 << 16:  # ids of code points 0..top, then -1 for any code point past the table (np.take clips)
            self._lut = np.full(top + 2, -1, dtype=np.int32)
            self._lut[self._codes] = np.arange(len(chars), dtype=np.int32)

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
        if self._sep is not None:
            raw = self._bytes(text)
            if raw is not None and self._bos_byte not in raw:
                return np.frombuffer(raw, dtype=np.uint8).astype(np.int32)
        codes = _code_points(text)
        if self._lut is not None:
            ids = self._lut.take(codes, mode="clip")
            ok = ids >= 0
        else:
            ids = np.searchsorted(self._codes, codes)
            ok = ids < self._codes.size
            ok[ok] = self._codes[ids[ok]] == codes[ok]
        if not ok.all():
            unseen = sorted({chr(c) for c in codes[~ok]})
            shown = ", ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            raise ValueError(f"{len(unseen)} character(s) not in the vocabulary: {shown}")
        return ids.astype(np.int32, copy=False)

    def encode_text(self, text: str) -> np.ndarray:
        """Ids (int32) of a whole text of any size, newlines included (text mode; see encode_text)."""
        return encode_text(text, self)

    def _bytes(self, text: str) -> Optional[bytes]:
        """The ids of ``text`` as bytes (_sep -> BOS), or None if it holds a character outside the vocabulary."""
        try:
            raw = text.encode("latin-1")
        except UnicodeEncodeError:
            return None
        out = raw.translate(self._table, self._drop)
        return out if len(out) == len(raw) else None

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
        check_batch_args(docs, block_size)
        n = len(docs)
        if self._sep is not None:  # one join, one translate, one C call (a batch may be made per training step)
            raw = self._bytes(self._sep + (self._sep * 2).join(docs) + self._sep)
            if raw is not None:
                tokens, starts = _core.pack_documents(raw, self.bos)
                if starts.size == n + 1:  # (else _sep, packed as BOS, is in a document: not valid)
                    if block_size is None:
                        return Batch._packed(tokens, starts)
                    longest = max(map(len, docs)) if n <= 64 else int(np.diff(starts).max()) - 2
                    if longest < block_size:
                        return Batch._packed(tokens, starts)
                    return self._cut(tokens, starts, block_size)
        lens = np.fromiter(map(len, docs), dtype=np.int64, count=n) + 2
        ids = self.encode("".join(docs))  # names any character outside the vocabulary
        tokens = np.full(int(lens.sum()), self.bos, dtype=np.int32)
        starts = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=starts[1:])
        # characters of doc i go to tokens[starts[i] + 1 : starts[i + 1] - 1]
        char_pos = np.arange(ids.size, dtype=np.int64) + 1 + 2 * np.repeat(np.arange(n), lens - 2)
        tokens[char_pos] = ids
        return Batch(tokens, starts) if block_size is None else self._cut(tokens, starts, block_size)

    @staticmethod
    def _cut(tokens: np.ndarray, starts: np.ndarray, block_size: int) -> Batch:
        """The packed documents ``tokens[starts[i]:starts[i + 1]]``, each cut to its first block_size + 1 tokens."""
        keep = np.minimum(np.diff(starts), block_size + 1)
        offsets = np.zeros_like(starts)
        np.cumsum(keep, out=offsets[1:])
        sel = np.arange(int(offsets[-1]), dtype=np.int64) + np.repeat(starts[:-1] - offsets[:-1], keep)
        return Batch(tokens[sel], offsets)


# ---------------------------------------------------------------------------------------------------------------
# Text mode: a whole file as one token stream (newlines included), for training on windows of running text.

TEXT_CHUNK_CHARS = 1 << 22  # characters converted at a time: the UTF-32 temporary stays at 16 MiB for any file


def _chunks(text: str) -> Iterable[np.ndarray]:
    """The Unicode code points of ``text`` (uint32), a chunk at a time."""
    for lo in range(0, len(text), TEXT_CHUNK_CHARS):
        yield _code_points(text[lo:lo + TEXT_CHUNK_CHARS], lo)


def text_vocabulary(text: str) -> Tokenizer:
    """The tokenizer of a text: every distinct character of it, sorted, plus BOS (vectorised)."""
    seen = np.zeros(0x110000, dtype=bool)
    for codes in _chunks(text):
        seen[codes] = True
    chars = [chr(c) for c in np.flatnonzero(seen)]
    if not chars:
        raise ValueError("cannot build a vocabulary from no text")
    return Tokenizer(chars)


def encode_text(text: str, tokenizer: Tokenizer) -> np.ndarray:
    """Ids (int32, one per character) of a whole text, by table lookup a chunk at a time: seconds for 100 MB, and
    4 bytes per character kept. ValueError naming any character outside the vocabulary."""
    table = np.full(0x110000, -1, dtype=np.int32)
    table[tokenizer._codes] = np.arange(len(tokenizer.chars), dtype=np.int32)
    out = np.empty(len(text), dtype=np.int32)
    at = 0
    for codes in _chunks(text):
        ids = table[codes]
        if (ids < 0).any():
            unseen = sorted({chr(c) for c in np.unique(codes[ids < 0])})
            shown = ", ".join(repr(c) for c in unseen[:10]) + (" ..." if len(unseen) > 10 else "")
            raise ValueError(f"{len(unseen)} character(s) not in the vocabulary: {shown}")
        out[at:at + ids.size] = ids
        at += ids.size
    return out


@dataclasses.dataclass(frozen=True)
class TextData:
    """A text file as one token stream: ``tokens`` (int32, one per character, newlines included), the sha256 of
    the file's bytes (what a resumed run checks) and where it came from."""

    tokens: np.ndarray
    sha256: str
    source: str

    def __len__(self) -> int:
        return int(self.tokens.size)

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation) token streams: the validation split is the tail ``val_fraction`` of the text by
        position (text is never shuffled). Views, not copies."""
        return split_tail(self.tokens, val_fraction)


def read_text(path: PathLike) -> tuple[str, str]:
    """(text, sha256 of the file's bytes) of a UTF-8 file for text mode: every character kept, newlines included
    (a leading byte-order mark is dropped). Refused like read_docs: missing, binary, not UTF-8, over 1 GiB, empty."""
    text, raw = _read_utf8(path, "running text")
    if not text:
        raise DataError(f"{Path(path)} is empty")
    return text, hashlib.sha256(raw).hexdigest()


def load_text(path: PathLike, tokenizer: Optional[Tokenizer] = None) -> tuple[TextData, Tokenizer]:
    """A file (or a named dataset, e.g. "shakespeare") as one token stream, and the tokenizer that made it: the
    given one (ValueError naming characters outside it), else the text's own vocabulary."""
    p = data_path(path)
    text, digest = read_text(p)
    tok = tokenizer if tokenizer is not None else text_vocabulary(text)
    return TextData(encode_text(text, tok), digest, str(path)), tok


__all__ = [
    "DATASETS",
    "Batch",
    "DataError",
    "Dataset",
    "TextData",
    "absolute_data",
    "data_path",
    "display_path",
    "download",
    "encode_text",
    "load_text",
    "read_text",
    "split_tail",
    "text_vocabulary",
    "NAMES_SHA256",
    "NAMES_URL",
    "Tokenizer",
    "atomic_write_bytes",
    "cache_dir",
    "download_names",
    "load_docs",
    "read_docs",
]
