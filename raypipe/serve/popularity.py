"""Live popularity for models whose retrieval vectors carry a popularity term (PreRec's Z, eq. 2).

PreRec scores ``U·V_j + Z_j`` with ``Z_j = f_pop(F_j)`` and ``F_j`` item j's interactions in the
``pop_window`` time slots *before* now, normalised per domain (appendix E).  Offline, "now" is the end
of the data; a served model must read the interactions it keeps receiving, or the popularity it ranks
by freezes at training time.  This module keeps those counts:

* :class:`LivePopularity` — interactions per (time slot, item index) in a ring of the last
  ``window + lead`` slots, the slots aligned to the data (``origin`` = the dataset's first event, slot
  length = the model's ``pop_slot_days``).  As in training, an event counts only from the slot after the
  one it falls in (never towards its own slot), and only while it is among the ``window`` slots before
  now.  Seeded from the dataset's interactions; "now" is the wall clock (or an injected clock).
* :class:`EventLog` — the ``POST /events`` records, one JSON-lines file under the app's state directory
  (:class:`raypipe.serve.jsonlog.JsonLinesLog`).  Every retriever replica replays it into its own
  :class:`LivePopularity` before a read, so all replicas rank by the same counts and a restarted replica
  recovers them.
* :func:`validate_events` — every problem of a batch (unknown item, an item of another domain than the
  one claimed, a time too far in the future), each naming ``events[i].<field>``, found before anything is
  applied: a batch is applied whole or not at all.
"""
from __future__ import annotations

import itertools
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from raypipe.serve.jsonlog import JsonLinesLog

EVENTS_FILE = "events.jsonl"
#: how far past "now" an event's time may lie (client clock skew), in seconds
FUTURE_TOLERANCE_S = 300


class EventValidationError(ValueError):
    def __init__(self, problems: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p['loc']))}: {p['msg']}" for p in problems))
        self.problems = problems


