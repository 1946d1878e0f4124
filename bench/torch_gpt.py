"""blasgpt's GPT written in PyTorch autograd: the reference the tests check gradients against and the model the
benchmark's PyTorch rows train.

The same function as blasgpt (docs/MATH.md): x = rmsnorm(wte[tok] + wpe[pos]); per layer x += attn(rmsnorm(x)) Woᵀ
(causal, heads of n_embd / n_head, scores scaled by 1/sqrt(head width)) and x += relu(rmsnorm(x) W1ᵀ) W2ᵀ; logits
= x lm_headᵀ (x wteᵀ with Config.tie_embeddings: no lm_head parameter). rmsnorm has no gain (eps 1e-5); no
biases. Attention is PyTorch's fused ``scaled_dot_product_attention(is_causal=True)``. ``drop(x, site)``, if given,
is applied where dropout acts (docs/TRAINING_OPTIONS.md): site 0 to the embedding's output, 1 + 2l to layer l's
attention output projection and 2 + 2l to its MLP's output, each before the residual add.

A batch is any blasgpt ``Batch`` (documents, a gather of documents, or windows of a token stream). Each sequence
trains on its first min(block_size, len - 1) positions, the loss is the mean over sequences of each one's mean
cross-entropy, and sequences shorter than the longest are padded at the end: causal attention keeps every real
position from seeing the padding, and padded targets weigh 0. Parameters are blasgpt's dict (names and shapes),
copied; Adam is PyTorch's with blasgpt's constants (bench/recipe.py).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
import torch

import blasgpt
from recipe import ADAM

F = torch.nn.functional


class Inputs:
    """A batch as tensors: ``inp`` and ``tgt`` (int64, (B, n)), and ``weight`` ((B, n), each target's share of the
    loss) or None when every sequence is a full window (the loss is then the plain mean)."""

    def __init__(self, inp: torch.Tensor, tgt: torch.Tensor, weight: Optional[torch.Tensor]):
        self.inp, self.tgt, self.weight = inp, tgt, weight


class TorchGPT:

    def __init__(self, params: dict[str, np.ndarray], cfg: blasgpt.Config, dtype: str = "float64",
                 drop: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None):
        self.cfg = cfg
        self.drop = drop if drop is not None else (lambda x, site: x)
        self.dtype = getattr(torch, dtype)
        self.p = {k: torch.tensor(np.asarray(v), dtype=self.dtype, requires_grad=True) for k, v in params.items()}
        self.opt = torch.optim.Adam(list(self.p.values()), lr=0.0, betas=(ADAM["beta1"], ADAM["beta2"]),
                                    eps=ADAM["eps"])

    # -- batches -------------------------------------------------------------------------------------------------

    def windows(self, tokens: np.ndarray, starts: np.ndarray) -> Inputs:
        """Full windows of a token stream (each start must leave block_size + 1 tokens): the fast path."""
        idx = np.asarray(starts, dtype=np.int64)[:, None] + np.arange(self.cfg.block_size + 1)
        w = torch.from_numpy(np.asarray(tokens)[idx].astype(np.int64))
        return Inputs(w[:, :-1], w[:, 1:], None)

    def inputs(self, batch: blasgpt.Batch) -> Inputs:
        """Any blasgpt batch, its sequences padded to the longest."""
        if batch.windows:
            assert batch.doc_ids is not None
            seqs = [batch.tokens[s:s + self.cfg.block_size + 1] for s in batch.doc_ids]
        else:
            assert batch.offsets is not None
            ids = range(batch.offsets.size - 1) if batch.doc_ids is None else batch.doc_ids
            seqs = [batch.tokens[batch.offsets[d]:batch.offsets[d + 1]] for d in ids]
        ns = [min(self.cfg.block_size, len(s) - 1) for s in seqs]
        inp = np.zeros((len(seqs), max(ns)), dtype=np.int64)
        tgt = np.zeros_like(inp)
        wgt = np.zeros(inp.shape)
        for i, (s, n) in enumerate(zip(seqs, ns)):
            inp[i, :n], tgt[i, :n], wgt[i, :n] = s[:n], s[1:n + 1], 1.0 / (len(seqs) * n)
        return Inputs(torch.from_numpy(inp), torch.from_numpy(tgt), torch.tensor(wgt, dtype=self.dtype))

    # -- the model -----------------------------------------------------------------------------------------------

    def logits(self, inp: torch.Tensor) -> torch.Tensor:
        cfg, p = self.cfg, self.p
        B, n = inp.shape
        H, hd = cfg.n_head, cfg.n_embd // cfg.n_head

        def rms(x: torch.Tensor) -> torch.Tensor:
            return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5)

        x = self.drop(rms(p["wte"][inp] + p["wpe"][:n]), 0)
        for layer in range(cfg.n_layer):
            w = {k: p[f"layer{layer}.{k}"] for k in ("attn_wq", "attn_wk", "attn_wv", "attn_wo", "mlp_fc1", "mlp_fc2")}
            a = rms(x)
            q, k, v = ((a @ w[name].T).view(B, n, H, hd).transpose(1, 2) for name in ("attn_wq", "attn_wk", "attn_wv"))
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, n, cfg.n_embd)
            x = x + self.drop(o @ w["attn_wo"].T, 1 + 2 * layer)
            x = x + self.drop(torch.relu(rms(x) @ w["mlp_fc1"].T) @ w["mlp_fc2"].T, 2 + 2 * layer)
        return x @ p.get("lm_head", p["wte"]).T

    def loss(self, b: Inputs) -> torch.Tensor:
        logits = self.logits(b.inp)
        flat = logits.reshape(-1, logits.shape[-1])
        if b.weight is None:
            return F.cross_entropy(flat, b.tgt.reshape(-1))
        return (F.cross_entropy(flat, b.tgt.reshape(-1), reduction="none") * b.weight.reshape(-1)).sum()

    def forward_backward(self, batch: Any) -> tuple[float, dict[str, np.ndarray]]:
        """Loss and gradients (numpy, blasgpt's names) of a blasgpt Batch or prepared Inputs."""
        b = batch if isinstance(batch, Inputs) else self.inputs(batch)
        for t in self.p.values():
            t.grad = None
        loss = self.loss(b)
        loss.backward()
        return float(loss.detach()), {k: t.grad.detach().numpy().copy() for k, t in self.p.items()}

    def train_step(self, b: Inputs, lr: float) -> float:
        for group in self.opt.param_groups:
            group["lr"] = lr
        self.opt.zero_grad(set_to_none=True)
        loss = self.loss(b)
        loss.backward()
        self.opt.step()
        return float(loss.detach())

    @torch.no_grad()
    def eval_loss(self, b: Inputs) -> float:
        return float(self.loss(b))


__all__ = ["Inputs", "TorchGPT"]
