"""Learning-rate schedules (blasgpt.schedule): values from their formulas, microgpt's default unchanged bit for bit,
the schedule recorded in checkpoints, and a resumed run continuing a warmup + cosine schedule bit-exactly."""

import math

import numpy as np
import pytest

import blasgpt
from blasgpt.schedule import WSD_DECAY_FRACTION, make_schedule
from blasgpt.train import lr_at
from blasgpt.train_config import TrainConfig


def test_linear_without_warmup_is_microgpts_schedule_bit_for_bit():
    steps = np.arange(1000, dtype=np.int64)
    got = make_schedule("linear", 0.01, 1000)(steps)
    want = np.array([lr_at(int(s), 0.01, 1000) for s in steps])
    assert np.array_equal(got, want)


@pytest.mark.parametrize("name", ["linear", "cosine", "wsd"])
def test_warmup_rises_linearly_to_the_peak(name):
    lrs = make_schedule(name, 0.5, 100, warmup=10)(np.arange(10))
    assert np.allclose(lrs, 0.5 * np.arange(1, 11) / 10, rtol=0, atol=1e-15)
    assert lrs[-1] == 0.5


def test_each_schedule_after_warmup_follows_its_formula():
    lr, total, w = 0.3, 110, 10
    s = np.arange(w, total)
    p = (s - w) / (total - w)
    assert np.allclose(make_schedule("linear", lr, total, w)(s), lr * (1 - p), rtol=0, atol=1e-15)
    assert np.allclose(make_schedule("cosine", lr, total, w)(s), [lr * 0.5 * (1 + math.cos(math.pi * q)) for q in p],
                       rtol=0, atol=1e-15)
    wsd = make_schedule("wsd", lr, total, w)(s)
    stable = p < 1 - WSD_DECAY_FRACTION - 1e-9
    assert stable.sum() == 80 and np.all(wsd[stable] == lr)
    assert np.allclose(wsd[~stable], lr * (1 - p[~stable]) / WSD_DECAY_FRACTION, rtol=0, atol=1e-15)
    for name in ("linear", "cosine", "wsd"):  # from the peak, never rising, towards 0 at the end
        lrs = make_schedule(name, lr, total, w)(s)
        assert lrs[0] == lr and np.all(np.diff(lrs) <= 1e-15) and lrs[-1] < lr * 0.06


@pytest.mark.parametrize("kwargs, message", [
    ({"name": "step"}, "the learning-rate schedule must be one of linear, cosine, wsd, got 'step'"),
    ({"warmup": 100}, "warmup steps (100) must be fewer than the run's total steps (100)"),
    ({"warmup": -1}, "warmup steps must be an integer >= 0, got -1"),
    ({"warmup": 2.5}, "warmup steps must be an integer >= 0, got 2.5"),
])
def test_bad_schedules_are_refused(kwargs, message):
    args = {"name": "cosine", "lr": 0.1, "total": 100, "warmup": 0, **kwargs}
    with pytest.raises(ValueError) as e:
        make_schedule(**args)
    assert str(e.value) == message


def test_train_config_records_the_schedule_and_old_checkpoints_read_as_linear():
    cfg = TrainConfig(schedule="wsd", warmup_steps=20, total_steps=200)
    assert TrainConfig.from_checkpoint(cfg.to_dict(), 200) == cfg
    old = TrainConfig.from_checkpoint({"seed": 1, "batch_size": 2, "lr": 0.1}, 50)
    assert (old.schedule, old.warmup_steps) == ("linear", 0)
    with pytest.raises(ValueError, match=r"warmup_steps \(200\) must be fewer"):
        TrainConfig(warmup_steps=200, total_steps=200)


def test_a_resumed_warmup_cosine_run_continues_bit_exactly(tmp_path):
    docs = blasgpt.load_docs()[:300]
    kwargs = dict(batch_size=4, lr=0.02, schedule="cosine", warmup_steps=7, schedule_steps=30, log=lambda _: None)
    _, tok, whole = blasgpt.microgpt_start(docs)
    shuffled, _, half = blasgpt.microgpt_start(docs)
    hist = blasgpt.train(whole, tok, shuffled, steps=30, **kwargs)
    blasgpt.train(half, tok, shuffled, steps=12, **kwargs)
    half.save(tmp_path / "ckpt.safetensors", tok)
    resumed = blasgpt.Model.load(tmp_path / "ckpt.safetensors")
    rest = blasgpt.train(resumed, tok, shuffled, steps=18, **kwargs)
    assert rest.losses == hist.losses[12:]
    for name, p in whole.params.items():
        assert np.array_equal(p, resumed.params[name]), name
    # and the schedule really is not microgpt's: a linear run ends elsewhere
    _, _, linear = blasgpt.microgpt_start(docs)
    blasgpt.train(linear, tok, shuffled, steps=30, batch_size=4, lr=0.02, log=lambda _: None)
    assert not np.array_equal(linear.params["wte"], whole.params["wte"])
