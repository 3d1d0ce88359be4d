"""The embedded multi-domain, multi-modal benchmark: a deterministic generator that needs no download.

Generative story
----------------
* **Themes.** ``K`` latent themes (ocean, forest, fire, space, ...) are shared by every domain.  Each
  theme owns a small vocabulary of English words, a colour and a shape.  These are the shared latent
  factors: they surface in item *text* (titles, descriptions and reviews use the theme's words) and in
  item *images* (background colour and shape come from the item's primary theme, a small accent mark
  from its secondary theme).  A sentence encoder or an image encoder can therefore recognise the same
  theme in a kitchen item and in a book, which is what lets content bridge domains.
* **Domains.** Three *source* domains (rich traffic) and three *target* domains (sparse, and of
  decreasing density: the last target is the sparsest).  Each domain has its own product nouns,
  sub-categories, brands and price level, so text differs across domains even for the same theme.
* **Items.** Every item gets a primary theme (uniform) and a secondary theme (its *style*, which also
  fixes its product type within the domain), a launch time, a
  base popularity (log-normal, heavy-tailed) and a raw id drawn at random (``B0`` + 8 random
  characters): ids never encode themes.  A configurable share of items lose their text (title and
  description) or their image; for those the other modality is still present.
* **Users.** Each user has a taste: a sparse Dirichlet distribution over themes, the *same* in every
  domain.  Users are active in one to four domains; many are active in both source and target
  domains, which gives mixed cross-domain behaviour flows with real timestamps.
* **Behaviour.** A user's events are spread over a two-year horizon.  At each event the user picks a
  domain (weighted by the domain's traffic), then a theme: with probability ``p_transition`` it follows
  the theme transition matrix from the last item the user had *in that domain* (mostly the same theme,
  sometimes its successor theme; when staying, often the same secondary theme too, i.e. the same
  style — the sequential signal); otherwise it samples the taste.  An immediate repeat of the
  previous item is redrawn once from the theme (people rarely take the same item twice in a row).  The item is
  then drawn among the domain's items of that theme in proportion to their *current* popularity:
  base popularity times a lifecycle that starts at the launch time and decays, evaluated in ``n_epochs``
  time windows.  Popularity therefore drifts over time (new items rise, old ones fade).
* **Ratings and reviews.** The rating grows with the user's taste for the item's themes plus noise
  (1–5); a short review combines a sentiment word, a theme word and the product noun.

Sizes: ``tiny`` (tests, about a second), ``small`` (the default job), ``large`` (benchmarks, ≥1M
interactions).  Everything is drawn from one ``numpy.random.Generator`` seeded by ``seed``, so a size and
seed always give byte-identical Parquet files.

CLI: ``python -m raypipe.data.builtin --size small --out data/builtin-small`` writes the dataset and
prints per-domain statistics in the form of the papers' dataset tables.
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw
from tqdm.auto import tqdm

from raypipe.data.schema import (
    DATASET_FILE,
    INTERACTIONS_FILE,
    INTERACTIONS_SCHEMA,
    ITEMS_FILE,
    ITEMS_SCHEMA,
    DataValidationError,
    DatasetInfo,
    DomainInfo,
)
from raypipe.io import atomic_dir

log = logging.getLogger(__name__)

HORIZON_START = 1_577_836_800  # 2020-01-01T00:00:00Z
HORIZON_SECONDS = 2 * 365 * 86_400
ITEM_THEMES_FILE = "item_themes.parquet"
#: bumped whenever the generative story changes, so stale copies on disk are regenerated
GENERATOR_VERSION = "4"


@dataclass(frozen=True)
class Theme:
    name: str
    words: tuple[str, ...]
    colour: tuple[int, int, int]
    shape: str


THEMES: tuple[Theme, ...] = (
    Theme("ocean", ("ocean", "marine", "coastal", "tidal", "nautical", "seashell"), (20, 90, 200), "circle"),
    Theme("forest", ("forest", "woodland", "pine", "mossy", "timber", "fern"), (30, 130, 40), "triangle"),
    Theme("fire", ("fire", "blazing", "ember", "volcanic", "flame", "scorching"), (220, 50, 20), "diamond"),
    Theme("space", ("galaxy", "cosmic", "stellar", "astronaut", "orbit", "nebula"), (40, 20, 90), "star"),
    Theme("vintage", ("vintage", "retro", "antique", "classic", "heirloom", "nostalgic"), (150, 110, 60), "square"),
    Theme("kids", ("playful", "cartoon", "toddler", "giggle", "bubbly", "nursery"), (250, 200, 40), "circle"),
    Theme("luxury", ("luxury", "gilded", "premium", "velvet", "opulent", "elegant"), (200, 170, 30), "diamond"),
    Theme("sport", ("athletic", "sprint", "champion", "stadium", "workout", "marathon"), (240, 120, 0), "triangle"),
    Theme("music", ("melody", "rhythm", "jazz", "acoustic", "harmony", "symphony"), (150, 40, 160), "star"),
    Theme("winter", ("winter", "snowy", "frosty", "glacier", "icicle", "arctic"), (200, 230, 250), "hexagon"),
    Theme("desert", ("desert", "sandy", "dune", "cactus", "arid", "mirage"), (230, 190, 120), "square"),
    Theme("garden", ("garden", "floral", "blossom", "tulip", "botanical", "petal"), (240, 120, 180), "hexagon"),
    Theme("tech", ("digital", "robotic", "cyber", "quantum", "circuit", "futuristic"), (0, 200, 200), "square"),
    Theme("cozy", ("cozy", "fireside", "knitted", "snug", "homely", "blanket"), (160, 60, 60), "circle"),
    Theme("horror", ("haunted", "spooky", "zombie", "ghostly", "macabre", "creepy"), (20, 20, 20), "triangle"),
    Theme("romance", ("romantic", "heartfelt", "sweetheart", "passionate", "tender", "valentine"), (230, 30, 120), "heart"),
)


@dataclass(frozen=True)
class DomainSpec:
    name: str
    role: str
    traffic: float  # relative chance that a user is active in this domain
    nouns: tuple[str, ...]
    categories: tuple[str, ...]
    brands: tuple[str, ...]
    price_mean: float


DOMAINS: tuple[DomainSpec, ...] = (
    DomainSpec("books", "source", 1.0, ("Novel", "Storybook", "Cookbook", "Anthology", "Guide", "Memoir"),
               ("Fiction", "Children's Books", "Cooking", "Travel"), ("Penwick Press", "Larkspur Books", "Quillhouse"), 14.0),
    DomainSpec("movies", "source", 0.9, ("Film", "Documentary", "Series Box Set", "Animated Feature", "Thriller", "Drama"),
               ("Movies", "TV", "Documentary", "Animation"), ("Silverframe", "Nightowl Studios", "Reelhouse"), 18.0),
    DomainSpec("electronics", "source", 0.8, ("Headphones", "Speaker", "Phone Case", "Charger", "Keyboard", "Lamp"),
               ("Audio", "Accessories", "Computers", "Lighting"), ("Voltix", "Auralink", "Nexon"), 45.0),
    DomainSpec("toys", "target", 0.45, ("Puzzle", "Plush Toy", "Board Game", "Building Set", "Action Figure", "Kite"),
               ("Puzzles", "Stuffed Animals", "Games", "Outdoor Play"), ("Jollywood", "Tinker Bay", "Playnest"), 22.0),
    DomainSpec("kitchen", "target", 0.30, ("Mug", "Teapot", "Cutting Board", "Apron", "Blender", "Serving Bowl"),
               ("Drinkware", "Cookware", "Small Appliances", "Tableware"), ("Hearthly", "Copperleaf", "Oven & Oak"), 30.0),
    DomainSpec("sports", "target", 0.18, ("Water Bottle", "Yoga Mat", "Jersey", "Running Cap", "Gym Bag", "Tent"),
               ("Fitness", "Team Sports", "Camping", "Apparel"), ("Strideon", "Peakline", "Vantor"), 35.0),
)

SENTIMENT = {1: "disappointing", 2: "mediocre", 3: "decent", 4: "lovely", 5: "amazing"}


@dataclass(frozen=True)
class BenchmarkConfig:
    """Knobs of the generator.  ``SIZES`` holds the named presets."""

    n_items_per_domain: int
    n_users: int
    mean_events: float  # mean events per user over the horizon (all domains together)
    min_events: int = 5
    n_themes: int = len(THEMES)
    taste_alpha: float = 0.15  # Dirichlet concentration of user tastes (small = focused)
    p_transition: float = 0.7  # probability the next theme follows the transition matrix
    p_self_transition: float = 0.7  # within the transition: stay on the same theme (else successor)
    p_same_style: float = 0.6  # when staying: also keep the secondary theme (same style of item)
    p_missing_text: float = 0.05
    p_missing_image: float = 0.10
    n_epochs: int = 8  # popularity windows
    lifecycle_days: float = 240.0
    popularity_sigma: float = 0.8  # log-normal spread of base popularity
    image_size: int = 32
    seed: int = 0


SIZES: dict[str, BenchmarkConfig] = {
    "tiny": BenchmarkConfig(n_items_per_domain=60, n_users=300, mean_events=16),
    "small": BenchmarkConfig(n_items_per_domain=1000, n_users=12_000, mean_events=20),
    "large": BenchmarkConfig(n_items_per_domain=25_000, n_users=80_000, mean_events=16),
}


@dataclass
class GeneratedItems:
    item_id: list[str]
    domain: np.ndarray  # int, index into DOMAINS
    theme: np.ndarray  # primary theme
    theme2: np.ndarray  # secondary theme
    launch: np.ndarray  # seconds since horizon start
    base_pop: np.ndarray
    columns: dict[str, list] = field(default_factory=dict)


def _random_ids(rng: np.random.Generator, n: int, prefix: str, length: int, taken: set[str]) -> list[str]:
    alphabet = np.array(list("0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"))
    out: list[str] = []
    while len(out) < n:
        draws = rng.integers(0, len(alphabet), size=(n - len(out), length))
        for row in draws:
            s = prefix + "".join(alphabet[row])
            if s not in taken:
                taken.add(s)
                out.append(s)
    return out


def render_image(theme: Theme, accent: Theme, size: int, rng: np.random.Generator) -> bytes:
    """A small PNG: background in the primary theme's colour (jittered), its shape in white-ish, and an
    accent dot in the secondary theme's colour."""
    jitter = rng.integers(-25, 26, size=3)
    bg = tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(theme.colour, jitter))
    img = Image.new("RGB", (size, size), bg)
    d = ImageDraw.Draw(img)
    fg = (245, 245, 245) if sum(theme.colour) < 450 else (30, 30, 30)
    m = size // 6
    box = (m, m, size - m, size - m)
    cx = cy = size / 2
    r = size / 2 - m
    if theme.shape == "circle":
        d.ellipse(box, fill=fg)
    elif theme.shape == "square":
        d.rectangle(box, fill=fg)
    elif theme.shape == "triangle":
        d.polygon([(cx, m), (size - m, size - m), (m, size - m)], fill=fg)
    elif theme.shape == "diamond":
        d.polygon([(cx, m), (size - m, cy), (cx, size - m), (m, cy)], fill=fg)
    elif theme.shape == "hexagon":
        pts = [(cx + r * np.cos(a), cy + r * np.sin(a)) for a in np.linspace(0, 2 * np.pi, 7)[:-1]]
        d.polygon(pts, fill=fg)
    elif theme.shape == "star":
        pts = []
        for k in range(10):
            rad = r if k % 2 == 0 else r * 0.45
            a = -np.pi / 2 + k * np.pi / 5
            pts.append((cx + rad * np.cos(a), cy + rad * np.sin(a)))
        d.polygon(pts, fill=fg)
    else:  # heart
        d.ellipse((m, m, cx + 1, cy + 2), fill=fg)
        d.ellipse((cx - 1, m, size - m, cy + 2), fill=fg)
        d.polygon([(m + 1, cy), (size - m - 1, cy), (cx, size - m)], fill=fg)
    a = size // 5
    d.ellipse((size - a - 1, size - a - 1, size - 1, size - 1), fill=accent.colour)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def _generate_items(cfg: BenchmarkConfig, rng: np.random.Generator, show_progress: bool) -> GeneratedItems:
    n_dom = len(DOMAINS)
    n = cfg.n_items_per_domain * n_dom
    themes = THEMES[: cfg.n_themes]
    domain = np.repeat(np.arange(n_dom), cfg.n_items_per_domain)
    theme = rng.integers(0, cfg.n_themes, size=n)
    theme2 = (theme + rng.integers(1, cfg.n_themes, size=n)) % cfg.n_themes
    launch = rng.uniform(-0.4, 0.85, size=n) * HORIZON_SECONDS
    base_pop = rng.lognormal(0.0, cfg.popularity_sigma, size=n)
    raw = _random_ids(rng, n, "B0", 8, set())
    item_id = [f"{DOMAINS[d].name}/{r}" for d, r in zip(domain, raw)]
    missing_text = rng.random(n) < cfg.p_missing_text
    missing_image = (rng.random(n) < cfg.p_missing_image) & ~missing_text  # never both
    cols: dict[str, list] = {k: [] for k in ("title", "category", "brand", "description", "price", "image")}
    for i in tqdm(range(n), desc="items", disable=not show_progress, mininterval=2):
        spec = DOMAINS[domain[i]]
        t1, t2 = themes[theme[i]], themes[theme2[i]]
        w1 = rng.choice(t1.words, size=2, replace=False)
        w2 = rng.choice(t2.words)
        # the product type follows the item's secondary theme (its style): items of one style share it
        noun = spec.nouns[theme2[i] % len(spec.nouns)]
        cols["category"].append(spec.categories[rng.integers(len(spec.categories))])
        cols["brand"].append(spec.brands[rng.integers(len(spec.brands))])
        cols["price"].append(float(round(spec.price_mean * rng.lognormal(0.0, 0.4), 2)))
        if missing_text[i]:
            cols["title"].append(None)
            cols["description"].append(None)
        else:
            cols["title"].append(f"{w1[0].capitalize()} {w2.capitalize()} {noun}")
            cols["description"].append(
                f"A {w1[1]} {noun.lower()} with a {w1[0]} feel and a touch of {w2} style."
            )
        cols["image"].append(None if missing_image[i] else render_image(t1, t2, cfg.image_size, rng))
    return GeneratedItems(item_id, domain, theme, theme2, launch, base_pop, cols)


