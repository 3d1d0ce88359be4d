"""Per-hop latency of ``/v1/recommend``, sent back as a W3C ``Server-Timing`` header.

Every answer of ``POST /v1/recommend`` carries, in milliseconds measured inside the ingress replica::

    Server-Timing: queue;dur=1.92, encode;dur=4.10, retrieve;dur=2.77, rerank;dur=0.00, respond;dur=0.31, app;dur=9.20

* ``queue`` — arrival at the endpoint to the start of its ingress batch (``@serve.batch`` wait);
* ``encode`` — the batch's call to the ``SequenceEncoder`` deployment (handle round trip, the encoder's
  own batching and the model; with ``colocate=true`` the model alone, inside the ingress replica);
* ``retrieve`` — the batch's call to the ``ANNRetriever`` (handle round trip and the hnswlib look-ups;
  the look-ups alone with ``colocate=true``);
* ``rerank`` — this request's call to the ``Reranker`` (0 without one, or for a popularity fallback);
* ``respond`` — the rest of this request inside the batch (building the answer);
* ``app`` — arrival at the endpoint to the answer leaving it: every hop above plus the event loop.

What a client measures beyond ``app`` is outside the replica's endpoint: HTTP, the Serve proxy (when the
request comes through it), FastAPI's parsing and serialisation.  ``bench/bench_serve.py`` reports each
hop's percentiles and that remainder.  Browsers' developer tools show the header too.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field

#: the hops in the header, in the order a request passes them (``app`` last: it spans the others)
HOPS: tuple[str, ...] = ("queue", "encode", "retrieve", "rerank", "respond")
HEADER = "Server-Timing"
_ENTRY = re.compile(r"^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:;(.*))?$")


@dataclass
class HopTimer:
    """One request's clock: ``arrival`` when the endpoint ran, then each hop's milliseconds."""

    arrival: float = field(default_factory=time.perf_counter)
    ms: dict[str, float] = field(default_factory=dict)

    def span(self, hop: str, start: float, end: float) -> None:
        """Record ``hop`` as the interval ``[start, end]`` of ``time.perf_counter()`` (added to any earlier)."""
        if hop not in HOPS:
            raise ValueError(f"unknown hop {hop!r}; hops: {HOPS}")
        self.ms[hop] = self.ms.get(hop, 0.0) + max(0.0, end - start) * 1000.0

    def header(self, now: float | None = None) -> str:
        """The header value: every hop (0 where it did not run) and ``app``, the arrival to ``now``."""
        app = max(0.0, ((time.perf_counter() if now is None else now) - self.arrival) * 1000.0)
        return ", ".join([f"{h};dur={self.ms.get(h, 0.0):.2f}" for h in HOPS] + [f"app;dur={app:.2f}"])


def parse_server_timing(value: str) -> dict[str, float]:
    """``{name: dur}`` of a ``Server-Timing`` header value (entries without ``dur`` are left out).

    Raises ``ValueError`` naming the entry that is not ``name[;param=value]*``."""
    out: dict[str, float] = {}
    for entry in filter(str.strip, value.split(",")):
        m = _ENTRY.match(entry)
        if m is None:
            raise ValueError(f"Server-Timing: malformed entry {entry!r}")
        for param in (m.group(2) or "").split(";"):
            key, _, val = param.partition("=")
            if key.strip().lower() == "dur":
                try:
                    out[m.group(1)] = float(val.strip().strip('"'))
                except ValueError:
                    raise ValueError(f"Server-Timing: entry {entry!r} has a non-numeric dur") from None
    return out
