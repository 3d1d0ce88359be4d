"""The embedded ``markets`` benchmark: the same products sold in several markets (PreRec's cross-market
setting, XMarket-like), deterministic and offline.

Generative story
----------------
* **Products.** ``n_products`` products share the themes of :mod:`raypipe.data.builtin` (words in the
  text). Each has a primary and a secondary theme, a base appeal (log-normal) and one English title and
  description, the same in every market that sells it (a multilingual SBERT sees one product).
* **Markets.** Three *source* markets (``in``, ``es``, ``ca``: heavy traffic) and three *target* markets
  (``au``, ``mx``, ``jp``: lighter traffic). A market sells its own share of the products (catalogue
  sizes differ), has its own traffic volume (users and events), its own **popularity regime** -- an
  item's popularity there is ``appeal^γ_k × market noise`` with a market-specific concentration ``γ_k``
  -- and its own **community** -- a market-level preference over themes that tilts every user's taste
  (the domain confounder). A product launches in each market at its own time and fades after
  (``lifecycle_days``), so popularity drifts over time; the drift is evaluated in ``n_epochs`` windows.
* **Users** belong to exactly one market (no user overlaps between markets). A user's events are spread
  over a span of the two-year horizon. At each event the theme follows the last item's theme with
  probability ``p_transition`` (mostly the same theme, sometimes its successor: the sequential signal),
  else it is drawn from the user's taste; the item is drawn among the market's items of that theme in
  proportion to their *current* popularity in that market (the popularity confounder).
* **Ids.** Item ids are ``<market>/<product id>``: the product id after the slash is shared by every
  market selling it, so :func:`raypipe.data.markets.unseen_items` can find target items that no source
  market sells (PreRec's "unseen" test subset).

CLI: ``python -m raypipe.data.markets --size small`` writes ``data/markets-small`` and prints statistics.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.data.builtin import HORIZON_SECONDS, HORIZON_START, THEMES, _random_ids
from raypipe.data.schema import (
    DATASET_FILE, INTERACTIONS_FILE, INTERACTIONS_SCHEMA, ITEMS_FILE, ITEMS_SCHEMA, DatasetInfo, DomainInfo,
)
from raypipe.io import atomic_dir

log = logging.getLogger(__name__)

#: bumped whenever the generative story changes, so stale copies on disk are regenerated
GENERATOR_VERSION = "1"
NOUNS = ("Lamp", "Backpack", "Notebook", "Mug", "Poster", "Speaker", "Blanket", "Puzzle")


@dataclass(frozen=True)
class MarketSpec:
    name: str
    role: str
    users: float  # share of the users
    catalogue: float  # share of the products sold
    gamma: float  # popularity concentration: popularity = appeal ** gamma * noise
    noise: float  # log-normal sigma of the market's own popularity noise


MARKETS: tuple[MarketSpec, ...] = (
    MarketSpec("in", "source", 0.26, 0.70, 1.6, 0.3),
    MarketSpec("es", "source", 0.20, 0.55, 0.8, 0.6),
    MarketSpec("ca", "source", 0.30, 0.85, 1.2, 0.4),
    MarketSpec("au", "target", 0.10, 0.50, 1.0, 0.5),
    MarketSpec("mx", "target", 0.09, 0.45, 2.0, 0.3),
    MarketSpec("jp", "target", 0.05, 0.35, 0.6, 0.7),
)


@dataclass(frozen=True)
class MarketsConfig:
    n_products: int
    n_users: int
    mean_events: float
    min_events: int = 4
    taste_alpha: float = 0.2
    community_strength: float = 2.0  # how strongly the market's theme preference tilts user tastes
    p_transition: float = 0.6
    p_self_transition: float = 0.7
    n_epochs: int = 12
    lifecycle_days: float = 150.0
    seed: int = 0


SIZES: dict[str, MarketsConfig] = {
    "tiny": MarketsConfig(n_products=240, n_users=900, mean_events=8),
    "small": MarketsConfig(n_products=4000, n_users=30_000, mean_events=8),
}


def generate(size: str | MarketsConfig = "small", seed: int | None = None) -> tuple[pa.Table, pa.Table, DatasetInfo]:
    """The benchmark in memory: ``(items, interactions, info)`` in the canonical schemas."""
    cfg = SIZES[size] if isinstance(size, str) else size
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    rng = np.random.default_rng(cfg.seed)
    K, P, M = len(THEMES), cfg.n_products, len(MARKETS)
    theme = rng.integers(0, K, size=P)
    theme2 = (theme + rng.integers(1, K, size=P)) % K
    appeal = rng.lognormal(0.0, 0.8, size=P)
    raw = _random_ids(rng, P, "P", 8, set())
    # which market sells which product, its popularity there and its launch there
    sold = np.stack([rng.random(P) < m.catalogue for m in MARKETS])  # [M, P]
    pop = np.stack([appeal ** m.gamma * rng.lognormal(0.0, m.noise, size=P) for m in MARKETS])
    launch = rng.uniform(-0.3, 0.9, size=(M, P)) * HORIZON_SECONDS
    edges = np.linspace(0, HORIZON_SECONDS, cfg.n_epochs + 1)
    mids = (edges[:-1] + edges[1:]) / 2
    age = mids[None, None, :] - launch[..., None]  # [M, P, E]
    weight = np.where(age >= 0, pop[..., None] * np.exp(-np.maximum(age, 0) / (cfg.lifecycle_days * 86_400)), 0.0)
    weight = weight * sold[..., None]
    community = rng.dirichlet(np.full(K, 0.5), size=M)  # [M, K] a market's theme preference
    cells: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def cell(m: int, t: int) -> tuple[np.ndarray, np.ndarray]:
        if (m, t) not in cells:
            idx = np.flatnonzero(sold[m] & (theme == t))
            if not len(idx):
                idx = np.flatnonzero(sold[m])
            w = weight[m, idx].copy()
            dead = w.sum(0) <= 0
            w[:, dead] = pop[m, idx, None]
            cells[(m, t)] = (idx, np.cumsum(w, 0) / w.sum(0))
        return cells[(m, t)]

    shares = np.array([m.users for m in MARKETS])
    market = rng.choice(M, size=cfg.n_users, p=shares / shares.sum())
    taste = np.stack([rng.dirichlet(cfg.taste_alpha * (1 + cfg.community_strength * K * community[m]))
                      for m in market])
    taste_cum = np.cumsum(taste, 1)
    n_events = np.maximum(cfg.min_events, rng.poisson(cfg.mean_events, size=cfg.n_users))
    start = rng.uniform(0, 0.7, size=cfg.n_users) * HORIZON_SECONDS
    span = rng.uniform(0.1, 0.3, size=cfg.n_users) * HORIZON_SECONDS
    last = np.full(cfg.n_users, -1)
    users_out, items_out, times_out = [], [], []
    for step in range(int(n_events.max())):
        u = np.flatnonzero(n_events > step)
        times = start[u] + (step + rng.uniform(0.05, 0.95, size=len(u))) / n_events[u] * span[u]
        has_prev = last[u] >= 0
        prev_theme = np.where(has_prev, theme[np.maximum(last[u], 0)], 0)
        follow = has_prev & (rng.random(len(u)) < cfg.p_transition)
        stay = rng.random(len(u)) < cfg.p_self_transition
        drawn = (rng.random(len(u))[:, None] < taste_cum[u]).argmax(1)
        th = np.where(follow, np.where(stay, prev_theme, (prev_theme + 1) % K), drawn)
        ep = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, cfg.n_epochs - 1)
        chosen = np.empty(len(u), dtype=np.int64)
        r = rng.random(len(u))
        for j in range(len(u)):
            idx, cum = cell(int(market[u[j]]), int(th[j]))
            chosen[j] = idx[min(int(np.searchsorted(cum[:, ep[j]], r[j], side="right")), len(idx) - 1)]
        last[u] = chosen
        users_out.append(u)
        items_out.append(chosen)
        times_out.append(times)
    u, p, t = (np.concatenate(x) for x in (users_out, items_out, times_out))
    order = np.lexsort((p, u, t))
    u, p, t = u[order], p[order], t[order]
    user_raw = _random_ids(rng, cfg.n_users, "U", 10, set())
    names = [m.name for m in MARKETS]
    interactions = pa.table({
        "user_id": pa.array([user_raw[x] for x in u], pa.string()),
        "item_id": pa.array([f"{names[market[x]]}/{raw[y]}" for x, y in zip(u, p)], pa.string()),
        "domain": pa.array([names[market[x]] for x in u], pa.string()),
        "timestamp": pa.array((HORIZON_START + t).astype(np.int64), pa.int64()),
        "rating": pa.nulls(len(u), pa.float32()),
        "review": pa.nulls(len(u), pa.string()),
    }, schema=INTERACTIONS_SCHEMA)
    mi, pi = np.nonzero(sold)
    words = [THEMES[x].words for x in range(K)]
    w = rng.integers(0, 6, size=(P, 3))
    title = [f"{words[theme[i]][w[i, 0]].capitalize()} {words[theme2[i]][w[i, 1]].capitalize()} "
             f"{NOUNS[theme2[i] % len(NOUNS)]}" for i in range(P)]
    desc = [f"A {words[theme[i]][w[i, 2]]} {NOUNS[theme2[i] % len(NOUNS)].lower()} with a touch of "
            f"{words[theme2[i]][w[i, 1]]} style." for i in range(P)]
    n = len(pi)
    items = pa.table({
        "item_id": pa.array([f"{names[a]}/{raw[b]}" for a, b in zip(mi, pi)], pa.string()),
        "domain": pa.array([names[a] for a in mi], pa.string()),
        "title": pa.array([title[b] for b in pi], pa.string()),
        "category": pa.array([THEMES[theme[b]].name for b in pi], pa.string()),
        "brand": pa.nulls(n, pa.string()),
        "description": pa.array([desc[b] for b in pi], pa.string()),
        "price": pa.nulls(n, pa.float64()),
        "image": pa.nulls(n, pa.binary()),
        "image_path": pa.nulls(n, pa.string()),
    }, schema=ITEMS_SCHEMA)
    info = DatasetInfo(
        name=f"markets-{size if isinstance(size, str) else 'custom'}", version=GENERATOR_VERSION,
        domains=[DomainInfo(m.name, m.role) for m in MARKETS],  # type: ignore[arg-type]
        provenance=f"raypipe.data.markets: synthetic, generated deterministically with config {dataclasses.asdict(cfg)}",
        licence="Synthetic data generated by raypipe; no third-party content.",
        extra={"config": dataclasses.asdict(cfg), "markets": [dataclasses.asdict(m) for m in MARKETS]},
    )
    return items, interactions, info


def write(out_dir: str | Path, size: str | MarketsConfig = "small", seed: int | None = None) -> Path:
    """Generate and write a canonical dataset directory atomically; returns its path."""
    items, interactions, info = generate(size, seed)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        pq.write_table(items, tmp / ITEMS_FILE)
        pq.write_table(interactions, tmp / INTERACTIONS_FILE, row_group_size=262_144)
        (tmp / DATASET_FILE).write_text(info.to_json() + "\n")
    log.info("wrote %s: %d items, %d interactions", out_dir, items.num_rows, interactions.num_rows)
    return out_dir


def product_key(item_id: str) -> str:
    """The market-independent product id of an item id ``<domain>/<product>``."""
    return str(item_id).split("/", 1)[-1]


def unseen_items(item_ids: np.ndarray, domains: np.ndarray, source_domains: list[str]) -> np.ndarray:
    """Positions (0-based, into ``item_ids``) of the items whose product no source domain sells."""
    ids = np.asarray(item_ids, dtype=object)
    doms = np.asarray(domains, dtype=object)
    in_sources = {product_key(i) for i, d in zip(ids, doms) if d in set(source_domains)}
    return np.flatnonzero([d not in set(source_domains) and product_key(i) not in in_sources
                           for i, d in zip(ids, doms)])


def main(argv: list[str] | None = None) -> int:
    """``python -m raypipe.data.markets``; returns the exit code (2: an output directory that holds
    something else: it is never overwritten)."""
    from raypipe.data.builtin import existing_output
    from raypipe.data.schema import DataValidationError
    from raypipe.data.stats import dataset_stats, format_stats

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="output directory: missing, empty or holding this "
                                                          "benchmark already (default data/markets-<size>)")
    p.add_argument("--force", action="store_true", help="regenerate even if the directory holds it already, "
                                                        "or holds another size or seed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out or Path("data") / f"markets-{args.size}"
    try:
        info = existing_output(out, prefix="markets-")
    except DataValidationError as e:
        p.error(f"--out: {e}")
    same = info is not None and info.name == f"markets-{args.size}" and info.version == GENERATOR_VERSION \
        and info.extra.get("config", {}).get("seed", args.seed) == args.seed
    if info is not None and not same and not args.force:
        p.error(f"--out: {out} holds {info.name} (version {info.version}), not markets-{args.size} seed "
                f"{args.seed} of this generator; use --force to replace it")
    if same and not args.force:
        log.info("%s exists; statistics of the existing copy (use --force to regenerate)", out)
    else:
        write(out, args.size, args.seed)
    print(format_stats(dataset_stats(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
