"""The core's KV-cached batched generator (Model*.generator / .next), against the model's own forward pass.

Greedy decoding must be argmax(forward(last block_size ids)[-1]), token for token, inside the block (the cached
path) and past it (the sliding window); sampled first tokens must follow softmax(logits / temperature) with top_k
and ban_token applied; stop_token and the end of the block end samples; every sample has its own random stream."""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import blasgpt

TESTS = Path(__file__).parent
V = 11  # vocabulary; BOS = V - 1 by the project's convention
BOS = V - 1


def make_model(seed: int, C: int = 16, H: int = 4, L: int = 2, T: int = 16, dtype: str = "float64",
               backend: str = "native", std: float = 0.3) -> blasgpt.Model:
    cfg = blasgpt.Config(vocab_size=V, n_embd=C, n_head=H, n_layer=L, block_size=T)
    model = blasgpt.Model(cfg, dtype=dtype, seed=seed, backend=backend, init=False)
    rng = np.random.default_rng(seed)
    for w in model.params.values():
        w[...] = rng.normal(0.0, std, size=w.shape)
    return model


def ids(*tokens: int) -> np.ndarray:
    return np.array(tokens, dtype=np.int32)


def generator(model: blasgpt.Model, prompt: np.ndarray, num: int = 1, seed: int = 0, temperature: float = 1.0,
              top_k: int = 0, stop_token: int = -1, ban_token: int = -1, slide: bool = False):
    return model._core.generator(prompt, num, seed, temperature, top_k, stop_token, ban_token, slide)


def last_logits(model: blasgpt.Model, context: list[int]) -> np.ndarray:
    """Logits of the next token after `context`: the forward of its last block_size tokens."""
    return model.forward(np.array(context[-model.config.block_size:], dtype=np.int32))[-1].astype(np.float64)


def greedy_reference(model: blasgpt.Model, prompt: np.ndarray, steps: int) -> list[int]:
    ctx = [int(t) for t in prompt]
    for _ in range(steps):
        ctx.append(int(np.argmax(last_logits(model, ctx))))
    return ctx[prompt.size:]


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


# -- greedy = the forward pass's argmax --------------------------------------------------------------------------------

@pytest.mark.parametrize("prompt_len", [1, 5, 16, 23])  # 16 = block_size (cache full at once), 23 > block
def test_greedy_equals_forward_argmax_float64(prompt_len, backend):
    model = make_model(1, backend=backend)
    rng = np.random.default_rng(prompt_len)
    prompt = rng.integers(0, V, size=prompt_len).astype(np.int32)
    steps = 60  # far past the 16-position block: the window slides
    g = generator(model, prompt, num=3, top_k=1, slide=True)
    out = g.next(steps)
    want = greedy_reference(model, prompt, steps)
    assert out.shape == (3, steps) and out.dtype == np.int32
    for row in out:
        assert row.tolist() == want
    assert g.length == prompt_len + steps
    assert len(set(want)) > 2, "a constant sequence would hardly test the context"


@pytest.mark.parametrize("prompt_len", [1, 140])
def test_greedy_past_128_positions(prompt_len, backend):
    """A block longer than 128: the prompt's forward takes the tiled attention path, cached decoding attends over
    more than 128 keys, and past the block every window is recomputed with the tiled path."""
    model = make_model(11, C=8, H=2, L=2, T=150, backend=backend)
    model.threads = 2  # the training model's threads do not matter to the generator
    prompt = np.random.default_rng(prompt_len).integers(0, V, size=prompt_len).astype(np.int32)
    steps = 170 - prompt_len
    out = generator(model, prompt, num=2, top_k=1, slide=True).next(steps)
    want = greedy_reference(model, prompt, steps)
    assert out[0].tolist() == out[1].tolist() == want


def test_greedy_float32_picks_the_forward_argmax(backend):
    """float32: the cached path's rounding differs from the full forward's, so along the generator's own path each
    token must be a maximal logit of the float32 forward up to float32 rounding (and usually exactly it)."""
    model = make_model(2, backend=backend, dtype="float32")
    prompt = ids(BOS, 3, 1)
    steps = 50
    out = generator(model, prompt, num=2, top_k=1, slide=True).next(steps)
    assert (out[0] == out[1]).all()
    ctx = prompt.tolist()
    exact = 0
    for tok in out[0]:
        z = last_logits(model, ctx)
        assert z[tok] >= z.max() - 1e-4 * max(1.0, np.abs(z).max()), (len(ctx), tok, z)
        exact += int(tok == np.argmax(z))
        ctx.append(int(tok))
    assert exact >= steps - 2


