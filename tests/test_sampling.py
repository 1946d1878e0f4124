from __future__ import annotations

import numpy as np
import pytest

import blasgpt
from conftest import greedy_lines as greedy, make_setup


@pytest.fixture(scope="module")
def trained():
    docs, tok, model = blasgpt.microgpt_start(blasgpt.load_docs()[:2000], seed=3)
    blasgpt.train(model, tok, docs, steps=300, batch_size=8)
    return model, tok


def test_same_seed_same_samples(trained):
    model, tok = trained
    a = blasgpt.sample(model, tok, num=10, seed=5)
    assert a == blasgpt.sample(model, tok, num=10, seed=5)
    assert a != blasgpt.sample(model, tok, num=10, seed=6)
    assert all(isinstance(s, str) and len(s) <= model.config.block_size for s in a)


def test_zero_temperature_limit_is_argmax(trained):
    model, tok = trained
    for prompt in ("", "ma", "k"):
        want = greedy(model, tok, prompt)
        got = blasgpt.sample(model, tok, num=3, temperature=1e-6, prompt=prompt, seed=1)
        assert got == [want] * 3


def test_top_k_one_is_argmax(trained):
    model, tok = trained
    assert blasgpt.sample(model, tok, num=2, temperature=5.0, top_k=1, seed=9) == [greedy(model, tok)] * 2


def test_prompt_prefix_and_length_limit():
    model, tok, _ = make_setup(4, 8, 2, 1, 4)
    out = blasgpt.sample(model, tok, num=20, temperature=2.0, prompt="ab", seed=0)
    assert all(s.startswith("ab") and len(s) <= 4 for s in out)


def test_top_k_restricts_support(trained):
    model, tok = trained
    first = model.forward([tok.bos])[-1]
    allowed = {tok.chars[i] for i in np.argsort(first)[-3:] if i != tok.bos}
    for s in blasgpt.sample(model, tok, num=30, temperature=3.0, top_k=3, seed=2):
        if s:
            assert s[0] in allowed
