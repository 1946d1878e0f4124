"""What the benchmark trains on, made once per run and shared by the parts that time it: names.txt documents at
microgpt's size (d16, d64) and text windows of one token stream (the recipe's text sizes), each with its weights,
its batches and the float64 reference loss and gradients that every timed implementation is checked against."""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np

import blasgpt
from recipe import TEXT, TEXT_INIT_STD


class TextStream:
    """A text file (or a named dataset such as ``shakespeare``, fetched and checked by blasgpt) as one token
    stream with its own character vocabulary."""

    def __init__(self, spec: str):
        data, self.tok = blasgpt.load_text(spec)
        self.tokens = np.ascontiguousarray(data.tokens)
        self.source = spec

    def split(self, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
        """(train, validation): the tail ``val_fraction`` of the stream is validation."""
        n_val = int(self.tokens.size * val_fraction)
        return self.tokens[:self.tokens.size - n_val], self.tokens[self.tokens.size - n_val:]


def max_rel_err(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> float:
    return max(float(np.abs(got[k] - want[k]).max() / max(np.abs(want[k]).max(), 1e-300)) for k in want)


def check_model(what: str, m: blasgpt.Model, batch: blasgpt.Batch, ref_loss: float,
                ref_grads: dict[str, np.ndarray]) -> str:
    """Loss and gradients of ``m`` on ``batch`` against the float64 reference; AssertionError if they differ."""
    loss = m.forward_backward(batch)
    f64 = m.dtype == np.float64
    if abs(loss - ref_loss) > (1e-11 if f64 else 2e-4) * max(1.0, abs(ref_loss)):
        raise AssertionError(f"{what}: loss {loss} differs from the reference {ref_loss}")
    err = max_rel_err({k: v.astype(np.float64) for k, v in m.grads.items()}, ref_grads)
    if err > (1e-10 if f64 else 1e-2):
        raise AssertionError(f"{what}: gradient differs from the reference by {err:.1e}")
    return f"loss Δ {abs(loss - ref_loss):.0e}, grad rel {err:.0e}"


def check_baseline(what: str, loss: float, grads: dict[str, np.ndarray], ref_loss: float,
                   ref_grads: dict[str, np.ndarray], tol: float) -> str:
    """A float64 baseline's loss and gradients against blasgpt's; AssertionError if they differ."""
    err = max_rel_err(grads, ref_grads)
    if abs(loss - ref_loss) > tol * max(1.0, abs(ref_loss)) or err > 100 * tol:
        raise AssertionError(f"{what} disagrees with blasgpt: loss Δ {abs(loss - ref_loss):.1e}, gradient {err:.1e}")
    return f"float64 loss Δ {abs(loss - ref_loss):.0e}, grad rel {err:.0e}"


def copy_of(params: dict[str, np.ndarray], cfg: blasgpt.Config, dtype: str, backend: Optional[str], threads: int,
            docs: int, rows: int, doc_len: int) -> blasgpt.Model:
    """A model with these weights on ``backend`` (None: the default, what users run); under the auto backend,
    planned for the training steps it will be timed on (``docs`` documents, ``rows`` positions in all, split across
    the threads), before anything (such as a check on a smaller batch) makes it plan for another shape."""
    m = blasgpt.Model(cfg, dtype=dtype, backend=backend, threads=threads, init=False)
    for k, v in params.items():
        m.params[k][...] = v
    if m.backend == "auto":
        m.plan_gemm(max(1, rows // min(threads, docs)), doc_len)
    return m


class NamesWorkload:
    """One model size on names.txt with microgpt's start (shuffle and weights, seed 42): documents, weights and the
    float64 reference gradient of 16 documents."""

    def __init__(self, n_embd: int, names: Sequence[str]):
        self.n_embd = n_embd
        self.name = f"d{n_embd}"
        self.docs, self.tok, ref = blasgpt.microgpt_start(names, seed=42, n_embd=n_embd)
        self.cfg = ref.config
        self.params = {k: v.copy() for k, v in ref.params.items()}
        self.corpus = self.tok.batch(self.docs, block_size=self.cfg.block_size)
        self.check_batch = self.tok.batch(self.docs[:16])
        self.ref_loss = ref.forward_backward(self.check_batch)
        self.ref_grads = {k: v.copy() for k, v in ref.grads.items()}
        lens = np.diff(self.corpus.offsets)[:4096]
        self.mean_flops = blasgpt.training_flops(self.cfg, np.minimum(self.cfg.block_size, lens - 1)) / len(lens)

    def model(self, dtype: str, backend: Optional[str] = None, threads: int = 1, batch: int = 16) -> blasgpt.Model:
        """A copy of the weights for training steps of ``batch`` documents (``backend`` None: the default)."""
        offsets = self.corpus.offsets
        assert offsets is not None  # a corpus of documents
        lens = np.minimum(self.cfg.block_size, np.diff(offsets)[self.ids(0, 1, batch)[0]] - 1)
        return copy_of(self.params, self.cfg, dtype, backend, threads, batch, int(lens.sum()),
                       int(round(float(lens.mean()))))

    def ids(self, first_step: int, steps: int, batch: int) -> np.ndarray:
        """Documents of steps first_step .. first_step + steps - 1 (as blasgpt.train picks them), (steps, batch)."""
        s = np.arange(first_step, first_step + steps, dtype=np.int64)
        return (s[:, None] * batch + np.arange(batch)) % len(self.docs)

    def batch_at(self, step: int, batch: int) -> blasgpt.Batch:
        """Step ``step``'s documents packed on their own (what a baseline is given)."""
        ids = self.ids(step, 1, batch)[0]
        lo, hi = self.corpus.offsets[ids], self.corpus.offsets[ids + 1]
        toks = np.concatenate([self.corpus.tokens[a:b] for a, b in zip(lo, hi)])
        return blasgpt.Batch(toks, np.concatenate([[0], np.cumsum(hi - lo)]).astype(np.int64))

    def runner(self, m: blasgpt.Model, batch: int) -> Callable[[], int]:
        """Run a chunk of training steps in one ``train_steps`` call; returns the documents trained on."""
        chunk = max(1, 2048 // batch)
        step = [0]

        def run() -> int:
            m.train_steps(self.corpus, self.ids(step[0], chunk, batch), np.full(chunk, 1e-3))
            step[0] += chunk
            return chunk * batch

        run()  # warm up: workspaces grow to size once
        return run


class TextWorkload:
    """One text-mode model on a token stream: weights (numpy draws of N(0, TEXT_INIT_STD²)), a table of window
    starts per step, and the float64 reference loss and gradients of a few windows."""

    def __init__(self, name: str, stream: TextStream, check_windows: int, size: Sequence[int] = ()):
        n_embd, n_layer, n_head, block, batch = size or TEXT[name]
        self.name, self.batch, self.tokens = name, batch, stream.tokens
        self.cfg = blasgpt.Config(vocab_size=stream.tok.vocab_size, n_embd=n_embd, n_head=n_head, n_layer=n_layer,
                                  block_size=block)
        if self.tokens.size < block + 2:
            raise ValueError(f"{stream.source} has {self.tokens.size} tokens; {name} needs more than {block + 1}")
        rng = np.random.default_rng(42)
        ref = blasgpt.Model(self.cfg, "float64", init=False)
        for v in ref.params.values():
            v[...] = rng.normal(0.0, TEXT_INIT_STD, v.shape)
        self.params = {k: v.copy() for k, v in ref.params.items()}
        self.starts = rng.integers(0, self.tokens.size - block - 1, size=(64, batch), dtype=np.int64)
        self.check = blasgpt.Batch.of_windows(self.tokens, self.starts[0, :check_windows])
        self.ref_loss = ref.forward_backward(self.check)
        self.ref_grads = {k: v.copy() for k, v in ref.grads.items()}
        self.corpus = blasgpt.Batch.of_windows(self.tokens, self.starts[0])
        self.tokens_per_step = batch * block
        self.flops_per_token = blasgpt.training_flops(self.cfg, [block]) / block
        self.label = f"d{n_embd} L{n_layer} H{n_head} T{block}"
        self.torch_checked = ""  # how the PyTorch baseline was checked on this workload, once it has been

    def model(self, dtype: str, threads: int = 1, backend: Optional[str] = None) -> blasgpt.Model:
        """A copy of the weights for training steps of ``batch`` windows (``backend`` None: the default)."""
        block = self.cfg.block_size
        return copy_of(self.params, self.cfg, dtype, backend, threads, self.batch, self.batch * block,
                       block)

    def runner(self, m: blasgpt.Model) -> Callable[[], int]:
        """One training step per call (a text step is milliseconds, the Python around it microseconds); returns
        the tokens trained on."""
        step = [0]

        def run() -> int:
            s = step[0] % len(self.starts)
            m.train_steps(self.corpus, self.starts[s:s + 1], np.full(1, 1e-3))
            step[0] += 1
            return self.tokens_per_step

        run()
        return run


class Workloads:
    """The run's workloads, each made on first use and then shared by every part that needs it."""

    def __init__(self, data: str):
        self.data = data
        self._stream: Optional[TextStream] = None
        self._names: Optional[list[str]] = None
        self._named: dict[int, NamesWorkload] = {}
        self._text: dict[str, TextWorkload] = {}

    def stream(self) -> TextStream:
        if self._stream is None:
            self._stream = TextStream(self.data)
        return self._stream

    def names(self, n_embd: int) -> NamesWorkload:
        if self._names is None:
            self._names = blasgpt.load_docs()
        if n_embd not in self._named:
            self._named[n_embd] = NamesWorkload(n_embd, self._names)
        return self._named[n_embd]

    def text(self, name: str) -> TextWorkload:
        if name not in self._text:
            self._text[name] = TextWorkload(name, self.stream(), 4 if name == "text-d128" else 2)
        return self._text[name]