def test_greedy_ends_at_the_block_without_slide(backend):
    model = make_model(3, backend=backend)
    prompt = ids(BOS, 4)
    g = generator(model, prompt, num=2, top_k=1)
    out = g.next(100)
    T = model.config.block_size
    assert out.shape == (2, T + 1 - prompt.size)  # the context ends at block_size + 1 tokens
    assert out[0].tolist() == out[1].tolist() == greedy_reference(model, prompt, T + 1 - prompt.size)
    assert g.length == T + 1
    assert g.next(5).shape == (2, 0)
    full = generator(model, np.zeros(T, dtype=np.int32), top_k=1)  # a prompt filling the block: one more token
    assert full.next(3).shape == (1, 1)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_sampled_paths_follow_their_own_context(dtype, backend):
    """Samples that diverge: with top_k=2 every drawn token must be one of the two likeliest under the forward of
    that sample's own context, inside the block (cached keys per sample) and past it (recomputed windows)."""
    model = make_model(4, backend=backend, dtype=dtype)
    prompt = ids(BOS, 2)
    out = generator(model, prompt, num=6, seed=5, temperature=2.0, top_k=2, slide=True).next(40)
    assert len({tuple(r) for r in out}) == 6, "samples should diverge"
    for row in out:
        ctx = prompt.tolist()
        for tok in row:
            z = last_logits(model, ctx)
            top2 = np.sort(z)[-2]
            tol = 1e-4 * max(1.0, np.abs(z).max()) if dtype == "float32" else 1e-12
            assert z[tok] >= top2 - tol, (len(ctx), tok, z)
            ctx.append(int(tok))


# -- the sampling distribution -----------------------------------------------------------------------------------------

