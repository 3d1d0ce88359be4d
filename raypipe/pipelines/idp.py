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
from typing import Any, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from raypipe.config import ExperimentConfig, ModelConfig, load_config, model_config_class, with_overrides
from raypipe.data.dataset import CanonicalDataset
from raypipe.data.prepare import prepare_for
from raypipe.data.registry import resolve_dataset
from raypipe.data.sequences import ItemIndex
from raypipe.data.text import render
from raypipe.io import atomic_path, save_figure_atomic, write_json_atomic, write_parquet_atomic, write_text_atomic
from raypipe.eval.metrics import ndcg
from raypipe.eval.significance import paired_bootstrap
from raypipe.data.catalogue import ItemCatalogue, load_views
from raypipe.meta import run_meta
from raypipe.models.cdim import CDIM, CDIMConfig, cdim_data
from raypipe.models.idp import ITEM_TABLE_KEY, GeneratedEmbeddings, generate_id_embeddings, transplant
from raypipe.rundir import CONFIG_FILE, INDEX_FILE, METRICS_FILE, WEIGHTS_FILE, load_weights, save_weights
from raypipe.storage import reject_uri
from raypipe.train.run import evaluate_domains, load_run, run_experiment

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Variant:
    """One row of the variant table: where a fine-tuning run's target ID rows and encoder come from."""

    name: str
    description: str
    #: target ID rows: ``none`` (trained from scratch, no transfer), ``cdim`` (eq. 8–9 through the tuned
    #: CDIM), ``raw`` (eq. 8–9 through the untuned sentence encoder: w/o BCL), ``random`` (w/o M)
    ids: Literal["none", "cdim", "raw", "random"]
    #: keep the pre-trained sequential encoder (``False``: it trains from scratch, e.g. w/o PS)
    pretrained_encoder: bool = True
    #: the fine-tuned model (a new encoder such as BERT4Rec is §2.6 mode 3)
    model: Literal["sasrec", "bert4rec"] = "sasrec"
    #: ``zero-shot``: deployed as is (§2.6 mode 1), ``transductive``: everything fine-tuned (mode 2)
    mode: Literal["zero-shot", "transductive"] = "transductive"
    #: IDP_ID+t: PCA-reduced text vectors added to the ID rows
    text_features: bool = False


#: every variant the pipeline knows, in report order
VARIANT_TABLE: tuple[Variant, ...] = (
    Variant("sasrec_scratch", "SASRec trained from scratch on the target domains", "none", pretrained_encoder=False),
    Variant("idp_zero_shot", "IDP deployed as is: pre-trained encoder + generated IDs, no tuning (§2.6 mode 1)",
            "cdim", mode="zero-shot"),
    Variant("idp", "IDP: pre-trained encoder + generated IDs, both fine-tuned (§2.6 mode 2)", "cdim"),
    Variant("idp_bert4rec", "IDP with a new encoder: BERT4Rec from scratch on generated IDs (§2.6 mode 3)", "cdim",
            pretrained_encoder=False, model="bert4rec"),
    Variant("idp_wo_m", "ablation w/o M: pre-trained encoder, target IDs random (no CDIM)", "random"),
    Variant("idp_wo_bcl", "ablation w/o BCL: CDIM = the encoder without behaviour tuning", "raw"),
    Variant("idp_wo_bcl_zero_shot", "w/o BCL deployed as is: IDs generated from the untuned encoder's "
            "neighbours, no tuning", "raw", mode="zero-shot"),
    Variant("idp_wo_ps", "ablation w/o PS: generated IDs, sequential encoder from scratch", "cdim",
            pretrained_encoder=False),
    Variant("idp_id_t_zero_shot", "IDP_ID+t deployed as is: generated IDs + PCA text vectors, no tuning", "cdim",
            mode="zero-shot", text_features=True),
    Variant("idp_id_t", "IDP_ID+t: generated IDs + PCA text vectors (added), fine-tuned", "cdim", text_features=True),
)
VARIANTS: dict[str, Variant] = {v.name: v for v in VARIANT_TABLE}
MAIN_VARIANTS = ["sasrec_scratch", "idp_zero_shot", "idp", "idp_wo_m"]


def _stage(*overrides: str) -> ExperimentConfig:
    return load_config(None, list(overrides))


