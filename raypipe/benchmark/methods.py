"""What the leaderboard runs: its methods, the two transfer settings and the budgets.

A **method** is a table record, not code: the model overrides its runs share, whether it is pre-trained
on the setting's source data, how it is judged (``full_ranking``: the whole target catalogue and the
sampled candidates; otherwise a reranker over the first stage's shortlist) and what it needs (feature
views: a method whose views a setting lacks is reported as not applicable, with the reason).

Every run goes through :func:`raypipe.train.run.run_experiment` (IDP through its pipeline,
:func:`raypipe.pipelines.idp.run_idp`), so the same splits, users and candidates reach every method.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    #: model overrides shared by every run of the method (pre-training, fine-tuning, zero-shot)
    model: tuple[str, ...]
    #: ``False``: no training at all (POP, Random, SBERT last item): one evaluation-only run
    trains: bool = True
    #: pre-trained on the setting's source data, then fine-tuned on the target (and judged zero-shot)
    pretrained: bool = False
    #: judged by full ranking and sampled candidates; ``False``: re-ranks the first stage's shortlist
    full_ranking: bool = True
    #: ``idp``: the IDP pipeline (pre-train → CDIM → transfer → fine-tune) instead of plain runs
    pipeline: Literal["experiment", "idp"] = "experiment"
    #: modalities the method reads (``text``, ``image``: not applicable where the data has none; the
    #: missing-modality check takes each away from every feature view of it the run reads)
    views: tuple[str, ...] = ()
    #: an epoch is one row per event (PreRec), not one per sequence window: the budget's event epochs
    per_event: bool = False
    #: a language-model method: the budget's training-row and epoch caps apply (hours per epoch on a CPU)
    language_model: bool = False
    #: extra overrides of the fine-tuning (or only) run
    finetune: tuple[str, ...] = ()
    #: the target run trains to early stopping (the budget's converge epochs and patience), not to the
    #: fine-tuning cap every other method shares
    converge: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("random", "seeded random ranking", ("model.name=random",), trains=False),
    Method("pop", "training interaction count", ("model.name=pop",), trains=False),
    Method("sbert_last", "SBERT last item: the frozen text vector of the last item",
           ("model.name=content_last_item",), trains=False, views=("text",)),
    Method("gru4rec", "GRU4Rec on the target, item IDs", ("model.name=gru4rec", "model.loss=ce")),
    Method("sasrec", "SASRec on the target, item IDs", ("model.name=sasrec", "model.loss=ce")),
    Method("sasrec_converged", "SASRec on the target, trained to early stopping (not the shared epoch cap)",
           ("model.name=sasrec", "model.loss=ce"), converge=True),
    Method("bert4rec", "BERT4Rec on the target, item IDs", ("model.name=bert4rec",)),
    Method("idp", "IDP: SASRec pre-trained on the sources, target ID rows through CDIM", (),
           pretrained=True, pipeline="idp", views=("text",)),
    Method("unisrec", "UniSRec: text MoE adaptor, contrastive pre-training",
           ("model.name=unisrec", "data.flow=domain"), pretrained=True, views=("text",)),
    Method("unim2rec", "UniM2Rec: text, image and cross views over mixed flows", ("model.name=unim2rec", "data.flow=mixed"),
           pretrained=True, views=("text", "image")),
    Method("prerec", "PreRec: causal pre-training, domain and popularity confounders", ("model.name=prerec",),
           pretrained=True, views=("text",), per_event=True),
    Method("upsr", "UPSR: next item as text generation (MiniLM encoder-decoder)",
           ("model.name=upsr", "model.backbone=minilm", "train.optim.warmup_steps=10"), pretrained=True,
           full_ranking=False, language_model=True),
    Method("unimp", "UniMP: SmolLM2 with gated cross-attention to item images, recommendation task",
           ("model.name=unimp", "model.tasks=[rec]", "data.event_attrs=[ratings, reviews]"),
           full_ranking=False, language_model=True, views=("image",)),
)}
#: the reference of every paired test and the first stage of the rerankers
REFERENCE = "sasrec"


@dataclass(frozen=True)
class Setting:
    """A transfer task: pre-train on ``source`` (its source domains), judge on ``target``'s target domains."""

    name: str
    source: str
    #: ``None``: the target domains of ``source`` itself (one dataset with source and target domains)
    target: str | None = None
    #: views no item of this setting has (methods that need them are not applicable)
    missing_views: tuple[str, ...] = ()

    @property
    def target_dataset(self) -> str:
        return self.target or self.source


