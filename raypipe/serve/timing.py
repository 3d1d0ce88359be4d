"""Per-hop latency of ``/v1/recommend``, sent back as a W3C ``Server-Timing`` header.

Every answer of ``POST /v1/recommend`` carries, in milliseconds measured inside the ingress replica::

    Server-Timing: queue;dur=1.92, encode;dur=4.10, retrieve;dur=2.77, rerank;dur=0.00, respond;dur=0.31, app;dur=9.20, gc;dur=0.00

* ``queue`` — arrival at the endpoint to the start of its ingress batch (``@serve.batch`` wait);
* ``encode`` — the batch's call to the ``SequenceEncoder`` deployment (handle round trip, the encoder's
  own batching and the model; with ``colocate=true`` the model alone, inside the ingress replica);
* ``retrieve`` — the batch's call to the ``ANNRetriever`` (handle round trip and the hnswlib look-ups;
  the look-ups alone with ``colocate=true``);
* ``rerank`` — this request's call to the ``Reranker`` (0 without one, or for a popularity fallback);
* ``respond`` — the rest of this request inside the batch (building the answer);
* ``app`` — arrival at the endpoint to the answer leaving it: every hop above plus the event loop;
* ``gc`` — the ingress replica's garbage-collector pauses while the request was in it (they stop every
  request in the process, so they overlap the hops above; not added to them).

What a client measures beyond ``app`` is outside the replica's endpoint: HTTP, the Serve proxy (when the
request comes through it), FastAPI's parsing and serialisation.  ``bench/bench_serve.py`` reports each
hop's percentiles and that remainder.  Browsers' developer tools show the header too.
"""
from __future__ import annotations

import gc
import re
import threading
import time
from dataclasses import dataclass, field

#: the hops in the header, in the order a request passes them (``app`` last: it spans the others)
HOPS: tuple[str, ...] = ("queue", "encode", "retrieve", "rerank", "respond")
HEADER = "Server-Timing"
_ENTRY = re.compile(r"^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(?:;(.*))?$")


class GcClock:
    """This process's garbage-collector pauses, from ``gc.callbacks``: the running total of pause
    milliseconds (a request's share is the total's growth while it is in the process) and, per
    generation, the count, total and longest pause.  One per process: :meth:`installed`."""

    _instance: GcClock | None = None
    _lock = threading.Lock()

    def __init__(self) -> None:
        self.total_ms = 0.0
        self.by_generation = {g: {"n": 0, "total_ms": 0.0, "max_ms": 0.0} for g in (0, 1, 2)}
        self._start = 0.0

    @classmethod
    def installed(cls) -> GcClock:
        """The process's clock, registered in ``gc.callbacks`` on first use (every request asks: the
        lock is taken only until then)."""
        if cls._instance is not None:
            return cls._instance
        with cls._lock:
            if cls._instance is None:
                cls._instance = cls()
                gc.callbacks.append(cls._instance)
            return cls._instance

    def __call__(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._start = time.perf_counter()
            return
        ms = (time.perf_counter() - self._start) * 1000.0
        self.total_ms += ms
        g = self.by_generation.setdefault(int(info.get("generation", 2)), {"n": 0, "total_ms": 0.0, "max_ms": 0.0})
        g["n"] += 1
        g["total_ms"] += ms
        g["max_ms"] = max(g["max_ms"], ms)

    def summary(self) -> dict[str, dict[str, float]]:
        """``{"gen0": {"n", "total_ms", "max_ms"}, ...}`` since the clock was installed."""
        return {f"gen{g}": {k: round(v, 3) for k, v in d.items()} for g, d in sorted(self.by_generation.items())}


@dataclass
class HopTimer:
    """One request's clock: ``arrival`` when the endpoint ran, then each hop's milliseconds; ``gc0`` the
    process's GC pause total (:class:`GcClock`) at arrival."""

    arrival: float = field(default_factory=time.perf_counter)
    ms: dict[str, float] = field(default_factory=dict)
    gc0: float = field(default_factory=lambda: GcClock.installed().total_ms)

    def span(self, hop: str, start: float, end: float) -> None:
        """Record ``hop`` as the interval ``[start, end]`` of ``time.perf_counter()`` (added to any earlier)."""
        if hop not in HOPS:
            raise ValueError(f"unknown hop {hop!r}; hops: {HOPS}")
        self.ms[hop] = self.ms.get(hop, 0.0) + max(0.0, end - start) * 1000.0

    def header(self, now: float | None = None, gc_total: float | None = None) -> str:
        """The header value: every hop (0 where it did not run), ``app``, the arrival to ``now``, and
        ``gc``, the process's GC pauses since the arrival (to ``gc_total``, the clock's total now by default)."""
        app = max(0.0, ((time.perf_counter() if now is None else now) - self.arrival) * 1000.0)
        paused = max(0.0, (GcClock.installed().total_ms if gc_total is None else gc_total) - self.gc0)
        return ", ".join([f"{h};dur={self.ms.get(h, 0.0):.2f}" for h in HOPS]
                         + [f"app;dur={app:.2f}", f"gc;dur={paused:.2f}"])


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
