"""The "auto" gemm backend's plan: for every matrix product a model's training step runs, OpenBLAS or blasgpt's
native kernels, whichever was faster for that shape on this machine.

Each distinct product shape (the linear layers forward and both backward products, attention's products at the
batch's document length, per dtype) is timed under both kernels once — a few short rounds taken in turns, thread
CPU time, the fastest round of each (``_core.time_gemm``) — and so is attention as the fused kernel against the gemm
path (``_core.time_attention``). The timings are cached per CPU model, instruction set and library versions in
``cache_dir()/gemm-plan-<machine>.json`` (written whole to a temporary file and renamed, so concurrent writers
leave a valid file; a cache that cannot be read or written is measured around, never an error) and reused by
every later model and process on the machine.

The plan is made for the rows a step runs per thread (batch positions / threads), rounded (row_bucket); products
of other sizes take the nearest planned shape (within a factor of 4 in each size), others the native backend's
rule. Products too large to time quickly (see MAX_OPERAND and LARGE_VOLUME) are in the plan with the native
backend's rule's choice, so that no nearby smaller shape lends them its own.

Per-shape timings (each product alone, its operands cold) do not predict a step to a few percent: inside a step
some operands are still in cache and the two libraries' code and buffers share the caches, so a mix the timings
favour can lose to one library alone. So the plan is then checked as a whole (check_step): the model's own forward
and backward pass over a batch of the planned shape, timed under the per-shape choices, with every product native
and with every product on OpenBLAS, in turns; the step keeps the fastest of the three. That result is cached like
the timings (per model size, rows, threads and per-shape choices).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from . import _core
from ._version import __version__
from .config import Config
from .data import Batch, cache_dir

PLAN_FORMAT = "blasgpt gemm plan"
PLAN_VERSION = 1
SECONDS_PER_PRODUCT = 0.01  # thread CPU seconds of timing per shape (at least one call of each kernel)
MAX_ROWS = 4096  # plans are measured at most at this many rows (larger steps take the nearest, or the native rule)
MAX_OPERAND = 1 << 22  # elements per operand of a timed product; larger products follow the native backend's rule
# Products of this many multiply-adds or more go to OpenBLAS untimed, as on the native backend (csrc/gemm.hpp
# kBlasMinVolume): the native kernels do not block k and fall far behind there, and timing them would take seconds.
LARGE_VOLUME = 1 << 29
# OpenBLAS takes a product only when its time is under this fraction of the native kernels': the fastest of a few
# short rounds on a shared machine still moves by a few percent from run to run, and at microgpt's sizes (products of
# a microsecond or less) a choice made on such a difference flipped between runs and could cost the step more than
# the timing said it saved (another library's code and buffers in the caches between the model's own kernels). A
# clear difference (d16 batch 16 float32 on an AMD EPYC: 5-25 % faster for most backward products) still counts.
BLAS_MARGIN = 0.95
# The whole-step check (check_step): rounds of forward-backward passes, the three choices taking turns, each round
# at least STEP_ROUND seconds of calls, STEP_ROUNDS[0] to STEP_ROUNDS[1] rounds each (fewer past STEP_SECONDS of
# rounds in all); never more than STEP_LIMIT seconds in all (a step that long gets one round each, or, when even
# that does not fit, no check: the per-shape choices stand).
STEP_SECONDS = 0.25
STEP_ROUND = 5e-3
STEP_ROUNDS = (2, 7)
STEP_LIMIT = 10.0
STEP_CHOICES = ("plan", "native", "blas")  # the per-shape choices, every product native, every one OpenBLAS
# The per-shape mix is kept only when its step took under STEP_MARGIN of the faster single library's: one or two
# rounds of a step of tens of milliseconds move by a few percent on a busy machine, and a near-tie is safer on one
# library (which the forced backends run too) than on a mix whose edge was within that noise.
STEP_MARGIN = 0.98
ATTN_TILE = 64  # layers.hpp kAttnTile: rows of a tile of the long-context attention path
CACHED_POSITIONS = 128  # layers.hpp kCachedPositions: documents up to this long keep their probabilities
CAUSAL_BLOCK = 32  # layers.hpp kCausalBlock: their products skip the blocks above the diagonal, in blocks this size
# CPU flags that decide which kernels run (and how fast): part of the cache's machine key
_ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512dq", "avx512bw", "avx512vl", "avx512_bf16",
              "avx512_fp16", "amx_tile", "asimd", "sve", "sve2")


@dataclass(frozen=True)
class Product:
    """One matrix product C (m, n) = op(A) (m, k) op(B) (k, n); ta / tb: that operand is used transposed."""

    ta: bool
    tb: bool
    m: int
    n: int
    k: int

    @property
    def key(self) -> str:
        return f"{'T' if self.ta else 'N'}{'T' if self.tb else 'N'} {self.m}x{self.n}x{self.k}"

    @classmethod
    def from_key(cls, key: str) -> "Product":
        """The product of ``key`` ("NT 64x48x16"); ValueError when it is not one."""
        ops, _, sizes = str(key).partition(" ")
        dims = sizes.split("x")
        if len(ops) != 2 or not set(ops) <= {"N", "T"} or len(dims) != 3 or not all(d.isdigit() for d in dims):
            raise ValueError(f"not a product shape: {key!r}")
        m, n, k = (int(d) for d in dims)
        if not all(0 < d <= 1 << 30 for d in (m, n, k)):
            raise ValueError(f"not a product shape: {key!r}")
        return cls(ops[0] == "T", ops[1] == "T", m, n, k)


def row_bucket(rows: int) -> int:
    """The row count a plan is measured at: the nearest (in ratio) of 1, 2, 3, 4, 6, 8, 12, 16, 24, ... (powers of
    two and 1.5 times them), so batches of about the same size share their measurements."""
    rows = max(1, int(rows))
    grid = [b for j in range(rows.bit_length() + 1) for b in (1 << j, 3 << j >> 1) if b >= 1]
    return min(grid, key=lambda b: abs(math.log(b / rows)))


def model_products(cfg: Config, rows: int, doc_len: int) -> dict[Product, str]:
    """Every distinct product of a training step over ``rows`` positions of documents of ``doc_len`` positions
    (gpt.cpp, layers.cpp), with what it computes: each linear layer Y = X Wᵀ and its backward dW = dYᵀ X,
    dX = dY W; attention's gemm path per head (S = Q Kᵀ, O = P V, dV = Pᵀ dO, ... ; up to 128 positions in blocks
    of 32 queries against the keys up to the block's end and 32 keys against the queries from the block's start,
    past 128 in tiles of 64 query rows)."""
    C, H, V = cfg.n_embd, cfg.n_head, cfg.vocab_size
    out: dict[Product, str] = {}
    for name, fan_in, fan_out in (("qkv", C, 3 * C), ("attn out", C, C), ("mlp fc1", C, 4 * C),
                                  ("mlp fc2", 4 * C, C), ("lm_head", C, V)):
        out.setdefault(Product(False, True, rows, fan_out, fan_in), f"{name} forward")
        out.setdefault(Product(True, False, fan_out, fan_in, rows), f"{name} dW")
        out.setdefault(Product(False, False, rows, fan_in, fan_out), f"{name} dX")
    hd, n = C // H, max(1, min(doc_len, cfg.block_size))
    if n <= CACHED_POSITIONS:
        for i0 in range(0, n, CAUSAL_BLOCK):
            i1 = min(n, i0 + CAUSAL_BLOCK)
            out.setdefault(Product(False, True, i1 - i0, i1, hd), "attention scores")
            out.setdefault(Product(False, False, i1 - i0, hd, i1), "attention P V, dQ")
            out.setdefault(Product(True, False, i1 - i0, hd, n - i0), "attention dV, dK")
    else:  # tiles against the keys 0..i1 they see: sizes 64, 128, 256, ... and n (nearer ones take the nearest)
        keys = sorted({n} | {ATTN_TILE << j for j in range(16) if ATTN_TILE << j < n})
        for i1 in keys:
            out.setdefault(Product(False, True, ATTN_TILE, i1, hd), "attention tile scores")
            out.setdefault(Product(False, False, ATTN_TILE, hd, i1), "attention tile P V, dQ")
            out.setdefault(Product(True, False, i1, hd, ATTN_TILE), "attention tile dV, dK")
    return out


# ---------------------------------------------------------------------------------------------------------------
# the cache

def machine() -> dict[str, str]:
    """What the timings depend on: CPU model and ISA flags, the native kernels' ISA and build, OpenBLAS and blasgpt.

    The build is the compiled core's size and modification time: a rebuilt core (same version, other kernels) must
    not reuse the timings of the one before it."""
    name, flags = "", ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key in ("model name", "Model", "CPU part") and not name:
                    name = value.strip()
                elif key in ("flags", "Features") and not flags:
                    have = set(value.split())
                    flags = " ".join(f for f in _ISA_FLAGS if f in have)
    except OSError:
        pass
    return {"cpu": name or platform.processor(), "machine": platform.machine(), "flags": flags,
            "isa": _core.native_isa(), "openblas": _core.blas_info(), "blasgpt": __version__, "core": _core_build()}


def _core_build() -> str:
    try:
        st = os.stat(_core.__file__)
    except (OSError, TypeError):  # (a core without a file: nothing to tell builds apart by)
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


def cache_path(info: Optional[dict[str, str]] = None) -> Path:
    digest = hashlib.sha256(json.dumps(info or machine(), sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / f"gemm-plan-{digest}.json"


def read_cache(path: Path, info: dict[str, str]) -> dict[str, list[float]]:
    """The timings in a cache file: {} when it is missing, unreadable, corrupt or from another machine."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    if not (isinstance(data, dict) and data.get("format") == PLAN_FORMAT and data.get("version") == PLAN_VERSION
            and data.get("machine") == info and isinstance(data.get("timings"), dict)):
        return {}
    return {k: [float(x) for x in v] for k, v in data["timings"].items()
            if isinstance(k, str) and isinstance(v, list) and len(v) == (3 if k.startswith(_STEP_KEY) else 2)
            and all(isinstance(x, (int, float)) and math.isfinite(x) and x >= 0 for x in v)}


