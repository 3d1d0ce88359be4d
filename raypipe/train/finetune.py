"""Fine-tune modes: which parameters train.

* ``transductive``: every parameter, the target items' ID embeddings included;
* ``inductive``: the item ID table is frozen (target items are represented by their content only);
  the model must take content input (``model.item_input`` ``content`` or ``id+content``);
* ``zero-shot``: nothing trains (the driver only evaluates).
"""
from __future__ import annotations

import torch
from torch import nn

FILTERS = ("all", "no_item_ids")


def trainable_filter_for(mode: str, item_input: str) -> str | None:
    if mode == "transductive":
        return "all"
    if mode == "inductive":
        if "content" not in item_input:
            raise ValueError("inductive fine-tuning represents new items by content: use "
                             "model.item_input=content or id+content (with data.features)")
        return "no_item_ids"
    if mode == "zero-shot":
        return None
    raise ValueError(f"unknown fine-tune mode {mode!r}; choose zero-shot, inductive or transductive")


def apply_trainable_filter(model: nn.Module, name: str) -> None:
    """Freeze what the mode freezes; never unfreeze what the model froze itself (e.g. UniM2Rec's
    ``freeze_encoder``, CDIM's lower layers)."""
    if name not in FILTERS:
        raise ValueError(f"unknown trainable filter {name!r}; choose from {FILTERS}")
    for pname, p in model.named_parameters():
        if name == "no_item_ids" and pname.startswith("items.id."):
            p.requires_grad = False


def cross_catalogue_state(model: nn.Module, state: dict[str, torch.Tensor], source: str
                          ) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The part of a pre-trained ``state`` that ``model``, built over *another* catalogue, can start from:
    every entry but those the model declares tied to its catalogue (``model.catalogue_state``, key
    prefixes: item ID tables, per-domain tensors), which keep their fresh initialisation.  Returns
    ``(state to load, the keys left out)``; a model without ``catalogue_state`` (an ID-only recommender:
    nothing of it transfers to other items), or an entry whose shape differs (another width, another
    number of experts), is a ``ValueError`` naming ``source`` and the entry."""
    prefixes = getattr(model, "catalogue_state", None)
    if prefixes is None:
        raise ValueError(f"{source}: the pre-trained item index differs from this dataset's, and "
                         f"{type(model).__name__} has no content path to carry over to other items (same "
                         "dataset and k_core are needed to reuse ID embeddings)")
    own = model.state_dict()
    keep, dropped = {}, []
    for key, value in state.items():
        if key.startswith(tuple(prefixes)):
            dropped.append(key)
            continue
        if key not in own:
            raise ValueError(f"{source}: pre-trained entry {key!r} does not exist in this "
                             f"{type(model).__name__} (another configuration?)")
        # a module's extra state (UPSR's t5-random tokenizer) is no tensor: it has no shape to compare
        if isinstance(value, torch.Tensor) and tuple(own[key].shape) != tuple(value.shape):
            raise ValueError(f"{source}: pre-trained entry {key!r} has shape {tuple(value.shape)}, this model's "
                             f"{tuple(own[key].shape)}; use the pre-training's model options")
        keep[key] = value
    return keep, sorted(dropped)
