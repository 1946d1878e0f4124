"""The auto gemm backend's plan (blasgpt.calibrate): what it measures, its cache on disk (round trip, corrupt or
foreign files, an unwritable directory, concurrent writers), the backend overrides, and that a model mixing the
two kernels computes what the forced backends compute. Correctness only: which kernel wins is the machine's
business (the benchmark times it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import blasgpt
from blasgpt import _core, calibrate
from blasgpt.calibrate import Product, make_plan, model_products, row_bucket

from conftest import make_setup

CFG = blasgpt.Config(vocab_size=7, n_embd=16, n_head=4, n_layer=1, block_size=8)


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty cache directory of this test's own, and no timings remembered by the process."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    calibrate.forget()
    yield tmp_path / "xdg" / "blasgpt"
    calibrate.forget()


def no_timing(monkeypatch) -> None:
    """From here on, any measurement fails the test (the plan must come from the cache or the process)."""
    def fail(*args, **kwargs):
        raise AssertionError("measured again")
    monkeypatch.setattr(_core, "time_gemm", fail)
    monkeypatch.setattr(_core, "time_attention", fail)


def test_row_bucket_is_the_nearest_grid_size():
    assert [row_bucket(r) for r in (1, 2, 3, 5, 7, 100, 112, 700, 768, 3000)] == [1, 2, 3, 6, 8, 96, 128, 768, 768,
                                                                                  3072]


def test_products_are_the_model_steps_products():
    C, V, N = 16, 7, 96
    got = model_products(CFG, N, 8)
    for fan_in, fan_out in ((C, 3 * C), (C, C), (C, 4 * C), (4 * C, C), (C, V)):  # Y = X Wᵀ, dW = dYᵀ X, dX = dY W
        assert {Product(False, True, N, fan_out, fan_in), Product(True, False, fan_out, fan_in, N),
                Product(False, False, N, fan_in, fan_out)} <= set(got)
    hd = C // 4
    assert {Product(False, True, 8, 8, hd), Product(False, False, 8, hd, 8), Product(True, False, 8, hd, 8)} <= set(got)
    assert len(got) == len(set(got)) == 5 * 3 + 3
    t64 = blasgpt.Config(vocab_size=7, n_embd=16, n_head=4, n_layer=1, block_size=64)
    blocks = [p for p in model_products(t64, N, 64) if p.m <= 64 and p.n <= 64 and p.k <= 64]  # 32-query/key blocks
    assert len(blocks) == 6 and set(blocks) == {Product(False, True, 32, 32, hd), Product(False, True, 32, 64, hd),
                                                Product(False, False, 32, hd, 32), Product(False, False, 32, hd, 64),
                                                Product(True, False, 32, hd, 64), Product(True, False, 32, hd, 32)}
    long = blasgpt.Config(vocab_size=7, n_embd=16, n_head=4, n_layer=1, block_size=300)
    tiles = {p.n for p in model_products(long, 1200, 300) if not p.ta and p.tb and p.m == 64}
    assert tiles == {64, 128, 256, 300}  # the tile path's key widths: powers of two times 64, and the whole length


def test_timings_are_positive_and_checked():
    native, blas = _core.time_gemm("float32", False, True, 24, 12, 8, 0.001)
    assert native > 0 and blas > 0
    fused, gemm = _core.time_attention("float64", 16, 4, 6, 3, [], 0.001)
    assert fused > 0 and gemm > 0
    assert _core.time_attention("float32", 12, 1, 6, 3, [], 0.0)[0] == 0  # a head width the fused kernel refuses
    for bad in (dict(m=0), dict(n=70000), dict(k=-1)):
        args = dict(dtype="float32", ta=False, tb=False, m=4, n=4, k=4) | bad
        with pytest.raises(ValueError, match="between 1 and 65536"):
            _core.time_gemm(**args)
    with pytest.raises(ValueError, match="2\\^28"):
        _core.time_gemm("float32", False, False, 65536, 65536, 1)
    with pytest.raises(ValueError, match="dtype"):
        _core.time_gemm("float16", False, False, 4, 4, 4)
    with pytest.raises(ValueError, match="n must be between 1 and 128"):
        _core.time_attention("float32", 16, 4, 129, 1, [])
    with pytest.raises(ValueError, match="multiple of H"):
        _core.time_attention("float32", 16, 3, 4, 1, [])


def test_cache_round_trip(cache, monkeypatch):
    plan = make_plan(CFG, "float32", 100, 6)
    assert plan.source == "measured" and plan.rows == 96 and plan.doc_len == 6
    files = list(cache.iterdir())
    assert [f.name for f in files] == [calibrate.cache_path().name]
    data = json.loads(files[0].read_text())
    assert data["format"] == calibrate.PLAN_FORMAT and data["machine"] == calibrate.machine()
    assert len(data["timings"]) == len(plan.products) + (plan.attention is not None)
    for p in plan.products:  # each choice follows its two timings: OpenBLAS only when clearly faster
        assert p["native_s"] > 0 and p["blas_s"] > 0
        assert p["choice"] == ("blas" if p["blas_s"] < calibrate.BLAS_MARGIN * p["native_s"] else "native")

    calibrate.forget()  # a new process: the file answers, nothing is measured
    no_timing(monkeypatch)
    again = make_plan(CFG, "float32", 90, 6)  # 90 rows: the same bucket
    assert again.source == "cached" and again.products == plan.products and again.attention == plan.attention
    with pytest.raises(AssertionError, match="measured again"):
        make_plan(CFG, "float64", 96, 6)  # another dtype is another set of shapes


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"format": "blasgpt gemm plan", "version": 1}',
                                     "foreign"])
def test_corrupt_or_foreign_cache_is_measured_over_and_rewritten(cache, content):
    path = calibrate.cache_path()
    cache.mkdir(parents=True)
    if content == "foreign":  # a valid file of another machine (the same name, as after a hash collision)
        other = dict(calibrate.machine(), cpu="some other CPU")
        calibrate.write_cache(path, other, {"float32 NN 1x1x1": [1.0, 2.0]})
    else:
        path.write_text(content)
    plan = make_plan(CFG, "float32", 96, 6)
    assert plan.source == "measured"
    data = json.loads(path.read_text())
    assert data["machine"] == calibrate.machine() and "float32 NN 1x1x1" not in data["timings"]
    assert calibrate.read_cache(path, calibrate.machine()).keys() == data["timings"].keys()
    assert sorted(f.name for f in cache.iterdir()) == [path.name]  # no temporary file left


def test_a_rebuilt_core_does_not_reuse_the_cached_timings(cache, tmp_path, monkeypatch):
    """The cache key covers the compiled core's build: a core rebuilt with other kernels (same version) read the
    plan timed for the old one."""
    st = os.stat(_core.__file__)
    assert calibrate.machine()["core"] == f"{st.st_size}:{st.st_mtime_ns}"
    rebuilt = tmp_path / "rebuilt_core.so"
    rebuilt.write_bytes(b"x" * st.st_size)
    os.utime(rebuilt, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    path = calibrate.cache_path()
    monkeypatch.setattr(_core, "__file__", str(rebuilt))
    assert calibrate.cache_path() != path


def test_unwritable_cache_is_measured_around(tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the cache directory would be")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    calibrate.forget()
    try:
        plan = make_plan(CFG, "float32", 96, 6)
        assert plan.source == "measured, not cached" and len(plan.products) == 18
        assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir"]
        # the cache file's name taken by a directory: the rename fails, the temporary file is removed
        monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
        calibrate.cache_path().mkdir(parents=True)
        assert not calibrate.write_cache(calibrate.cache_path(), calibrate.machine(), {"float32 NN 1x1x1": [1, 2]})
        assert [p.name for p in calibrate.cache_path().parent.iterdir()] == [calibrate.cache_path().name]
    finally:
        calibrate.forget()


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes to read-only directories")
def test_read_only_cache_dir_is_measured_around(cache):
    cache.mkdir(parents=True)
    cache.chmod(0o500)
    try:
        assert make_plan(CFG, "float32", 96, 6).source == "measured, not cached"
        assert list(cache.iterdir()) == []
    finally:
        cache.chmod(0o700)


WRITER = """
import sys
from pathlib import Path
from blasgpt import calibrate
path, tag = Path(sys.argv[1]), sys.argv[2]
info = calibrate.machine()
for i in range(40):
    assert calibrate.write_cache(path, info, {f"{tag} {i} {j}": [float(i), float(j)] for j in range(50)})
    assert calibrate.read_cache(path, info), "a reader saw an invalid file"