def write_cache(path: Path, info: dict[str, str], timings: dict[str, list[float]]) -> bool:
    """Add ``timings`` to the cache file (merged with what it holds now): the whole file written to a temporary
    file beside it, then renamed over it. False, and no file left behind, when it cannot be written."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        merged = {**read_cache(path, info), **timings}
        body = json.dumps({"format": PLAN_FORMAT, "version": PLAN_VERSION, "machine": info, "timings": merged},
                          indent=0, sort_keys=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(body)
        os.replace(tmp, path)
        return True
    except OSError:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        return False


# ---------------------------------------------------------------------------------------------------------------
# measuring and planning

_lock = threading.Lock()
_memo: dict[str, list[float]] = {}  # this process's timings (measured or read), by key
_machine: Optional[dict[str, str]] = None


def choose(native_s: float, blas_s: float) -> str:
    """A product's kernel from its two timings: "blas" when OpenBLAS took under BLAS_MARGIN of the native time,
    else "native" (ties and near-ties keep the native kernels)."""
    return "blas" if blas_s < BLAS_MARGIN * native_s else "native"


def _gemm_key(dtype: str, p: Product) -> str:
    return f"{dtype} {p.key}"


def _attention_key(dtype: str, cfg: Config, n: int, docs: int) -> str:
    return f"{dtype} attention C{cfg.n_embd} H{cfg.n_head} n{n} docs{docs}"


_STEP_KEY = "step "  # whole-step checks: three timings (STEP_CHOICES), the other keys two


def _step_key(plan: "Plan", cfg: Config, threads: int) -> str:
    """The key of a whole-step check: the model's size, the planned step and the per-shape choices it tried."""
    tried = hashlib.sha256(json.dumps([plan.choices("plan"), plan.fused_for("plan")]).encode()).hexdigest()[:12]
    return (f"{_STEP_KEY}{plan.dtype} V{cfg.vocab_size} C{cfg.n_embd} H{cfg.n_head} L{cfg.n_layer} T{cfg.block_size}"
            f"{' tied' if cfg.tie_embeddings else ''} threads{threads} rows{plan.rows} n{plan.doc_len} plan {tried}")


