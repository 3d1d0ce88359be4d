"""Fine-tune modes: which parameters train.

* ``transductive``: every parameter, the target items' ID embeddings included;
* ``inductive``: the item ID table is frozen (target items are represented by their content only);
  the model must take content input (``model.item_input`` ``content`` or ``id+content``);
* ``zero-shot``: nothing trains (the driver only evaluates).
"""
from __future__ import annotations

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