"""


def test_concurrent_writers_leave_a_valid_file(cache):
    path = calibrate.cache_path()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), tag], stderr=subprocess.PIPE, text=True)
             for tag in ("a", "b")]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    timings = calibrate.read_cache(path, calibrate.machine())
    # valid, and holding at least the whole last write (each write merges what the file held when it read it)
    assert any(all(f"{tag} 39 {j}" in timings for j in range(50)) for tag in "ab")
    assert sorted(f.name for f in cache.iterdir()) == [path.name]


def test_backend_overrides(monkeypatch, cache):
    monkeypatch.delenv("BLASGPT_GEMM", raising=False)
    assert blasgpt.Model(CFG).backend == "auto"
    for name in ("auto", "native", "blas"):
        monkeypatch.setenv("BLASGPT_GEMM", name)
        assert blasgpt.Model(CFG).backend == name
        assert blasgpt.Model(CFG, backend="blas" if name != "blas" else "native").backend != name
    monkeypatch.setenv("BLASGPT_GEMM", "fast")
    with pytest.raises(ValueError, match="BLASGPT_GEMM must be one of auto, native, blas"):
        blasgpt.Model(CFG)
    m = blasgpt.Model(CFG, backend="native")
    with pytest.raises(ValueError, match="expected 'blas', 'native' or 'auto'"):
        m.backend = "fast"
    m.backend = "auto"
    assert m.backend == "auto" and m.gemm_plan is None


def test_first_step_plans_and_train_plans_its_batch(cache):
    model, tok, docs = make_setup(3, 16, 4, 1, 8, n_docs=12, vocab=6, backend="auto")
    assert model.gemm_plan is None
    model.forward_backward(tok.batch(docs))
    first = model.gemm_plan
    assert first is not None and model._core.gemm_plan == (first.choices(), first.fused_attention)
    model.forward_backward(tok.batch(docs[:2]))  # later batches use the plan they find
    assert model.gemm_plan is first
    blasgpt.train(model, tok, docs, steps=3, batch_size=4)
    n = round(np.mean([min(8, len(d) + 1) for d in docs]))
    assert (model.gemm_plan.rows, model.gemm_plan.doc_len) == (row_bucket(4 * n), n)
    forced = blasgpt.Model(model.config, backend="native")
    forced.forward_backward(tok.batch(docs))
    assert forced.gemm_plan is None  # the forced backends never measure
    with pytest.raises(ValueError, match="rows must be a positive integer"):
        model.plan_gemm(0)


def mixed_plan(model: blasgpt.Model, rows: int, n: int, fused: bool) -> None:
    """A plan that alternates the kernels product by product (whatever this machine would choose)."""
    shapes = list(model_products(model.config, rows, n))
    model._core.set_gemm_plan([(p.ta, p.tb, p.m, p.n, p.k, i % 2 == 1) for i, p in enumerate(shapes)], fused)


@pytest.mark.parametrize("fused", [True, False])
def test_mixed_plan_equals_forced_backends(fused):
    """Kernels mixed product by product, attention fused or as gemm products: the forced backends' numbers (within
    test_gradients.test_backends_agree's tolerances)."""
    model, tok, docs = make_setup(13, 16, 4, 2, 8, n_docs=6)
    batch = tok.batch(docs)
    results = {}
    for name in ("blas", "native", "auto"):
        model.backend = name
        if name == "auto":
            rows = int(np.sum(np.minimum(8, np.diff(batch.offsets) - 1)))
            mixed_plan(model, rows, 5, fused)
            model._plan_pending = False  # keep this plan (a first step would make the machine's own)
            assert sum(c[-1] for c in model._core.gemm_plan[0]) == 9  # both kernels in use
        results[name] = model.forward_backward(batch), model.flat_grads.copy()
    for forced in ("blas", "native"):
        assert results["auto"][0] == pytest.approx(results[forced][0], rel=1e-13)
        np.testing.assert_allclose(results["auto"][1], results[forced][1], rtol=1e-11, atol=1e-13)


