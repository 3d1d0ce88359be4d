"""The offline cross-modal view: text and image vectors aligned on the catalogue itself.

UniM2Rec's cross-modal view comes from a vision-language model (VisualBERT); no VisualBERT or CLIP
weights ship in any package here.  When a run asks for the ``cross`` view and the feature store has none
(no local open_clip checkpoint was given to ``jobs/extract_features.py --cross-model``), this module
derives it: two linear heads map the frozen text and image vectors into one joint space, trained with
the symmetric CLIP contrastive loss on the catalogue's items that have both modalities (contents only,
no interactions).  An item's cross vector is the normalised mean of its aligned text and image vectors,
or the one it has: present whenever either modality exists, as the paper's cross-modal view is.
Deterministic for a seed; the view's ``source`` names it as such.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from raypipe.data.catalogue import FeatureView

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignConfig:
    dim: int = 256
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    temperature: float = 0.07
    seed: int = 0


def align_cross_modal(text: FeatureView, image: FeatureView, cfg: AlignConfig = AlignConfig()) -> tuple[FeatureView, dict]:
    """The derived cross view ``[N+1, dim]`` and a summary (pairs, final loss, in-batch retrieval accuracy
    of text→image on the training pairs before and after)."""
    if len(text.vectors) != len(image.vectors):
        raise ValueError("text and image views must be aligned to the same item index")
    both = np.flatnonzero(text.present & image.present)
    if len(both) < 2:
        raise ValueError(f"aligning text and image needs items with both; found {len(both)}")
    gen = torch.Generator().manual_seed(cfg.seed)
    t_all = torch.as_tensor(text.vectors, dtype=torch.float32)
    i_all = torch.as_tensor(image.vectors, dtype=torch.float32)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        head_t = torch.nn.Linear(text.dim, cfg.dim)
        head_i = torch.nn.Linear(image.dim, cfg.dim)
    params = list(head_t.parameters()) + list(head_i.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    pairs = torch.as_tensor(both)

    def accuracy() -> float:
        with torch.no_grad():
            sample = pairs[torch.randperm(len(pairs), generator=gen)[: min(len(pairs), 1024)]]
            zt = F.normalize(head_t(t_all[sample]), dim=-1)
            zi = F.normalize(head_i(i_all[sample]), dim=-1)
            return float(((zt @ zi.T).argmax(1) == torch.arange(len(sample))).float().mean())

    before = accuracy()
    loss_value = float("nan")
    for _ in range(cfg.epochs):
        order = pairs[torch.randperm(len(pairs), generator=gen)]
        for lo in range(0, len(order), cfg.batch_size):
            idx = order[lo:lo + cfg.batch_size]
            if len(idx) < 2:
                continue
            zt = F.normalize(head_t(t_all[idx]), dim=-1)
            zi = F.normalize(head_i(i_all[idx]), dim=-1)
            logits = zt @ zi.T / cfg.temperature
            labels = torch.arange(len(idx))
            loss = (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
    after = accuracy()
    with torch.no_grad():
        zt = F.normalize(head_t(t_all), dim=-1) * torch.as_tensor(text.present)[:, None]
        zi = F.normalize(head_i(i_all), dim=-1) * torch.as_tensor(image.present)[:, None]
        cross = F.normalize(zt + zi, dim=-1).numpy().astype(np.float32)
    present = text.present | image.present
    cross[~present] = 0.0
    summary = {"encoder": "aligned-on-catalogue (linear text and image heads, symmetric InfoNCE)",
               "replaces": "VisualBERT / CLIP (no weights offline)", "pairs": int(len(both)),
               "dim": cfg.dim, "epochs": cfg.epochs, "final_loss": loss_value,
               "text_to_image_top1_before": before, "text_to_image_top1_after": after,
               "text_source": text.source, "image_source": image.source}
    log.info("cross view aligned on %d text-image pairs: in-batch text->image top-1 %.3f -> %.3f",
             len(both), before, after)
    return FeatureView(cross, present, f"aligned:text+image (seed {cfg.seed})"), summary