class _CellSampler:
    """Draws items inside a *cell* (domain × theme, or domain × theme × secondary theme) in proportion
    to their popularity at the event's time: base popularity × a lifecycle that starts at the launch
    and decays, evaluated at the middle of ``n_epochs`` windows.  Cells are built lazily."""

    def __init__(self, cfg: BenchmarkConfig, items: GeneratedItems) -> None:
        self.K = cfg.n_themes
        self.items = items
        self.edges = np.linspace(0, HORIZON_SECONDS, cfg.n_epochs + 1)
        mids = (self.edges[:-1] + self.edges[1:]) / 2
        age = mids[None, :] - items.launch[:, None]
        tau = cfg.lifecycle_days * 86_400
        self.weight = np.where(age >= 0, items.base_pop[:, None] * np.exp(-np.maximum(age, 0) / tau), 0.0)
        self.n_epochs = cfg.n_epochs
        self._cells: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def epoch(self, times: np.ndarray) -> np.ndarray:
        return np.clip(np.searchsorted(self.edges, times, side="right") - 1, 0, self.n_epochs - 1)

    def cell_key(self, dom: np.ndarray, theme: np.ndarray, theme2: np.ndarray | None) -> np.ndarray:
        """Theme cells are ``d*K + t``; style cells (with a secondary theme) come after them."""
        n_theme_cells = len(DOMAINS) * self.K
        key = dom * self.K + theme
        if theme2 is None:
            return key
        return np.where(theme2 >= 0, n_theme_cells + key * self.K + np.maximum(theme2, 0), key)

    def _cell(self, key: int) -> tuple[np.ndarray, np.ndarray]:
        if key not in self._cells:
            n_theme_cells = len(DOMAINS) * self.K
            it = self.items
            if key < n_theme_cells:
                d, t = divmod(key, self.K)
                idx = np.flatnonzero((it.domain == d) & (it.theme == t))
            else:
                dt, t2 = divmod(key - n_theme_cells, self.K)
                d, t = divmod(dt, self.K)
                idx = np.flatnonzero((it.domain == d) & (it.theme == t) & (it.theme2 == t2))
                if len(idx) == 0:  # no item of that exact style: fall back to the theme cell
                    return self._cell(d * self.K + t)
            if len(idx) == 0:  # a tiny catalogue may lack a theme in a domain: any item of the domain
                idx = np.flatnonzero(it.domain == d)
            w = self.weight[idx].copy()
            dead = w.sum(axis=0) <= 0  # nothing launched yet in this window: base popularity
            w[:, dead] = it.base_pop[idx, None]
            self._cells[key] = (idx, np.cumsum(w, axis=0) / w.sum(axis=0))
        return self._cells[key]

    def sample(self, keys: np.ndarray, epochs: np.ndarray, u01: np.ndarray) -> np.ndarray:
        chosen = np.empty(len(keys), dtype=np.int64)
        group = keys * self.n_epochs + epochs
        order = np.argsort(group, kind="stable")
        uniq, starts = np.unique(group[order], return_index=True)
        for g, lo, hi in zip(uniq, starts, np.append(starts[1:], len(order))):
            sel = order[lo:hi]
            idx, cum = self._cell(int(g // self.n_epochs))
            pos = np.searchsorted(cum[:, int(g % self.n_epochs)], u01[sel], side="right")
            chosen[sel] = idx[np.minimum(pos, len(idx) - 1)]
        return chosen


def _generate_interactions(cfg: BenchmarkConfig, items: GeneratedItems, rng: np.random.Generator,
                           show_progress: bool) -> dict[str, np.ndarray]:
    n_dom, K = len(DOMAINS), cfg.n_themes
    U = cfg.n_users
    taste = rng.dirichlet(np.full(K, cfg.taste_alpha), size=U)
    taste_cum = np.cumsum(taste, axis=1)
    # Domains each user is active in: 1..4, drawn by traffic; every user touches at least one domain.
    traffic = np.array([d.traffic for d in DOMAINS])
    n_active = np.clip(rng.poisson(1.3, size=U) + 1, 1, 4)
    active = np.zeros((U, n_dom), dtype=bool)
    for u in range(U):
        active[u, rng.choice(n_dom, size=n_active[u], replace=False, p=traffic / traffic.sum())] = True
    # Within a user, events spread evenly over the active domains: a sparse domain has fewer users,
    # not shorter sequences per user.
    dom_cum = np.cumsum(active / active.sum(axis=1, keepdims=True), axis=1)
    n_events = np.maximum(cfg.min_events * n_active,
                          rng.poisson(cfg.mean_events * n_active / n_active.mean()))
    start = rng.uniform(0, 0.6, size=U) * HORIZON_SECONDS
    span = rng.uniform(0.2, 0.4, size=U) * HORIZON_SECONDS
    sampler = _CellSampler(cfg, items)
    successor = (np.arange(K) + 1) % K
    last_item = np.full((U, n_dom), -1, dtype=np.int64)  # last item of the user in each domain
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("user", "item", "time")}
    max_len = int(n_events.max())
    for step in tqdm(range(max_len), desc="events", disable=not show_progress, mininterval=2):
        users = np.flatnonzero(n_events > step)
        m = len(users)
        # time: evenly spread over the user's span with jitter, monotone in step
        frac = (step + rng.uniform(0.05, 0.95, size=m)) / n_events[users]
        times = start[users] + frac * span[users]
        doms = (rng.random(m)[:, None] < dom_cum[users]).argmax(axis=1)
        prev_item = last_item[users, doms]
        has_prev = prev_item >= 0
        prev = np.where(has_prev, items.theme[np.maximum(prev_item, 0)], -1)
        prev2 = np.where(has_prev, items.theme2[np.maximum(prev_item, 0)], -1)
        sampled_taste = (rng.random(m)[:, None] < taste_cum[users]).argmax(axis=1)
        follow = has_prev & (rng.random(m) < cfg.p_transition)
        stay = rng.random(m) < cfg.p_self_transition
        same_style = follow & stay & (rng.random(m) < cfg.p_same_style)
        th = np.where(follow, np.where(stay, prev, successor[np.maximum(prev, 0)]), sampled_taste)
        th2 = np.where(same_style, prev2, -1)
        keys = sampler.cell_key(doms, th, th2)
        epochs = sampler.epoch(times)
        chosen = sampler.sample(keys, epochs, rng.random(m))
        # people rarely take the very same item twice in a row: redraw those once from the theme cell
        again = np.flatnonzero(chosen == prev_item)
        if len(again):
            theme_keys = sampler.cell_key(doms[again], th[again], None)
            chosen[again] = sampler.sample(theme_keys, epochs[again], rng.random(len(again)))
        last_item[users, doms] = chosen
        out["user"].append(users)
        out["item"].append(chosen)
        out["time"].append(times)
    cat = {k: np.concatenate(v) for k, v in out.items()}
    cat["taste"] = taste  # type: ignore[assignment]
    return cat


@dataclass
class Benchmark:
    """The generated dataset in memory: canonical tables plus the latent themes (ground truth)."""

    items: pa.Table
    interactions: pa.Table
    info: DatasetInfo
    item_themes: pa.Table  # item_id, theme, theme2: for analysis only, models never read it


def generate(size: str | BenchmarkConfig = "small", seed: int | None = None,
             show_progress: bool = False) -> Benchmark:
    """Generate the benchmark in memory, in the canonical schemas."""
    cfg = SIZES[size] if isinstance(size, str) else size
    if seed is not None:
        cfg = dataclasses.replace(cfg, seed=seed)
    if cfg.n_themes > len(THEMES) or cfg.n_themes < 2:
        raise ValueError(f"n_themes must be in [2, {len(THEMES)}], got {cfg.n_themes}")
    rng = np.random.default_rng(cfg.seed)
    items = _generate_items(cfg, rng, show_progress)
    ev = _generate_interactions(cfg, items, rng, show_progress)
    user_raw = _random_ids(rng, cfg.n_users, "U", 10, set())
    # ratings from the user's taste for the item's themes, plus noise
    taste = ev["taste"]
    u, it = ev["user"], ev["item"]
    affinity = taste[u, items.theme[it]] + 0.5 * taste[u, items.theme2[it]]
    rating = np.clip(np.rint(2.2 + 3.0 * affinity + rng.normal(0, 0.7, size=len(u))), 1, 5).astype(np.int64)
    has_review = rng.random(len(u)) < 0.6
    word_pick = rng.integers(0, 6, size=len(u))
    reviews: list[str | None] = []
    for k in range(len(u)):
        if not has_review[k]:
            reviews.append(None)
            continue
        i = it[k]
        spec = DOMAINS[items.domain[i]]
        noun = items.columns["title"][i].split()[-1].lower() if items.columns["title"][i] else spec.nouns[0].lower()
        reviews.append(f"{SENTIMENT[int(rating[k])].capitalize()} {THEMES[items.theme[i]].words[word_pick[k]]} {noun}.")
    order = np.lexsort((it, u, ev["time"]))  # chronological; deterministic ties
    dom_names = [d.name for d in DOMAINS]
    interactions = pa.table(
        {
            "user_id": pa.array([user_raw[x] for x in u[order]], pa.string()),
            "item_id": pa.array([items.item_id[x] for x in it[order]], pa.string()),
            "domain": pa.array([dom_names[items.domain[x]] for x in it[order]], pa.string()),
            "timestamp": pa.array((HORIZON_START + ev["time"][order]).astype(np.int64), pa.int64()),
            "rating": pa.array(rating[order].astype(np.float32), pa.float32()),
            "review": pa.array([reviews[k] for k in order], pa.string()),
        },
        schema=INTERACTIONS_SCHEMA,
    )
    n = len(items.item_id)
    items_tbl = pa.table(
        {
            "item_id": pa.array(items.item_id, pa.string()),
            "domain": pa.array([dom_names[d] for d in items.domain], pa.string()),
            **{k: items.columns[k] for k in ("title", "category", "brand", "description", "price", "image")},
            "image_path": pa.nulls(n, pa.string()),
        },
        schema=ITEMS_SCHEMA,
    )
    info = DatasetInfo(
        name=f"builtin-{size if isinstance(size, str) else 'custom'}",
        version=GENERATOR_VERSION,
        domains=[DomainInfo(d.name, d.role) for d in DOMAINS],  # type: ignore[arg-type]
        provenance="raypipe.data.builtin: synthetic, generated deterministically "
        f"with config {dataclasses.asdict(cfg)}",
        licence="Synthetic data generated by raypipe; no third-party content.",
        extra={"config": dataclasses.asdict(cfg),
               "themes": [t.name for t in THEMES[: cfg.n_themes]],
               # ground truth for analysis only; models never read it
               "item_theme_file": ITEM_THEMES_FILE},
    )
    themes = pa.table({"item_id": items.item_id, "theme": items.theme, "theme2": items.theme2})
    return Benchmark(items_tbl, interactions, info, themes)


def write(out_dir: str | Path, size: str | BenchmarkConfig = "small", seed: int | None = None,
          show_progress: bool = False) -> Path:
    """Generate and write a canonical dataset directory atomically; returns its path."""
    b = generate(size, seed, show_progress)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        pq.write_table(b.items, tmp / ITEMS_FILE, row_group_size=4096)
        pq.write_table(b.interactions, tmp / INTERACTIONS_FILE, row_group_size=262_144)
        pq.write_table(b.item_themes, tmp / ITEM_THEMES_FILE)
        (tmp / DATASET_FILE).write_text(b.info.to_json() + "\n")
    log.info("wrote %s: %d items, %d interactions", out_dir, b.items.num_rows, b.interactions.num_rows)
    return out_dir


def existing_output(out: Path, prefix: str = "builtin-") -> DatasetInfo | None:
    """What the output directory ``out`` already holds: ``None`` when it is missing or an empty directory
    (the dataset is written there), the description of a generated benchmark whose name starts with
    ``prefix`` written earlier (kept, or regenerated when stale or forced); anything else (a file, another
    dataset, a non-empty directory without a dataset description) is a :class:`DataValidationError` naming
    ``out``: it is never overwritten."""
    if not out.exists():
        return None
    if not out.is_dir():
        raise DataValidationError(f"{out} exists and is not a directory")
    if not any(out.iterdir()):
        return None
    if not (out / DATASET_FILE).is_file():
        raise DataValidationError(f"{out} is not empty and holds no dataset ({DATASET_FILE} is missing); "
                                  "choose another directory or empty it")
    info = DatasetInfo.load(out / DATASET_FILE)
    if not info.name.startswith(prefix):
        raise DataValidationError(f"{out} holds another dataset ({info.name!r}), not a {prefix}* benchmark; "
                                  "choose another directory")
    return info


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    """``python -m raypipe.data.builtin`` and ``raypipe data``; returns the exit code (2: a bad option or
    an output directory that holds something else)."""
    from raypipe.data.stats import dataset_stats, format_stats

    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    p.add_argument("--size", choices=sorted(SIZES), default="small", help="preset (default: small)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    p.add_argument("--out", type=Path, default=None, help="output directory: missing, empty or holding this "
                                                          "benchmark already (default: data/builtin-<size>)")
    p.add_argument("--force", action="store_true",
                   help="regenerate even if the directory holds it already, or holds another size or seed")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    out = args.out or Path("data") / f"builtin-{args.size}"
    try:
        info = existing_output(out)
    except DataValidationError as e:
        p.error(f"--out: {e}")
    held = None if info is None else (info.name, info.extra.get("config", {}).get("seed", args.seed))
    if held is not None and held != (f"builtin-{args.size}", args.seed) and not args.force:
        p.error(f"--out: {out} holds {held[0]} (seed {held[1]}), not builtin-{args.size} (seed {args.seed}); "
                "use --force to replace it")
    if info is not None and info.version == GENERATOR_VERSION and not args.force:
        log.info("%s exists; statistics of the existing copy (use --force to regenerate)", out)
    else:
        write(out, args.size, args.seed, show_progress=True)
    print(format_stats(dataset_stats(out)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
