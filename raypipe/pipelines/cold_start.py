"""Inner-domain cold start with IDP (IDP §3.8, RQ5, Table 7).

"For a domain A, we first train a sequential model. Then we use our IDP to generalize ID embedding for
cold items (without any interaction). Last we directly evaluate the model's performance on cold items
without any tuning operation. Here, we randomly select 10% items as cold items and remove them from the
training dataset."

Here: a seeded ``cold_share`` of the items of each evaluated domain becomes cold; a *warm* copy of the
dataset without any interaction of a cold item is written; SASRec-BPR is trained on the warm copy (the
evaluated domains, jointly); CDIM is trained on the warm items (behaviour neighbours from the warm ID
table); each cold item gets the similarity-weighted mean of its top-m warm items' ID embeddings (eq.
8–9, through the hnswlib index) *of its own domain*.  The model — untouched otherwise — is then evaluated on the *full*
dataset's test users whose held-out item is cold (and, for reference, on those whose item is warm),
99 sampled negatives and full ranking.  Rows compared on the same users:

* ``idp_inner``: cold rows generated through CDIM (the paper's IDP^Inner);
* ``idp_inner_wo_bcl``: cold rows generated through the sentence encoder without behaviour tuning;
* ``random_cold``: cold rows random at the ID table's scale (what a plain ID model has for new items);
* ``random``: the Random recommender (chance level of the protocol).
"""
from __future__ import annotations

import dataclasses
import logging
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from raypipe.config import ExperimentConfig, load_config
from raypipe.data.prepare import Prepared, prepare
from raypipe.data.registry import resolve_dataset
from raypipe.data.schema import DATASET_FILE, INTERACTIONS_FILE, ITEMS_FILE
from raypipe.data.sequences import ItemIndex
from raypipe.eval.protocols import evaluate
from raypipe.meta import run_meta
from raypipe.io import atomic_dir, write_json_atomic, write_parquet_atomic, write_text_atomic
from raypipe.models.cdim import CDIMConfig
from raypipe.models.idp import transplant
from raypipe.models.pop import RandomConfig
from raypipe.models.registry import build_model
from raypipe.pipelines.idp import IDPConfig, IDPPipeline, Texts
from raypipe.data.catalogue import ItemCatalogue
from raypipe.rundir import CONFIG_FILE, INDEX_FILE, load_weights
from raypipe.storage import reject_uri

log = logging.getLogger(__name__)

ROWS = ("idp_inner", "idp_inner_wo_bcl", "random_cold", "random")


@dataclass
class ColdStartConfig:
    dataset: str = "builtin:small"
    #: domains whose items go cold and are evaluated (``None``: the dataset's target domains, else all)
    domains: list[str] | None = None
    cold_share: float = 0.1  # IDP §3.8: 10% of the items
    storage_path: str = "runs"
    name: str = "idp-cold"
    top_m: int = 10
    #: the SASRec-BPR run on the warm copy, CDIM and its Ray Train run: IDP's stage configs
    train: ExperimentConfig = field(default_factory=lambda: IDPConfig().pretrain)
    cdim: CDIMConfig = field(default_factory=CDIMConfig)
    cdim_train: ExperimentConfig = field(default_factory=lambda: IDPConfig().cdim_train)
    seed: int = 0
    #: sampled protocol: negatives per user (IDP: 99); tiny catalogues need fewer
    n_neg: int = 99

    def __post_init__(self) -> None:
        reject_uri(self.storage_path, "the inner-domain cold-start pipeline")
        if not 0.0 < self.cold_share < 1.0:
            raise ValueError(f"cold_share must be in (0, 1), got {self.cold_share}")


def pick_cold_items(index: ItemIndex, domains: list[str], share: float, seed: int) -> list[str]:
    """A seeded ``share`` of each domain's items (at least one per domain), sorted."""
    rng = np.random.default_rng(seed)
    cold: list[str] = []
    for d in domains:
        ids = [str(index.item_ids[i - 1]) for i in index.domain_items(d)]
        n = max(1, int(round(share * len(ids))))
        cold += list(rng.choice(ids, size=n, replace=False))
    return sorted(cold)


def write_warm_copy(src: Path, dst: Path, cold: list[str]) -> int:
    """``src`` without any interaction of a ``cold`` item (items table unchanged), atomically.  Returns the
    number of interactions removed."""
    with atomic_dir(dst) as tmp:
        for name in (ITEMS_FILE, DATASET_FILE):
            shutil.copy2(src / name, tmp / name)
        inter = pq.read_table(src / INTERACTIONS_FILE)
        keep = pc.invert(pc.is_in(inter.column("item_id"), value_set=__import__("pyarrow").array(cold)))
        warm = inter.filter(keep)
        write_parquet_atomic(tmp / INTERACTIONS_FILE, warm)
    return inter.num_rows - warm.num_rows


def _model_with_rows(warm: tuple[dict[str, torch.Tensor], list[str], ExperimentConfig], prep: Prepared,
                     generated: dict[str, np.ndarray], seed: int) -> torch.nn.Module:
    """The warm-trained model re-indexed to the full dataset, cold rows from ``generated`` (others random)."""
    warm_state, pre_ids, cfg = warm
    state, counts = transplant(warm_state, pre_ids, list(prep.index.item_ids), generated, seed=seed)
    model = build_model(cfg.model, ItemCatalogue(prep.index, prep.counts))
    model.load_state_dict(state)
    log.info("cold-start model rows: %s", counts)
    return model.eval()


def _random_model(prep: Prepared) -> torch.nn.Module:
    return build_model(RandomConfig(), ItemCatalogue(prep.index, prep.counts)).eval()


