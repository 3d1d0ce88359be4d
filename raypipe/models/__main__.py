"""``python -m raypipe.models``: every registered model with its capabilities, recipe and config fields."""
from __future__ import annotations

import sys

from raypipe.models.registry import SPECS


def describe() -> str:
    lines = []
    for name in sorted(SPECS):
        s = SPECS[name]
        caps = ", ".join(sorted(s.capabilities)) or "-"
        lines.append(f"{name}: {s.summary}")
        lines.append(f"  reference:    {s.reference or '-'}")
        lines.append(f"  capabilities: {caps}; trainable: {'yes' if s.trainable else 'no'}")
        if s.trainable:
            r = s.recipe
            lines.append(f"  recipe:       {r.optimizer}, {r.schedule} lr after {r.warmup_steps} warm-up steps, "
                         f"grad clip {r.grad_clip or 'none'}, accumulation {r.grad_accum}, {r.precision}")
            cols = ", ".join(f"{c.name}:{c.dtype}{list(c.shape)}" for c in s.schema(_resolved(s)).columns)
            lines.append(f"  batch:        {cols}")
        fields = s.config_fields()
        lines.append("  config:       " + ("; ".join(f"{n}: {t} = {d!r}" for n, t, d in fields) if fields else "-"))
        lines.append("")
    return "\n".join(lines)


def _resolved(spec):
    cfg = spec.config()
    if getattr(cfg, "max_len", 0) is None:
        cfg.max_len = 50  # data.max_len's default
    return cfg


if __name__ == "__main__":
    sys.stdout.write(describe())
