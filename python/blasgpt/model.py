"""The Model: owns the C++ state and exposes it as numpy views."""

from __future__ import annotations

import math
import numbers
import os
import random
import sys
from typing import Any, Callable, Iterator, Mapping, NoReturn, Optional, Sequence, Union

import numpy as np

from . import _core
from .calibrate import Plan, check_step, make_plan, row_bucket, step_batch
from .config import Config, MemoryEstimate, MemoryLimitError, check_memory, format_bytes, memory_estimate
from .data import Batch

INIT_STD = 0.08  # microgpt: every weight ~ gauss(0, 0.08)
ADAM_BETA1, ADAM_BETA2, ADAM_EPS = 0.85, 0.99, 1e-8  # microgpt's Adam (the core's defaults)
DTYPES = {"float32": _core.ModelF32, "float64": _core.ModelF64}
BACKENDS = ("auto", "native", "blas")
_MAX_FLOAT = sys.float_info.max


def default_backend() -> str:
    """The gemm backend: $BLASGPT_GEMM (auto | native | blas), else auto: per product shape, whichever of the native
    kernels and OpenBLAS was faster on this machine (blasgpt.calibrate; measured once, cached)."""
    name = os.environ.get("BLASGPT_GEMM", "auto") or "auto"
    if name not in BACKENDS:
        raise ValueError(f"BLASGPT_GEMM must be one of {', '.join(BACKENDS)}, got {name!r}")
    return name


def _dtype_name(dtype: Any) -> str:
    try:
        name = np.dtype(dtype).name
    except TypeError:
        name = str(dtype)
    if name not in DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dtype!r}")
    return name


