"""Fuzz target: the batch builder and the core's entry points, on arrays of any dtype, shape, layout and values.

Targets (the first byte picks one, the second a model; see MODELS):
  tokenizer    Tokenizer(chars).batch(docs, block_size): the packed batch equals a plain-Python packing
  batch        blasgpt.Batch(tokens, offsets, doc_ids) and Model.loss / forward_backward(mean_over) / train_step
  core         the compiled object's loss / forward_backward / train_step directly, without Python's checks
  train_steps  the compiled train_steps(tokens, offsets, doc_ids (steps, batch), lrs)
  forward      Model.forward(ids) and the compiled logits(ids)

The contract: only ValueError (with a message), and never a crash or sanitizer report. On well-formed arrays the
harness also knows the answer (a mirror of the core's checks in batch_problem): a valid batch must be accepted with
a finite loss and an invalid one rejected.

Inputs are a small binary format (Reader below; make_corpus.py writes the seeds with Writer), so a seed is a real
batch and the fuzzer mutates values, dtypes and layouts from there.

Run by .ci/fuzz. By hand, in the venv it builds and with its LD_PRELOAD and options:
    python tests/fuzz/fuzz_batch.py NEW_CORPUS_DIR tests/fuzz/corpus/batch
"""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, Optional

import atheris

with atheris.instrument_imports(include=["blasgpt"]):
    import blasgpt

import numpy as np

from fuzzlib import Finding, allowed_error

I32, I64 = np.dtype(np.int32), np.dtype(np.int64)
# int64 look-alikes first after the real ones: equal to int64 but not numpy's canonical int64 object
DTYPES = [I32, I64, np.dtype(np.longlong), np.dtype(np.int64, metadata={"fuzz": 1}), np.dtype(">i4"),
          np.dtype(">i8"), np.dtype(np.int16), np.dtype(np.uint32), np.dtype(np.uint64), np.dtype(np.float32),
          np.dtype(np.float64), np.dtype(np.bool_)]
LAYOUTS = ["contiguous", "strided", "2d", "0d", "list", "none", "readonly", "misaligned"]
TARGETS = ["tokenizer", "batch", "core", "train_steps", "forward"]
HUGE = [2**31, 2**62, 2**63, 2**64, -(2**63) - 1]  # block_size / mean_over codes 250.. (int64 and beyond)
ODD_LRS = [math.nan, math.inf, -1.0, 1e300, -0.0, 5e-324]  # learning-rate codes 250..

# (dtype, n_embd, n_head, n_layer, block_size, backend, threads): fused attention (C a multiple of the vector
# width), gemm attention on both backends, one to three threads. Every model has a 7-symbol vocabulary.
MODELS = [blasgpt.Model(blasgpt.Config(7, C, H, L, T), dtype=dt, seed=i, backend=be, threads=th)
          for i, (dt, C, H, L, T, be, th) in enumerate([
              ("float64", 16, 4, 1, 6, "native", 1),
              ("float32", 16, 4, 2, 5, "native", 2),
              ("float64", 6, 3, 1, 4, "blas", 1),
              ("float32", 6, 2, 1, 8, "native", 3)])]
SNAPSHOTS = [(m.flat_params.copy(), m.adam_m.copy(), m.adam_v.copy()) for m in MODELS]


