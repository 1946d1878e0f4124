"""Long sequences: the tiled, linear-memory attention past 128 positions and text-mode windows.

Gradients against central finite differences and PyTorch autograd around the 128-position switch and far past it,
windows against the same sequences laid out as documents, memory measured in a child process, and a short training
run with 2048-position windows of a real text."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt import _core
from conftest import FORCED_BACKENDS

TESTS = Path(__file__).parent
NAMES = Path(blasgpt.__file__).parent / "datasets" / "names.txt"
V = 7  # vocabulary of the random streams


def random_model(seed: int, C: int, H: int, L: int, T: int, backend: str, dtype: str = "float64") -> blasgpt.Model:
    cfg = blasgpt.Config(vocab_size=V, n_embd=C, n_head=H, n_layer=L, block_size=T)
    model = blasgpt.Model(cfg, dtype=dtype, seed=seed, backend=backend, init=False)
    rng = np.random.default_rng(seed)
    for w in model.params.values():  # wider than the 0.08 init so attention is far from uniform
        w[...] = rng.normal(0.0, 0.3, size=w.shape)
    return model


def windows_batch(seed: int, T: int) -> blasgpt.Batch:
    """Windows of a random stream: two full ones (overlapping), one cut to 14 positions by the stream's end and one
    of a single position (the last two tokens)."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(0, V, size=2 * T + 40).astype(np.int32)
    n = tokens.size
    return blasgpt.Batch.of_windows(tokens, [0, T // 2 + 3, n - 15, n - 2])


def documents_batch(seed: int, T: int) -> blasgpt.Batch:
    """Documents [BOS, ..., BOS] longer than the block (cut), of 129 positions (just past the switch when the block
    allows), shorter than 128, and of a single position, in one batch."""
    rng = np.random.default_rng(seed)
    bos = V - 1
    lens = [T + 6, min(T, 129) + 1, 20, 2]
    docs = []
    for n in lens:
        d = rng.integers(0, bos, size=n).astype(np.int32)
        d[0] = d[-1] = bos
        docs.append(d)
    offsets = np.zeros(len(docs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([d.size for d in docs])
    return blasgpt.Batch(np.concatenate(docs), offsets)


def as_documents(batch: blasgpt.Batch, T: int) -> blasgpt.Batch:
    """The windows of a text-mode batch copied out as documents (tokens + offsets): the same sequences."""
    n = batch.tokens.size
    pieces = [batch.tokens[s:min(n, s + T + 1)] for s in batch.doc_ids]
    offsets = np.zeros(len(pieces) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([p.size for p in pieces])
    return blasgpt.Batch(np.ascontiguousarray(np.concatenate(pieces)), offsets)


def positions(batch: blasgpt.Batch, T: int) -> list[int]:
    """Positions each sequence of the batch trains on."""
    if batch.windows:
        return [min(T, batch.tokens.size - int(s) - 1) for s in batch.doc_ids]
    return [min(T, int(n) - 1) for n in np.diff(batch.offsets)]


def check_finite_differences(model: blasgpt.Model, batch: blasgpt.Batch, coords: list[tuple[str, int, int]],
                             h: float = 1e-5) -> None:
    """Analytic gradient vs central differences of model.loss: one random unit direction inside every parameter
    tensor (error relative to that tensor's gradient norm), plus single coordinates `coords` (name, row, col)."""
    loss = model.forward_backward(batch)
    grads = model.flat_grads.copy()
    roundoff = 8 * np.finfo(np.float64).eps * abs(loss) / h  # the central difference's own rounding error
    flat = model.flat_params
    keep = flat.copy()
    rng = np.random.default_rng(0)

    def slope(direction: np.ndarray) -> float:
        flat[...] = keep + h * direction
        up = model.loss(batch)
        flat[...] = keep - h * direction
        down = model.loss(batch)
        flat[...] = keep
        return (up - down) / (2 * h)

    for name, (rows, cols), off in model.param_table:
        g = grads[off:off + rows * cols]
        norm = np.linalg.norm(g)
        assert norm > 0, f"{name}: zero gradient; the check would prove nothing"
        d = np.zeros_like(flat)
        u = rng.normal(size=rows * cols)
        d[off:off + rows * cols] = u / np.linalg.norm(u)
        numeric, analytic = slope(d), float(g @ d[off:off + rows * cols])
        assert abs(analytic - numeric) <= 1e-6 * norm, f"{name}: directional derivative {analytic} vs {numeric}"
    table = {name: (cols, off) for name, (_, cols), off in model.param_table}
    for name, r, c in coords:
        cols, off = table[name]
        i = off + r * cols + c
        d = np.zeros_like(flat)
        d[i] = 1.0
        numeric, analytic = slope(d), grads[i]
        assert abs(numeric) > 1e-8, f"{name}[{r}, {c}]: no signal; the probe would prove nothing"
        assert abs(analytic - numeric) <= 1e-6 * abs(numeric) + roundoff, f"{name}[{r}, {c}]: {analytic} vs {numeric}"


# (seed, n_embd, n_head, n_layer, block_size): below the switch, at it (129 = 2 full tiles + 1 row, 130), far past
FD_CONFIGS = [(1, 8, 2, 2, 64), (2, 8, 2, 1, 129), (3, 12, 3, 1, 130), (4, 8, 2, 2, 300)]


@pytest.mark.parametrize("kind", ["windows", "documents"])
@pytest.mark.parametrize("cfg", FD_CONFIGS, ids=lambda c: "C{1}H{2}L{3}T{4}".format(*c))
def test_long_gradients_match_finite_differences(cfg, kind, backend):
    seed, C, H, L, T = cfg
    model = random_model(seed, C, H, L, T, backend)
    batch = windows_batch(seed, T) if kind == "windows" else documents_batch(seed, T)
    n = positions(batch, T)
    assert max(n) == T and min(n) < 128, n  # a full-block sequence and a short one in the same batch
    # the position embeddings of rows on both sides of the tile / path boundaries, and the last row
    rows = sorted({0, min(T, 64) - 1, T - 1} | ({127, 128} if T > 128 else set()))
    check_finite_differences(model, batch, [("wpe", r, r % C) for r in rows])


def torch_reference(model: blasgpt.Model, batch: blasgpt.Batch) -> tuple[float, dict[str, np.ndarray]]:
    """Loss and gradients of the batch from the benchmark's PyTorch reference model (float64 autograd)."""
    pytest.importorskip("torch", reason="PyTorch not installed: pip install .[torch] for the autograd check")
    from torch_gpt import TorchGPT

    ref = TorchGPT({k: v.copy() for k, v in model.params.items()}, model.config, "float64")
    return ref.forward_backward(batch)


@pytest.mark.parametrize("kind", ["windows", "documents"])
@pytest.mark.parametrize("cfg", [(5, 16, 4, 2, 300), (6, 8, 1, 1, 130)], ids=lambda c: "C{1}H{2}L{3}T{4}".format(*c))
@pytest.mark.parametrize("backend", FORCED_BACKENDS)
def test_long_gradients_equal_autograd(cfg, kind, backend):
    seed, C, H, L, T = cfg
    model = random_model(seed, C, H, L, T, backend)
    batch = windows_batch(seed, T) if kind == "windows" else documents_batch(seed, T)
    want_loss, want = torch_reference(model, batch)
    loss = model.forward_backward(batch)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for name, g in model.grads.items():
        scale = max(1.0, float(np.abs(want[name]).max()))
        err = float(np.abs(g - want[name]).max())
        assert err <= 1e-10 * scale, f"{name}: max abs error {err:.2e}"


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("T", [16, 200])
def test_windows_equal_documents(T, threads, backend):
    """A batch of windows is exactly the batch of the same token sequences laid out as documents."""
    model = random_model(7, 8, 2, 2, T, backend)
    model.threads = threads
    windows = windows_batch(8, T)
    docs = as_documents(windows, T)
    loss_w = model.forward_backward(windows)
    g_w = model.flat_grads.copy()
    loss_d = model.forward_backward(docs)
    assert loss_w == loss_d
    np.testing.assert_array_equal(model.flat_grads, g_w)
    assert model.loss(windows) == loss_w


@pytest.mark.parametrize("kind", ["windows", "documents"])
def test_long_sequences_split_across_threads(kind, backend):
    """Two threads (each with its own tiled-attention scratch) give the one-thread loss and gradient."""
    T = 300
    model = random_model(10, 8, 2, 2, T, backend)
    batch = windows_batch(10, T) if kind == "windows" else documents_batch(10, T)
    loss1 = model.forward_backward(batch)
    g1 = model.flat_grads.copy()
    model.threads = 2
    loss2 = model.forward_backward(batch)
    assert loss2 == pytest.approx(loss1, rel=1e-13)
    np.testing.assert_allclose(model.flat_grads, g1, rtol=1e-11, atol=1e-14)


def test_train_steps_on_windows_equal_train_step_on_documents(backend):
    """train_steps over a windows corpus (step s on the windows starting at starts[s]) is the same run as
    train_step on each step's windows copied out as documents."""
    T = 150
    a = random_model(9, 8, 2, 1, T, backend)
    b = random_model(9, 8, 2, 1, T, backend)
    rng = np.random.default_rng(9)
    tokens = rng.integers(0, V, size=1000).astype(np.int32)
    starts = rng.integers(0, tokens.size - 1, size=(4, 3)).astype(np.int64)
    starts[1, 0] = tokens.size - 2  # a one-position window
    lrs = np.array([0.01, 0.02, 0.005, 0.01])
    losses = a.train_steps(blasgpt.Batch.of_windows(tokens, [0]), starts, lrs)
    want = [b.train_step(as_documents(blasgpt.Batch.of_windows(tokens, s), T), lr) for s, lr in zip(starts, lrs)]
    np.testing.assert_array_equal(losses, want)
    np.testing.assert_array_equal(a.flat_params, b.flat_params)
    assert a.step == b.step == 4


MEMORY_CHILD = r"""
import json, sys
import numpy as np
import blasgpt

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)

T, rows = int(sys.argv[1]), int(sys.argv[2])
cfg = blasgpt.Config(vocab_size=27, n_embd=64, n_head=4, n_layer=2, block_size=T)
model = blasgpt.Model(cfg, dtype="float32", seed=0, init=False)
model.flat_params[...] = np.random.default_rng(0).normal(0, 0.08, model.num_params)
B = rows // T
tokens = np.random.default_rng(1).integers(0, 27, size=B * (T + 1)).astype(np.int32)
batch = blasgpt.Batch.of_windows(tokens, np.arange(B) * (T + 1))
try:  # reset the peak to the current size, so the peak below is the step's own
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    reset = False
base = status("VmRSS")
loss = model.train_step(batch, 0.01)
print(json.dumps({"step": status("VmHWM") - base, "reset": reset, "loss": loss}))
"""


def step_memory(T: int, rows: int) -> int:
    r = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(T), str(rows)], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert np.isfinite(out["loss"])
    return int(out["step"])


def test_activation_memory_is_linear_in_tokens():
    """At a fixed 8192 positions per step, windows of 2048 need no more memory than windows of 1024 (full H n²
    probabilities would add 4 heads x 2 layers x 2048 x 4 bytes per position: ~4x the rest of the workspace), and
    the measured peak is the core's own estimate."""
    rows = 8192
    mem = {T: step_memory(T, rows) for T in (1024, 2048)}
    assert mem[2048] < 1.3 * mem[1024], mem
    for T, m in mem.items():
        values, ints = _core.workspace_size(27, 64, 4, 2, T, rows)
        estimate = 4 * (values + ints)
        assert 0.8 * estimate < m < 1.5 * estimate + (8 << 20), (T, m, estimate)


def test_workspace_estimate_is_linear_past_the_cached_length():
    """The estimate itself: per-position cost constant in block_size past 128 positions, plus tiled scratch."""
    per_row = {}
    for T in (256, 1024, 4096):
        a, _ = _core.workspace_size(27, 64, 4, 2, T, 1000)
        b, _ = _core.workspace_size(27, 64, 4, 2, T, 2000)
        per_row[T] = (b - a) / 1000
    assert per_row[256] == per_row[1024] == per_row[4096], per_row


def test_block_2048_trains_on_a_real_text():
    """A few Adam steps on 2048-position windows of names.txt (read as one stream) lower the held-out loss."""
    text = NAMES.read_text()
    tok = blasgpt.Tokenizer.from_docs([text])
    tokens = tok.encode(text)
    T = 2048
    cut = tokens.size - 2 * (T + 1)  # the last two windows are held out
    cfg = blasgpt.Config(vocab_size=tok.vocab_size, n_embd=32, n_head=4, n_layer=1, block_size=T)
    model = blasgpt.Model(cfg, dtype="float32", seed=1)
    held_out = blasgpt.Batch.of_windows(tokens, [cut, cut + T + 1])
    before = model.loss(held_out)
    rng = np.random.default_rng(0)
    starts = rng.integers(0, cut - T - 1, size=(8, 2)).astype(np.int64)
    losses = model.train_steps(blasgpt.Batch.of_windows(tokens, [0]), starts, np.full(8, 0.01))
    after = model.loss(held_out)
    assert losses.size == 8 and np.isfinite(losses).all(), losses
    assert np.isfinite(model.flat_params).all()
    assert after < before - 0.3, (before, after, losses)
    assert losses[-1] < losses[0], losses


def test_bad_windows_raise_value_error():
    """Window starts must leave at least 2 tokens; only the tokens a window reads are checked; train_steps checks
    every step's windows before it applies any."""
    model = random_model(11, 8, 2, 1, 200, "native")
    tokens = np.random.default_rng(11).integers(0, V, size=500).astype(np.int32)
    for start in (-1, 499, 500, 1 << 40):
        with pytest.raises(ValueError, match=f"window start {start} is out of range"):
            model.loss(blasgpt.Batch.of_windows(tokens, [0, start]))
    with pytest.raises(ValueError, match="the batch is empty"):
        model.loss(blasgpt.Batch.of_windows(tokens, []))
    assert np.isfinite(model.loss(blasgpt.Batch.of_windows(tokens, [498])))  # the last 2 tokens: one position
    bad = tokens.copy()
    bad[300] = V
    for start in (100, 299, 300):  # windows reading tokens[300]
        with pytest.raises(ValueError, match=f"token id {V} at position 300 is out of range"):
            model.loss(blasgpt.Batch.of_windows(bad, [start]))
    for start in (0, 301):  # windows ending before it, starting after it
        assert np.isfinite(model.loss(blasgpt.Batch.of_windows(bad, [start])))
    before = model.flat_params.copy()
    with pytest.raises(ValueError, match="window start 499 is out of range"):
        model.train_steps(blasgpt.Batch.of_windows(tokens, [0]), np.array([[0, 1], [2, 499]]), np.array([0.1, 0.1]))
    assert model.step == 0
    np.testing.assert_array_equal(model.flat_params, before)
