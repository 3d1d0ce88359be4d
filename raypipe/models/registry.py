"""The registry of model specs (one per model file): ``SPECS[name]`` → :class:`raypipe.models.spec.ModelSpec`.

``python -m raypipe.models`` lists it; :func:`build_model` builds any registered model from its typed
config and an :class:`raypipe.data.catalogue.ItemCatalogue`.
"""
from __future__ import annotations

from torch import nn

from raypipe.config import ModelConfig
from raypipe.data.catalogue import ItemCatalogue
from raypipe.models import bert4rec, cdim, gru4rec, pop, prerec, sasrec, unim2rec, unimp, upsr
from raypipe.models.spec import ModelSpec

SPECS: dict[str, ModelSpec] = {s.name: s for s in (
    sasrec.SPEC, gru4rec.SPEC, bert4rec.SPEC, pop.POP_SPEC, pop.RANDOM_SPEC, pop.CONTENT_LAST_ITEM_SPEC, cdim.SPEC,
    unim2rec.SPEC, unim2rec.UNISREC_SPEC, prerec.SPEC, upsr.SPEC, unimp.SPEC,
)}


def get_spec(name: str) -> ModelSpec:
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(SPECS)}") from None


def build_model(cfg: ModelConfig, catalogue: ItemCatalogue) -> nn.Module:
    """The model named by ``cfg.name``, built by its spec (``cfg`` must be that model's config class)."""
    spec = get_spec(cfg.name)
    if not isinstance(cfg, spec.config):
        raise TypeError(f"model {cfg.name!r} needs a {spec.config.__name__}, got {type(cfg).__name__}")
    return spec.build(cfg, catalogue)