@dataclass
class IDPConfig:
    """The IDP pipeline: its data, its variants and the typed configs of its stages.

    ``pretrain`` / ``finetune`` / ``cdim_train`` are the ExperimentConfigs of the pre-training run, of
    every fine-tuning run (the variant sets model, mode, initialisation) and of CDIM's Ray Train run
    (its optimisation settings); the pipeline fills in the dataset and run names.  Build variations with
    :meth:`with_overrides` (dotted keys, validated, errors name the key).
    """

    dataset: str = "builtin:small"
    #: a different dataset to transfer to (e.g. ``movielens:ml-100k`` from ``movielens:ml-1m``); ``None``:
    #: the target domains of ``dataset``
    target_dataset: str | None = None
    storage_path: str = "runs"
    name: str = "idp"
    variants: list[str] = field(default_factory=lambda: list(MAIN_VARIANTS))
    top_m: int = 10  # eq. 8
    pretrain: ExperimentConfig = field(default_factory=lambda: _stage(
        "model.name=sasrec", "model.loss=bpr", "model.hidden=64", "train.batch_size=256", "train.lr=1e-3",
        "train.epochs=12", "train.patience=3", "train.valid_users=3000", "train.torch_threads=2"))
    finetune: ExperimentConfig = field(default_factory=lambda: _stage(
        "model.name=sasrec", "model.loss=bpr", "model.hidden=64", "train.batch_size=256", "train.lr=1e-3",
        "train.epochs=12", "train.patience=3", "train.valid_users=3000", "train.torch_threads=2"))
    cdim: CDIMConfig = field(default_factory=CDIMConfig)
    cdim_train: ExperimentConfig = field(default_factory=lambda: _stage(
        "train.epochs=1", "train.batch_size=128", "train.lr=5e-5", "train.patience=2", "train.torch_threads=2"))
    seed: int = 0
    #: the name of a finished pipeline under the same ``storage_path`` whose features, pre-training, CDIM
    #: and transfer this one copies instead of recomputing (e.g. more fine-tuning seeds over one
    #: pre-training); refused unless that pipeline's config agrees on every setting those stages depend on
    shared_from: str | None = None

    def __post_init__(self) -> None:
        reject_uri(self.storage_path, "the IDP pipeline")
        unknown = set(self.variants) - set(VARIANTS)
        if unknown:
            raise ValueError(f"unknown IDP variants {sorted(unknown)}; choose from {list(VARIANTS)}")
        if not 1 <= self.cdim.pairs_per_item <= self.cdim.k_neighbours:
            raise ValueError(f"cdim.pairs_per_item must be in [1, k_neighbours={self.cdim.k_neighbours}], "
                             f"got {self.cdim.pairs_per_item}")
        if self.shared_from == self.name:
            raise ValueError(f"shared_from names this pipeline itself ({self.name!r})")
        hp, hf = getattr(self.pretrain.model, "hidden", None), getattr(self.finetune.model, "hidden", None)
        if hp != hf:
            raise ValueError(f"finetune model.hidden ({hf}) must equal pretrain model.hidden ({hp}): the "
                             "generated rows live in the pre-trained ID space")

    @property
    def hidden(self) -> int:
        return int(self.pretrain.model.hidden)

    def with_overrides(self, pretrain: Sequence[str] = (), finetune: Sequence[str] = (),
                       cdim_train: Sequence[str] = (), cdim: Sequence[str] = (), both: Sequence[str] = ()) -> "IDPConfig":
        """A copy with dotted overrides of the stages (``both``: pre-training and fine-tuning alike)."""
        return dataclasses.replace(
            self, pretrain=with_overrides(self.pretrain, [*both, *pretrain]),
            finetune=with_overrides(self.finetune, [*both, *finetune]),
            cdim_train=with_overrides(self.cdim_train, list(cdim_train)),
            cdim=with_overrides(self.cdim, list(cdim), "cdim"))


#: the config fields the shareable stages depend on, and those stages' outputs under a pipeline's root
SHARED_FIELDS = ("dataset", "target_dataset", "pretrain", "cdim", "cdim_train", "top_m", "seed")
SHARED_OUTPUTS = ("features", "pretrain", "cdim", "cdim_id_view.npy", "transfer_cdim", "transfer_raw",
                  "target_index.parquet", "pca_text.npy")