def _timings(wanted: dict[str, Any]) -> tuple[dict[str, list[float]], str]:
    """Timings of ``wanted`` (key -> a function measuring it): from this process, else the cache, else measured
    now (and cached). Returns them and where they came from ("cached", "measured" or "measured, not cached")."""
    global _machine
    if _machine is None:
        _machine = machine()
    source = "cached"
    missing = [k for k in wanted if k not in _memo]
    if missing:
        path = cache_path(_machine)
        _memo.update({k: v for k, v in read_cache(path, _machine).items() if k in wanted})
        missing = [k for k in wanted if k not in _memo]
        if missing:
            new = {}
            for k in missing:
                try:
                    new[k] = list(wanted[k]())
                except MemoryError:  # left out of the plan (and of the cache: it may fit another time)
                    pass
            _memo.update(new)
            source = "measured" if write_cache(path, _machine, new) else "measured, not cached"
    return {k: _memo[k] for k in wanted if k in _memo}, source


@dataclass
class Plan:
    """A model's plan: per product shape, the choice and both timings (thread CPU seconds per call)."""

    dtype: str
    rows: int  # the row bucket it was measured at
    doc_len: int
    products: list[dict[str, Any]]
    attention: Optional[dict[str, Any]]  # fused kernel vs gemm path, when the fused kernel applies
    source: str
    large: list[str] = field(default_factory=list)  # shapes of LARGE_VOLUME or more: OpenBLAS, untimed
    untimed: list[str] = field(default_factory=list)  # shapes with an operand past MAX_OPERAND: native, untimed
    # the whole-step check (check_step): "choice" (one of STEP_CHOICES), the seconds of a forward-backward pass under
    # each ("plan_s", "native_s", "blas_s"), what was timed ("role") and where the result came from ("source");
    # None when the step was not checked
    step: Optional[dict[str, Any]] = None

    def to_json(self) -> str:
        """The plan as JSON (what a checkpoint stores, so a resumed run computes with the same kernels)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        """A plan written by to_json; ValueError (or TypeError, KeyError) when it is not one."""
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError("a gemm plan is a JSON object")
        plan = cls(**d)
        if plan.dtype not in ("float32", "float64") or not isinstance(plan.products, list):
            raise ValueError(f"not a gemm plan of float32 or float64 products: {plan.dtype!r}")
        for p in plan.products:
            if not all(isinstance(p[k], bool) for k in ("ta", "tb")) or p["choice"] not in ("blas", "native") or \
                    not all(isinstance(p[k], int) and 0 < p[k] <= 1 << 30 for k in ("m", "n", "k")):
                raise ValueError(f"not a product of a gemm plan: {p!r}")
        if plan.attention is not None and plan.attention.get("choice") not in ("fused", "gemm"):
            raise ValueError(f"not an attention choice of a gemm plan: {plan.attention!r}")
        if not (isinstance(plan.large, list) and isinstance(plan.untimed, list)):
            raise ValueError("a gemm plan's large and untimed shapes are lists")
        for key in plan.large + plan.untimed:
            Product.from_key(key)
        if plan.step is not None and (not isinstance(plan.step, dict) or plan.step.get("choice") not in STEP_CHOICES):
            raise ValueError(f"not a whole-step choice of a gemm plan: {plan.step!r}")
        return plan

    @property
    def kind(self) -> str:
        """What the step computes with: "plan" (each product as its timings chose), "native" or "blas"."""
        return "plan" if self.step is None else str(self.step["choice"])

    def choices(self, kind: Optional[str] = None) -> list[tuple[bool, bool, int, int, int, bool]]:
        """(ta, tb, m, n, k, OpenBLAS?) of every product of the step (``kind``, default the plan's own, as in
        ``kind``): the timed ones, those of LARGE_VOLUME or more (OpenBLAS, as the native backend's rule) and those
        too large to time (native unless every product is OpenBLAS's)."""
        kind = kind or self.kind
        out = [(p["ta"], p["tb"], p["m"], p["n"], p["k"], p["choice"] == "blas" if kind == "plan" else kind == "blas")
               for p in self.products]
        for keys, blas in ((self.large, True), (self.untimed, kind == "blas")):
            out += [(q.ta, q.tb, q.m, q.n, q.k, blas) for q in map(Product.from_key, keys)]
        return out

    def fused_for(self, kind: Optional[str] = None) -> bool:
        """Whether attention runs as the fused kernel (where it applies) under ``kind`` (as in ``choices``)."""
        kind = kind or self.kind
        if kind != "plan":
            return kind == "native"
        return self.attention is None or self.attention["choice"] == "fused"

    @property
    def fused_attention(self) -> bool:
        return self.fused_for()

    def summary(self) -> str:
        blas = sum(p["choice"] == "blas" for p in self.products)
        att = "" if self.attention is None else f", attention {self.attention['choice']}"
        large = f" (+ {len(self.large)} of 2^29 multiply-adds or more: OpenBLAS)" if self.large else ""
        untimed = f" (+ {len(self.untimed)} too large to time: native)" if self.untimed else ""
        text = (f"{len(self.products) - blas} of {len(self.products)} products native, {blas} OpenBLAS{large}{untimed}"
                f"{att}; {self.source} at {self.rows} rows")
        if self.step is None:
            return f"{text}; whole step not checked"
        return f"{text}; whole step: {_STEP_NAMES[self.kind]} (" + ", ".join(
            f"{k} {self.step[k + '_s'] * 1e6:.0f} µs" for k in STEP_CHOICES) + ")"

    def step_summary(self) -> str:
        """The whole-step check: what was timed, the three timings and the choice (or that there was none)."""
        if self.step is None:
            return "whole step not checked (a forward-backward pass too long to time three ways): the choices above"
        s = self.step
        times = ", ".join(f"{_STEP_NAMES[k]} {s[k + '_s'] * 1e6:.1f} µs" for k in STEP_CHOICES)
        return f"whole step, {s['role']} ({s['source']}): {times} -> {_STEP_NAMES[s['choice']]}"


_STEP_NAMES = {"plan": "the per-shape choices", "native": "every product native", "blas": "every product OpenBLAS"}


def make_plan(cfg: Config, dtype: str, rows: int, doc_len: int) -> Plan:
    """The plan of a training step of ``rows`` positions per thread (rounded to row_bucket, at most MAX_ROWS) over
    documents of ``doc_len`` positions. Products with an operand of more than MAX_OPERAND elements are left out
    (they follow the native backend's rule), and so is a product the machine has no memory to time."""
    bucket = row_bucket(min(rows, MAX_ROWS))
    n = max(1, min(int(doc_len), cfg.block_size))
    every = model_products(cfg, bucket, n)
    large = [p.key for p in every if p.m * p.n * p.k >= LARGE_VOLUME]
    untimed = [p.key for p in every
               if max(p.m * p.k, p.k * p.n, p.m * p.n) > MAX_OPERAND and p.m * p.n * p.k < LARGE_VOLUME]
    products = {p: role for p, role in every.items() if p.key not in large and p.key not in untimed}
    with _lock:
        wanted = {_gemm_key(dtype, p): (lambda p=p: _core.time_gemm(dtype, p.ta, p.tb, p.m, p.n, p.k,
                                                                    SECONDS_PER_PRODUCT))
                  for p in products}
        timed, source = _timings(wanted)
        rows_out = []
        for p, role in products.items():
            if _gemm_key(dtype, p) not in timed:
                continue
            native, blas = timed[_gemm_key(dtype, p)]
            rows_out.append({"role": role, "ta": p.ta, "tb": p.tb, "m": p.m, "n": p.n, "k": p.k, "shape": p.key,
                             "native_s": native, "blas_s": blas, "choice": choose(native, blas)})
        plan = Plan(dtype, bucket, n, rows_out, None, source, large, untimed)
        # the fused kernel takes at most 128 positions; time at most 64 documents and MAX_OPERAND values a buffer
        docs = min(max(1, bucket // n), 64, MAX_OPERAND // (n * max(3 * cfg.n_embd, cfg.n_head * n)))
        if n <= CACHED_POSITIONS and docs >= 1:
            key = _attention_key(dtype, cfg, n, docs)
            att, att_source = _timings({key: lambda: _core.time_attention(
                dtype, cfg.n_embd, cfg.n_head, n, docs, plan.choices(), SECONDS_PER_PRODUCT)})
            fused, gemm = att.get(key, (0.0, 0.0))
            if fused > 0:  # 0: the fused kernel does not take this head width or length
                plan.attention = {"role": f"attention of {docs} documents of {n} positions", "fused_s": fused,
                                  "gemm_s": gemm, "choice": "fused" if fused <= gemm else "gemm"}
                if att_source != "cached":
                    plan.source = att_source
    return plan


def _step_docs(plan: Plan, threads: int) -> int:
    return max(1, threads) * max(1, round(plan.rows / plan.doc_len))


def step_batch(cfg: Config, plan: Plan, threads: int) -> Batch:
    """A batch of the planned step's shape: per thread, plan.rows positions in documents of plan.doc_len positions
    (fixed pseudo-random tokens)."""
    n, docs = plan.doc_len, _step_docs(plan, threads)
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, cfg.vocab_size, size=docs * (n + 1), dtype=np.int32)
    return Batch(tokens, np.arange(0, docs * (n + 1) + 1, n + 1, dtype=np.int64))


class StepTooLong(Exception):
    """A forward-backward pass too long to check the step within STEP_LIMIT seconds."""


def race_steps(kinds: list[str], use: Callable[[str], None], step: Callable[[], None],
               clock: Callable[[], float]) -> list[float]:
    """Seconds (``clock``) per ``step()`` under each of ``kinds`` (``use(kind)`` switches): after one call to warm
    up (workspaces grow; a second one when that was short, to size the rounds), rounds with the kinds taking turns
    (round r starts with kind r mod len(kinds)), the fastest round of each, as STEP_SECONDS, STEP_ROUND,
    STEP_ROUNDS and STEP_LIMIT say. StepTooLong when one round each would not fit STEP_LIMIT."""
    use(kinds[0])

    def once() -> float:
        t0 = clock()
        step()
        return max(clock() - t0, 1e-9)

    first = once()  # (an upper bound: it also grew the workspaces)
    if first * (1 + len(kinds)) > STEP_LIMIT:
        raise StepTooLong(f"a forward-backward pass takes {first:.1f} s")
    calls = max(1, math.ceil(STEP_ROUND / (once() if first < STEP_ROUND else first)))
    each = calls * first * len(kinds)  # one round of every kind
    rounds = min(max(STEP_ROUNDS[0], int(STEP_SECONDS / each)), STEP_ROUNDS[1])
    rounds = max(1, min(rounds, int((STEP_LIMIT - first) / each)))
    best = [math.inf] * len(kinds)
    for r in range(rounds):
        for j in range(len(kinds)):
            i = (r + j) % len(kinds)
            use(kinds[i])
            t0 = clock()
            for _ in range(calls):
                step()
            best[i] = min(best[i], (clock() - t0) / calls)
    return best


def check_step(plan: Plan, cfg: Config, threads: int, use: Callable[[str], None], step: Callable[[], None]) -> Plan:
    """``plan`` checked as a whole: ``step()`` (the model's forward-backward pass over step_batch) timed with
    ``use(kind)`` switching the model between the per-shape choices ("plan"), every product native and every
    product OpenBLAS (STEP_CHOICES; kinds that compute with the same choices are timed once), in turns, on this
    thread's CPU clock (the process's with worker threads). The plan comes back with the fastest as its choice
    (``step``): the mix only when clearly faster (STEP_MARGIN), a tie of the two libraries native. The timings
    are cached like the per-shape ones. A step too long to check keeps the per-shape choices (step None)."""
    first_of: dict[str, str] = {}  # kinds computing with the same choices are timed as the first of them
    seen: dict[str, str] = {}
    for kind in STEP_CHOICES:
        first_of[kind] = seen.setdefault(json.dumps([plan.choices(kind), plan.fused_for(kind)]), kind)
    timed = list(seen.values())
    clock = time.thread_time if threads <= 1 else time.process_time
    key = _step_key(plan, cfg, threads)

    def measure() -> list[float]:
        got = dict(zip(timed, race_steps(timed, use, step, clock)))
        return [got[first_of[kind]] for kind in STEP_CHOICES]

    with _lock:
        try:
            found, source = _timings({key: measure})
        except StepTooLong:
            return plan
    if key not in found:
        return plan
    secs = dict(zip(STEP_CHOICES, found[key]))
    single = "blas" if secs["blas"] < secs["native"] else "native"
    choice = "plan" if secs["plan"] < STEP_MARGIN * secs[single] else single
    step_info = {"choice": choice, "role": f"forward-backward of {_step_docs(plan, threads)} documents of "
                                           f"{plan.doc_len} positions",
                 "source": source, **{f"{k}_s": secs[k] for k in STEP_CHOICES}}
    return replace(plan, step=step_info)


def forget() -> None:
    """Drop this process's timings (the next plan reads the cache again, or measures)."""
    global _machine
    with _lock:
        _memo.clear()
        _machine = None


__all__ = ["BLAS_MARGIN", "STEP_MARGIN", "Plan", "Product", "StepTooLong", "cache_path", "check_step", "choose",
           "forget", "machine", "make_plan", "model_products", "race_steps", "read_cache", "row_bucket", "step_batch",
           "write_cache"]