def test_large_steps_plan_within_bounds(cache, monkeypatch):
    """Rows past MAX_ROWS are measured at MAX_ROWS; products too large to time are left to the native rule."""
    plan = make_plan(CFG, "float32", 10**6, 8)
    assert plan.rows == calibrate.MAX_ROWS and len(plan.products) == 18
    monkeypatch.setattr(calibrate, "MAX_OPERAND", 2000)
    small = make_plan(CFG, "float64", 96, 8)
    assert all(max(p["m"] * p["k"], p["k"] * p["n"], p["m"] * p["n"]) <= 2000 for p in small.products)
    assert 0 < len(small.products) < 18
    monkeypatch.setattr(calibrate, "LARGE_VOLUME", 96 * 64 * 16)  # as many multiply-adds as the MLP's products
    large = make_plan(CFG, "float64", 96, 8)
    assert sorted(large.large) == sorted(p.key for p in model_products(CFG, 96, 8) if p.m * p.n * p.k >= 96 * 64 * 16)
    assert large.large and not {p["shape"] for p in large.products} & set(large.large)
    assert f"+ {len(large.large)} of 2^29" in large.summary()


def test_set_gemm_plan_checks_its_input():
    m = blasgpt.Model(CFG, backend="auto")
    with pytest.raises(ValueError, match="between 1 and 65536"):
        m._core.set_gemm_plan([(False, True, 0, 4, 4, True)], True)
    with pytest.raises((TypeError, RuntimeError)):
        m._core.set_gemm_plan([("x", True, 4, 4)], True)
    m._core.set_gemm_plan([], False)
    assert m._core.gemm_plan == ([], False)