def _plain(value: Any) -> Any:
    """A config value as it reads back from ``results.json`` (tuples become lists, paths strings)."""
    return json.loads(json.dumps(value, default=str))


def shared_source(cfg: IDPConfig) -> Path | None:
    """The root of ``cfg.shared_from``, checked: it has finished (``results.json``) and its config agrees
    with ``cfg`` on :data:`SHARED_FIELDS`.  Raises ``ValueError`` naming the first field that differs."""
    if cfg.shared_from is None:
        return None
    src = Path(cfg.storage_path) / cfg.shared_from
    res = src / "results.json"
    if not res.is_file():
        raise ValueError(f"shared_from={cfg.shared_from!r}: {res} does not exist (that pipeline has not finished)")
    theirs = json.loads(res.read_text()).get("config", {})
    mine = _plain(dataclasses.asdict(cfg))
    for key in SHARED_FIELDS:
        if key not in theirs:
            raise ValueError(f"shared_from={cfg.shared_from!r}: {res} has no config field {key!r}")
        if _plain(theirs[key]) != mine[key]:
            raise ValueError(f"shared_from={cfg.shared_from!r}: its {key} differs from this pipeline's, so its "
                             f"stages are not this pipeline's ({res})")
    return src


def share_stages(cfg: IDPConfig) -> list[str]:
    """Copy the outputs of :data:`SHARED_OUTPUTS` that ``cfg.shared_from`` has and this pipeline lacks
    (each copied beside its place and renamed into it, so an interrupted copy is never taken for a stage's
    output).  Returns the names copied."""
    import shutil

    src = shared_source(cfg)
    if src is None:
        return []
    root = Path(cfg.storage_path) / cfg.name
    root.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in SHARED_OUTPUTS:
        a, b = src / name, root / name
        if not a.exists() or b.exists():
            continue
        tmp = root / f".{name}.copying"
        if tmp.is_dir():
            shutil.rmtree(tmp)
        tmp.unlink(missing_ok=True)
        if a.is_dir():
            shutil.copytree(a, tmp)
        else:
            shutil.copy2(a, tmp)
        tmp.replace(b)
        copied.append(name)
    log.info("shared from %s: %s", src, ", ".join(copied) or "nothing new")
    return copied


@dataclass
class Texts:
    item_ids: list[str]
    texts: list[str]

    @classmethod
    def of(cls, dataset: Path, item_ids: list[str]) -> "Texts":
        items = CanonicalDataset.open(dataset).items(columns=["item_id", "title", "category"]).to_pandas()
        items = items.set_index("item_id").reindex(item_ids)
        return cls(item_ids, [render("plain", r) for r in items.reset_index().to_dict("records")])


def retarget(model: ModelConfig, name: str) -> ModelConfig:
    """The config of model ``name`` carrying over every option it shares with ``model`` (a variant that
    swaps the encoder keeps the run's hidden size, dropout, window ...)."""
    cls = model_config_class(name)
    shared = {f.name: getattr(model, f.name) for f in dataclasses.fields(cls)
              if f.name != "name" and hasattr(model, f.name)}
    return cls(**shared)