class LivePopularity:
    def __init__(self, num_embeddings: int, origin: int, slot_seconds: int, window: int,
                 clock: Callable[[], float] = time.time, future_tolerance_s: int = FUTURE_TOLERANCE_S) -> None:
        if slot_seconds <= 0 or window < 1 or num_embeddings < 1:
            raise ValueError(f"need slot_seconds > 0, window >= 1, num_embeddings >= 1; got {slot_seconds}, "
                             f"{window}, {num_embeddings}")
        self.origin, self.slot_seconds, self.window = int(origin), int(slot_seconds), int(window)
        self.clock = clock
        self.future_tolerance_s = int(future_tolerance_s)
        lead = -(-self.future_tolerance_s // self.slot_seconds) + 1  # slots an accepted event may lie ahead
        self.ring = np.zeros((self.window + 1 + lead, num_embeddings), np.int64)
        self.ring_slot = np.full(len(self.ring), np.iinfo(np.int64).min, np.int64)
        #: events applied (seed and live), and live events ignored because they could no longer count
        self.version = 0
        self.stale = 0
        #: events that entered the current window when they arrived (late ones, for past slots): an event
        #: of the current slot changes nothing until the slot ends, so it does not invalidate the terms
        self.window_version = 0

    # -- time --------------------------------------------------------------------------------------------
    def slot_of(self, timestamps: np.ndarray) -> np.ndarray:
        return (np.asarray(timestamps, np.int64) - self.origin) // self.slot_seconds

    def now_slot(self) -> int:
        return int(self.slot_of(np.asarray([int(self.clock())]))[0])

    def key(self) -> tuple[int, int]:
        """Changes exactly when :meth:`window_counts` may change: events for a slot inside the window, or
        a new slot (which brings in the events of the one that ended)."""
        return self.window_version, self.now_slot()

    # -- updates -----------------------------------------------------------------------------------------
    def grow(self, n: int) -> None:
        """Room for ``n`` more items (onboarded while serving), without interactions."""
        if n > 0:
            self.ring = np.concatenate([self.ring, np.zeros((len(self.ring), n), np.int64)], axis=1)

    def add(self, items: np.ndarray, timestamps: np.ndarray) -> tuple[int, int]:
        """Count events (item indices, Unix times); returns ``(counted, stale)``.  An event is stale when
        its slot is more than ``window`` slots before now (it can no longer enter any window) and is
        ignored; one past the ring (beyond the future tolerance) is refused."""
        items = np.asarray(items, np.int64)
        slots = self.slot_of(timestamps)
        if len(items) != len(slots):
            raise ValueError(f"{len(items)} items for {len(slots)} timestamps")
        if len(items) and (items.min() < 1 or items.max() >= self.ring.shape[1]):
            raise ValueError(f"item indices must lie in 1..{self.ring.shape[1] - 1}")
        now = self.now_slot()
        if len(slots) and slots.max() >= now + len(self.ring) - self.window:
            raise ValueError(f"an event lies {int(slots.max()) - now} slots after now; the ring holds "
                             f"{len(self.ring) - self.window - 1}")
        fresh = slots >= now - self.window
        for s in np.unique(slots[fresh]):
            r = int(s) % len(self.ring)
            if self.ring_slot[r] != s:  # reuse a row whose slot has left every window
                self.ring[r] = 0
                self.ring_slot[r] = s
        np.add.at(self.ring, (slots[fresh] % len(self.ring), items[fresh]), 1)
        counted = int(fresh.sum())
        self.version += counted
        self.window_version += int((fresh & (slots < now)).sum())
        return counted, len(items) - counted

    # -- reads -------------------------------------------------------------------------------------------
    def window_counts(self) -> np.ndarray:
        """``c_j``: item j's events in the ``window`` complete slots before now, int64 ``[N+1]``."""
        now = self.now_slot()
        rows = (self.ring_slot >= now - self.window) & (self.ring_slot < now)
        return self.ring[rows].sum(axis=0)


class EventLog(JsonLinesLog):
    """``POST /events`` records ``{"item_id", "timestamp"}``, shared by every retriever replica."""

    def append(self, records: Sequence[Mapping[str, Any]]) -> None:
        self.append_locked([{"item_id": r["item_id"], "timestamp": int(r["timestamp"])} for r in records])


def validate_events(events: Sequence[Mapping[str, Any]], position: Mapping[str, int], domain_of: Sequence[str],
                    now: float, future_tolerance_s: int = FUTURE_TOLERANCE_S) -> tuple[np.ndarray, np.ndarray]:
    """``(item indices, timestamps)`` of events ``{"item_id", "domain", "timestamp"}`` whose items are
    known (``position``: item id -> index, ``domain_of[index]``), or :class:`EventValidationError`
    listing every problem, each at ``["body", "events", i, field]``."""
    problems: list[dict[str, Any]] = []
    items = np.zeros(len(events), np.int64)
    times = np.zeros(len(events), np.int64)
    limit = int(now) + future_tolerance_s
    for i, e in enumerate(events):
        loc = ["body", "events", i]
        idx = position.get(e["item_id"])
        if idx is None:
            problems.append({"loc": loc + ["item_id"], "msg": f"unknown item {e['item_id']!r} (neither trained "
                             "nor onboarded)", "type": "unknown_item"})
        else:
            items[i] = idx
            if e.get("domain") is not None and e["domain"] != domain_of[idx]:
                problems.append({"loc": loc + ["domain"], "msg": f"item {e['item_id']!r} is in domain "
                                 f"{domain_of[idx]!r}, not {e['domain']!r}", "type": "domain_mismatch"})
        times[i] = int(e["timestamp"])
        if times[i] > limit:
            problems.append({"loc": loc + ["timestamp"], "msg": f"{times[i]} lies more than {future_tolerance_s}s "
                             f"after now ({int(now)})", "type": "future_timestamp"})
    if problems:
        raise EventValidationError(problems)
    return items, times


class ServedPopularity:
    """A retriever replica's live popularity: the dataset's interactions plus the shared event log,
    turned into the served model's popularity term (``model.live_pop_scores``) and applied to the
    catalogue whenever the terms can have changed (new events, a new slot, or new items).

    Items onboarded while serving (the catalogue's onboarding log) get count columns after the trained
    ones, in log order, so events may name them; they join their domain's norms (``J_k`` grows).  An
    item of a domain the model was not trained on (a brand-new market) is normalised within that domain
    alone: eq. 5's ``Z`` from the target domain's own statistics."""

    def __init__(self, model: Any, item_ids: Sequence[str], domains: Sequence[str], catalogue: Any,
                 events: tuple[np.ndarray, np.ndarray], log_path: str, clock: Callable[[], float] = time.time) -> None:
        items, ts = (np.asarray(a, np.int64) for a in events)
        self.model, self.catalogue, self.clock = model, catalogue, clock
        self.live = LivePopularity(len(item_ids) + 1, int(ts.min()) if len(ts) else 0, model.cfg.slot_seconds,
                                   model.cfg.pop_window, clock)
        past = ts <= int(clock())  # a replay clock set inside the data sees only the events before it
        self.live.add(items[past], ts[past])
        self.n_trained = len(item_ids)
        self.position = {iid: i + 1 for i, iid in enumerate(item_ids)}
        self.domain_of = [""] + list(domains)
        # the model's domain index of each entry; new domains get the next indices, in order of arrival
        groups = model.item_domain.cpu().numpy().astype(np.int64)[:len(item_ids) + 1]
        self.group_of = {d: int(g) for d, g in zip(domains, groups[1:])}
        self.groups = list(groups)
        self.extra_ids: list[str] = []
        self.log = EventLog(log_path)
        self.zero_term = float(model.live_pop_scores(np.zeros(len(item_ids) + 1, np.float32), np.asarray(groups))[1])
        self._key: tuple[int, int, int] | None = None
        self.refresh()

    def _sync_items(self) -> None:
        """Count columns for items onboarded since the last call."""
        self.catalogue.sync()
        if len(self.catalogue.onboarded) == len(self.extra_ids):  # the hot path: nothing new
            return
        new = list(itertools.islice(self.catalogue.onboarded, len(self.extra_ids), None))
        for iid in new:
            d = self.catalogue.onboarded[iid]["domain"]
            self.position[iid] = len(self.domain_of)
            self.domain_of.append(d)
            self.groups.append(self.group_of.setdefault(d, max(self.group_of.values(), default=-1) + 1))
            self.extra_ids.append(iid)
        self.live.grow(len(new))

    def refresh(self) -> bool:
        """Apply logged events and, when the counts may have changed, the new popularity terms."""
        self._sync_items()
        new = self.log.read_new()
        if new:
            if any(r.get("item_id") not in self.position for r in new):
                self._sync_items()  # an item onboarded after our last look, then named by an event
            idx = np.asarray([self.position.get(r.get("item_id"), 0) for r in new], np.int64)
            ts = np.asarray([int(r.get("timestamp", 0)) for r in new], np.int64)
            self.live.add(idx[idx > 0], ts[idx > 0])
        key = (*self.live.key(), len(self.extra_ids))
        if key == self._key:
            return False
        counts = self.live.window_counts()
        terms = self.model.live_pop_scores(counts, np.asarray(self.groups))
        n = self.n_trained + 1
        self.catalogue.apply_popularity(terms[1:n], counts[1:n], self.zero_term,
                                        {iid: (float(terms[n + j]), int(counts[n + j]))
                                         for j, iid in enumerate(self.extra_ids)})
        self._key = key
        return True

    def add(self, events: Sequence[Mapping[str, Any]]) -> dict[str, int]:
        """Validate a batch (:class:`EventValidationError` naming every bad field), log the events that can
        still count, apply them; ``{"accepted", "stale", "version"}``."""
        self._sync_items()
        items, ts = validate_events(events, self.position, self.domain_of, self.clock(),
                                    self.live.future_tolerance_s)
        fresh = self.live.slot_of(ts) >= self.live.now_slot() - self.live.window
        self.log.append([{"item_id": e["item_id"], "timestamp": t} for e, t, f in zip(events, ts, fresh) if f])
        self.live.stale += int((~fresh).sum())
        self.refresh()
        return {"accepted": int(fresh.sum()), "stale": int((~fresh).sum()), "version": self.live.version}

    def stats(self) -> dict[str, Any]:
        counts = self.live.window_counts()
        return {"version": self.live.version, "stale_events": self.live.stale, "now_slot": self.live.now_slot(),
                "slot_seconds": self.live.slot_seconds, "window_slots": self.live.window,
                "events_in_window": int(counts.sum()), "items_with_events": int((counts > 0).sum()),
                "onboarded_items_counted": len(self.extra_ids)}