def prefer(monkeypatch, kernel: str) -> None:
    """From here on, this machine 'measures' ``kernel`` (native or blas) faster for every product, and the fused
    attention kernel faster exactly when native wins (timings are (native, blas) and (fused, gemm) seconds); whole
    steps under the per-shape choices and under ``kernel`` tie, the other kernel's are slower."""
    fast, slow = 1e-9, 1e-3
    pair = (fast, slow) if kernel == "native" else (slow, fast)
    monkeypatch.setattr(_core, "time_gemm", lambda *args: pair)
    monkeypatch.setattr(_core, "time_attention", lambda *args: pair)
    monkeypatch.setattr(calibrate, "race_steps", lambda kinds, use, step, clock: [
        fast if k in ("plan", kernel) else slow for k in kinds])
    calibrate.forget()


def test_near_ties_keep_the_native_kernels(cache, monkeypatch):
    """OpenBLAS is chosen only when clearly faster: a product it does 3 % faster (within run-to-run noise of such
    short timings) stays native, one it does 20 % faster goes to OpenBLAS; an attention tie keeps the fused
    kernel."""
    timings = {(True, False): (1.00e-6, 0.97e-6), (False, False): (1.00e-6, 0.80e-6), (False, True): (1e-6, 1e-6)}
    monkeypatch.setattr(_core, "time_gemm", lambda dtype, ta, tb, *rest: timings[(ta, tb)])
    monkeypatch.setattr(_core, "time_attention", lambda *args: (1e-6, 1e-6))
    calibrate.forget()
    plan = make_plan(CFG, "float32", 64, 6)
    for p in plan.products:
        want = "blas" if (p["ta"], p["tb"]) == (False, False) else "native"
        assert p["choice"] == want, p
    assert plan.attention is not None and plan.attention["choice"] == "fused"