def settings(size: str) -> dict[str, Setting]:
    """``builtin`` (the embedded benchmark of ``size``) and ``movielens`` (ML-1M → ML-100k by titles)."""
    return {"builtin": Setting(f"builtin-{size}", f"builtin:{size}"),
            "movielens": Setting("ml1m-ml100k", "movielens:ml-1m", "movielens:ml-100k", missing_views=("image",))}


@dataclass(frozen=True)
class Budget:
    name: str
    pretrain_epochs: int
    finetune_epochs: int
    patience: int
    #: PreRec: epochs over one row per event (an ML-1M epoch is about 400,000 rows)
    event_epochs: int
    valid_users: int
    #: validation users of the language-model methods (each scores 101 candidates per user)
    lm_valid_users: int
    #: judged users per target domain (the same seeded sample for every method); ``None``: all
    test_users: int | None
    #: language-model methods: training rows per epoch (a seeded sample) and epochs
    lm_rows: int
    lm_epochs: int
    #: the first stage's shortlist re-ranked by the rerankers
    rerank_top_n: int
    #: methods with ``converge``: an epoch cap and patience that let the target run stop by itself
    converge_epochs: int = 200
    converge_patience: int = 10
    #: negatives of the sampled protocol (a domain where some user has fewer untouched items skips it)
    n_neg: int = 100
    hidden: int = 64
    batch_size: int = 256


BUDGETS: dict[str, Budget] = {b.name: b for b in (
    # every method once, in minutes on `tiny` (the end-to-end test)
    Budget("quick", pretrain_epochs=1, finetune_epochs=1, patience=1, event_epochs=1, valid_users=50,
           lm_valid_users=5, test_users=20, lm_rows=16, lm_epochs=1, rerank_top_n=10, n_neg=20, hidden=32,
           converge_epochs=1, converge_patience=1),
    # a 2-CPU machine's budget: the short runs of docs/RESULTS.md
    Budget("short", pretrain_epochs=6, finetune_epochs=8, patience=3, event_epochs=2, valid_users=1000,
           lm_valid_users=30, test_users=300, lm_rows=200, lm_epochs=2, rerank_top_n=20),
    # the papers' early stopping (patience 10), every test user; language models still capped
    Budget("paper", pretrain_epochs=30, finetune_epochs=100, patience=10, event_epochs=10, valid_users=2000,
           lm_valid_users=200, test_users=None, lm_rows=5000, lm_epochs=5, rerank_top_n=50),
)}


def check_methods(names: list[str]) -> list[str]:
    """``names`` in table order after the reference (always run: the paired tests and the rerankers need it); unknown names raise naming them and the choices."""
    unknown = sorted(set(names) - set(METHODS))
    if unknown:
        raise ValueError(f"--methods: unknown {unknown}; choose from {list(METHODS)}")
    chosen = set(names) | {REFERENCE}
    return [REFERENCE] + [m for m in METHODS if m in chosen and m != REFERENCE]


def not_applicable(method: Method, setting: Setting) -> str | None:
    """Why ``method`` cannot run on ``setting`` (``None``: it can)."""
    missing = sorted(set(method.views) & set(setting.missing_views))
    if missing:
        return f"{setting.name} has no {'/'.join(missing)} features (needed by {method.name})"
    return None