def first_token_counts(model: blasgpt.Model, prompt: np.ndarray, n: int, **kw) -> np.ndarray:
    """Counts of the first drawn token over n samples (several generators, so no one holds n KV caches)."""
    counts = np.zeros(V, dtype=np.int64)
    per = 10000
    for seed in range((n + per - 1) // per):
        out = generator(model, prompt, num=min(per, n - seed * per), seed=seed, **kw).next(1)
        counts += np.bincount(out[:, 0], minlength=V)
    return counts


def assert_frequencies(counts: np.ndarray, p: np.ndarray) -> None:
    """Each frequency within 5 standard errors of p (fixed seeds: deterministic, not flaky)."""
    n = counts.sum()
    freq = counts / n
    sigma = np.sqrt(p * (1 - p) / n)
    bound = np.maximum(5 * sigma, 3.0 / n)
    assert (np.abs(freq - p) <= bound).all(), np.c_[freq, p, bound]


def distribution_model() -> tuple[blasgpt.Model, np.ndarray, np.ndarray]:
    model = make_model(6, C=8, H=2, L=1, T=8, std=0.2)
    prompt = ids(BOS, 1, 5)
    z = last_logits(model, prompt.tolist())
    p = softmax(z)
    assert p.max() < 0.8 and (p > 0.03).sum() >= 4, p  # a spread distribution: the checks below mean something
    return model, prompt, z


@pytest.mark.parametrize("temperature", [0.7, 1.0, 1.8])
def test_first_token_frequencies_follow_softmax(temperature):
    model, prompt, z = distribution_model()
    counts = first_token_counts(model, prompt, 50000, temperature=temperature)
    assert_frequencies(counts, softmax(z / temperature))


@pytest.mark.parametrize("temperature", [1e-300, 1e-320, 5e-324])
def test_tiny_temperature_is_greedy(temperature):
    """Regression: logits / temperature overflowed to inf at a tiny (finite, accepted) temperature and inf - inf
    made the draw pick the last token with a positive logit instead of the likeliest."""
    model, prompt, z = distribution_model()
    kw = dict(num=3, slide=True)
    want = generator(model, prompt, top_k=1, **kw).next(20)
    np.testing.assert_array_equal(generator(model, prompt, temperature=temperature, **kw).next(20), want)
    np.testing.assert_array_equal(generator(model, prompt, temperature=temperature, top_k=3, **kw).next(20), want)


@pytest.mark.parametrize("k", [2, 4])
def test_top_k_keeps_the_k_likeliest(k):
    model, prompt, z = distribution_model()
    counts = first_token_counts(model, prompt, 30000, temperature=1.5, top_k=k)
    keep = np.argsort(z)[-k:]
    assert set(np.flatnonzero(counts)) == set(keep.tolist())
    want = np.zeros(V)
    want[keep] = softmax(z[keep] / 1.5)
    assert_frequencies(counts, want)


def test_ban_token_is_never_drawn():
    model, prompt, z = distribution_model()
    ban = int(np.argmax(z))  # the likeliest token, to make the ban matter
    counts = first_token_counts(model, prompt, 30000, ban_token=ban)
    assert counts[ban] == 0
    want = softmax(np.where(np.arange(V) == ban, -np.inf, z))
    assert_frequencies(counts, want)
    # with top_k: the k likeliest of the allowed tokens
    counts = first_token_counts(model, prompt, 20000, ban_token=ban, top_k=3)
    order = [int(t) for t in np.argsort(z)[::-1] if t != ban]
    assert set(np.flatnonzero(counts)) == set(order[:3])
    # greedy: the best allowed token
    out = generator(model, prompt, num=4, top_k=1, ban_token=ban).next(1)
    assert (out == order[0]).all()
    # and along a whole run, past the block
    out = generator(model, prompt, num=50, seed=3, ban_token=ban, slide=True).next(40)
    assert (out != ban).all()


def test_stop_token_ends_a_sample():
    model, prompt, z = distribution_model()
    stop = int(np.argsort(z)[-2])  # likely enough that every sample stops within a few hundred tokens
    num, count = 200, 400
    g = generator(model, prompt, num=num, seed=1, stop_token=stop, slide=True)
    out = g.next(count)
    k = out.shape[1]
    assert 1 < k < count, "every sample ends, and fewer columns come back than asked for"
    assert (out[:, -1] >= 0).any(), "the last column returned holds some sample's token"
    lengths = []
    for row in out:
        hits = np.flatnonzero(row == stop)
        assert hits.size >= 1, "every sample ended (at its first stop token)"
        end = int(hits[0])
        assert (row[:end + 1] >= 0).all() and (row[end + 1:] == -1).all(), row
        lengths.append(end + 1)
    assert len(set(lengths)) > 5, "samples end at different lengths"
    assert max(lengths) == k
    assert g.next(5).shape == (num, 0)
    # samples that ended early do not disturb the others
    few = generator(model, prompt, num=5, seed=1, stop_token=stop, slide=True).next(count)
    np.testing.assert_array_equal(few[:, :k], out[:5, :few.shape[1]])


# -- determinism -------------------------------------------------------------------------------------------------------

def test_same_seed_same_tokens_and_samples_are_independent(backend):
    model = make_model(7, backend=backend)
    prompt = ids(BOS, 3, 3)
    kw = dict(temperature=1.3, slide=True)
    a = generator(model, prompt, num=5, seed=11, **kw).next(30)
    b = generator(model, prompt, num=5, seed=11, **kw).next(30)
    np.testing.assert_array_equal(a, b)
    c = generator(model, prompt, num=5, seed=12, **kw).next(30)
    assert all((a[i] != c[i]).any() for i in range(5)), "another seed gives other samples"
    one = generator(model, prompt, num=1, seed=11, **kw).next(30)
    np.testing.assert_array_equal(one[0], a[0])
    eight = generator(model, prompt, num=8, seed=11, **kw).next(30)
    np.testing.assert_array_equal(eight[:5], a)
    # the tokens do not depend on how they are asked for
    g = generator(model, prompt, num=5, seed=11, **kw)
    np.testing.assert_array_equal(np.hstack([g.next(7), g.next(0), g.next(23)]), a)


def test_generator_keeps_its_model_alive():
    model = make_model(8)
    prompt = ids(BOS, 1)
    want = generator(model, prompt, top_k=1, slide=True).next(20)
    g = generator(model, prompt, top_k=1, slide=True)
    del model
    gc.collect()
    np.testing.assert_array_equal(g.next(20), want)


# -- bad arguments -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("change, message", [
    (dict(temperature=0.0), "temperature must be a finite number > 0"),
    (dict(temperature=-1.0), "temperature must be a finite number > 0"),
    (dict(temperature=float("nan")), "temperature must be a finite number > 0"),
    (dict(temperature=float("inf")), "temperature must be a finite number > 0"),
    (dict(top_k=V + 1), "top_k must be between 0"),
    (dict(top_k=-1), "top_k must be between 0"),
    (dict(prompt=ids(1, V)), f"token id {V} is out of range"),
    (dict(prompt=ids(-1)), "token id -1 is out of range"),
    (dict(prompt=ids()), "at least one token"),
    (dict(prompt=np.zeros(17, dtype=np.int32)), "does not fit block_size"),
    (dict(prompt=[1, 2]), "prompt must be a numpy array of int32"),
    (dict(prompt=ids(1, 2).astype(np.int64)), "prompt must have dtype int32"),
    (dict(num=0), "num must be between 1"),
    (dict(stop_token=V), "stop_token and ban_token must be -1 or token ids"),
    (dict(ban_token=-2), "stop_token and ban_token must be -1 or token ids"),
])
def test_bad_arguments_raise_value_error(change, message):
    model = make_model(9, C=8, H=2, L=1)
    kw = dict(prompt=ids(BOS, 1), num=2, seed=0, temperature=1.0)
    kw.update(change)
    with pytest.raises(ValueError, match=message):
        generator(model, **kw)