def test_a_resumed_run_keeps_its_runs_plan_and_continues_bit_exactly(cache, tmp_path, monkeypatch):
    """The checkpoint stores the auto backend's plan; a resumed run computes with it even when this machine (its
    cache gone, its timings changed) would now choose every product the other way, so it continues bit-exactly."""
    prefer(monkeypatch, "native")
    whole, tok, docs = make_setup(5, 16, 4, 2, 8, n_docs=24, backend="auto")
    half, _, _ = make_setup(5, 16, 4, 2, 8, n_docs=24, backend="auto")
    run = dict(batch_size=4, schedule_steps=10, log=lambda _: None)
    blasgpt.train(whole, tok, docs, steps=10, **run)
    blasgpt.train(half, tok, docs, steps=4, **run)
    kept = half.gemm_plan
    assert kept is not None and not any(c[-1] for c in kept.choices()) and kept.fused_attention
    half.save(tmp_path / "ckpt.safetensors", tok)

    prefer(monkeypatch, "blas")  # the machine's own choice now differs everywhere
    for f in cache.glob("*"):
        f.unlink()
    other = make_plan(half.config, "float64", kept.rows, kept.doc_len)
    assert all(c[-1] for c in other.choices()) and not other.fused_attention

    resumed = blasgpt.Model.load(tmp_path / "ckpt.safetensors")
    assert resumed.gemm_plan.choices() == kept.choices() and resumed.gemm_plan.source == "kept from the checkpoint"
    assert resumed._core.gemm_plan == (kept.choices(), kept.fused_attention)
    assert resumed.plan_gemm(3, 2) is resumed.gemm_plan  # training plans nothing new over it
    blasgpt.train(resumed, tok, docs, steps=6, **run)
    for name, p in whole.params.items():
        assert np.array_equal(p, resumed.params[name]), name
    assert np.array_equal(whole.adam_m, resumed.adam_m) and np.array_equal(whole.adam_v, resumed.adam_v)


@pytest.mark.parametrize("text, problem", [
    ("[]", "a gemm plan is a JSON object"),
    ('{"dtype": "float16", "rows": 1, "doc_len": 1, "products": [], "attention": null, "source": ""}',
     "not a gemm plan of float32 or float64 products"),
    ('{"dtype": "float32", "rows": 1, "doc_len": 1, "products": [{"ta": 1, "tb": false, "m": 1, "n": 1, "k": 1, '
     '"choice": "blas"}], "attention": null, "source": ""}', "not a product of a gemm plan"),
    ('{"dtype": "float32", "rows": 1, "doc_len": 1, "products": [], "attention": {"choice": "x"}, "source": ""}',
     "not an attention choice of a gemm plan"),
])
def test_a_stored_plan_is_checked(text, problem):
    with pytest.raises(ValueError, match=problem):
        calibrate.Plan.from_json(text)
    with pytest.raises(TypeError):
        calibrate.Plan.from_json('{"dtype": "float32"}')


def test_products_too_large_to_time_keep_the_native_rule(cache, monkeypatch):
    """A product left untimed (LARGE_VOLUME or more: OpenBLAS; an operand past MAX_OPERAND: native) is in the plan
    the core computes with, so it does not take the choice of the nearest timed shape (the d384 model's MLP and
    qkv products took the attention output projection's)."""
    prefer(monkeypatch, "native")
    monkeypatch.setattr(calibrate, "LARGE_VOLUME", 96 * 64 * 16)  # the MLP's products
    monkeypatch.setattr(calibrate, "MAX_OPERAND", 96 * 27)  # qkv's and the MLP's activations (27 < 96 < 64 rows)
    plan = make_plan(CFG, "float32", 96, 8)
    assert plan.large and plan.untimed and not set(plan.large) & set(plan.untimed)
    for kind in ("plan", "native", "blas"):
        choices = {Product(*c[:5]).key: c[5] for c in plan.choices(kind)}
        assert len(choices) == len(model_products(CFG, 96, 8))
        assert all(choices[k] for k in plan.large)  # OpenBLAS, as the native backend's rule
        assert all(choices[k] == (kind == "blas") for k in plan.untimed)
    assert "too large to time: native" in plan.summary()
    with pytest.raises(ValueError, match="not a product shape"):
        Product.from_key("NT 96x0x16")


