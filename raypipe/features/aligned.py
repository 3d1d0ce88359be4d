"""The offline cross-modal view: text and image vectors aligned on the catalogue itself.

UniM2Rec's cross-modal view comes from a vision-language model (VisualBERT); no VisualBERT or CLIP
weights ship in any package here.  When a run asks for the ``cross`` view and the feature store has none
(no local open_clip checkpoint was given to ``jobs/extract_features.py --cross-model``), this module
derives it: two linear heads map the frozen text and image vectors into one joint space, trained with
the symmetric CLIP contrastive loss on the catalogue's items that have both modalities (contents only,
no interactions).  An item's cross vector is the normalised mean of its aligned text and image vectors,
or the one it has: present whenever either modality exists, as the paper's cross-modal view is.
Deterministic for a seed; the view's ``source`` names it as such.

The heads are a :class:`CrossAligner`, saved in the run directory (``cross_aligner.pt``) of the run
that fitted them.  A fine-tuning run, an evaluation and the Serve app reuse the saved heads, so the cross
vectors a projector was trained on are the ones it is served, and a brand-new item's cross vector (live
onboarding) comes from the same heads.
"""
from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from raypipe.data.catalogue import FeatureView

log = logging.getLogger(__name__)

#: where a run keeps the heads it derived its cross view with
ALIGNER_FILE = "cross_aligner.pt"


@dataclass(frozen=True)
class AlignConfig:
    dim: int = 256
    epochs: int = 30
    batch_size: int = 512
    lr: float = 1e-3
    temperature: float = 0.07
    seed: int = 0


class CrossAligner(nn.Module):
    """Linear text and image heads into one joint space; ``cross = normalise(ẑ_t·[has text] + ẑ_i·[has image])``."""

    def __init__(self, text_dim: int, image_dim: int, cfg: AlignConfig = AlignConfig(),
                 summary: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.head_t = nn.Linear(text_dim, cfg.dim)
        self.head_i = nn.Linear(image_dim, cfg.dim)
        self.summary: dict[str, Any] = dict(summary or {})

    @torch.no_grad()
    def cross(self, text: np.ndarray, text_present: np.ndarray, image: np.ndarray, image_present: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
        """Cross vectors ``[n, dim]`` (zero rows where neither modality is present) and their presence."""
        tp = torch.as_tensor(np.asarray(text_present, bool))
        ip = torch.as_tensor(np.asarray(image_present, bool))
        zt = F.normalize(self.head_t(torch.as_tensor(np.asarray(text, np.float32))), dim=-1) * tp[:, None]
        zi = F.normalize(self.head_i(torch.as_tensor(np.asarray(image, np.float32))), dim=-1) * ip[:, None]
        out = F.normalize(zt + zi, dim=-1).numpy().astype(np.float32)
        present = (tp | ip).numpy()
        out[~present] = 0.0
        return out, present

    def view(self, text: FeatureView, image: FeatureView) -> FeatureView:
        """The derived ``cross`` view of a catalogue's text and image views."""
        if len(text.vectors) != len(image.vectors):
            raise ValueError("text and image views must be aligned to the same item index")
        self._check(text.dim, image.dim)
        cross, present = self.cross(text.vectors, text.present, image.vectors, image.present)
        return FeatureView(cross, present, f"aligned:text+image (seed {self.cfg.seed})")

    def _check(self, text_dim: int, image_dim: int) -> None:
        want = (self.head_t.in_features, self.head_i.in_features)
        if (text_dim, image_dim) != want:
            raise ValueError(f"cross aligner expects text/image vectors of dims {want}, got {(text_dim, image_dim)}")

    def save(self, path: str | Path) -> Path:
        from raypipe.io import save_torch_atomic

        save_torch_atomic(Path(path), {"config": asdict(self.cfg), "text_dim": self.head_t.in_features,
                                       "image_dim": self.head_i.in_features, "summary": self.summary,
                                       "state": self.state_dict()})
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> "CrossAligner":
        raw = torch.load(Path(path), map_location="cpu")
        out = cls(int(raw["text_dim"]), int(raw["image_dim"]), AlignConfig(**raw["config"]), raw.get("summary"))
        out.load_state_dict(raw["state"])
        return out.eval()


def fit_cross_aligner(text: FeatureView, image: FeatureView, cfg: AlignConfig = AlignConfig()) -> CrossAligner:
    """Train the heads on the items with both modalities; the summary records the pairs, the final loss and
    the in-batch text→image top-1 accuracy on the training pairs before and after."""
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
        aligner = CrossAligner(text.dim, image.dim, cfg)
    head_t, head_i = aligner.head_t, aligner.head_i
    opt = torch.optim.Adam(aligner.parameters(), lr=cfg.lr)
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
    aligner.summary = {"encoder": "aligned-on-catalogue (linear text and image heads, symmetric InfoNCE)",
                       "replaces": "VisualBERT / CLIP (no weights offline)", "pairs": int(len(both)),
                       "dim": cfg.dim, "epochs": cfg.epochs, "final_loss": loss_value,
                       "text_to_image_top1_before": before, "text_to_image_top1_after": after,
                       "text_source": text.source, "image_source": image.source}
    log.info("cross view aligned on %d text-image pairs: in-batch text->image top-1 %.3f -> %.3f",
             len(both), before, after)
    return aligner.eval()


def align_cross_modal(text: FeatureView, image: FeatureView, cfg: AlignConfig = AlignConfig()) -> tuple[FeatureView, dict]:
    """The derived cross view ``[N+1, dim]`` and the fit's summary (see :func:`fit_cross_aligner`)."""
    aligner = fit_cross_aligner(text, image, cfg)
    return aligner.view(text, image), aligner.summary


def run_aligner(text: FeatureView, image: FeatureView, seed: int, look_in: Sequence[str | Path | None] = (),
                save_to: str | Path | None = None) -> CrossAligner:
    """The heads of the first of ``look_in`` (run directories) that saved some, else new ones fitted on this
    catalogue (seeded) and saved into ``save_to`` when given."""
    for d in look_in:
        if d is not None and (Path(d) / ALIGNER_FILE).is_file():
            aligner = CrossAligner.load(Path(d) / ALIGNER_FILE)
            log.info("cross view from the aligner saved in %s", d)
            if save_to is not None and Path(save_to).resolve() != Path(d).resolve():
                Path(save_to).mkdir(parents=True, exist_ok=True)
                aligner.save(Path(save_to) / ALIGNER_FILE)  # the run keeps the heads it was trained with
            return aligner
    aligner = fit_cross_aligner(text, image, AlignConfig(seed=seed))
    if save_to is not None:
        Path(save_to).mkdir(parents=True, exist_ok=True)
        aligner.save(Path(save_to) / ALIGNER_FILE)
    return aligner
