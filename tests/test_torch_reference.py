"""Gradients against PyTorch autograd (float64), through the benchmark's PyTorch reference model (bench/torch_gpt.py,
the same model the bench times). Skipped, visibly, when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_setup

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install .[torch] to run the autograd check")
from torch_gpt import TorchGPT  # noqa: E402  (needs torch)

CONFIGS = [(21, 16, 4, 1, 16), (22, 9, 3, 2, 5), (23, 8, 1, 3, 7)]


def assert_equals_autograd(model, batch, loss: float, drop=None) -> None:
    """``loss`` and ``model.grads`` (from forward_backward of ``batch``) equal the reference's loss and autograd
    gradients (TorchGPT, with the dropout hook ``drop(x, site)`` if given): loss to 1e-12, every gradient to 1e-10
    of its largest entry (at least 1)."""
    ref_loss, ref_grads = TorchGPT({k: v.copy() for k, v in model.params.items()}, model.config, "float64",
                                   drop).forward_backward(batch)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert ref_grads.keys() == model.grads.keys()
    for name, g in model.grads.items():
        want = ref_grads[name]
        assert np.abs(g - want).max() <= 1e-10 * max(1.0, np.abs(want).max()), name


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "C{1}H{2}L{3}T{4}".format(*c))
def test_gradients_equal_autograd(cfg, backend):
    seed, C, H, L, T = cfg
    model, tok, docs = make_setup(seed, C, H, L, T, n_docs=6, backend=backend)
    batch = tok.batch(docs)
    assert_equals_autograd(model, batch, model.forward_backward(batch))


def test_reference_pads_documents_without_changing_their_loss():
    """A batch's loss is the mean of its documents' losses, each alone (padding to the longest weighs nothing)."""
    model, tok, docs = make_setup(24, 8, 2, 2, 7, n_docs=5)
    ref = TorchGPT({k: v.copy() for k, v in model.params.items()}, model.config, "float64")
    whole = ref.forward_backward(tok.batch(docs))[0]
    alone = [ref.forward_backward(tok.batch([d]))[0] for d in docs]
    assert whole == pytest.approx(np.mean(alone), rel=1e-13)
    assert len({round(a, 6) for a in alone}) > 1  # documents of different lengths and losses
