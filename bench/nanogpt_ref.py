"""A stand-in for nanoGPT on this machine: its GPT and its shakespeare_char CPU run, written from the architecture
and recipe nanoGPT documents (its model, its config/train_shakespeare_char.py and the CPU command of its README),
for the time-to-loss comparison (time_to_loss.py, recipe_curve.py).

The model: token and learned position embeddings, then per layer x += proj(attn(LN(x))) and x += proj(GELU(fc(LN(x))))
(causal attention through PyTorch's fused scaled_dot_product_attention, an MLP 4x as wide), a final LayerNorm and an
output layer tied to the token embedding. Every weight is drawn from N(0, 0.02²), the two projections onto the
residual stream from N(0, (0.02/sqrt(2·n_layer))²); biases (``bias``) start at 0. nanoGPT's train.py runs with
``bias = False`` (no bias in the linear layers and LayerNorms) unless a config sets it, and the shakespeare_char
config does not, so that is the default here; ``bias=True`` gives the GPT-2 form.

The run (NanoRecipe): AdamW, betas (0.9, 0.99), weight decay 0.1 on every tensor of two or more dimensions (the
embeddings and weight matrices; not the biases and LayerNorm gains); the learning rate rises over the first 100
iterations as lr·(it + 1)/(warmup + 1), then follows a cosine from 1e-3 down to 1e-4 at iteration 2000; gradients
clipped to global norm 1.0; batches of 12 windows of 64 characters at uniformly random offsets; float32 on the CPU
with 2 threads; every 250 iterations (and at iteration 0) the mean loss of 20 random batches of each split — the
evaluation nanoGPT's CPU command runs, timed as part of the run. The characters and the split are blasgpt's (the
tail 10 % of the characters validates, as ``blasgpt train --data-mode text``), so both sides see the same text.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

F = torch.nn.functional


@dataclasses.dataclass(frozen=True)
class NanoRecipe:
    """nanoGPT's shakespeare_char CPU run (the iteration counts can be shortened for a quick check)."""

    n_embd: int = 128
    n_layer: int = 4
    n_head: int = 4
    block_size: int = 64
    batch_size: int = 12
    bias: bool = False
    dropout: float = 0.0
    max_iters: int = 2000
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_iters: int = 100
    lr_decay_iters: int = 2000
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    eval_interval: int = 250
    eval_iters: int = 20
    seed: int = 1337
    threads: int = 2

    def lr_at(self, it: int) -> float:
        """nanoGPT's get_lr: linear warmup, cosine decay to min_lr at lr_decay_iters, min_lr after."""
        if it < self.warmup_iters:
            return self.lr * (it + 1) / (self.warmup_iters + 1)
        if it > self.lr_decay_iters:
            return self.min_lr
        ratio = (it - self.warmup_iters) / (self.lr_decay_iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (self.lr - self.min_lr)


class LayerNorm(torch.nn.Module):
    """LayerNorm with a gain and, optionally, a bias (eps 1e-5)."""

    def __init__(self, n: int, bias: bool):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.bias = torch.nn.Parameter(torch.zeros(n)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class Block(torch.nn.Module):
    def __init__(self, r: NanoRecipe):
        super().__init__()
        C = r.n_embd
        self.n_head, self.dropout = r.n_head, r.dropout
        self.ln_1, self.ln_2 = LayerNorm(C, r.bias), LayerNorm(C, r.bias)
        self.qkv = torch.nn.Linear(C, 3 * C, bias=r.bias)
        self.attn_proj = torch.nn.Linear(C, C, bias=r.bias)
        self.fc = torch.nn.Linear(C, 4 * C, bias=r.bias)
        self.mlp_proj = torch.nn.Linear(4 * C, C, bias=r.bias)
        self.drop = torch.nn.Dropout(r.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for t in self.qkv(self.ln_1(x)).split(C, dim=2))
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True)
        x = x + self.drop(self.attn_proj(a.transpose(1, 2).reshape(B, T, C)))
        return x + self.drop(self.mlp_proj(F.gelu(self.fc(self.ln_2(x)))))


class NanoGPT(torch.nn.Module):
    def __init__(self, vocab_size: int, r: NanoRecipe):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab_size, r.n_embd)
        self.wpe = torch.nn.Embedding(r.block_size, r.n_embd)
        self.drop = torch.nn.Dropout(r.dropout)
        self.blocks = torch.nn.ModuleList(Block(r) for _ in range(r.n_layer))
        self.ln_f = LayerNorm(r.n_embd, r.bias)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                torch.nn.init.zeros_(p)
            elif p.dim() >= 2:
                residual = name.endswith(("attn_proj.weight", "mlp_proj.weight"))
                torch.nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * r.n_layer) if residual else 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.shape[1]
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T)))
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.T  # the output layer is the token embedding

    def loss(self, x: torch.Tensor, y: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        logits = self(x)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), reduction=reduction)

    def optimizer(self, r: NanoRecipe) -> torch.optim.AdamW:
        decay = [p for p in self.parameters() if p.dim() >= 2]
        rest = [p for p in self.parameters() if p.dim() < 2]
        return torch.optim.AdamW([{"params": decay, "weight_decay": r.weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=r.lr, betas=r.betas)


def windows(data: torch.Tensor, starts: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = starts[:, None] + torch.arange(T + 1)
    w = data[idx]
    return w[:, :-1], w[:, 1:]


@torch.no_grad()
def text_loss(model: NanoGPT, tokens: torch.Tensor, T: int, chunk: int = 256) -> float:
    """Mean cross-entropy over every target of ``tokens`` in consecutive windows of T (as blasgpt's evaluate_text:
    window k reads tokens kT … kT+T−1 and predicts kT+1 … kT+T; the last is partial): nats per character."""
    was = model.training
    model.eval()
    n = tokens.numel() - 1
    full = n // T
    total = 0.0
    starts = torch.arange(full) * T
    for i in range(0, full, chunk):
        x, y = windows(tokens, starts[i:i + chunk], T)
        total += float(model.loss(x, y, reduction="sum"))
    if n > full * T:
        x, y = tokens[None, full * T:n], tokens[None, full * T + 1:n + 1]
        total += float(model.loss(x, y, reduction="sum"))
    model.train(was)
    return total / n


@dataclasses.dataclass
class Point:
    """The run at one of its evaluations: iteration, wall seconds of training alone and with its own evaluations,
    CPU seconds of the process (training and own evaluations; training alone), its own estimates (20 random
    batches) and, if asked, the loss over the whole validation split (not timed)."""

    iter: int
    train_seconds: float
    wall_seconds: float
    cpu_seconds: float
    train_cpu_seconds: float
    train_estimate: float
    val_estimate: float
    val_loss: Optional[float] = None


def train(train_tokens: np.ndarray, val_tokens: np.ndarray, vocab_size: int, r: NanoRecipe = NanoRecipe(),
          full_val: bool = True, stop: Optional[Callable[[Point], bool]] = None) -> tuple[NanoGPT, list[Point]]:
    """nanoGPT's training loop on these token streams; returns the model and one Point per evaluation (iteration 0,
    every eval_interval, and max_iters). ``full_val``: also the untimed loss over all of ``val_tokens``; ``stop``:
    end the run after the first point it returns True for."""
    torch.set_num_threads(r.threads)
    if torch.get_num_threads() != r.threads:
        raise AssertionError(f"torch runs {torch.get_num_threads()} threads, not {r.threads}")
    torch.manual_seed(r.seed)
    gen = torch.Generator().manual_seed(r.seed)
    data = {"train": torch.from_numpy(np.asarray(train_tokens, dtype=np.int64)),
            "val": torch.from_numpy(np.asarray(val_tokens, dtype=np.int64))}
    model = NanoGPT(vocab_size, r)
    opt = model.optimizer(r)
    T = r.block_size

    def batch(split: str) -> tuple[torch.Tensor, torch.Tensor]:
        return windows(data[split], torch.randint(data[split].numel() - T, (r.batch_size,), generator=gen), T)

    @torch.no_grad()
    def estimate() -> tuple[float, float]:
        model.eval()
        out = [float(torch.stack([model.loss(*batch(s)) for _ in range(r.eval_iters)]).mean())
               for s in ("train", "val")]
        model.train()
        return out[0], out[1]

    points: list[Point] = []
    wall = train_wall = cpu = train_cpu = 0.0
    for it in range(r.max_iters + 1):
        if it % r.eval_interval == 0 or it == r.max_iters:
            t0, c0 = time.perf_counter(), time.process_time()
            tr, va = estimate()
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
            p = Point(it, train_wall, wall, cpu, train_cpu, tr, va)
            if full_val:
                p.val_loss = text_loss(model, data["val"], T)
            points.append(p)
            if it == r.max_iters or (stop is not None and stop(p)):
                break
        t0, c0 = time.perf_counter(), time.process_time()
        for group in opt.param_groups:
            group["lr"] = r.lr_at(it)
        loss = model.loss(*batch("train"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), r.grad_clip)
        opt.step()
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        train_wall += dt
        wall += dt
        cpu += dc
        train_cpu += dc
        if not math.isfinite(loss.item()):
            raise AssertionError(f"nanoGPT reference: the loss became {loss.item()} at iteration {it}")
    return model, points


def as_dict(p: Point) -> dict[str, Any]:
    return dataclasses.asdict(p)


__all__ = ["NanoGPT", "NanoRecipe", "Point", "as_dict", "text_loss", "train"]