class FakeSteps:
    """A model whose forward-backward pass costs ``cost[kind]`` seconds of a clock of its own under each kind."""

    def __init__(self, cost: dict[str, float]):
        self.cost, self.now, self.kind, self.log = cost, 0.0, "", []

    def use(self, kind: str) -> None:
        self.kind = kind
        self.log.append(kind)

    def step(self) -> None:
        self.now += self.cost[self.kind]

    def clock(self) -> float:
        return self.now


def test_race_steps_takes_turns_within_its_budget():
    fake = FakeSteps({"plan": 1e-4, "native": 2e-4, "blas": 3e-4})
    kinds = ["plan", "native", "blas"]
    assert calibrate.race_steps(kinds, fake.use, fake.step, fake.clock) == pytest.approx([1e-4, 2e-4, 3e-4])
    rounds = fake.log[1:]  # after the warm-up call: the kinds in turns, each round starting one further along
    assert rounds[:6] == ["plan", "native", "blas", "native", "blas", "plan"]
    assert calibrate.STEP_ROUNDS[0] * 3 <= len(rounds) <= calibrate.STEP_ROUNDS[1] * 3
    assert fake.now <= calibrate.STEP_SECONDS + calibrate.STEP_LIMIT / 10
    long = calibrate.STEP_LIMIT / 3.5  # a long step: one round each (a second would not fit STEP_LIMIT)
    slow = FakeSteps({"plan": long, "native": long})
    assert calibrate.race_steps(["plan", "native"], slow.use, slow.step, slow.clock) == pytest.approx([long, long])
    assert slow.log == ["plan", "plan", "native"] and slow.now <= calibrate.STEP_LIMIT
    too_long = FakeSteps({k: calibrate.STEP_LIMIT / 3 for k in kinds})
    with pytest.raises(calibrate.StepTooLong, match="a forward-backward pass takes"):
        calibrate.race_steps(kinds, too_long.use, too_long.step, too_long.clock)
    assert len(too_long.log) == 1


def test_the_whole_step_check_chooses_the_fastest_and_leaves_the_model_as_it_was(cache, monkeypatch):
    """A real check on a real model: three positive timings, the core computing with the fastest's choices, and the
    model's parameters, gradients, Adam state and step untouched by the passes it timed."""
    model, tok, docs = make_setup(3, 16, 4, 1, 8, n_docs=12, vocab=6, dtype="float32", backend="auto")
    model.train_step(tok.batch(docs[:4]))
    before = {k: getattr(model, k).copy() for k in ("flat_params", "flat_grads", "adam_m", "adam_v")}
    plan = model.plan_gemm(40, 6)
    s = plan.step
    assert s is not None and s["source"] == "measured" and s["role"] == "forward-backward of 8 documents of 6 positions"
    assert all(s[k + "_s"] > 0 for k in calibrate.STEP_CHOICES)
    single = min(("native", "blas"), key=lambda k: s[k + "_s"])
    assert plan.kind == s["choice"] == ("plan" if s["plan_s"] < calibrate.STEP_MARGIN * s[single + "_s"] else single)
    assert model._core.gemm_plan == (plan.choices(plan.kind), plan.fused_for(plan.kind))
    for k, v in before.items():
        assert np.array_equal(getattr(model, k), v), k
    assert model.step == 1
    assert "whole step:" in plan.summary() and "-> " in plan.step_summary()
    assert calibrate.Plan.from_json(plan.to_json()) == plan


