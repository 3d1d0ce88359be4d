"""Shared layers: the Transformer block/encoder and the item input embedding.

Every sequential model builds on these; a model needing a variant extends them rather than copying.
"""
from __future__ import annotations

import math
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def attention_mask(valid: torch.Tensor, causal: bool) -> torch.Tensor:
    """Boolean ``[B, 1, L, L]`` mask (True = may attend) from ``valid`` ``[B, L]``.

    Keys that are padding are hidden; each position always sees itself so that rows of pure padding
    never produce NaNs (their outputs are ignored downstream).
    """
    L = valid.shape[1]
    eye = torch.eye(L, dtype=torch.bool, device=valid.device)
    allowed = valid[:, None, None, :] | eye
    if causal:
        allowed = allowed & torch.ones(L, L, dtype=torch.bool, device=valid.device).tril()
    return allowed


class TransformerBlock(nn.Module):
    """Pre-LayerNorm multi-head self-attention + position-wise feed-forward, with residuals."""

    def __init__(self, hidden: int, n_heads: int, dropout: float, ffn_hidden: int | None = None,
                 activation: str = "gelu") -> None:
        super().__init__()
        if hidden % n_heads:
            raise ValueError(f"hidden ({hidden}) must be divisible by n_heads ({n_heads})")
        self.n_heads = n_heads
        self.ln1 = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln2 = nn.LayerNorm(hidden)
        ffn_hidden = ffn_hidden or hidden
        self.ffn = nn.Sequential(nn.Linear(hidden, ffn_hidden), nn.GELU() if activation == "gelu" else nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(ffn_hidden, hidden))
        self.dropout = nn.Dropout(dropout)
        self.attn_dropout = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.n_heads, D // self.n_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           dropout_p=self.attn_dropout if self.training else 0.0)
        x = x + self.dropout(self.out(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.dropout(self.ffn(self.ln2(x)))


class TransformerEncoder(nn.Module):
    """Learned positions + a stack of :class:`TransformerBlock` + final LayerNorm.

    Positions are counted from the *right* (the most recent item always has the same position
    embedding), which suits left-padded histories.
    """

    def __init__(self, hidden: int, n_layers: int, n_heads: int, dropout: float, max_len: int,
                 causal: bool, ffn_hidden: int | None = None, activation: str = "gelu") -> None:
        super().__init__()
        self.pos = nn.Embedding(max_len, hidden)
        nn.init.normal_(self.pos.weight, std=hidden ** -0.5)  # same scale as item embeddings
        self.blocks = nn.ModuleList(TransformerBlock(hidden, n_heads, dropout, ffn_hidden, activation)
                                    for _ in range(n_layers))
        self.ln = nn.LayerNorm(hidden)
        self.dropout = nn.Dropout(dropout)
        self.causal = causal
        self.max_len = max_len

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        L = x.shape[1]
        if L > self.max_len:
            raise ValueError(f"sequence length {L} exceeds max_len {self.max_len}")
        pos = torch.arange(L - 1, -1, -1, device=x.device)
        x = self.dropout(x + self.pos(pos)[None]) * valid[..., None]
        mask = attention_mask(valid, self.causal)
        for blk in self.blocks:
            x = blk(x, mask) * valid[..., None]
        return self.ln(x)


class ItemEmbedding(nn.Module):
    """Item input representation: trainable IDs, frozen content vectors through a projection, or both.

    ``extra_tokens`` reserves indices after N (e.g. BERT4Rec's [MASK] = N+1).
    """

    def __init__(self, num_embeddings: int, hidden: int, mode: str = "id", extra_tokens: int = 0,
                 projection: str = "linear", features: np.ndarray | None = None) -> None:
        super().__init__()
        if mode not in ("id", "content", "id+content"):
            raise ValueError(f"item_input must be id, content or id+content, got {mode!r}")
        if projection not in ("linear", "identity"):
            raise ValueError(f"content_projection must be linear or identity, got {projection!r}")
        self.mode = mode
        self.hidden = hidden
        self.num_embeddings = num_embeddings
        self.register_buffer("pad_marker", torch.zeros(1), persistent=False)  # tracks the device
        n = num_embeddings + extra_tokens
        self.id = nn.Embedding(n, hidden, padding_idx=0) if "id" in mode else None
        if self.id is not None:
            nn.init.normal_(self.id.weight, std=hidden ** -0.5)
            with torch.no_grad():
                self.id.weight[0].zero_()
        if "content" in mode:
            if features is None:
                raise ValueError("item_input uses content but no item features were given "
                                 "(set data.features to a feature store)")
            feats = torch.as_tensor(features, dtype=torch.float32)
            pad = torch.zeros(extra_tokens, feats.shape[1])
            self.register_buffer("content", torch.cat([feats, pad]), persistent=False)
            if projection == "identity" and feats.shape[1] != hidden:
                raise ValueError(f"identity content projection needs {hidden}-d features, got {feats.shape[1]}-d")
            # IDP_ID+t adds (PCA-reduced) text vectors as they are: a fixed identity projection
            self.proj = nn.Linear(feats.shape[1], hidden) if projection == "linear" else nn.Identity()
            if extra_tokens:
                self.extra = nn.Embedding(extra_tokens, hidden)
        else:
            self.proj = None

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        out = self.id(idx) if self.id is not None else 0.0
        if self.proj is not None:
            c = self.proj(self.content[idx])
            if hasattr(self, "extra"):
                is_extra = idx >= self.num_embeddings
                c = torch.where(is_extra[..., None], self.extra((idx - self.num_embeddings).clamp_min(0)), c)
            out = out + c
        return out * (idx > 0)[..., None]

    def all_items(self) -> torch.Tensor:
        """Representations of indices ``0..N`` (the scoring table; extra tokens excluded)."""
        return self(torch.arange(self.num_embeddings, device=self.pad_marker.device))


def left_padded_gru(gru: nn.GRU, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Run a batch-first ``gru`` over left-padded inputs ``x`` ``[B, L, d]`` (``valid`` ``[B, L]`` marks the
    real positions, which are the last ones of each row): rows are packed so padding never enters the
    recurrent state, and outputs come back at their left-padded positions (zeros at padding)."""
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    B, L = valid.shape
    lengths = valid.sum(1)
    # left-padded -> right-padded: row b starts at column L - len_b
    cols = (torch.arange(L, device=x.device)[None] + (L - lengths)[:, None]) % L
    right = x.gather(1, cols[..., None].expand(-1, -1, x.shape[-1]))
    packed = pack_padded_sequence(right, lengths.clamp_min(1).cpu(), batch_first=True, enforce_sorted=False)
    y, _ = gru(packed)
    y, _ = pad_packed_sequence(y, batch_first=True, total_length=L)
    inv = (torch.arange(L, device=x.device)[None] - (L - lengths)[:, None]) % L  # back to left-padded
    return y.gather(1, inv[..., None].expand(-1, -1, y.shape[-1])) * valid[..., None]


def scaled(x: torch.Tensor) -> torch.Tensor:
    """SASRec scales item embeddings by sqrt(d) before adding positions."""
    return x * math.sqrt(x.shape[-1])