class Reader:
    """The input as a stream of fields; past its end every byte reads as 0."""

    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def take(self, n: int) -> bytes:
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out + bytes(n - len(out))

    def byte(self) -> int:
        return self.take(1)[0]

    def rest(self) -> bytes:
        out, self.pos = self.data[self.pos:], len(self.data)
        return out

    def int_code(self) -> Optional[int]:
        """None (0), -63..185 (1..249), or one of HUGE (250..254); 255 reads 8 more bytes as a signed int64."""
        c = self.byte()
        if c == 0:
            return None
        if c < 250:
            return c - 64
        if c < 255:
            return HUGE[c - 250]
        return int.from_bytes(self.take(8), "little", signed=True)

    def lr(self) -> float:
        """code / 1000 for codes 0..249, else one of ODD_LRS."""
        c = self.byte()
        return c / 1000 if c < 250 else ODD_LRS[(c - 250) % len(ODD_LRS)]

    def array(self) -> Any:
        """A header byte (layout = h % 8, dtype = DTYPES[h // 8 % len]), a count byte, then count raw elements."""
        h, n = self.byte(), self.byte()
        layout, dtype = LAYOUTS[h % len(LAYOUTS)], DTYPES[h // len(LAYOUTS) % len(DTYPES)]
        a = np.frombuffer(self.take(n * dtype.itemsize), dtype=dtype).copy()
        if layout == "strided":
            return np.repeat(a, 2)[::2]
        if layout == "2d":
            rows = self.byte() % 4 + 1
            return a[: n - n % rows].reshape(rows, -1)
        if layout == "0d":
            return a[0] if n else np.array(0, dtype=dtype)
        if layout == "list":
            return a.tolist()
        if layout == "none":
            return None
        if layout == "readonly":
            a.setflags(write=False)
            return a
        if layout == "misaligned" and n:
            buf = np.zeros(a.nbytes + 1, dtype=np.uint8)
            buf[1:] = a.view(np.uint8)
            return np.frombuffer(buf.data, dtype=dtype, count=n, offset=1)
        return a

    def text(self) -> str:
        n = self.byte()
        return self.take(n).decode("utf-8", "replace")


class Writer:
    """Builds inputs field by field in Reader's format (for make_corpus.py)."""

    def __init__(self) -> None:
        self.out = bytearray()

    def byte(self, b: int) -> "Writer":
        self.out.append(b)
        return self

    def array(self, values: Any, dtype: Any = I64, layout: str = "contiguous", rows: int = 1) -> "Writer":
        a = np.asarray(values, dtype=dtype).ravel()
        self.byte(LAYOUTS.index(layout) + len(LAYOUTS) * DTYPES.index(np.dtype(dtype))).byte(a.size)
        self.out += a.tobytes()
        if layout == "2d":
            self.byte(rows - 1)
        return self

    def text(self, s: str) -> "Writer":
        b = s.encode()
        self.byte(len(b))
        self.out += b
        return self

    def bytes(self) -> bytes:
        return bytes(self.out)


# -- what the core must answer ---------------------------------------------------------------------------------------

def well_formed(a: Any, dtype: np.dtype, ndim: int = 1) -> bool:
    """An array the core takes as it is: ``dtype`` (or an equivalent one, e.g. longlong for int64), ``ndim``
    dimensions, C-contiguous and aligned."""
    return (isinstance(a, np.ndarray) and a.dtype == dtype and a.ndim == ndim and a.flags.c_contiguous
            and a.flags.aligned)


def batch_problem(tokens: np.ndarray, offsets: np.ndarray, doc_ids: Optional[np.ndarray], cfg: blasgpt.Config,
                  mean_over: int = 0) -> Optional[str]:
    """Why the core must reject this well-formed batch, or None if it must accept it (Model::validate's rules)."""
    num_docs = offsets.size - 1
    size = doc_ids.size if doc_ids is not None else num_docs
    if size < 1:
        return "empty batch"
    if offsets.size < 2:
        return "fewer than 2 offsets"
    for i in range(size):
        d = int(doc_ids[i]) if doc_ids is not None else i
        if not 0 <= d < num_docs:
            return f"document index {d}"
        lo, hi = int(offsets[d]), int(offsets[d + 1])
        if lo < 0 or lo > hi or hi > tokens.size:
            return f"document {d} spans [{lo}, {hi})"
        if hi - lo < 2:
            return f"document {d} is {hi - lo} tokens"
        n = min(cfg.block_size, hi - lo - 1)
        bad = [int(t) for t in tokens[lo:lo + n + 1] if not 0 <= t < cfg.vocab_size]
        if bad:
            return f"token id {bad[0]}"
    if mean_over and mean_over < size:
        return f"mean_over {mean_over} < {size} documents"
    return None


def check_call(call: Callable[[], Any], problem: Optional[str], what: str) -> Any:
    """Run ``call``: only ValueError may escape; with a ``problem`` the call must raise one, without (None) it must
    succeed. Returns what the call returned (None when it raised)."""
    try:
        result = call()
    except Exception as e:
        allowed_error(e, (ValueError,))
        if problem is None:
            raise Finding(f"{what}: a valid input was rejected: {e}") from e
        return None
    if problem:
        raise Finding(f"{what}: an invalid input ({problem}) was accepted, returning {result!r}")
    return result


def finite_loss(loss: Any, what: str) -> None:
    if loss is not None and not math.isfinite(loss):
        raise Finding(f"{what}: valid batch, loss {loss}")


def restore(i: int) -> None:
    m = MODELS[i]
    p, mo, v = SNAPSHOTS[i]
    m.flat_params[...] = p
    m.adam_m[...] = mo
    m.adam_v[...] = v
    m.step = 0


# -- targets -----------------------------------------------------------------------------------------------------------

def fuzz_tokenizer(r: Reader, model: blasgpt.Model) -> None:
    block_size = r.int_code()
    chars = list(r.text())
    if r.byte() % 4:  # mostly a valid vocabulary
        chars = sorted(set(chars))
    docs = r.rest().decode("utf-8", "replace").split("\n")
    try:
        tok = blasgpt.Tokenizer(chars)
    except Exception as e:
        allowed_error(e, (ValueError,))
        return
    # plain-Python packing: [BOS] + ids + [BOS] per document, cut to block_size + 1 tokens
    index = {c: i for i, c in enumerate(tok.chars)}
    problem = None
    if not docs:
        problem = "no documents"
    elif block_size is not None and not 1 <= block_size <= 2**30:
        problem = f"block_size {block_size}"
    elif any(c not in index for d in docs for c in d):
        problem = "character outside the vocabulary"
    try:
        batch = tok.batch(docs, block_size)
    except Exception as e:
        allowed_error(e, (ValueError,))
        if problem is None:
            raise Finding(f"Tokenizer.batch rejected valid documents: {e}") from e
        return
    if problem:
        raise Finding(f"Tokenizer.batch accepted invalid input ({problem})")
    want = [[tok.bos, *(index[c] for c in d), tok.bos][: None if block_size is None else block_size + 1]
            for d in docs]
    np.testing.assert_array_equal(batch.tokens, np.array([t for d in want for t in d], dtype=np.int32))
    np.testing.assert_array_equal(batch.offsets, np.cumsum([0] + [len(d) for d in want]))
    # and the core: the BOS id is len(chars), so the batch fits the model exactly when the vocabulary does
    fits = tok.vocab_size <= model.config.vocab_size
    finite_loss(check_call(lambda: model.loss(batch), None if fits else "token ids beyond the model's vocabulary",
                           "loss(tokenizer batch)"), "loss(tokenizer batch)")


def fuzz_batch(r: Reader, i: int, raw: bool) -> None:
    model = MODELS[i]
    tokens, offsets, doc_ids = r.array(), r.array(), r.array()
    op, mean_over, lr = r.byte() % 3, r.int_code() or 0, r.lr()
    if raw:  # (misaligned arrays are not well formed: the core must refuse them)
        target, args = model._core, (tokens, offsets, doc_ids)
        well = well_formed(tokens, I32) and well_formed(offsets, I64) and (doc_ids is None or well_formed(doc_ids, I64))
    else:
        try:
            batch = blasgpt.Batch(tokens, offsets, doc_ids)
        except Exception as e:
            allowed_error(e, (ValueError,))
            return
        target, args, well = model, (batch,), True  # Batch checked dtype (==), 1-D and contiguity
    problem = batch_problem(tokens, offsets, doc_ids, model.config, mean_over if op == 1 else 0) if well else "arrays"
    if problem is None and op == 1 and mean_over and not (0 < mean_over <= (2**63 - 1 if raw else 2**62)):
        problem = f"mean_over {mean_over}"
    if problem is None and op == 2 and not (math.isfinite(lr) and lr >= 0):
        problem = f"lr {lr}"
    calls = [lambda: target.loss(*args),
             lambda: target.forward_backward(*args, mean_over),
             lambda: target.train_step(tokens, offsets, lr, doc_ids) if raw else model.train_step(batch, lr)]
    what = f"{'core' if raw else 'Model'}.{['loss', 'forward_backward', 'train_step'][op]}"
    try:
        finite_loss(check_call(calls[op], problem, what), what)
    finally:
        restore(i)


def fuzz_train_steps(r: Reader, i: int) -> None:
    model = MODELS[i]
    tokens, offsets, doc_ids, lrs = r.array(), r.array(), r.array(), r.array()
    well = (well_formed(tokens, I32) and well_formed(offsets, I64) and well_formed(doc_ids, I64, 2)
            and well_formed(lrs, np.dtype(np.float64)))
    problem, first_bad = "arrays", None  # first_bad: the first step whose documents the core must reject
    if well:
        steps, size = doc_ids.shape
        problem = ("lrs length" if lrs.size != steps else "empty batch" if size < 1
                   else "lr" if not all(math.isfinite(x) and x >= 0 for x in lrs) else None)
        first_bad = next((s for s in range(steps) if batch_problem(tokens, offsets, doc_ids[s], model.config)), None)
    try:
        losses = model._core.train_steps(tokens, offsets, doc_ids, lrs)
    except Exception as e:
        allowed_error(e, (ValueError,))
        if problem is None and first_bad is None:
            raise Finding(f"train_steps rejected valid steps: {e}") from e
        return
    finally:
        restore(i)
    if problem:
        raise Finding(f"train_steps accepted invalid input ({problem}), returning {losses!r}")
    n = len(losses)
    if n > steps or (n < steps and (n == 0 or math.isfinite(losses[-1]))):
        raise Finding(f"train_steps returned {n} losses for {steps} steps: {losses!r}")
    if first_bad is not None and first_bad < n:
        raise Finding(f"train_steps ran step {first_bad}, whose documents are invalid")


def fuzz_forward(r: Reader, i: int) -> None:
    model = MODELS[i]
    ids = r.array()
    cfg = model.config
    values = np.asarray(ids, dtype=object).ravel().tolist() if ids is not None else []
    ints = isinstance(ids, list) or (isinstance(ids, np.ndarray) and ids.ndim == 1 and ids.dtype.kind in "iu")
    ok = ints and 1 <= len(values) <= cfg.block_size and all(type(v) is int and 0 <= v < cfg.vocab_size
                                                              for v in values)
    problem = None if ok else "ids"
    logits = check_call(lambda: model.forward(ids), problem, "Model.forward")
    if logits is not None and logits.shape != (len(values), cfg.vocab_size):
        raise Finding(f"Model.forward gave shape {logits.shape}")
    raw_problem = None if ok and well_formed(ids, I32) else "ids"
    check_call(lambda: model._core.logits(ids), raw_problem, "core.logits")


def test_one_input(data: bytes) -> None:
    r = Reader(data)
    target, i = TARGETS[r.byte() % len(TARGETS)], r.byte() % len(MODELS)
    if target == "tokenizer":
        fuzz_tokenizer(r, MODELS[i])
    elif target in ("batch", "core"):
        fuzz_batch(r, i, raw=target == "core")
    elif target == "train_steps":
        fuzz_train_steps(r, i)
    else:
        fuzz_forward(r, i)


if __name__ == "__main__":
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()
