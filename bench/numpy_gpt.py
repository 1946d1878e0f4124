"""The NumPy baseline: blasgpt's model and hand-derived backward pass (docs/MATH.md) written with NumPy arrays, so
the benchmark can show what the same algorithm costs without the C++ core. Documents are packed as blasgpt packs
them (rows of all documents stacked for every linear layer, a loop over documents for attention); Adam with
blasgpt's constants (bench/recipe.py)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import blasgpt
from recipe import ADAM


class NumpyGPT:
    """Explicit-backprop GPT in NumPy: packed rows for every linear layer, a loop over documents for attention."""

    def __init__(self, params: dict[str, np.ndarray], cfg: blasgpt.Config, dtype: Any):
        self.cfg = cfg
        self.p = {k: np.array(v, dtype=dtype) for k, v in params.items()}
        self.m = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.v = {k: np.zeros_like(v) for k, v in self.p.items()}
        self.t = 0

    @staticmethod
    def _rms(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        r = 1.0 / np.sqrt((x * x).mean(axis=1, keepdims=True) + 1e-5)
        return x * r, r

    @staticmethod
    def _rms_back(dy: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        return r * dy - (r**3 / x.shape[1]) * x * (dy * x).sum(axis=1, keepdims=True)

    def forward_backward(self, tokens: np.ndarray, offsets: np.ndarray) -> tuple[float, dict[str, np.ndarray]]:
        cfg, p = self.cfg, self.p
        C, H, T = cfg.n_embd, cfg.n_head, cfg.block_size
        hd = C // H
        starts, lens = offsets[:-1], np.diff(offsets)
        ns = np.minimum(T, lens - 1)
        B = len(ns)
        rows = np.concatenate([np.arange(n) for n in ns])
        first = np.repeat(starts, ns) + rows
        tok_in, tok_out = tokens[first], tokens[first + 1]
        w = np.repeat(1.0 / (B * ns), ns).astype(p["wte"].dtype)[:, None]
        bounds = np.concatenate([[0], np.cumsum(ns)])

        e = p["wte"][tok_in] + p["wpe"][rows]
        x, r0 = self._rms(e)
        caches = []
        for layer in range(cfg.n_layer):
            pre = f"layer{layer}."
            a, ra = self._rms(x)
            wqkv = np.concatenate([p[pre + "attn_wq"], p[pre + "attn_wk"], p[pre + "attn_wv"]])
            qkv = a @ wqkv.T
            o = np.empty_like(x)
            probs = []
            for d in range(B):
                s0, s1 = bounds[d], bounds[d + 1]
                n = s1 - s0
                q, k, v = (qkv[s0:s1, i * C:(i + 1) * C].reshape(n, H, hd).transpose(1, 0, 2) for i in range(3))
                s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
                s = np.where(np.tri(n, dtype=bool), s, -np.inf)
                s = np.exp(s - s.max(axis=2, keepdims=True))
                pr = s / s.sum(axis=2, keepdims=True)
                probs.append(pr)
                o[s0:s1] = (pr @ v).transpose(1, 0, 2).reshape(n, C)
            xmid = x + o @ p[pre + "attn_wo"].T
            b, rb = self._rms(xmid)
            u = b @ p[pre + "mlp_fc1"].T
            h = np.maximum(u, 0)
            x_next = xmid + h @ p[pre + "mlp_fc2"].T
            caches.append((x, a, ra, wqkv, qkv, probs, o, xmid, b, rb, u, h))
            x = x_next
        logits = x @ p["lm_head"].T
        z = logits - logits.max(axis=1, keepdims=True)
        ez = np.exp(z)
        prob = ez / ez.sum(axis=1, keepdims=True)
        picked = prob[np.arange(len(tok_out)), tok_out]
        loss = float(-(w[:, 0] * np.log(picked)).sum())

        g: dict[str, np.ndarray] = {}
        dlogits = prob * w
        dlogits[np.arange(len(tok_out)), tok_out] -= w[:, 0]
        g["lm_head"] = dlogits.T @ x
        dx = dlogits @ p["lm_head"]
        for layer in reversed(range(cfg.n_layer)):
            pre = f"layer{layer}."
            x_in, a, ra, wqkv, qkv, probs, o, xmid, b, rb, u, h = caches[layer]
            g[pre + "mlp_fc2"] = dx.T @ h
            du = (dx @ p[pre + "mlp_fc2"]) * (u > 0)
            g[pre + "mlp_fc1"] = du.T @ b
            dx = dx + self._rms_back(du @ p[pre + "mlp_fc1"], xmid, rb)
            g[pre + "attn_wo"] = dx.T @ o
            do = dx @ p[pre + "attn_wo"]
            dqkv = np.empty_like(qkv)
            for d in range(B):
                s0, s1 = bounds[d], bounds[d + 1]
                n = s1 - s0
                q, k, v = (qkv[s0:s1, i * C:(i + 1) * C].reshape(n, H, hd).transpose(1, 0, 2) for i in range(3))
                pr = probs[d]
                dO = do[s0:s1].reshape(n, H, hd).transpose(1, 0, 2)
                dv = pr.transpose(0, 2, 1) @ dO
                dp = dO @ v.transpose(0, 2, 1)
                ds = pr * (dp - (dp * pr).sum(axis=2, keepdims=True)) / math.sqrt(hd)
                dq, dk = ds @ k, ds.transpose(0, 2, 1) @ q
                for i, t in enumerate((dq, dk, dv)):
                    dqkv[s0:s1, i * C:(i + 1) * C] = t.transpose(1, 0, 2).reshape(n, C)
            gqkv = dqkv.T @ a
            g[pre + "attn_wq"], g[pre + "attn_wk"], g[pre + "attn_wv"] = gqkv[:C], gqkv[C:2 * C], gqkv[2 * C:]
            dx = dx + self._rms_back(dqkv @ wqkv, x_in, ra)
        de = self._rms_back(dx, e, r0)
        g["wte"] = np.zeros_like(p["wte"])
        np.add.at(g["wte"], tok_in, de)
        g["wpe"] = np.zeros_like(p["wpe"])
        np.add.at(g["wpe"], rows, de)
        return loss, g

    def train_step(self, tokens: np.ndarray, offsets: np.ndarray, lr: float) -> float:
        loss, g = self.forward_backward(tokens, offsets)
        self.t += 1
        b1, b2, eps = ADAM["beta1"], ADAM["beta2"], ADAM["eps"]
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for k, grad in g.items():
            m, v = self.m[k], self.v[k]
            m *= b1
            m += (1 - b1) * grad
            v *= b2
            v += (1 - b2) * grad * grad
            self.p[k] -= lr * (m / c1) / (np.sqrt(v / c2) + eps)
        return loss


__all__ = ["NumpyGPT"]