class Model:
    """A GPT whose parameters, gradients and Adam moments live in four contiguous C++ buffers.

    ``threads`` splits every batch's documents across that many worker threads (each with its own activations
    and gradient partial, summed in a fixed order, so a result does not depend on scheduling).

    ``params`` and ``grads`` map microgpt's names (``wte``, ``wpe``, ``lm_head``, ``layer0.attn_wq``, ...) to
    zero-copy numpy views of shape (rows, cols); writing ``model.params["wte"][...] = w`` sets the weights. The
    mappings are read-only (``model.params["wte"] = w`` raises TypeError): a name always means the live buffer.

    Weights are drawn from ``gauss(0, 0.08)`` with Python's ``random`` — from ``init_rng`` if given (to continue a
    stream, as microgpt does after shuffling its documents), else from ``random.Random(seed)`` — parameter by
    parameter in table order, each row-major.

    ``model.save(path, tokenizer)`` writes a checkpoint (parameters, Adam state, step, config, vocabulary) and
    ``Model.load(path)`` reads the model back; both are blasgpt.checkpoint's ``save_checkpoint`` /
    ``load_checkpoint`` (which also return the tokenizer and the run's settings).
    """

    def __init__(self, config: Config, dtype: Any = "float64", seed: int = 42, *,
                 init_rng: Optional[random.Random] = None, backend: Optional[str] = None, threads: int = 1,
                 init: bool = True):
        if not isinstance(config, Config):
            raise ValueError(f"config must be a blasgpt.Config, got {type(config).__name__}")
        self.config = config
        self.dtype = np.dtype(_dtype_name(dtype))
        need = memory_estimate(config, self.dtype, threads=_check_threads(threads))
        check_memory(need, f"a {self.dtype.name} model of {config.num_params:,} parameters")  # before allocating
        backend = _check_backend(backend or default_backend())
        try:
            self._core = DTYPES[self.dtype.name](**config.to_dict(), backend=backend, threads=threads)
        except MemoryError:
            raise MemoryLimitError(f"out of memory allocating a {self.dtype.name} model of {config.num_params:,} "
                                   f"parameters ({format_bytes(need.total)}: {need.breakdown()})") from None
        self._table: list[tuple[str, tuple[int, int], int]] = self._core.param_table()
        self._flat = {"params": self._core.params(), "grads": self._core.grads(),
                      "adam_m": self._core.adam_m(), "adam_v": self._core.adam_v()}
        self._activations_sized = 0  # activation bytes reserve() has checked this model's memory for (the most so far)
        self._plan: Optional[Plan] = None  # the auto backend's plan in use (see plan_gemm)
        self._plan_pending = self.backend == "auto"  # plan from the first batch trained on
        self._plan_kept = False  # a plan from a checkpoint (use_plan): kept, so a resumed run computes the same
        self._params = Views("params", self._flat["params"], self._table)
        self._grads = Views("grads", self._flat["grads"], self._table)
        if init:
            rng = init_rng if init_rng is not None else random.Random(seed)
            for name, (rows, cols), _ in self._table:
                draws = np.fromiter((rng.gauss(0.0, INIT_STD) for _ in range(rows * cols)), np.float64, rows * cols)
                self.params[name][...] = draws.reshape(rows, cols)

    # -- state -----------------------------------------------------------------------------------------------
    @property
    def params(self) -> "Views":
        """Each parameter by name: a (rows, cols) view into the one contiguous parameter buffer (write in place)."""
        return self._params

    @property
    def grads(self) -> "Views":
        """Each parameter's gradient by name: a (rows, cols) view into the one contiguous gradient buffer."""
        return self._grads

    @property
    def num_params(self) -> int:
        return int(self._core.num_params)

    @property
    def param_table(self) -> list[tuple[str, tuple[int, int], int]]:
        """(name, (rows, cols), offset) of every parameter, in buffer order."""
        return list(self._table)

    @property
    def decayed_params(self) -> list[str]:
        """Names of the parameters AdamW's weight decay shrinks (the core table's decay flag): every matrix that
        multiplies activations (attention, MLP, lm_head), not the embeddings wte and wpe, whose scale rmsnorm
        removes (see docs/TRAINING_OPTIONS.md)."""
        return list(self._core.decayed_params())

    @property
    def flat_params(self) -> np.ndarray:
        """All parameters as one contiguous 1-D view (the buffer the C++ core updates)."""
        return self._flat["params"]

    @property
    def flat_grads(self) -> np.ndarray:
        return self._flat["grads"]

    @property
    def adam_m(self) -> np.ndarray:
        """Adam's first moment, one contiguous 1-D view."""
        return self._flat["adam_m"]

    @property
    def adam_v(self) -> np.ndarray:
        """Adam's second moment, one contiguous 1-D view."""
        return self._flat["adam_v"]

    @property
    def step(self) -> int:
        """Adam updates applied so far (the bias-correction counter)."""
        return int(self._core.step)

    @step.setter
    def step(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) < 1 << 63:
            raise ValueError(f"step must be an integer between 0 and 2**63 - 1, got {value!r}")
        self._core.step = int(value)

    @property
    def backend(self) -> str:
        """The gemm backend in use: 'auto' (the default: per product shape, the faster of the two on this machine,
        see ``plan_gemm``), 'native' (blasgpt's kernels, OpenBLAS for products of 2^29 multiply-adds or more) or
        'blas' (OpenBLAS for every product)."""
        return str(self._core.backend)

    @backend.setter
    def backend(self, name: str) -> None:
        self._core.backend = _check_backend(name)
        self._plan_pending = name == "auto" and self._plan is None

    @property
    def gemm_plan(self) -> Optional[Plan]:
        """The plan the auto backend uses (each product shape's choice and both timings), None before one is made."""
        return self._plan

    def plan_gemm(self, rows: int, doc_len: Optional[int] = None) -> Plan:
        """Decide each product of a training step of ``rows`` positions per thread (documents of ``doc_len``
        positions, default block_size) for the auto backend: timings from the machine's cache, or measured now
        (blasgpt.calibrate), then the whole step checked (this model's forward-backward pass timed under those
        choices, all native and all OpenBLAS; the fastest stays; its gradients are left as they were), and used
        by this model from now on (the other backends keep them for when it is switched to auto). ``train``
        calls this; a first step without a plan makes one from its batch. A model loaded from a checkpoint keeps
        the plan its run used (use_plan) and returns it unchanged."""
        if isinstance(rows, bool) or not isinstance(rows, int) or rows < 1:
            raise ValueError(f"rows must be a positive integer, got {rows!r}")
        n = self.config.block_size if doc_len is None else int(doc_len)
        n = max(1, min(n, self.config.block_size))
        plan = self._plan
        if self._plan_kept and plan is not None:
            return plan
        if plan is None or plan.rows != row_bucket(rows) or plan.doc_len != n:
            plan = self._check_step(make_plan(self.config, self.dtype.name, rows, n))
            self._core.set_gemm_plan(plan.choices(), plan.fused_attention)
            self._plan = plan
        self._plan_pending = False
        return plan

    def _check_step(self, plan: Plan) -> Plan:
        """calibrate.check_step on this model: its forward-backward pass over a batch of the plan's shape, the
        gradient buffer restored afterwards (parameters, Adam state and step are not touched by the pass)."""
        batch = step_batch(self.config, plan, self.threads)
        tokens, offsets = batch.tokens, batch.offsets
        assert offsets is not None  # (a batch of documents)
        grads = self.flat_grads.copy()

        def use(kind: str) -> None:
            self._core.set_gemm_plan(plan.choices(kind), plan.fused_for(kind))

        def step() -> None:
            self._core.forward_backward(tokens, offsets, None, 0, False, False, 0.0, 0, 0)

        try:
            return check_step(plan, self.config, self.threads, use, step)
        finally:
            self.flat_grads[...] = grads

    def use_plan(self, plan: Plan) -> None:
        """Compute with ``plan`` (the one a checkpoint's run used) from now on, instead of planning anew: a resumed
        run then takes the same kernel for every product as the run it continues, so it continues bit-exactly
        whatever this machine's own timings or cache say."""
        if not isinstance(plan, Plan):
            raise TypeError(f"use_plan takes a blasgpt.Plan (e.g. a checkpoint's run plan), got {type(plan).__name__}")
        if plan.dtype != self.dtype.name:
            raise ValueError(f"a {plan.dtype} gemm plan cannot drive a {self.dtype.name} model")
        self._core.set_gemm_plan(plan.choices(), plan.fused_attention)
        self._plan, self._plan_kept, self._plan_pending = plan, True, False

    def _plan_from(self, batch: Batch, ids: Optional[np.ndarray], steps: int = 1) -> None:
        """plan_gemm for the positions per step and thread of ``steps`` steps of documents ``ids`` of ``batch``
        (nothing when the batch is malformed: the core says what is wrong with it)."""
        try:
            block = self.config.block_size
            if batch.windows:
                docs = np.asarray(ids).size // steps
                rows, n = docs * block, block
            else:
                lens = np.diff(np.asarray(batch.offsets))
                each = np.minimum(block, (lens if ids is None else lens[np.asarray(ids).reshape(-1)]) - 1)
                docs, rows, n = each.size // steps, int(each.sum()) // steps, int(round(float(each.mean())))
        except (AttributeError, IndexError, TypeError, ValueError):
            return
        if rows >= 1:
            self.plan_gemm(max(1, rows // max(1, min(self.threads, docs))), n)

    @property
    def threads(self) -> int:
        """Worker threads a batch is split across."""
        return int(self._core.threads)

    @threads.setter
    def threads(self, n: int) -> None:
        now = memory_estimate(self.config, self.dtype, threads=self.threads)
        check_memory(memory_estimate(self.config, self.dtype, threads=_check_threads(n)),
                     f"this model with {n} threads", resident=now.total)
        self._core.threads = n

    def reserve(self, need: MemoryEstimate, what: str) -> Optional[str]:
        """Refuse (MemoryLimitError, before anything is allocated) a use of this model that needs more memory than
        is available — counting as already held this model's buffers and the largest activation workspace reserved
        so far (workspaces only grow) — and remember ``need``'s activations. Returns check_memory's note when the
        use fits but comes close to the limit."""
        held = memory_estimate(self.config, self.dtype, threads=self.threads).total + self._activations_sized
        note = check_memory(need, what, resident=min(held, need.total))
        self._activations_sized = max(self._activations_sized, need.activations)
        return note

    # -- checkpoints -----------------------------------------------------------------------------------------
    def save(self, path: Union[str, "os.PathLike[str]"], tokenizer: Any = None, extra: Any = None) -> Any:
        """Write this model — parameters, Adam moments, step, config — and ``tokenizer``'s vocabulary (if given) and
        ``extra`` (JSON metadata) to one safetensors checkpoint at ``path``, atomically; returns the path.
        Same as ``blasgpt.save_checkpoint(path, model, tokenizer, extra)``."""
        return _checkpoint_io("save")(path, self, tokenizer, extra)

    @classmethod
    def load(cls, path: Union[str, "os.PathLike[str]"], backend: Optional[str] = None) -> "Model":
        """The model of a checkpoint (``model.save`` / ``save_checkpoint``), ready to train on bit-exactly or to
        sample from; ``blasgpt.load_checkpoint(path)`` gives its tokenizer and run settings too."""
        return _checkpoint_io("load")(path, backend=backend).model

    def __repr__(self) -> str:
        c = self.config
        return (f"Model(vocab_size={c.vocab_size}, n_embd={c.n_embd}, n_head={c.n_head}, n_layer={c.n_layer}, "
                f"block_size={c.block_size}, {'tie_embeddings=True, ' if c.tie_embeddings else ''}"
                f"dtype={self.dtype.name}, params={self.num_params}, step={self.step})")

    # -- compute ---------------------------------------------------------------------------------------------
    def forward_backward(self, batch: Batch, mean_over: Optional[int] = None, *, accumulate: bool = False,
                         dropout: float = 0.0, dropout_seed: int = 0, share_start: int = 0) -> float:
        """Loss of ``batch`` (mean over documents of each document's mean token loss); fills ``grads``.
        Adam's state and the step count are untouched. ``mean_over`` (>= the batch's documents) divides by that
        many documents instead: the batch is one share of a larger one, and the shares' results add up.
        ``accumulate=True`` adds the gradient to ``grads`` instead of overwriting it: micro-batches of one step,
        each with ``mean_over`` = the step's documents, leave the whole batch's gradient (gradient accumulation;
        ``train_step`` does this when given a list of batches).

        ``dropout`` p in [0, 1) trains with inverted dropout (docs/TRAINING_OPTIONS.md): its masks are a function
        of (``dropout_seed``, ``step``, site, sequence index in the step's whole batch, position, column) only;
        ``share_start`` is the index of this batch's first sequence in that whole batch (a micro-batch or process
        share), so splitting a batch does not change its masks. ``loss``, ``forward`` and generation never drop."""
        _check_batch(batch)
        if mean_over and (isinstance(mean_over, bool) or not isinstance(mean_over, int)
                          or not batch.num_docs <= mean_over <= 1 << 62):
            raise ValueError(f"mean_over must be an integer between the batch size ({batch.num_docs}) and 2**62, "
                             f"got {mean_over!r}")
        if self._plan_pending:
            self._plan_from(batch, batch.doc_ids)
        if isinstance(share_start, bool) or not isinstance(share_start, int) or not 0 <= share_start <= 1 << 62:
            raise ValueError(f"share_start must be an integer between 0 and 2**62, got {share_start!r}")
        return self._core.forward_backward(batch.tokens, batch.offsets, batch.doc_ids, mean_over or 0, batch.windows,
                                           bool(accumulate), _check_dropout(dropout), _check_seed(dropout_seed),
                                           share_start)

    def train_step(self, batch: Union[Batch, Sequence[Batch]], lr: float = 0.01, *, weight_decay: float = 0.0,
                   grad_clip: Optional[float] = None, dropout: float = 0.0, dropout_seed: int = 0) -> float:
        """forward_backward then one Adam update with exactly ``lr``; returns the loss before the update (a loss
        that is not finite is returned and not applied).

        ``batch`` may be a list of micro-batches (gradient accumulation): their gradients are summed, each
        averaged over all their sequences together, so the update is the one of the batch they make up, with the
        activation memory of the largest of them.

        Options (docs/TRAINING_OPTIONS.md), all off by default: ``weight_decay`` > 0 makes the update AdamW's
        (every parameter of ``decayed_params`` first shrinks by the factor 1 - lr * weight_decay, decoupled from
        the moments); ``grad_clip`` G > 0 scales the whole gradient by min(1, G / ||g||) before the update (the
        norm before clipping is then ``grad_norm``); ``dropout`` p > 0 with ``dropout_seed`` as in
        ``forward_backward``."""
        # per-call cost matters here (a Python loop of steps): cheap checks first, all arguments by position; the
        # binding checks the arrays (a Batch checked them when it was made)
        if not (isinstance(lr, float) and 0.0 <= lr <= _MAX_FLOAT):  # (NaN fails the comparison)
            lr = _check_lr(lr)
        if not isinstance(batch, Batch):
            if isinstance(batch, (list, tuple)) and all(isinstance(b, Batch) for b in batch):
                return self._accumulated_step(batch, lr, _check_weight_decay(weight_decay),
                                              _check_grad_clip(grad_clip), _check_dropout(dropout),
                                              _check_seed(dropout_seed))
            _check_batch(batch)
        if self._plan_pending:
            self._plan_from(batch, batch.doc_ids)
        if (weight_decay == 0.0 and grad_clip is None and dropout == 0.0 and dropout_seed == 0
                and not isinstance(weight_decay, bool) and not isinstance(dropout, bool)):
            return self._core.train_step(batch.tokens, batch.offsets, lr, batch.doc_ids, batch.windows)
        return self._core.train_step(batch.tokens, batch.offsets, lr, batch.doc_ids, batch.windows, ADAM_BETA1,
                                     ADAM_BETA2, ADAM_EPS, _check_weight_decay(weight_decay),
                                     _check_grad_clip(grad_clip), _check_dropout(dropout),
                                     _check_seed(dropout_seed))

    def _accumulated_step(self, micro: Sequence[Batch], lr: float, weight_decay: float, grad_clip: float,
                          dropout: float, seed: int) -> float:
        if not micro:
            raise ValueError("train_step needs at least one batch (got an empty list of micro-batches)")
        total = sum(b.num_docs for b in micro)
        if self._plan_pending:  # the gemm shapes of the largest micro-batch
            big = max(micro, key=lambda b: b.num_docs)
            self._plan_from(big, big.doc_ids)
        loss, start = 0.0, 0
        for k, b in enumerate(micro):
            loss += self._core.forward_backward(b.tokens, b.offsets, b.doc_ids, total, b.windows, k > 0, dropout,
                                                seed, start)
            start += b.num_docs
        if math.isfinite(loss):
            self._core.apply_adam(lr, ADAM_BETA1, ADAM_BETA2, ADAM_EPS, weight_decay, grad_clip)
        return loss

    def train_steps(self, corpus: Batch, doc_ids: np.ndarray, lrs: np.ndarray, *, weight_decay: float = 0.0,
                    grad_clip: Optional[float] = None, dropout: float = 0.0, dropout_seed: int = 0) -> np.ndarray:
        """Many train_steps in one C++ call (no Python work per step): step s trains on documents
        ``doc_ids[s]`` (int64, shape (steps, batch)) of ``corpus`` — for a corpus of windows
        (``Batch.of_windows``), on the windows starting at ``doc_ids[s]`` — with learning rate ``lrs[s]``
        (float64). Returns the losses; stops after the first non-finite loss, which is returned but not applied.
        ``weight_decay``, ``grad_clip``, ``dropout`` and ``dropout_seed`` as in ``train_step``."""
        _check_batch(corpus)
        if self._plan_pending and isinstance(doc_ids, np.ndarray) and doc_ids.ndim == 2 and doc_ids.shape[0]:
            self._plan_from(corpus, doc_ids, doc_ids.shape[0])
        return self._core.train_steps(corpus.tokens, corpus.offsets, doc_ids, lrs, windows=corpus.windows,
                                      weight_decay=_check_weight_decay(weight_decay),
                                      grad_clip=_check_grad_clip(grad_clip), dropout=_check_dropout(dropout),
                                      dropout_seed=_check_seed(dropout_seed))

    def apply_adam(self, lr: float, *, weight_decay: float = 0.0, grad_clip: Optional[float] = None) -> None:
        """One Adam update (step + 1) from the gradients now in ``grads`` — after ``forward_backward`` and, in
        data-parallel training, after the gradients were summed across processes (so clipping sees the norm of
        the whole batch's gradient). ``weight_decay`` and ``grad_clip`` as in ``train_step``; when clipping, a
        gradient whose norm is not finite is not applied (``step`` stays, ``grad_norm`` says why)."""
        self._core.apply_adam(_check_lr(lr), weight_decay=_check_weight_decay(weight_decay),
                              grad_clip=_check_grad_clip(grad_clip))

    @property
    def grad_norm(self) -> float:
        """The whole gradient's L2 norm before clipping, at the latest update that clipped (NaN before any)."""
        return float(self._core.grad_norm)

    def loss(self, batch: Batch) -> float:
        """Loss only: gradients and Adam state are left alone (for held-out evaluation)."""
        _check_batch(batch)
        return self._core.loss(batch.tokens, batch.offsets, batch.doc_ids, batch.windows)

    def forward(self, tokens: Union[Sequence[int], np.ndarray]) -> np.ndarray:
        """Logits (n, vocab_size) for a sequence of n <= block_size token ids at positions 0..n-1."""
        return self._core.logits(_token_array(tokens))


class Views(Mapping[str, np.ndarray]):
    """A model's ``params`` or ``grads``: parameter name -> zero-copy (rows, cols) view into its contiguous buffer.
    Read-only as a mapping, so that a name always means the buffer the core computes with and checkpoints save:
    the views are written in place (``model.params["wte"][...] = w``); assigning or deleting a name raises
    TypeError."""

    __slots__ = ("_what", "_views")

    def __init__(self, what: str, flat: np.ndarray, table: Sequence[tuple[str, tuple[int, int], int]]):
        self._what = what
        self._views = {name: flat[off:off + r * c].reshape(r, c) for name, (r, c), off in table}

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __setitem__(self, name: str, value: Any) -> NoReturn:
        raise TypeError(f"model.{self._what} is read-only: a name cannot be rebound to another array; write into "
                        f"the model's buffer in place with model.{self._what}[{name!r}][...] = value")

    def __delitem__(self, name: str) -> NoReturn:
        raise TypeError(f"model.{self._what} is read-only: its names are the model's parameters ({name!r} stays)")

    def __repr__(self) -> str:
        return f"<model.{self._what}: " + ", ".join(f"{k} {v.shape}" for k, v in self._views.items()) + ">"


# blasgpt.checkpoint sits above this module (it builds Models), so Model.save / Model.load cannot import it: it
# installs its save_checkpoint and load_checkpoint here when imported, which ``import blasgpt`` always does.
CHECKPOINT_IO: dict[str, Callable[..., Any]] = {}


def _checkpoint_io(name: str) -> Callable[..., Any]:
    if name not in CHECKPOINT_IO:
        raise RuntimeError("blasgpt.checkpoint is not loaded (import blasgpt)")
    return CHECKPOINT_IO[name]


def _check_batch(batch: Any) -> None:
    if not isinstance(batch, Batch):
        raise ValueError(f"batch must be a blasgpt.Batch (e.g. tokenizer.batch(docs)), got {type(batch).__name__}")


def _check_backend(name: Any) -> str:
    """A backend name; anything but a str is refused here (the binding's TypeError would list its signatures)."""
    if not isinstance(name, str) or name not in BACKENDS:
        raise ValueError(f"unknown gemm backend {name!r}: expected 'blas', 'native' or 'auto'")
    return name


def _check_threads(n: Any) -> int:
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 256:
        raise ValueError(f"threads must be an integer between 1 and 256, got {n!r}")
    return n


def _check_lr(lr: Any) -> float:
    try:
        value = float(lr)
    except (TypeError, ValueError):
        raise ValueError(f"lr must be a number, got {lr!r}") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"lr must be a finite number >= 0, got {lr!r}")
    return value


def _check_weight_decay(wd: Any) -> float:
    if isinstance(wd, bool) or not isinstance(wd, numbers.Real) or not 0.0 <= float(wd) <= _MAX_FLOAT:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {wd!r}")
    return float(wd)


def _check_grad_clip(clip: Any) -> float:
    """None (off) -> 0.0, the core's "off"; otherwise a finite number > 0."""
    if clip is None:
        return 0.0
    if isinstance(clip, bool) or not isinstance(clip, numbers.Real) or not 0.0 < float(clip) <= _MAX_FLOAT:
        raise ValueError(f"grad_clip must be a finite number > 0 (or None for no clipping), got {clip!r}")
    return float(clip)


def _check_dropout(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, numbers.Real) or not 0.0 <= float(p) < 1.0:
        raise ValueError(f"dropout must be a number in [0, 1), got {p!r}")
    return float(p)


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= int(seed) < 1 << 64:
        raise ValueError(f"dropout_seed must be an integer between 0 and 2**64 - 1, got {seed!r}")
    return int(seed)


def _token_array(tokens: Union[Sequence[int], np.ndarray]) -> np.ndarray:
    a = np.asarray(tokens)
    if a.ndim != 1:
        raise ValueError(f"tokens must be 1-D, got shape {a.shape}")
    if a.size and a.dtype.kind not in "iu":
        raise ValueError(f"tokens must be integer ids, got dtype {a.dtype}")
    if a.size and a.dtype.itemsize >= 4 and a.dtype != np.int32:  # would wrap in the cast to int32
        bad = a[(a < 0) | (a > np.iinfo(np.int32).max)] if a.dtype.kind == "i" else a[a > np.iinfo(np.int32).max]
        if bad.size:
            raise ValueError(f"token id {int(bad[0])} is out of range")
    return np.require(a, dtype=np.int32, requirements=["C", "A"])  # contiguous and aligned (copied if need be)


__all__ = ["Model", "Views", "default_backend", "INIT_STD"]