def test_the_whole_step_choice_is_cached_and_used(cache, monkeypatch):
    """The check's timings go to the machine's cache: another process reads them instead of timing again, and its
    model computes with the choice they make (here every product on OpenBLAS, attention as gemm products)."""
    calls = []
    monkeypatch.setattr(calibrate, "race_steps", lambda kinds, use, step, clock: calls.append(kinds) or [
        {"plan": 3e-6, "native": 2e-6, "blas": 1e-6}[k] for k in kinds])
    model = blasgpt.Model(CFG, "float32")
    plan = model.plan_gemm(48, 6)
    assert len(calls) == 1 and plan.kind == "blas" and plan.step["source"] == "measured"
    choices, fused = model._core.gemm_plan
    assert choices == plan.choices("blas") and all(c[-1] for c in choices) and not fused
    assert plan.choices() == plan.choices("blas") and plan.fused_attention is False

    calibrate.forget()  # another process on this machine
    monkeypatch.setattr(calibrate, "race_steps", lambda *args: pytest.fail("timed the step again"))
    again = blasgpt.Model(CFG, "float32")
    got = again.plan_gemm(48, 6)
    assert got.step["source"] == "cached" and got.kind == "blas" and again._core.gemm_plan == (choices, False)
    other = blasgpt.Model(blasgpt.Config(vocab_size=7, n_embd=16, n_head=4, n_layer=2, block_size=8), "float32")
    with pytest.raises(pytest.fail.Exception, match="timed the step again"):
        other.plan_gemm(48, 6)  # another model size is another step


def test_an_override_wins_over_the_whole_step_choice(cache, monkeypatch):
    """BLASGPT_GEMM and backend= run the forced backend without planning or checking a step, and switching a planned
    model to a forced backend computes on it."""
    monkeypatch.setattr(calibrate, "race_steps", lambda kinds, use, step, clock: [
        {"plan": 3e-6, "native": 2e-6, "blas": 1e-6}[k] for k in kinds])
    model = blasgpt.Model(CFG, "float32")
    assert model.plan_gemm(48, 6).kind == "blas"
    monkeypatch.setattr(calibrate, "race_steps", lambda *args: pytest.fail("checked a step"))
    monkeypatch.setenv("BLASGPT_GEMM", "native")
    forced = [blasgpt.Model(CFG, "float32"), blasgpt.Model(CFG, "float32", backend="native")]
    monkeypatch.delenv("BLASGPT_GEMM")
    forced.append(blasgpt.Model(CFG, "float32", backend="native"))
    _, tok, docs = make_setup(3, 16, 4, 1, 8, n_docs=12, vocab=6)
    for m in forced:
        m.train_step(tok.batch(docs))
        assert m.backend == "native" and m.gemm_plan is None
    model.backend = "native"
    assert model._core.backend == "native"


def test_a_step_too_long_to_check_keeps_the_per_shape_choices(cache, monkeypatch):
    monkeypatch.setattr(calibrate, "STEP_LIMIT", 1e-9)
    model = blasgpt.Model(CFG, "float32")
    plan = model.plan_gemm(48, 6)
    assert plan.step is None and plan.kind == "plan" and "not checked" in plan.step_summary()
    assert model._core.gemm_plan == (plan.choices("plan"), plan.fused_for("plan"))
    data = json.loads(calibrate.cache_path().read_text())
    assert not any(k.startswith("step ") for k in data["timings"])  # nothing cached: it may fit another time


@pytest.mark.parametrize("plan_s, native_s, blas_s, chosen", [
    (0.90, 1.00, 1.20, "plan"),  # the mix clearly faster
    (0.99, 1.00, 1.20, "native"),  # the mix within STEP_MARGIN of the faster library: that library
    (0.99, 1.20, 1.00, "blas"),
    (1.00, 1.00, 1.00, "native"),  # a tie of everything: the native kernels
])
def test_the_per_shape_mix_is_kept_only_when_clearly_faster(cache, monkeypatch, plan_s, native_s, blas_s, chosen):
    secs = {"plan": plan_s, "native": native_s, "blas": blas_s}
    # a per-shape mix (untransposed products on OpenBLAS), so that the three kinds compute differently
    monkeypatch.setattr(_core, "time_gemm", lambda dtype, ta, tb, *rest: (1e-6, 0.5e-6 if not ta | tb else 2e-6))
    monkeypatch.setattr(calibrate, "race_steps", lambda kinds, use, step, clock: [secs[k] * 1e-3 for k in kinds])
    model = blasgpt.Model(CFG, "float32")
    assert model.plan_gemm(48, 6).kind == chosen
