"""Gradients against PyTorch autograd (float64). Skipped, visibly, when torch is not installed."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import make_setup

torch = pytest.importorskip("torch", reason="PyTorch not installed: pip install .[torch] to run the autograd check")

CONFIGS = [(21, 16, 4, 1, 16), (22, 9, 3, 2, 5), (23, 8, 1, 3, 7)]


def torch_loss(params: dict, tokens: np.ndarray, offsets: np.ndarray, cfg) -> "torch.Tensor":
    """The model written with torch ops, document by document, as MATH.md states it."""
    C, H = cfg.n_embd, cfg.n_head
    hd = C // H

    def rmsnorm(x):
        return x * (x.pow(2).mean(-1, keepdim=True) + 1e-5).rsqrt()

    doc_losses = []
    for d in range(offsets.size - 1):
        toks = torch.as_tensor(tokens[offsets[d]:offsets[d + 1]], dtype=torch.long)
        n = min(cfg.block_size, toks.numel() - 1)
        x = rmsnorm(params["wte"][toks[:n]] + params["wpe"][:n])
        mask = torch.ones(n, n, dtype=torch.bool).tril()
        for layer in range(cfg.n_layer):
            p = lambda k, layer=layer: params[f"layer{layer}.{k}"]  # noqa: E731
            a = rmsnorm(x)
            q, k, v = (a @ p(w).T for w in ("attn_wq", "attn_wk", "attn_wv"))
            heads = []
            for h in range(H):
                sl = slice(h * hd, (h + 1) * hd)
                s = (q[:, sl] @ k[:, sl].T) / hd**0.5
                heads.append(torch.softmax(s.masked_fill(~mask, float("-inf")), -1) @ v[:, sl])
            x = x + torch.cat(heads, 1) @ p("attn_wo").T
            x = x + torch.relu(rmsnorm(x) @ p("mlp_fc1").T) @ p("mlp_fc2").T
        logits = x @ params["lm_head"].T
        doc_losses.append(torch.nn.functional.cross_entropy(logits, toks[1:n + 1]))
    return torch.stack(doc_losses).mean()


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: "C{1}H{2}L{3}T{4}".format(*c))
def test_gradients_equal_autograd(cfg, backend):
    seed, C, H, L, T = cfg
    model, tok, docs = make_setup(seed, C, H, L, T, n_docs=6, backend=backend)
    batch = tok.batch(docs)
    loss = model.forward_backward(batch)
    params = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in model.params.items()}
    ref = torch_loss(params, batch.tokens, batch.offsets, model.config)
    ref.backward()
    assert loss == pytest.approx(ref.item(), rel=1e-12)
    for name, g in model.grads.items():
        want = params[name].grad.numpy()
        assert np.abs(g - want).max() <= 1e-10 * max(1.0, np.abs(want).max()), name
