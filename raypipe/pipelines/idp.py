"""The whole IDP pipeline: pre-train → CDIM → transfer → fine-tune → evaluate (IDP §2, §3).

Stages (each resumable: a stage whose output exists is reused):

1. **features**: the item text view with the Ray Data extraction pipeline (packaged MiniLM);
2. **pretrain**: SASRec with BPR on the merged source domains (eq. 2–3), one Ray Train run;
3. **cdim**: the sentence encoder tuned with SimCSE + behaviour CL (eq. 4–7) through the same Ray
   Train loop; positives = top-k neighbours by pre-trained ID embedding;
4. **transfer**: CDIM vectors of every item, an hnswlib index over the source items, and for every
   target item the similarity-weighted mean of its top-m source ID embeddings (eq. 8–9);
5. **variants**: fine-tuning runs on the target domains (§2.6 modes, ablations, IDP_ID+t, baselines),
   each a ``finetune`` run of :func:`raypipe.train.run.run_experiment`;
6. **report**: sampled (99 negatives: HR@1/3/5, NDCG@1/3/5, MRR) and full-ranking metrics per target
   domain and variant, as JSON, Markdown and a PNG.

Deviation from the paper, on purpose: the paper fine-tunes each downstream domain separately; here
the target domains are fine-tuned together (one run per variant, metrics reported per domain) to fit
a 2-CPU budget.  The target item ID table is shared by construction (items are namespaced by domain).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from raypipe.config import load_config
from raypipe.data.dataset import CanonicalDataset
from raypipe.data.prepare import prepare
from raypipe.data.registry import resolve_dataset
from raypipe.data.sequences import ItemIndex
from raypipe.data.text import render
from raypipe.io import write_json_atomic, write_parquet_atomic, write_text_atomic
from raypipe.eval.metrics import ndcg
from raypipe.eval.significance import paired_bootstrap
from raypipe.models.cdim import CDIM, CDIMConfig, CDIMFactory, CDIMValidator, id_neighbours
from raypipe.models.idp import ITEM_TABLE_KEY, generate_id_embeddings, transplant
from raypipe.train.loop import TrainPayload
from raypipe.train.run import (
    CONFIG_FILE, INDEX_FILE, METRICS_FILE, WEIGHTS_FILE, best_weights, evaluate_domains, fit, load_run, run_experiment,
)

log = logging.getLogger(__name__)

#: every variant the pipeline knows, in report order
VARIANTS: dict[str, str] = {
    "sasrec_scratch": "SASRec trained from scratch on the target domains",
    "idp_zero_shot": "IDP deployed as is: pre-trained encoder + generated IDs, no tuning (§2.6 mode 1)",
    "idp": "IDP: pre-trained encoder + generated IDs, both fine-tuned (§2.6 mode 2)",
    "idp_bert4rec": "IDP with a new encoder: BERT4Rec from scratch on generated IDs (§2.6 mode 3)",
    "idp_wo_m": "ablation w/o M: pre-trained encoder, target IDs random (no CDIM)",
    "idp_wo_bcl": "ablation w/o BCL: CDIM = the encoder without behaviour tuning",
    "idp_wo_bcl_zero_shot": "w/o BCL deployed as is: IDs generated from the untuned encoder's neighbours, no tuning",
    "idp_wo_ps": "ablation w/o PS: generated IDs, sequential encoder from scratch",
    "idp_id_t_zero_shot": "IDP_ID+t deployed as is: generated IDs + PCA text vectors, no tuning",
    "idp_id_t": "IDP_ID+t: generated IDs + PCA text vectors (added), fine-tuned",
}
MAIN_VARIANTS = ["sasrec_scratch", "idp_zero_shot", "idp", "idp_wo_m"]
NEEDS_CDIM = {"idp_zero_shot", "idp", "idp_bert4rec", "idp_wo_ps", "idp_id_t_zero_shot", "idp_id_t"}


@dataclass
class IDPConfig:
    dataset: str = "builtin:small"
    #: a different dataset to transfer to (e.g. ``movielens:ml-100k`` from ``movielens:ml-1m``); ``None``:
    #: the target domains of ``dataset``
    target_dataset: str | None = None
    storage_path: str = "runs"
    name: str = "idp"
    variants: list[str] = field(default_factory=lambda: list(MAIN_VARIANTS))
    top_m: int = 10  # eq. 8
    hidden: int = 64  # IDP §3.2: embedding size 64
    num_workers: int = 1
    torch_threads: int = 2
    pretrain: list[str] = field(default_factory=lambda: [
        "model.name=sasrec", "model.loss=bpr", "train.batch_size=256", "train.lr=1e-3", "train.epochs=12",
        "train.patience=3", "train.valid_users=3000"])
    finetune: list[str] = field(default_factory=lambda: [
        "train.batch_size=256", "train.lr=1e-3", "train.epochs=12", "train.patience=3",
        "train.valid_users=3000"])
    cdim: CDIMConfig = field(default_factory=CDIMConfig)
    cdim_train: list[str] = field(default_factory=lambda: [
        "train.epochs=1", "train.batch_size=128", "train.lr=5e-5", "train.patience=2"])
    cdim_valid_share: float = 0.05
    #: behaviour positives per source item and epoch (≤ k_neighbours); 1 = one fixed pair per item
    cdim_pairs_per_item: int = 1
    seed: int = 0


@dataclass
class Texts:
    item_ids: list[str]
    texts: list[str]

    @classmethod
    def of(cls, dataset: Path, item_ids: list[str]) -> "Texts":
        items = CanonicalDataset.open(dataset).items(columns=["item_id", "title", "category"]).to_pandas()
        items = items.set_index("item_id").reindex(item_ids)
        return cls(item_ids, [render("plain", r) for r in items.reset_index().to_dict("records")])


def cdim_config(pairs: list[str]) -> CDIMConfig:
    """``KEY=VALUE`` pairs → a :class:`CDIMConfig` (values parsed with the field's type)."""
    fields = {f.name: f for f in dataclasses.fields(CDIMConfig)}
    values: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or key not in fields:
            raise ValueError(f"--cdim {pair!r}: expected KEY=VALUE with KEY one of {sorted(fields)}")
        kind = str(fields[key].type)
        try:
            if kind == "bool":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(raw)
                values[key] = raw.lower() in ("true", "1")
            elif kind == "int":
                values[key] = int(raw)
            elif kind == "float":
                values[key] = float(raw)
            else:
                values[key] = None if raw.lower() in ("none", "null", "") else raw
        except ValueError:
            raise ValueError(f"--cdim {pair!r}: {raw!r} is not a valid {kind}") from None
    return CDIMConfig(**values)


class IDPPipeline:
    def __init__(self, cfg: IDPConfig) -> None:
        unknown = set(cfg.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown IDP variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        if not 1 <= cfg.cdim_pairs_per_item <= cfg.cdim.k_neighbours:
            raise ValueError(f"cdim_pairs_per_item must be in [1, k_neighbours={cfg.cdim.k_neighbours}], "
                             f"got {cfg.cdim_pairs_per_item}")
        self.cfg = cfg
        self.root = Path(cfg.storage_path) / cfg.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.dataset = resolve_dataset(cfg.dataset)
        self.target = resolve_dataset(cfg.target_dataset) if cfg.target_dataset else self.dataset
        self.timings: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _exp(self, stage: str, run_name: str, extra: list[str]):
        c = self.cfg
        data = self.dataset if stage == "pretrain" else self.target
        return load_config(None, [
            f"data.dataset={data}", f"run.stage={stage}", f"run.name={run_name}",
            f"run.storage_path={self.root}", f"model.hidden={c.hidden}", f"train.num_workers={c.num_workers}",
            f"train.torch_threads={c.torch_threads}", f"train.seed={c.seed}", *extra])

    def _timed(self, key: str, t0: float) -> None:
        self.timings[key] = round(time.time() - t0, 1)
        log.info("stage %s done in %.1fs", key, self.timings[key])

    # -- stages --------------------------------------------------------------------------------
    def features(self) -> Path:
        from raypipe.features.pipeline import FeatureConfig, extract_features

        t0 = time.time()
        out = self.root / "features"
        extract_features(FeatureConfig(dataset=str(self.target), out=str(out), views=["text"]))
        self._timed("features", t0)
        return out

    def pretrain(self) -> Path:
        run = self.root / "pretrain"
        if not (run / METRICS_FILE).exists():
            t0 = time.time()
            run_experiment(self._exp("pretrain", "pretrain", self.cfg.pretrain))
            self._timed("pretrain", t0)
        return run

    def cdim(self, pre_run: Path, texts: Texts, source_ids: list[str]) -> CDIM:
        """Train CDIM (eq. 4–7) on the source items; returns it (weights saved under cdim/)."""
        c = self.cfg
        out = self.root / "cdim"
        model = CDIM(c.cdim)
        if (out / WEIGHTS_FILE).exists():
            model.load_state_dict(torch.load(out / WEIGHTS_FILE, map_location="cpu"), strict=False)
            return model.eval()
        t0 = time.time()
        pre_state = torch.load(pre_run / WEIGHTS_FILE, map_location="cpu")
        pre_index = ItemIndex.load(pre_run / INDEX_FILE)
        pos = {iid: i + 1 for i, iid in enumerate(pre_index.item_ids)}
        text_of = dict(zip(texts.item_ids, texts.texts))
        src = [i for i in source_ids if text_of.get(i)]
        emb = pre_state[ITEM_TABLE_KEY][[pos[i] for i in src]].numpy()
        nbrs = id_neighbours(emb, c.cdim.k_neighbours)
        hidden, mask = model.cache_states([text_of[i] for i in src])
        rng = np.random.default_rng(c.seed)
        valid = np.sort(rng.choice(len(src), size=max(10, int(c.cdim_valid_share * len(src))), replace=False))
        train_mask = np.ones(len(src), bool)
        train_mask[valid] = False
        anchors = np.flatnonzero(train_mask)
        # behaviour positives per anchor: `cdim_pairs_per_item` of its top-k ID neighbours that are not held
        # out (one row per (anchor, positive) pair, eq. 6)
        rows_a, rows_n = [], []
        for a in anchors:
            cand = [j for j in nbrs[a] if train_mask[j]] or [a]
            picks = [rng.choice(cand)] if c.cdim_pairs_per_item == 1 else \
                rng.choice(cand, size=min(c.cdim_pairs_per_item, len(cand)), replace=False)
            rows_a += [a] * len(picks)
            rows_n += list(picks)
        probe = np.sort(np.random.default_rng(c.seed + 1).choice(anchors, size=min(len(valid), len(anchors)),
                                                                 replace=False))
        exp = self._exp("pretrain", "cdim", ["train.metric=neighbour_recall@10", *c.cdim_train])
        factory, validator = CDIMFactory(c.cdim, hidden, mask), CDIMValidator(valid, nbrs, probe)
        untuned_all = validator(factory(), 0, 1, torch.device("cpu"))
        untuned = untuned_all["valid/neighbour_recall@10"]
        payload = TrainPayload(factory, validator, columns=("anchor", "neighbour"))
        log.info("training CDIM on %d source items (%d pairs, %d held out), k=%d; untuned encoder: neighbour "
                 "recall@10 held out %.4f, training items %.4f", len(anchors), len(rows_a), len(valid),
                 c.cdim.k_neighbours, untuned, untuned_all["fit/neighbour_recall@10"])
        result = fit(exp, out, {"anchor": np.asarray(rows_a)[:, None], "neighbour": np.asarray(rows_n)[:, None]},
                     payload)
        state, history = best_weights(result)
        model.load_state_dict(state, strict=False)
        torch.save(model.state_dict(), out / ".model.pt.tmp")
        (out / ".model.pt.tmp").replace(out / WEIGHTS_FILE)
        write_json_atomic(out / METRICS_FILE, {"history": history, "n_items": len(src), "k": c.cdim.k_neighbours,
                                               "untuned_neighbour_recall@10": untuned,
                                               "untuned_fit_neighbour_recall@10": untuned_all["fit/neighbour_recall@10"],
                                               "pairs": len(rows_a),
                                               "config": dataclasses.asdict(c.cdim)})
        self._timed("cdim", t0)
        return model.eval()

    def transfer(self, matcher: CDIM | None, tag: str, pre_run: Path, texts: Texts, source_ids: list[str],
                 target_ids: list[str]) -> dict[str, np.ndarray]:
        """CDIM vectors → hnswlib index over source items → generated IDs for target items (eq. 8–9)."""
        from raypipe.index import HNSWIndex

        out = self.root / f"transfer_{tag}"
        gen_file = out / "generated.parquet"
        if gen_file.exists():
            t = pd.read_parquet(gen_file)
            return dict(zip(t["item_id"], t["embedding"].map(np.asarray)))
        t0 = time.time()
        matcher = matcher or CDIM(self.cfg.cdim)
        text_of = dict(zip(texts.item_ids, texts.texts))
        src = [i for i in source_ids if text_of.get(i)]
        tgt = [i for i in target_ids if text_of.get(i)]
        src_vec = matcher.encode_texts([text_of[i] for i in src])
        tgt_vec = matcher.encode_texts([text_of[i] for i in tgt])
        index = HNSWIndex.build(src_vec, src, space="cosine", ef_search=max(64, 4 * self.cfg.top_m))
        index.save(out / "index")
        pre_state = torch.load(pre_run / WEIGHTS_FILE, map_location="cpu")
        pre_index = ItemIndex.load(pre_run / INDEX_FILE)
        pos = {iid: i + 1 for i, iid in enumerate(pre_index.item_ids)}
        table = pre_state[ITEM_TABLE_KEY].numpy()
        gen = generate_id_embeddings(tgt, tgt_vec, index, {i: table[pos[i]] for i in src}, self.cfg.top_m)
        write_parquet_atomic(gen_file, __import__("pyarrow").table({
            "item_id": gen.item_ids, "embedding": list(gen.embeddings),
            "neighbours": [list(map(str, r)) for r in gen.neighbours], "weights": list(gen.weights)}))
        log.info("%s: generated %d target ID embeddings from %d source items (%d target items without text)",
                 tag, len(tgt), len(src), len(target_ids) - len(tgt))
        self._timed(f"transfer_{tag}", t0)
        return gen.as_dict()

    def _pca_features(self, features: Path, index: ItemIndex) -> Path:
        """IDP_ID+t: MiniLM text vectors PCA-reduced to the ID dimension, aligned to the item index."""
        from sklearn.decomposition import PCA

        from raypipe.features.store import FeatureStore

        out = self.root / "pca_text.npy"
        if out.exists():
            return out
        vecs, present = FeatureStore.open(features).aligned("text", list(index.item_ids))
        pca = PCA(n_components=self.cfg.hidden, random_state=self.cfg.seed).fit(vecs[present])
        red = np.zeros((len(vecs) + 1, self.cfg.hidden), np.float32)
        red[1:][present] = pca.transform(vecs[present]).astype(np.float32)
        np.save(self.root / ".pca_text.tmp.npy", red)
        (self.root / ".pca_text.tmp.npy").replace(out)
        return out

    def _init(self, variant: str, state: dict[str, torch.Tensor], index_file: Path) -> Path:
        d = self.root / "init" / variant
        d.mkdir(parents=True, exist_ok=True)
        torch.save(state, d / ".model.pt.tmp")
        (d / ".model.pt.tmp").replace(d / WEIGHTS_FILE)
        (d / INDEX_FILE).write_bytes(index_file.read_bytes())
        return d

    def target_index(self, pre_run: Path) -> Path:
        """The item index of the fine-tuning runs (the pre-training one when transferring within a dataset)."""
        if self.target == self.dataset:
            return pre_run / INDEX_FILE
        out = self.root / "target_index.parquet"
        if not out.exists():
            prepare(self.target, k=self._exp("finetune", "x", self.cfg.finetune).data.k_core).index.save(out)
        return out

    def catalogue(self, pre_run: Path) -> tuple[list[str], list[str], Texts]:
        """Source items (pre-training domains), target items (to generate IDs for) and their texts."""
        pre_index = ItemIndex.load(pre_run / INDEX_FILE)
        tgt_index = ItemIndex.load(self.target_index(pre_run))
        src_info = CanonicalDataset.open(self.dataset).info
        tgt_info = CanonicalDataset.open(self.target).info
        src_domains = set(src_info.source_domains or src_info.target_domains)
        source = [i for i, d in zip(pre_index.item_ids, pre_index.domains) if d in src_domains]
        target = [i for i, d in zip(tgt_index.item_ids, tgt_index.domains) if d in set(tgt_info.target_domains)]
        if self.target == self.dataset:
            return source, target, Texts.of(self.dataset, source + target)
        a, b = Texts.of(self.dataset, source), Texts.of(self.target, target)
        return source, target, Texts(a.item_ids + b.item_ids, a.texts + b.texts)

    def run_variant(self, variant: str, pre_run: Path, generated: dict[str, dict[str, np.ndarray]],
                    pca: Path | None) -> Path:
        run = self.root / variant
        if (run / METRICS_FILE).exists():
            return run
        t0 = time.time()
        pre_state = torch.load(pre_run / WEIGHTS_FILE, map_location="cpu")
        index_file = self.target_index(pre_run)
        ids = list(ItemIndex.load(index_file).item_ids)
        pre_ids = list(ItemIndex.load(pre_run / INDEX_FILE).item_ids)
        ft = list(self.cfg.finetune)
        if variant == "sasrec_scratch":
            exp = self._exp("finetune", variant, ["model.name=sasrec", "model.loss=bpr", "run.mode=transductive", *ft])
        else:
            gen_tag = "raw" if variant.startswith("idp_wo_bcl") else "cdim"
            gen = {} if variant == "idp_wo_m" else generated[gen_tag]
            bert = variant == "idp_bert4rec"
            state, counts = transplant(pre_state, pre_ids, ids, gen, keep_encoder=variant not in ("idp_wo_ps", "idp_bert4rec"),
                                       seed=self.cfg.seed, extra_rows=1 if bert else 0)
            init = self._init(variant, state, index_file)
            mode = "zero-shot" if variant.endswith("zero_shot") else "transductive"
            extra = ["model.name=bert4rec"] if bert else ["model.name=sasrec", "model.loss=bpr"]
            if variant.startswith("idp_id_t"):
                extra += ["model.item_input=id+content", "model.content_projection=identity",
                          f"data.features={pca}"]
            exp = self._exp("finetune", variant, [*extra, f"run.init_from={init}", f"run.mode={mode}", *ft])
        run_experiment(exp)
        self._timed(variant, t0)
        return run

    def report(self, runs: dict[str, Path]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Sampled-99 and full-ranking metrics of every variant on every target domain, and paired
        bootstrap comparisons (:data:`PAIRED`) on the same test users and negatives."""
        rows: dict[str, dict[str, dict[str, float]]] = {}
        per_user: dict[str, dict[str, dict[str, np.ndarray]]] = {}  # variant -> domain -> metric -> values
        for variant, run in runs.items():
            model, prep, cfg = load_run(run)
            domains = prep.info.target_domains
            sampled_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(
                cfg.eval, protocol="sampled", n_neg=99, ks=[1, 3, 5, 10]))
            s_ranks: dict[str, np.ndarray] = {}
            f_ranks: dict[str, np.ndarray] = {}
            try:
                sampled = evaluate_domains(model, prep, domains, sampled_cfg, ranks_out=s_ranks)
            except ValueError as e:  # e.g. the tiny benchmark: a catalogue smaller than 99 negatives
                log.warning("%s: sampled-99 protocol not applicable (%s); reported as NaN", variant, e)
                nan = {k: float("nan") for k in ("hr@1", "hr@3", "hr@5", "hr@10", "ndcg@1", "ndcg@3", "ndcg@5",
                                                  "ndcg@10", "mrr")}
                sampled = {d: {**nan, "n_users": float("nan")} for d in domains}
            full_cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, protocol="full", ks=[10]))
            full = evaluate_domains(model, prep, domains, full_cfg, ranks_out=f_ranks)
            rows[variant] = {d: {**{f"s_{k}": v for k, v in sampled[d].items()},
                                 **{f"full_{k}": v for k, v in full[d].items()}} for d in domains}
            per_user[variant] = {d: {"full_ndcg@10": ndcg(f_ranks[d], 10),
                                     **({"s_ndcg@5": ndcg(s_ranks[d], 5)} if d in s_ranks else {})}
                                 for d in domains}
        return rows, paired_comparisons(per_user)


#: (A, B) variant pairs compared per user by :func:`paired_comparisons`: the paper's claims and ablations
PAIRED: list[tuple[str, str]] = [
    ("idp", "sasrec_scratch"), ("idp", "idp_wo_m"), ("idp", "idp_wo_bcl"),
    ("idp_zero_shot", "idp_wo_bcl_zero_shot"), ("idp_wo_ps", "idp"), ("idp_id_t", "idp"),
]


def paired_comparisons(per_user: dict[str, dict[str, dict[str, np.ndarray]]], seed: int = 0) -> dict[str, Any]:
    """``{"A vs B": {domain: {metric: PairedDiff as dict}}}`` for every pair of :data:`PAIRED` present."""
    out: dict[str, Any] = {}
    for a, b in PAIRED:
        if a not in per_user or b not in per_user:
            continue
        out[f"{a} vs {b}"] = {
            d: {m: paired_bootstrap(per_user[a][d][m], per_user[b][d][m], seed=seed).as_dict()
                for m in per_user[a][d] if m in per_user[b].get(d, {})}
            for d in per_user[a] if d in per_user[b]}
    return out


def format_paired(paired: dict[str, Any]) -> str:
    lines = ["| Comparison | Domain | Metric | A | B | A − B | 95% CI | p |", "|---|---|---|---:|---:|---:|---|---:|"]
    for name, per_domain in paired.items():
        for d, per_metric in per_domain.items():
            for m, r in per_metric.items():
                lines.append(f"| {name} | {d} | {m.replace('s_', 'sampled ').replace('full_', 'full ')} | "
                             f"{r['mean_a']:.4f} | {r['mean_b']:.4f} | {r['diff']:+.4f} | "
                             f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}] | {r['p_value']:.3f} |")
    return "\n".join(lines)


def format_report(rows: dict[str, dict[str, dict[str, float]]]) -> str:
    cols = [("s_hr@1", "HR@1"), ("s_hr@3", "HR@3"), ("s_hr@5", "HR@5"), ("s_ndcg@3", "NDCG@3"),
            ("s_ndcg@5", "NDCG@5"), ("s_mrr", "MRR"), ("full_ndcg@10", "full NDCG@10"),
            ("full_recall@10", "full R@10")]
    lines = ["| Domain | Variant | #Users | " + " | ".join(c[1] for c in cols) + " |",
             "|---|---|---:|" + "---:|" * len(cols)]
    domains = sorted({d for per in rows.values() for d in per})
    for d in domains:
        for variant, per in rows.items():
            if d in per:
                m = per[d]
                lines.append(f"| {d} | {variant} | {int(m['full_n_users']):,} | " +
                             " | ".join(f"{m[c]:.4f}" for c, _ in cols) + " |")
    return "\n".join(lines)


def plot_report(rows: dict[str, dict[str, dict[str, float]]], path: Path, metric: str = "s_ndcg@5") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raypipe.io import atomic_path

    domains = sorted({d for per in rows.values() for d in per})
    variants = list(rows)
    fig, ax = plt.subplots(figsize=(1.6 + 1.3 * len(domains) * max(1, len(variants)) / 3, 3.4))
    width = 0.8 / len(variants)
    for j, v in enumerate(variants):
        ax.bar(np.arange(len(domains)) + j * width, [rows[v].get(d, {}).get(metric, 0) for d in domains],
               width, label=v)
    ax.set_xticks(np.arange(len(domains)) + 0.4 - width / 2, domains)
    ax.set_ylabel(metric.replace("s_", "") + " (99 sampled negatives)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def training_summary(runs: dict[str, Path]) -> dict[str, dict[str, Any]]:
    """Per trained variant: epochs run, best epoch and its validation NDCG@10 (full ranking), and whether
    early stopping ended the run (``False``: it hit the epoch budget, i.e. it may not have converged)."""
    out: dict[str, dict[str, Any]] = {}
    for variant, run in runs.items():
        m = json.loads((run / METRICS_FILE).read_text())
        hist = m.get("history") or []
        if not hist:
            continue  # zero-shot: nothing trained
        cfg = load_config(run / CONFIG_FILE)
        best = max(hist, key=lambda h: h.get("valid/ndcg@10", float("-inf")))
        out[variant] = {"epochs": len(hist), "best_epoch": int(best["epoch"]),
                        "best_valid_ndcg@10": float(best["valid/ndcg@10"]),
                        "early_stopped": len(hist) < cfg.train.epochs, "max_epochs": cfg.train.epochs,
                        "patience": cfg.train.patience,
                        "curve": [float(h.get("valid/ndcg@10", float("nan"))) for h in hist]}
    return out


def plot_curves(summary: dict[str, dict[str, Any]], path: Path) -> None:
    """Validation NDCG@10 (full ranking) per fine-tuning epoch of every trained variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raypipe.io import atomic_path

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for variant, s in summary.items():
        line, = ax.plot(range(len(s["curve"])), s["curve"], label=variant, lw=1.2)
        ax.plot([s["best_epoch"]], [s["best_valid_ndcg@10"]], "o", color=line.get_color(), ms=4)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("valid NDCG@10 (full ranking)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def run_idp(cfg: IDPConfig) -> dict[str, Any]:
    """Run every stage and the selected variants; writes results.{json,md,png} under the pipeline dir."""
    t_all = time.time()
    p = IDPPipeline(cfg)
    features = p.features()
    pre_run = p.pretrain()
    source, target, texts = p.catalogue(pre_run)
    tgt_index = ItemIndex.load(p.target_index(pre_run))
    generated: dict[str, dict[str, np.ndarray]] = {}
    if NEEDS_CDIM & set(cfg.variants):
        matcher = p.cdim(pre_run, texts, source)
        generated["cdim"] = p.transfer(matcher, "cdim", pre_run, texts, source, target)
    if any(v.startswith("idp_wo_bcl") for v in cfg.variants):
        generated["raw"] = p.transfer(None, "raw", pre_run, texts, source, target)
    pca = p._pca_features(features, tgt_index) if any(v.startswith("idp_id_t") for v in cfg.variants) else None
    runs = {v: p.run_variant(v, pre_run, generated, pca) for v in cfg.variants}
    t0 = time.time()
    rows, paired = p.report(runs)
    training = training_summary(runs)
    p._timed("report", t0)
    total = round(time.time() - t_all, 1)
    result = {"dataset": str(p.dataset), "target_dataset": str(p.target), "variants": {v: VARIANTS[v] for v in cfg.variants}, "results": rows,
              "paired": paired, "training": training, "timings_s": p.timings, "total_s": total, "config": dataclasses.asdict(cfg)}
    write_json_atomic(p.root / "results.json", result)
    md = format_report(rows) + "\n"
    if paired:
        md += "\nPaired bootstrap over test users (10,000 resamples; A − B, two-sided p):\n\n" + format_paired(paired) + "\n"
    write_text_atomic(p.root / "results.md", md)
    plot_report(rows, p.root / "results.png")
    if training:
        plot_curves(training, p.root / "curves.png")
    return result
