"""The training options against PyTorch in float64 (docs/TRAINING_OPTIONS.md): torch.optim.AdamW and Adam on the
same gradients, and autograd through tied embeddings and through dropout with the documented masks. Skipped,
visibly, when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_setup
from test_training_options import THREADS, _rel, dropout_mask, tied_setup

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install .[torch] to run the option checks")
from test_torch_reference import assert_equals_autograd  # noqa: E402 (after the torch skip)


@pytest.mark.parametrize("threads", THREADS)
def test_adamw_equals_torch_adamw(threads, backend):
    """Three train_steps with weight decay against torch.optim.AdamW given the same gradients, the decayed
    parameters in a group with weight_decay and wte/wpe in one without (PyTorch's own update order: decay, then
    the bias-corrected step lr·m̂/(√v̂ + eps))."""
    model, tok, docs = make_setup(32, 8, 2, 2, 6, n_docs=6, backend=backend)
    model.threads = threads
    batch = tok.batch(docs)
    lr, wd = 0.02, 0.5
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in model.params.items()}
    decayed = set(model.decayed_params)
    opt = torch.optim.AdamW([{"params": [params[k] for k in params if k in decayed], "weight_decay": wd},
                             {"params": [params[k] for k in params if k not in decayed], "weight_decay": 0.0}],
                            lr=lr, betas=(0.85, 0.99), eps=1e-8)
    for _ in range(3):
        model.train_step(batch, lr, weight_decay=wd)
        for name, p in params.items():
            p.grad = torch.tensor(model.grads[name])  # the gradient this step used (grads keeps it)
        opt.step()
        for name, p in params.items():
            assert _rel(model.params[name], p.numpy()) <= 1e-13, name
    m = np.concatenate([opt.state[params[k]]["exp_avg"].numpy().ravel() for k in params])
    v = np.concatenate([opt.state[params[k]]["exp_avg_sq"].numpy().ravel() for k in params])
    assert _rel(model.adam_m, m) <= 1e-13 and _rel(model.adam_v, v) <= 1e-13


def _adam_reference(params: dict, lr: float) -> "torch.optim.Optimizer":
    return torch.optim.Adam(list(params.values()), lr=lr, betas=(0.85, 0.99), eps=1e-8)


@pytest.mark.parametrize("threads", THREADS)
def test_clipping_equals_scaled_gradient_in_torch_adam(threads, backend):
    """Two clipped steps against torch.optim.Adam fed g·min(1, G/‖g‖) computed in torch from the unclipped
    gradient. The model has > 2**14 parameters, so with 2 threads both the batch and the reduction are split."""
    model, tok, docs = make_setup(34, 32, 2, 2, 5, n_docs=7, backend=backend)
    assert model.num_params >= 1 << 14
    model.threads = threads
    batch = tok.batch(docs)
    lr = 0.01
    params = {k: torch.tensor(v, dtype=torch.float64) for k, v in model.params.items()}
    opt = _adam_reference(params, lr)
    for _ in range(2):
        model.forward_backward(batch)  # the unclipped gradient (params unchanged)
        g = {k: torch.tensor(v) for k, v in model.grads.items()}
        norm = torch.linalg.vector_norm(torch.cat([t.ravel() for t in g.values()])).item()
        clip = 0.3 * norm  # clipping active
        model.train_step(batch, lr, grad_clip=clip)
        assert model.grad_norm == pytest.approx(norm, rel=1e-13)
        for name, p in params.items():
            p.grad = g[name] * min(1.0, clip / norm)
            assert _rel(model.grads[name], p.grad.numpy()) <= 1e-13, name  # grads holds what Adam used
        opt.step()
        for name, p in params.items():
            assert _rel(model.params[name], p.numpy()) <= 1e-12, name


def _drop_hook(model, seed: int, p: float):
    """TorchGPT's dropout hook: x (B, n, C) of the padded batch times each sequence's documented mask (padding
    positions get one too; causal attention and zero loss weight keep them from mattering)."""
    C = model.config.n_embd

    def drop(x, site):
        B, n = x.shape[0], x.shape[1]
        return x * torch.tensor(np.stack([dropout_mask(seed, model.step, site, b, n, C, p) for b in range(B)]))
    return drop


@pytest.mark.parametrize("threads", THREADS)
def test_dropout_gradients_equal_autograd(threads, backend):
    """The core's masks are the documented hash (recomputed here in numpy), and the gradient through them equals
    autograd's, on every dropout site."""
    model, tok, docs = make_setup(71, 9, 3, 2, 5, n_docs=6, backend=backend)
    model.threads = threads
    model.step = 3
    batch = tok.batch(docs)
    p, seed = 0.3, 1234
    loss = model.forward_backward(batch, dropout=p, dropout_seed=seed)
    assert loss != pytest.approx(model.loss(batch), rel=1e-6)  # dropout did act
    assert_equals_autograd(model, batch, loss, drop=_drop_hook(model, seed, p))


@pytest.mark.parametrize("threads", THREADS)
def test_tied_gradients_equal_autograd(threads, backend):
    model, tok, docs = tied_setup(62, 9, 3, 2, 5, backend=backend)
    model.threads = threads
    batch = tok.batch(docs)
    assert_equals_autograd(model, batch, model.forward_backward(batch))