def test_bad_count_raises_value_error():
    model = make_model(9, C=8, H=2, L=1)
    g = generator(model, ids(BOS))
    for count in (-1, (1 << 24) + 1):
        with pytest.raises(ValueError, match="count must be between 0 and 2"):
            g.next(count)
    assert g.next(0).shape == (1, 0)
    assert g.next(2).shape == (1, 2)  # still usable


def test_prompt_longer_than_the_block_slides():
    model = make_model(9, C=8, H=2, L=1)
    prompt = np.arange(40, dtype=np.int32) % V
    out = generator(model, prompt, num=2, top_k=1, slide=True).next(5)
    assert out[0].tolist() == greedy_reference(model, prompt, 5)


WRONG_TYPES = r"""
import sys
import numpy as np
import blasgpt
m = blasgpt.Model(blasgpt.Config(vocab_size=5, n_embd=8, n_head=2, n_layer=1, block_size=8))._core
p = np.array([0, 1], dtype=np.int32)
for args in [(p, "x", 0, 1.0), (p, 2, -1, 1.0), (p, 2, 2**64, 1.0), (p, 2, 0, "a"), (p, 2, 0, 1.0, None)]:
    try:
        m.generator(*args)
    except TypeError:
        continue
    sys.exit(f"no TypeError for {args[1:]}")
print("ok")
"""


def test_wrong_argument_types_raise_type_error_not_crash():
    """Regression: with py::keep_alive on generator(), a conversion failure (a negative seed, a str) segfaulted the
    interpreter (pybind11 3.1 runs the keep_alive hook on the failed call's placeholder result). In a child
    process, so a crash is a failure here rather than the end of the test run."""
    r = subprocess.run([sys.executable, "-c", WRONG_TYPES], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "ok", (r.returncode, r.stderr[-2000:])


# -- the GIL -----------------------------------------------------------------------------------------------------------

def test_next_releases_the_gil():
    """While one thread is inside a long next(), another Python thread keeps running: the longest pause between its
    timestamps during the call is a small part of the call (holding the GIL would pause it for all of it)."""
    model = make_model(10, C=32, H=4, L=2, T=64)
    g = generator(model, ids(BOS), num=16, seed=0, slide=True)
    g.next(70)  # past the block: every further token recomputes 16 windows of 64 positions
    span: dict[str, float] = {}

    def work() -> None:
        span["t0"] = time.perf_counter()
        g.next(60)
        span["t1"] = time.perf_counter()

    stamps = []
    t = threading.Thread(target=work)
    t.start()
    while t.is_alive():
        stamps.append(time.perf_counter())
        for _ in range(200):
            pass
    t.join()
    t0, t1 = span["t0"], span["t1"]
    assert t1 - t0 > 0.1, f"next() took {t1 - t0:.3f} s: too short to tell"
    inside = np.array([t0] + [s for s in stamps if t0 < s < t1] + [t1])
    gap = float(np.diff(inside).max())
    assert gap < 0.5 * (t1 - t0), f"the other thread paused {gap:.3f} s of the {t1 - t0:.3f} s call"