class IDPPipeline:
    def __init__(self, cfg: IDPConfig) -> None:
        self.cfg = cfg
        self.root = Path(cfg.storage_path) / cfg.name
        self.root.mkdir(parents=True, exist_ok=True)
        self.dataset = resolve_dataset(cfg.dataset)
        self.target = resolve_dataset(cfg.target_dataset) if cfg.target_dataset else self.dataset
        self.timings: dict[str, float] = {}

    # -- helpers -------------------------------------------------------------------------------
    def _exp(self, base: ExperimentConfig, stage: str, run_name: str, **run: Any) -> ExperimentConfig:
        """A stage's config with the pipeline's data and run names filled in."""
        data = self.dataset if stage == "pretrain" else self.target
        return dataclasses.replace(
            base, data=dataclasses.replace(base.data, dataset=str(data)),
            run=dataclasses.replace(base.run, stage=stage, name=run_name, storage_path=str(self.root), **run))

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
            run_experiment(self._exp(self.cfg.pretrain, "pretrain", "pretrain"))
            self._timed("pretrain", t0)
        return run

    def cdim(self, pre_run: Path, texts: Texts, source_ids: list[str]) -> CDIM:
        """Train CDIM (eq. 4–7) on the source items with text: a ``cdim`` run of the registry through
        :func:`run_experiment`, whose catalogue view ``id`` holds the pre-trained ID embeddings of the
        source items (zeros elsewhere: absent).  Returns the tuned matcher (weights under ``cdim/``)."""
        c = self.cfg
        out = self.root / "cdim"
        model = CDIM(c.cdim)
        if (out / WEIGHTS_FILE).exists():
            model.load_state_dict(load_weights(out), strict=False)
            return model.eval()
        t0 = time.time()
        pre_state = load_weights(pre_run)
        pre_index = ItemIndex.load(pre_run / INDEX_FILE)
        table = pre_state[ITEM_TABLE_KEY].numpy()
        view = np.zeros((pre_index.num_embeddings, table.shape[1]), np.float32)
        rows = pre_index.lookup(source_ids)
        view[rows] = table[rows]
        id_file = self.root / "cdim_id_view.npy"
        with atomic_path(id_file) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, view)
        base = dataclasses.replace(
            with_overrides(c.cdim_train, ["train.metric=neighbour_recall@10"]),
            model=dataclasses.replace(c.cdim, seed=c.seed),
            data=dataclasses.replace(c.pretrain.data, features=str(id_file), feature_views=["id"]))
        res = run_experiment(self._exp(base, "pretrain", "cdim"))
        untuned = json.loads((out / METRICS_FILE).read_text())["untrained_valid"]
        data = cdim_data(base.model, ItemCatalogue(pre_index, views=load_views(id_file, ["id"], pre_index),
                                                   dataset=self.dataset))
        write_json_atomic(out / "summary.json", {
            "n_items": len(data.items), "held_out": len(data.valid), "pairs": len(data.anchors),
            "k": c.cdim.k_neighbours, "untuned_neighbour_recall@10": untuned["valid/neighbour_recall@10"],
            "untuned_fit_neighbour_recall@10": untuned.get("fit/neighbour_recall@10"),
            "best_neighbour_recall@10": max(h["valid/neighbour_recall@10"] for h in res.history),
            "config": dataclasses.asdict(base.model)})
        log.info("CDIM: %d items, %d pairs; neighbour recall@10 held out %.4f untuned", len(data.items),
                 len(data.anchors), untuned["valid/neighbour_recall@10"])
        model.load_state_dict(load_weights(out), strict=False)
        self._timed("cdim", t0)
        return model.eval()

    def transfer(self, matcher: CDIM | None, tag: str, pre_run: Path, texts: Texts, source_ids: list[str],
                 target_ids: list[str], domain_of: dict[str, str] | None = None) -> dict[str, np.ndarray]:
        """CDIM vectors → hnswlib index over source items → generated IDs for target items (eq. 8–9).

        With ``domain_of`` (item id → domain) each target item's neighbours come from its own domain only
        (inner-domain cold start, IDP §3.8)."""
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
        index = HNSWIndex.build(src_vec, src, space="cosine", ef_search=max(64, 4 * self.cfg.top_m),
                                domains=[domain_of[i] for i in src] if domain_of else None)
        index.save(out / "index")
        pre_state = load_weights(pre_run)
        pre_index = ItemIndex.load(pre_run / INDEX_FILE)
        pos = {iid: i + 1 for i, iid in enumerate(pre_index.item_ids)}
        table = pre_state[ITEM_TABLE_KEY].numpy()
        source_rows = {i: table[pos[i]] for i in src}
        if domain_of is None:
            gen = generate_id_embeddings(tgt, tgt_vec, index, source_rows, self.cfg.top_m)
        else:
            parts = []
            for d in sorted({domain_of[i] for i in tgt}):
                rows = [k for k, i in enumerate(tgt) if domain_of[i] == d]
                parts.append(generate_id_embeddings([tgt[k] for k in rows], tgt_vec[rows], index.within(d),
                                                    source_rows, self.cfg.top_m))
            gen = GeneratedEmbeddings.concat(parts)
        write_parquet_atomic(gen_file, pa.table({
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
        save_weights(d, state)
        (d / INDEX_FILE).write_bytes(index_file.read_bytes())
        return d

    def target_index(self, pre_run: Path) -> Path:
        """The item index of the fine-tuning runs (the pre-training one when transferring within a dataset)."""
        if self.target == self.dataset:
            return pre_run / INDEX_FILE
        out = self.root / "target_index.parquet"
        if not out.exists():
            prepare_for(self._exp(self.cfg.finetune, "finetune", "x").data).index.save(out)
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
        pre_state = load_weights(pre_run)
        index_file = self.target_index(pre_run)
        ids = list(ItemIndex.load(index_file).item_ids)
        pre_ids = list(ItemIndex.load(pre_run / INDEX_FILE).item_ids)
        v = VARIANTS[variant]
        ft = self.cfg.finetune
        model = ft.model if v.model == ft.model.name else retarget(ft.model, v.model)
        data = ft.data
        if v.text_features:
            model = dataclasses.replace(model, item_input="id+content", content_projection="identity")
            data = dataclasses.replace(data, features=str(pca), feature_views=["text"])
        base = dataclasses.replace(ft, model=model, data=data)
        if v.ids == "none":
            exp = self._exp(base, "finetune", variant, mode="transductive")
        else:
            gen = {} if v.ids == "random" else generated[v.ids]
            bert = v.model == "bert4rec"
            state, counts = transplant(pre_state, pre_ids, ids, gen, keep_encoder=v.pretrained_encoder,
                                       seed=self.cfg.seed, extra_rows=1 if bert else 0)
            init = self._init(variant, state, index_file)
            exp = self._exp(base, "finetune", variant, mode=v.mode, init_from=str(init))
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
    save_figure_atomic(fig, path)


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

    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    for variant, s in summary.items():
        line, = ax.plot(range(len(s["curve"])), s["curve"], label=variant, lw=1.2)
        ax.plot([s["best_epoch"]], [s["best_valid_ndcg@10"]], "o", color=line.get_color(), ms=4)
    ax.set_xlabel("fine-tuning epoch")
    ax.set_ylabel("valid NDCG@10 (full ranking)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    save_figure_atomic(fig, path)


def run_idp(cfg: IDPConfig) -> dict[str, Any]:
    """Run every stage and the selected variants; writes results.{json,md,png} under the pipeline dir."""
    t_all = time.time()
    share_stages(cfg)
    p = IDPPipeline(cfg)
    features = p.features()
    pre_run = p.pretrain()
    source, target, texts = p.catalogue(pre_run)
    tgt_index = ItemIndex.load(p.target_index(pre_run))
    generated: dict[str, dict[str, np.ndarray]] = {}
    chosen = [VARIANTS[v] for v in cfg.variants]
    if any(v.ids == "cdim" for v in chosen):
        matcher = p.cdim(pre_run, texts, source)
        generated["cdim"] = p.transfer(matcher, "cdim", pre_run, texts, source, target)
    if any(v.ids == "raw" for v in chosen):
        generated["raw"] = p.transfer(None, "raw", pre_run, texts, source, target)
    pca = p._pca_features(features, tgt_index) if any(v.text_features for v in chosen) else None
    runs = {v: p.run_variant(v, pre_run, generated, pca) for v in cfg.variants}
    t0 = time.time()
    rows, paired = p.report(runs)
    training = training_summary(runs)
    p._timed("report", t0)
    total = round(time.time() - t_all, 1)
    result = {"dataset": str(p.dataset), "target_dataset": str(p.target), "variants": {v: VARIANTS[v].description for v in cfg.variants}, "results": rows,
              "paired": paired, "training": training, "timings_s": p.timings, "total_s": total, "config": dataclasses.asdict(cfg),
              "meta": run_meta({"train": cfg.seed})}
    write_json_atomic(p.root / "results.json", result)
    md = format_report(rows) + "\n"
    if paired:
        md += "\nPaired bootstrap over test users (10,000 resamples; A − B, two-sided p):\n\n" + format_paired(paired) + "\n"
    write_text_atomic(p.root / "results.md", md)
    plot_report(rows, p.root / "results.png")
    if training:
        plot_curves(training, p.root / "curves.png")
    return result
