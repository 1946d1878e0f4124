"""Reference test: microgpt's own loss trace, reproduced by the float64 path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import blasgpt

GOLDEN = json.loads((Path(__file__).parent / "data" / "microgpt_seed42_losses.json").read_text())


@pytest.fixture(scope="module")
def names() -> list[str]:
    return blasgpt.load_docs()


def test_bundled_names_match_reference_shape(names):
    assert len(names) == GOLDEN["num_docs"]
    shuffled, tok, model = blasgpt.microgpt_start(names, seed=42)
    assert shuffled[:5] == GOLDEN["first_docs"]
    assert tok.vocab_size == 27 and model.num_params == GOLDEN["num_params"]


def test_golden_trace_float64(names, backend):
    docs, tok, model = blasgpt.microgpt_start(names, seed=42, dtype="float64")
    model.backend = backend
    hist = blasgpt.train(model, tok, docs, steps=1000, batch_size=1, lr=0.01)
    got, want = np.array(hist.losses), np.array(GOLDEN["losses"])
    worst = int(np.argmax(np.abs(got - want)))
    assert np.abs(got - want).max() <= 1e-9, f"step {worst}: {got[worst]!r} vs microgpt {want[worst]!r}"


def test_float32_tracks_float64(names):
    docs, tok, m64 = blasgpt.microgpt_start(names, seed=42, dtype="float64")
    m32 = blasgpt.Model(m64.config, dtype="float32", init=False)
    m32.flat_params[...] = m64.flat_params
    h64 = blasgpt.train(m64, tok, docs, steps=100, batch_size=4, lr=0.01)
    h32 = blasgpt.train(m32, tok, docs, steps=100, batch_size=4, lr=0.01)
    diff = np.abs(np.array(h32.losses) - np.array(h64.losses))
    assert diff.max() <= 1e-4, f"float32 drifted {diff.max():.2e} from float64 (step {int(diff.argmax())})"


def test_rerun_is_bit_identical(names):
    runs = []
    for _ in range(2):
        docs, tok, model = blasgpt.microgpt_start(names, seed=7)
        runs.append(blasgpt.train(model, tok, docs, steps=50, batch_size=3).losses)
    assert runs[0] == runs[1]