def evaluate_cold(model: torch.nn.Module, prep: Prepared, domains: list[str], cold: set[str], max_len: int,
                  seed: int, n_neg: int = 99) -> dict[str, dict[str, dict[str, float]]]:
    """Per domain and user group (``cold`` / ``warm`` held-out item): sampled (``n_neg`` negatives) and
    full-ranking metrics."""
    cold_rows = np.array([False] + [str(i) in cold for i in prep.index.item_ids])
    out: dict[str, dict[str, dict[str, float]]] = {}
    for d in domains:
        es = prep.eval_set("test", d, max_len)
        for group, rows in (("cold", cold_rows[es.target]), ("warm", ~cold_rows[es.target])):
            sub = es.subset(rows)
            if sub.n_users == 0:
                continue
            s = evaluate(model.score, sub, protocol="sampled", n_neg=n_neg, ks=(1, 5, 10), seed=seed)
            f = evaluate(model.score, sub, protocol="full", ks=(10,), seed=seed)
            out.setdefault(d, {})[group] = {**{f"s_{k}": v for k, v in s.items()},
                                             **{f"full_{k}": v for k, v in f.items()}}
    return out


def run_cold_start(cfg: ColdStartConfig) -> dict[str, Any]:
    """Run the experiment; writes ``cold_start.{json,md}`` under ``<storage_path>/<name>/``."""
    t_all = time.time()
    full_path = resolve_dataset(cfg.dataset)
    prep = prepare(full_path, k=cfg.train.data.k_core)
    domains = cfg.domains or [d for d in prep.info.target_domains if d in set(prep.domains)] or sorted(set(prep.domains))
    cold = pick_cold_items(prep.index, domains, cfg.cold_share, cfg.seed)
    root = Path(cfg.storage_path) / cfg.name
    warm_path = root / "warm_data"
    if not (warm_path / INTERACTIONS_FILE).exists():
        removed = write_warm_copy(full_path, warm_path, cold)
        log.info("%d cold items in %s; warm copy without their %d interactions: %s", len(cold), domains,
                 removed, warm_path)
    train = dataclasses.replace(cfg.train, data=dataclasses.replace(cfg.train.data, domains=list(domains)))
    pipe = IDPPipeline(IDPConfig(
        dataset=str(warm_path), storage_path=cfg.storage_path, name=cfg.name, top_m=cfg.top_m, seed=cfg.seed,
        cdim=cfg.cdim, cdim_train=cfg.cdim_train, pretrain=train, finetune=train, variants=[]))
    pre_run = pipe.pretrain()  # SASRec-BPR on the warm copy of the evaluated domains
    warm_index = ItemIndex.load(pre_run / INDEX_FILE)
    in_domains = set(domains)
    warm_ids = [str(i) for i, d in zip(warm_index.item_ids, warm_index.domains) if d in in_domains]
    cold_set = set(cold)
    leaked = cold_set & set(map(str, warm_index.item_ids))
    if leaked:
        raise RuntimeError(f"cold items {sorted(leaked)[:5]} have interactions in the warm copy")
    texts = Texts.of(full_path, warm_ids + cold)
    # inner-domain: a cold item's neighbours are warm items of its own domain
    domain_of = {str(i): str(d) for i, d in zip(prep.index.item_ids, prep.index.domains)}
    generated = {"cdim": pipe.transfer(pipe.cdim(pre_run, texts, warm_ids), "cdim", pre_run, texts, warm_ids, cold,
                                       domain_of),
                 "raw": pipe.transfer(None, "raw", pre_run, texts, warm_ids, cold, domain_of)}
    warm_cfg = load_config(pre_run / CONFIG_FILE)
    warm = (load_weights(pre_run), list(warm_index.item_ids), warm_cfg)
    max_len = warm_cfg.data.max_len
    models = {"idp_inner": _model_with_rows(warm, prep, generated["cdim"], cfg.seed),
              "idp_inner_wo_bcl": _model_with_rows(warm, prep, generated["raw"], cfg.seed),
              "random_cold": _model_with_rows(warm, prep, {}, cfg.seed),
              "random": _random_model(prep)}
    results = {name: evaluate_cold(m, prep, domains, cold_set, max_len, cfg.seed, cfg.n_neg) for name, m in models.items()}
    out = {"dataset": str(full_path), "domains": domains, "cold_items": cold, "cold_share": cfg.cold_share, "n_cold": len(cold),
           "cold_without_text": len(cold) - len(generated["cdim"]), "results": results,
           "timings_s": {**pipe.timings, "total": round(time.time() - t_all, 1)},
           "config": dataclasses.asdict(cfg), "meta": run_meta({"train": cfg.seed})}
    write_json_atomic(root / "cold_start.json", out)
    write_text_atomic(root / "cold_start.md", format_cold_start(results) + "\n")
    return out


def format_cold_start(results: dict[str, dict[str, dict[str, dict[str, float]]]]) -> str:
    cols = [("s_hr@5", "HR@5"), ("s_ndcg@5", "NDCG@5"), ("s_hr@10", "HR@10"), ("s_ndcg@10", "NDCG@10"),
            ("full_ndcg@10", "full NDCG@10")]
    lines = ["| Domain | Test item | Model | #Users | " + " | ".join(c for _, c in cols) + " |",
             "|---|---|---|---:|" + "---:|" * len(cols)]
    domains = sorted({d for per in results.values() for d in per})
    for d in domains:
        for group in ("cold", "warm"):
            for name, per in results.items():
                m = per.get(d, {}).get(group)
                if m:
                    lines.append(f"| {d} | {group} | {name} | {int(m['s_n_users']):,} | "
                                 + " | ".join(f"{m[k]:.4f}" for k, _ in cols) + " |")
    return "\n".join(lines)
