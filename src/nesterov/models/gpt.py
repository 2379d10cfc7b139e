"""A nanoGPT-style decoder for byte-level text: token + learned position embeddings, ``depth`` pre-LayerNorm
blocks (causal self-attention through ``scaled_dot_product_attention``, a 4x GELU MLP), a final LayerNorm and
an output head tied to the token embedding.  Returns logits ``(B, T, vocab)``.

Defaults (``width 128, depth 4, heads 4, context 128``: 0.84 M parameters) train in minutes on 2 CPU cores.
Initialisation as nanoGPT: N(0, 0.02), residual projections scaled by 1/sqrt(2 depth).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GPT", "GPT_DEFAULTS"]

GPT_DEFAULTS = {"width": 128, "depth": 4, "heads": 4, "context": 128}


class _Block(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.ln2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, 4 * width)
        self.out = nn.Linear(4 * width, width)

    def forward(self, x):
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(nn.Module):
    def __init__(self, input_shape=None, num_classes: int = 256, width: int | None = None, depth: int | None = None,
                 heads: int | None = None, context: int | None = None):
        super().__init__()
        width = width or GPT_DEFAULTS["width"]
        depth = depth or GPT_DEFAULTS["depth"]
        heads = heads or GPT_DEFAULTS["heads"]
        context = context or GPT_DEFAULTS["context"]
        if width % heads:
            raise ValueError(f"gpt: width ({width}) must be a multiple of heads ({heads})")
        self.context, self.vocab = context, num_classes
        self.tok = nn.Embedding(num_classes, width)
        self.pos = nn.Embedding(context, width)
        self.blocks = nn.ModuleList(_Block(width, heads) for _ in range(depth))
        self.ln_f = nn.LayerNorm(width)
        self.head = nn.Linear(width, num_classes, bias=False)
        self.head.weight = self.tok.weight  # tied
        self.apply(self._init)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "out.weight")):
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2 * depth))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.context:
            raise ValueError(f"gpt: sequence of {t} tokens is longer than the context ({self.context})")
        x = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))
