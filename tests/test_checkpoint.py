from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from conftest import make_setup


def test_round_trip_restores_everything(tmp_path):
    model, tok, docs = make_setup(31, 8, 2, 2, 6, dtype="float32")
    blasgpt.train(model, tok, docs, steps=7, batch_size=2)
    path = tmp_path / "m.safetensors"
    blasgpt.save_checkpoint(path, model, tok, {"note": "hello"})
    ck = blasgpt.load_checkpoint(path)
    assert ck.model.config == model.config and ck.model.dtype == np.float32
    assert ck.model.step == 7 and ck.tokenizer == tok and ck.extra == {"note": "hello"}
    np.testing.assert_array_equal(ck.model.flat_params, model.flat_params)
    np.testing.assert_array_equal(ck.model.adam_m, model.adam_m)
    np.testing.assert_array_equal(ck.model.adam_v, model.adam_v)
    assert not list(tmp_path.glob("*.tmp")), "temp file left behind"
    # the file is plain safetensors: other tools read the weights by name
    from safetensors.numpy import load_file

    np.testing.assert_array_equal(load_file(path)["layer1.mlp_fc2"], model.params["layer1.mlp_fc2"])


def test_resume_continues_the_same_losses(tmp_path):
    names = blasgpt.load_docs()[:500]
    docs, tok, full = blasgpt.microgpt_start(names, seed=5)
    uninterrupted = blasgpt.train(full, tok, docs, steps=120, batch_size=3).losses

    docs, tok, model = blasgpt.microgpt_start(names, seed=5)
    first = blasgpt.train(model, tok, docs, steps=50, batch_size=3, schedule_steps=120).losses
    blasgpt.save_checkpoint(tmp_path / "c.safetensors", model, tok)
    resumed = blasgpt.load_checkpoint(tmp_path / "c.safetensors").model
    rest = blasgpt.train(resumed, tok, docs, steps=70, batch_size=3, schedule_steps=120).losses
    assert first + rest == uninterrupted  # bit-exact, float64
    np.testing.assert_array_equal(resumed.flat_params, full.flat_params)


@pytest.mark.parametrize("damage", ["truncate", "flip", "random", "foreign"])
def test_damaged_files_raise_clear_errors(tmp_path, damage):
    model, tok, _ = make_setup(32, 8, 2, 1, 6)
    path = tmp_path / "c.safetensors"
    blasgpt.save_checkpoint(path, model, tok)
    raw = bytearray(path.read_bytes())
    if damage == "truncate":
        path.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        raw[-5] ^= 0xFF
        path.write_bytes(raw)
    elif damage == "random":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    else:
        from safetensors.numpy import save_file

        save_file({"w": np.zeros(3)}, str(path))
    with pytest.raises(blasgpt.CheckpointError, match=str(path.name)):
        blasgpt.load_checkpoint(path)


def test_missing_checkpoint():
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        blasgpt.load_checkpoint("/nonexistent/c.safetensors")


def test_model_save_and_load_round_trip(tmp_path):
    """model.save / Model.load are save_checkpoint / load_checkpoint: the same file, the same model back (params,
    Adam moments, step, config, dtype), and training continues bit-exactly from it."""
    model, tok, docs = make_setup(33, 8, 2, 1, 6, dtype="float32")
    blasgpt.train(model, tok, docs, steps=5, batch_size=2, schedule_steps=9)
    path = model.save(tmp_path / "m.safetensors", tok, {"note": "hi"})
    assert path == tmp_path / "m.safetensors" and not list(tmp_path.glob("*.tmp"))
    back = blasgpt.Model.load(path, backend=model.backend)  # (the same gemm: float32 sums in its order)
    assert isinstance(back, blasgpt.Model) and back.config == model.config and back.dtype == np.float32
    assert back.step == 5
    for a, b in ((back.flat_params, model.flat_params), (back.adam_m, model.adam_m), (back.adam_v, model.adam_v)):
        np.testing.assert_array_equal(a, b)
    ck = blasgpt.load_checkpoint(path)
    assert ck.tokenizer == tok and ck.extra == {"note": "hi"}
    blasgpt.save_checkpoint(tmp_path / "same.safetensors", model, tok, {"note": "hi"})
    from safetensors import safe_open

    with safe_open(str(path), "numpy") as f, safe_open(str(tmp_path / "same.safetensors"), "numpy") as g:
        assert f.metadata() == g.metadata() and sorted(f.keys()) == sorted(g.keys())
        for key in f.keys():
            np.testing.assert_array_equal(f.get_tensor(key), g.get_tensor(key))
    assert blasgpt.Model.load(path).backend == blasgpt.model.default_backend()
    rest = blasgpt.train(back, tok, docs, steps=4, batch_size=2, schedule_steps=9).losses
    assert rest == blasgpt.train(model, tok, docs, steps=4, batch_size=2, schedule_steps=9).losses
    model.save(tmp_path / "novocab.safetensors")  # no tokenizer: a model alone
    assert blasgpt.load_checkpoint(tmp_path / "novocab.safetensors").tokenizer is None
    with pytest.raises(blasgpt.CheckpointError, match="not a readable safetensors file"):
        (tmp_path / "junk.safetensors").write_bytes(b"junk")
        blasgpt.Model.load(tmp_path / "junk.safetensors")
