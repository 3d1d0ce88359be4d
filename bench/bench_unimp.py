"""UniMP benchmarks: what the LM costs on this machine, then the Tables 1-3 analogue on a budget.

    python bench/bench_unimp.py throughput --out bench/results/unimp
    python bench/bench_unimp.py quality --variants unimp,wo_vision --max-users 60 --epochs 2 \\
        --eval-users 50 --explain-users 10 --valid-users 40 --out bench/results/unimp
    python bench/bench_unimp.py quality --variants wo_fine_grained --reuse ...   # adds a variant
    python bench/bench_unimp.py paired --out bench/results/unimp    # unimp vs each run, per-user NDCG@10
                                           # (and re-weighting x context reconstruction when all four ran)
    python bench/bench_unimp.py serving --out bench/results/unimp   # the reranker slot, p50/p99
    python bench/bench_unimp.py report --out bench/results/unimp

``throughput``: UniMP on the packaged SmolLM2-135M (de-quantised from 4-bit) with the real image-region
view of the embedded ``tiny`` catalogue: tokens per training row by task, training tokens/s (forward +
backward of a batch of 8 rows, all tasks mixed), scoring histories/s (the ``rec`` prompt, one LM pass
each), explanation tokens/s (greedy, cached).  These set the budget of ``quality``.

``quality``: every variant is trained by ``raypipe.train.run.run_experiment`` (Ray Train, the one loop)
on the source domains of ``--dataset`` with all four tasks (rec, preference, explanation, search),
``--max-users`` training sequences (seeded subsample) x their last ``--rows-per-user`` events, for
``--epochs``; then judged on the same domains' leave-one-out test events:

* recommendation: full ranking of the domain's items (the run's own test metrics: HR@5/10, NDCG@5/10);
* preference: MAE / RMSE of the predicted 1-5 rating;
* explanation: BLEU-4 / ROUGE-1 / ROUGE-L of the greedy explanation against the user's review
  (``--explain-users`` test events with a review);
* search: the target's category as the query; rank of the target among the domain's items
  (HR/NDCG/MRR@5);
* multi-modal selection: the test sequence's last 1-3 items (the target and the ones before it) among
  6 candidates, the others items of the domain the user never took; precision / recall / F1 of the
  decoded choice (``UniMP.select``).  The same seeded prompts for every model.

Baselines on the same test events: SASRec (trained by the same job) for recommendation; the item's
mean training rating (global mean when unseen) for preference; for explanation the retrieval baseline
"the latest training review of the same item, else of an item of the same category"; for search the
category's most popular training items (query-only, not personalised); for selection, "all
candidates" and SASRec scoring the candidates (its top one; or those whose softmax over the candidates
reaches a threshold chosen for F1 on validation prompts: the paper's threshold-based baselines).

Variants: ``unimp`` (gated per-item cross-attention), ``wo_vision`` (fusion none), ``wo_fine_grained``
(early fusion: visual tokens in the input), ``wo_exclusive`` (every token sees every earlier image),
``wo_context`` (no context reconstruction), ``wo_reweight`` (gamma 0), ``wo_context_reweight`` (both),
``small_lm`` (SmolLM2's first 6 blocks: an extra row), ``last_layer_<task>`` (Table 7: the ``unimp`` run's
LM last block and final norm tuned on one task alone, ``model.tune=last_layer``; ``rec``, ``preference``,
``explanation``, ``search`` or ``selection``; the robustness, new-user and new-domain analyses of
recommendation below are run for ``last_layer_rec`` only),
``content_init`` (an extension, not the paper's: each new item token starts from the mean embedding of
its item's attribute text, ``model.item_init=content``, instead of the LM's mean embedding).

Robustness (Table 6 analogue, evaluation only, on every trained variant): recommendation NDCG@10 on
the same test users with clean inputs, with noisy text (NT: each item attribute of every item dropped
with probability 0.2, seeded) and with noisy images (NV: 20% of the items with an image get another
such item's image, a seeded permutation).  Generalisation to new users (Table 4a analogue): the test
users are split into those whose sequence was among the ``--max-users`` training sequences and the
others, never seen in training.  Generalisation to new domains (Table 4b analogue): recommendation on the
domains the run never trained on (``--dataset``'s target domains), zero-shot, the same protocol; their
items' tokens never appear in a training row, so the paper's new tokens rank them from their
initialisation; SASRec trained on the same source domains is scored in the same way.  The per-user
ranks are saved in each run as ``new_domain_ranks.json`` and ``paired`` tests ``unimp`` against every run
on them too.  ``paired`` also measures every domain's chance level (a uniformly random ranking of the
same users with the same protocol, the mean of 200 draws; ``tiny``'s domains have a few dozen items, so
HR@10 is large by chance), tests every run against each user's chance NDCG@10 on the new domains, and
splits every domain's users by whether their target repeats an item of their history (about half of
``tiny``'s: ``bench/repeat_targets.py``), each group against its chance level.

``serving``: the trained ``unimp`` run loaded as the app's ``Reranker`` deployment loads it, timed
in-process (no HTTP): rerank of 30 candidates and ``/explain`` generation, p50 / p99.

Raw results: ``<out>.json`` (each invocation merges its part) and ``<out>.md``; with new-domain results,
``<out>_domains.png`` (NDCG@10 per run on the trained and the new domains, chance level marked).
"""
from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402

log = logging.getLogger("bench_unimp")
VARIANTS: dict[str, list[str]] = {
    "unimp": [],
    "wo_vision": ["model.fusion=none"],
    "wo_fine_grained": ["model.fusion=early"],
    "wo_exclusive": ["model.exclusive=false"],
    "wo_context": ["model.context_loss=false"],
    "wo_reweight": ["model.gamma=0"],
    "wo_context_reweight": ["model.context_loss=false", "model.gamma=0"],
    "small_lm": ["model.lm_layers=6"],
    # an extension: new item tokens start from their item's attribute text (new domains, Table 4b)
    "content_init": ["model.item_init=content"],
    # Table 7: the multi-task model's LM last block (and final norm) tuned on one task, from `unimp`
    **{f"last_layer_{t}": ["model.tune=last_layer", f"model.tasks=[{t}]"]
       for t in ("rec", "preference", "explanation", "search", "selection")},
}
#: variants that start from the multi-task `unimp` run of the same seed
FROM_UNIMP = tuple(v for v in VARIANTS if v.startswith("last_layer_"))


# -- throughput -----------------------------------------------------------------------------------------


def _catalogue_and_rows(dataset: str, max_users: int):
    from raypipe.config import load_config
    from raypipe.features.ondemand import ensure_features
    from raypipe.runtime import init_ray
    from raypipe.train.run import item_catalogue, prepare_for, stage_domains
    from raypipe.data.registry import resolve_dataset

    init_ray(num_cpus=2)
    cfg = ensure_features(load_config(None, ["model.name=unimp", f"data.dataset={dataset}",
                                             f"model.max_users={max_users}"]))
    prep = prepare_for(cfg.data)
    train_domains, _ = stage_domains(cfg, prep)
    cat = item_catalogue(cfg, prep, resolve_dataset(cfg.data.dataset))
    return cfg, prep, cat, train_domains


def throughput(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from raypipe.models.registry import build_model
    from raypipe.models.unimp import TASKS, unimp_rows

    torch.set_num_threads(args.threads)
    cfg, prep, cat, domains = _catalogue_and_rows(args.dataset, 64)
    train = prep.train[prep.train["domain"].isin(domains)]
    rows = unimp_rows(cfg.model, train, cat)
    torch.manual_seed(0)
    t0 = time.time()
    model = build_model(cfg.model, cat)
    build_s = time.time() - t0
    lengths: dict[str, list[int]] = {t: [] for t in TASKS}
    for i in range(len(rows["task"])):
        t = TASKS[int(rows["task"][i])]
        ans = model.answer_tokens(t, int(rows["item"][i]), float(rows["rating"][i]),
                                  [int(x) for x in rows["answer"][i] if x >= 0])
        if ans is not None:
            lengths[t].append(len(model.build_row([int(x) for x in rows["hist"][i] if x > 0], t,
                                                  int(rows["item"][i]), ans).ids))
    batch_n = 8
    order = np.random.default_rng(0).permutation(len(rows["task"]))
    model.train()
    train_tok, train_s = 0, 0.0
    for k in range(args.batches + 1):
        idx = order[k * batch_n:(k + 1) * batch_n]
        b = {c: torch.as_tensor(v[idx]) for c, v in rows.items()}
        toks = sum(len(model.build_row([int(x) for x in b["hist"][j] if x > 0], TASKS[int(b["task"][j])],
                                       int(b["item"][j]), [0]).ids) for j in range(len(idx)))
        t0 = time.time()
        model.loss(b).backward()
        dt = time.time() - t0
        if k:  # the first batch warms up
            train_tok += toks
            train_s += dt
    model.zero_grad(set_to_none=True)
    model.eval()
    es = prep.eval_set("test", domains[0], 5)
    hist = torch.as_tensor(es.history[: args.score_users])
    with torch.no_grad():
        t0 = time.time()
        model.score(hist, torch.arange(1, cat.num_embeddings))
        score_s = time.time() - t0
    texts = model.explain(hist[:2], torch.as_tensor(es.target[:2]), max_new_tokens=16)
    # decoding speed: cached steps after the prompt, whatever the (untrained) model would emit
    gen_tokens, gen_s = 0, 0.0
    with torch.no_grad():
        for b in range(4):
            row = model.build_row([int(i) for i in es.history[b] if i > 0][-5:], "explanation", int(es.target[b]), None)
            h, mask = model._hidden([row], use_cache=True)
            t0 = time.time()
            for _ in range(16):
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=1)
                model._step(torch.tensor([model.eos]), torch.tensor([-1]), mask)
            gen_s += time.time() - t0
            gen_tokens += 16
    n_params = sum(p.numel() for p in model.parameters())
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "backbone": cfg.model.backbone, "source": model.source, "threads": args.threads, "build_seconds": build_s,
        "parameters": n_params, "trainable_parameters": n_train,
        "tokens_per_row": {t: {"mean": float(np.mean(v)), "max": int(np.max(v)), "rows": len(v)}
                           for t, v in lengths.items() if v},
        "train_tokens_per_s": train_tok / train_s, "train_rows_per_s": args.batches * batch_n / train_s,
        "score_histories_per_s": len(hist) / score_s, "score_candidates": cat.num_items,
        "explain_tokens_per_s": gen_tokens / gen_s, "explain_samples_untrained": texts,
    }


# -- quality --------------------------------------------------------------------------------------------


def _run(args: argparse.Namespace, name: str, overrides: list[str]) -> Path:
    from raypipe.config import load_config
    from raypipe.features.ondemand import ensure_features
    from raypipe.train.run import run_experiment

    run_dir = Path(args.runs) / name
    if not (args.reuse and (run_dir / "metrics.json").exists()):
        cfg = ensure_features(load_config(None, overrides + [f"run.name={name}", f"run.storage_path={args.runs}"]))
        t0 = time.time()
        run_experiment(cfg)
        log.info("%s: %.0f s", name, time.time() - t0)
    return run_dir


def _rank(scores: np.ndarray, target: int) -> int:
    """0-based rank of column ``target`` (ties count against it)."""
    return int((scores > scores[target]).sum() + (scores == scores[target]).sum() - 1)


def _at5(ranks: list[int]) -> dict[str, float]:
    r = np.asarray(ranks)
    hit = r < 5
    return {"hr@5": float(hit.mean()), "ndcg@5": float(np.where(hit, 1 / np.log2(r + 2), 0).mean()),
            "mrr@5": float(np.where(hit, 1 / (r + 1), 0).mean()), "n": len(r)}


SELECT_CANDIDATES, SELECT_POSITIVES = 6, 3


def selection_prompts(prep: Any, split: str, domain: str, n: int, history: int, seed: int
                      ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """Seeded selection prompts from ``split``'s first ``n`` sequences of ``domain`` (history + target):
    ``(hist [n, history], cands [n, E], positives)``."""
    from raypipe.models.unimp import selection_instance

    s = {"valid": prep.valid, "test": prep.test}[split]
    sub = s.subset(s.domain == domain)
    items = prep.index.domain_items(domain)
    rng = np.random.default_rng(seed)
    hs, cs, pos = [], [], []
    for h, t in list(zip(sub.history, sub.target))[:n]:
        seq = np.r_[np.asarray(h, np.int64), t]
        if len(seq) < 2:
            continue
        hist, cands, picked = selection_instance(seq, history, SELECT_CANDIDATES, SELECT_POSITIVES,
                                                 int(items.min()), int(items.max()) + 1, rng)
        hs.append(hist)
        cs.append(cands)
        pos.append(cands[picked == 1].tolist())
    return np.stack(hs), np.stack(cs), pos


NOISE_SHARE = 0.2


class _Records:
    """A stand-in catalogue for ``UniMP._texts``: the given item records."""

    def __init__(self, records: list[dict[str, Any]]) -> None:
        self._records = records

    def records(self) -> list[dict[str, Any]]:
        return self._records


def robustness(model: Any, prep: Any, cfg: Any, domains: list[str], dataset: str, seed: int) -> dict[str, Any]:
    """Recommendation NDCG@10 (full ranking, seen excluded) per domain: clean, noisy text (NT), noisy
    images (NV); the model is restored after each perturbation."""
    import torch

    from raypipe.data.catalogue import ItemCatalogue
    from raypipe.data.registry import resolve_dataset
    from raypipe.models.unimp import ATTRS
    from raypipe.train.run import evaluate_domains

    def ndcg10() -> dict[str, float]:  # the run's own test protocol
        with torch.no_grad():
            return {d: float(m["ndcg@10"]) for d, m in evaluate_domains(model, prep, domains, cfg).items()}

    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"clean": ndcg10()}
    records = ItemCatalogue(prep.index, prep.counts, dataset=resolve_dataset(dataset)).records()
    saved = (model.attr_ids, model.query_ids)
    noisy = [{k: v for k, v in r.items() if k not in ATTRS or rng.random() >= NOISE_SHARE} for r in records]
    model._texts(_Records(noisy))
    out["noisy_text"] = ndcg10()
    model.attr_ids, model.query_ids = saved
    if getattr(model, "vision", False):
        with_image = np.flatnonzero(model.has_image.cpu().numpy())
        pick = rng.choice(with_image, size=max(2, int(round(NOISE_SHARE * len(with_image)))), replace=False)
        shift = np.roll(pick, 1)  # every picked item gets another picked item's image
        original = model.regions[torch.as_tensor(pick)].clone()
        model.regions[torch.as_tensor(pick)] = model.regions[torch.as_tensor(shift)].clone()
        out["noisy_images"] = ndcg10()
        model.regions[torch.as_tensor(pick)] = original
    out["noise_share"] = NOISE_SHARE
    return out


def new_user_split(run_dir: Path, prep: Any, cfg: Any, domains: list[str], seed: int) -> dict[str, Any]:
    """Test NDCG@10 of users whose sequence trained the model and of the others (new users)."""
    from raypipe.eval.metrics import ndcg
    from raypipe.rundir import load_ranks

    train = prep.train[prep.train["domain"].isin(domains)]  # as training_rows selects them
    trained_seqs = train[train["items"].map(len) >= 2]
    if cfg.model.max_users is not None and len(trained_seqs) > cfg.model.max_users:
        keep = np.sort(np.random.default_rng(cfg.model.seed).choice(len(trained_seqs), cfg.model.max_users,
                                                                    replace=False))
        trained_seqs = trained_seqs.iloc[keep]
    seen = {(str(u), d) for u, d in zip(trained_seqs["user_id"], trained_seqs["domain"])}
    ranks = load_ranks(run_dir)
    out: dict[str, Any] = {}
    for d in domains:
        users = ranks.get(d, {})
        for group, want in (("trained_users", True), ("new_users", False)):
            r = np.array([x for u, x in users.items() if ((u, d) in seen) == want], dtype=np.float64)
            out.setdefault(d, {})[group] = {"ndcg@10": float(ndcg(r, 10).mean()) if len(r) else float("nan"),
                                            "n": int(len(r))}
    return out


NEW_DOMAIN_RANKS = "new_domain_ranks.json"


def new_domains(model: Any, prep: Any, cfg: Any, trained: list[str], run_dir: Path) -> dict[str, Any]:
    """Test metrics on the domains of ``prep`` that are not in ``trained`` (the run's own protocol, no
    training on them); their per-user ranks go to ``run_dir / NEW_DOMAIN_RANKS`` (``load_ranks`` format)."""
    import torch

    from raypipe.train.run import evaluate_domains, write_ranks

    new = [d for d in prep.domains if d not in trained]
    ranks: dict[str, np.ndarray] = {}
    with torch.no_grad():
        out = evaluate_domains(model, prep, new, cfg, ranks_out=ranks)
    write_ranks(run_dir / NEW_DOMAIN_RANKS, prep, cfg, ranks)
    return out


def chance_level(prep: Any, cfg: Any, domains: list[str], draws: int = 200) -> dict[str, Any]:
    """A uniformly random ranking on each domain's judged users, with the run's protocol (``cfg``): a
    constant score over ``draws`` tie-breaking seeds (ties are broken uniformly at random, so each draw is
    one random ranking per user). Per domain: the mean NDCG@10 and HR@10, and each user's mean NDCG@10
    (``per_user``, for paired tests). The reference for domains of a few dozen items, where HR@10 is large
    by chance."""
    import torch

    from raypipe.eval.metrics import ndcg
    from raypipe.eval.protocols import evaluate
    from raypipe.train.run import eval_protocol, judged_set

    def constant(history: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        return torch.zeros(history.shape[0], candidates.shape[-1])

    out: dict[str, Any] = {}
    for d in domains:
        es = judged_set(prep, d, cfg)
        protocol = eval_protocol(cfg, es)
        ranks = np.stack([evaluate(constant, es, protocol=protocol, ks=(10,), k_percents=(), n_neg=cfg.eval.n_neg,
                                   exclude_seen=cfg.eval.exclude_seen, seed=s, return_ranks=True)[1]
                          for s in range(draws)])
        per_user = np.stack([ndcg(r, 10) for r in ranks]).mean(axis=0)
        out[d] = {"ndcg@10": float(per_user.mean()), "hr@10": float((ranks <= 10).mean()), "n_users": int(es.n_users),
                  "draws": draws, "protocol": protocol,
                  "per_user": dict(zip((str(u) for u in es.user_ids), per_user.tolist()))}
    return out


def rank_sets(args: argparse.Namespace, runs: Any, name: str) -> dict[str, dict[str, dict[str, float]]]:
    """``{run: {domain: {user: rank}}}`` from each of ``runs`` that wrote the ranks file ``name`` (runs
    judged before that evaluation existed are left out)."""
    from raypipe.rundir import load_ranks

    dirs = {run: Path(args.runs) / f"s{args.seed}-{run}" for run in runs}
    return {run: load_ranks(d, name) for run, d in dirs.items() if (d / name).exists()}


def paired_chance(ranks: dict[str, dict[str, dict[str, float]]], chance: dict[str, Any], seed: int = 0
                  ) -> dict[str, Any]:
    """Paired bootstrap of per-user NDCG@10, each run of ``ranks`` (``{run: {domain: {user: rank}}}``) −
    the user's expected NDCG@10 under a random ranking (``chance``, from :func:`chance_level`)."""
    from raypipe.eval.metrics import ndcg
    from raypipe.eval.significance import paired_bootstrap

    out: dict[str, Any] = {}
    for name, per in ranks.items():
        out[name] = {}
        for d, users in per.items():
            common = sorted(set(users) & set(chance.get(d, {}).get("per_user", {})))
            if common:
                a = ndcg(np.array([users[u] for u in common], dtype=np.float64), 10)
                b = np.array([chance[d]["per_user"][u] for u in common])
                out[name][d] = paired_bootstrap(a, b, seed=seed).as_dict()
    return out


def new_domain_analysis(args: argparse.Namespace, q: dict[str, Any]) -> dict[str, Any]:
    """``paired``'s reading of the new-domain split (the SASRec run gives the data, protocol and domains):
    the chance level of every domain, every run against it on the new domains, and the metrics split by
    repeated targets (trained domains from the runs' test ranks, new domains from their new-domain ranks),
    each group against its chance level."""
    from raypipe.eval.repeats import split_by_repeat
    from raypipe.rundir import RANKS_FILE
    from raypipe.train.run import load_run, repeated_targets

    sas = Path(args.runs) / f"s{args.seed}-sasrec"
    _, prep, cfg = load_run(sas)
    trained = json.loads((sas / "metrics.json").read_text())["train_domains"]
    out: dict[str, Any] = {"chance_new_domains": chance_level(prep, cfg, [d for d in prep.domains if d not in trained]),
                           "chance_trained_domains": chance_level(prep, cfg, trained)}
    new_ranks = rank_sets(args, q["runs"], NEW_DOMAIN_RANKS)
    out["paired_chance_new_domains"] = paired_chance(new_ranks, out["chance_new_domains"], args.seed)
    repeats = repeated_targets(prep, list(prep.domains), cfg)
    out["by_repeat"] = {
        "trained": split_by_repeat(rank_sets(args, new_ranks, RANKS_FILE), repeats, out["chance_trained_domains"],
                                   args.seed),
        "new": split_by_repeat(new_ranks, repeats, out["chance_new_domains"], args.seed),
        "repeat_share": {d: float(np.mean(list(r.values()))) for d, r in repeats.items()}}
    return out


def task_metrics(run_dir: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Preference, explanation and search on the run's test events (the run's own rec metrics aside)."""
    import torch

    from raypipe.eval.text import text_scores
    from raypipe.train.run import load_run

    model, prep, cfg = load_run(run_dir)
    model.eval()
    domains = json.loads((run_dir / "metrics.json").read_text())["train_domains"]
    out: dict[str, Any] = {}
    for d in domains:
        test = prep.test.subset(prep.test.domain == d)
        n = min(len(test), args.eval_users)
        hist = torch.as_tensor(test.padded(cfg.model.history)[:n])
        target = torch.as_tensor(test.target[:n])
        lo, hi = prep.index.domain_items(d).min(), prep.index.domain_items(d).max() + 1
        res: dict[str, Any] = {}
        with torch.no_grad():
            rating = test.target_attrs["ratings"][:n]
            ok = np.isfinite(rating)
            pred = model.predict_rating(hist[ok], target[ok]).numpy()
            err = pred - rating[ok]
            res["preference"] = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                                 "n": int(ok.sum())}
            cands = torch.arange(lo, hi)
            s = model.search_scores(hist, target, cands).numpy()
            res["search"] = _at5([_rank(s[i], int(target[i]) - lo) for i in range(n)])
            if "selection" in cfg.model.tasks:
                from raypipe.eval.metrics import set_prf

                sh, sc, sp = selection_prompts(prep, "test", d, args.eval_users, cfg.model.history, args.seed)
                res["selection"] = set_prf(model.select(torch.as_tensor(sh), torch.as_tensor(sc)), sp)
        reviews = test.target_attrs["reviews"][:n]
        has = [i for i in range(n) if reviews[i]][: args.explain_users]
        if has:
            gen = model.explain(hist[has], target[has])
            res["explanation"] = text_scores(gen, [reviews[i] for i in has])
            res["explanation"]["samples"] = [{"generated": g, "review": reviews[i]} for g, i in zip(gen[:3], has[:3])]
        out[d] = res
    return out


def selection_baselines(sasrec: Any, prep: Any, domain: str, args: argparse.Namespace) -> dict[str, Any]:
    """Selection without an LM on UniMP's prompts: every candidate, SASRec's top candidate, and the
    candidates whose SASRec softmax (over the prompt's candidates) reaches the threshold that maximises
    F1 on validation prompts (the paper's threshold-based baselines)."""
    import torch

    from raypipe.eval.metrics import set_prf
    from raypipe.models.unimp import UniMPConfig

    history = UniMPConfig().history

    def probs(split: str) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
        h, c, pos = selection_prompts(prep, split, domain, args.eval_users, history, args.seed)
        with torch.no_grad():
            sc = sasrec.score(torch.as_tensor(h), torch.as_tensor(c)).float()
        sc[torch.as_tensor(c) == 0] = float("-inf")
        return c, torch.softmax(sc, -1).numpy(), pos

    def choose(c: np.ndarray, pr: np.ndarray, tau: float) -> list[list[int]]:
        return [[int(x) for x, q in zip(ci, pi) if x > 0 and q >= tau] for ci, pi in zip(c, pr)]

    vc, vp, vpos = probs("valid")
    grid = np.linspace(0.02, 0.9, 45)
    tau = float(max(grid, key=lambda t: set_prf(choose(vc, vp, t), vpos)["f1"]))
    c, pr, pos = probs("test")
    return {"selection_all": set_prf([[int(x) for x in ci if x > 0] for ci in c], pos),
            "selection_sasrec_top1": set_prf([[int(ci[int(np.argmax(pi))])] for ci, pi in zip(c, pr)], pos),
            "selection_sasrec_threshold": {**set_prf(choose(c, pr, tau), pos), "threshold": tau}}


def baselines(prep: Any, domains: list[str], args: argparse.Namespace, sasrec: Any = None) -> dict[str, Any]:
    """The non-LM baselines of the preference, explanation, search and selection tasks on the same test
    events (selection needs the trained ``sasrec``)."""
    from raypipe.data.catalogue import ItemCatalogue
    from raypipe.data.registry import resolve_dataset
    from raypipe.eval.text import text_scores

    cat = ItemCatalogue(prep.index, prep.counts, dataset=resolve_dataset(args.dataset))
    categories = [r.get("category") for r in cat.records()]
    sums = np.zeros(cat.num_embeddings)
    cnt = np.zeros(cat.num_embeddings)
    latest_review: dict[int, str] = {}
    for items, ratings, reviews in zip(prep.train["items"], prep.train["ratings"], prep.train["reviews"]):
        ok = np.isfinite(ratings)
        np.add.at(sums, items[ok], ratings[ok])
        np.add.at(cnt, items[ok], 1)
        for it, rv in zip(items, reviews):
            if rv:
                latest_review[int(it)] = rv
    glob = sums.sum() / max(cnt.sum(), 1)
    item_mean = np.where(cnt > 0, sums / np.maximum(cnt, 1), glob)
    by_cat: dict[Any, str] = {categories[i]: r for i, r in latest_review.items()}
    out: dict[str, Any] = {}
    for d in domains:
        test = prep.test.subset(prep.test.domain == d)
        n = min(len(test), args.eval_users)
        rating, target = test.target_attrs["ratings"][:n], test.target[:n]
        ok = np.isfinite(rating)
        res: dict[str, Any] = {}
        for name, pred in (("item_mean", item_mean[target[ok]]), ("global_mean", np.full(ok.sum(), glob))):
            err = pred - rating[ok]
            res[f"preference_{name}"] = {"mae": float(np.abs(err).mean()), "rmse": float(np.sqrt((err ** 2).mean())),
                                         "n": int(ok.sum())}
        reviews = test.target_attrs["reviews"][:n]
        has = [i for i in range(n) if reviews[i]][: args.explain_users]
        if has:
            common = max(set(latest_review.values()), key=list(latest_review.values()).count)
            guess = [latest_review.get(int(target[i]), by_cat.get(categories[int(target[i])], common)) for i in has]
            res["explanation_retrieval"] = text_scores(guess, [reviews[i] for i in has])
        items = prep.index.domain_items(d)
        lo = items.min()
        pop = prep.counts[items].astype(float)
        ranks = []
        for i in range(n):
            same = np.array([categories[j] == categories[int(target[i])] for j in items], dtype=float)
            ranks.append(_rank(same * 1e9 + pop, int(target[i]) - lo))
        res["search_category_pop"] = _at5(ranks)
        if sasrec is not None:
            res.update(selection_baselines(sasrec, prep, d, args))
        out[d] = res
    return out


SETTINGS = ("dataset", "max_users", "rows_per_user", "epochs", "eval_users", "explain_users", "seed", "threads",
            "tasks")


def quality(args: argparse.Namespace, previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The variants of ``--variants``; a ``previous`` result with the same settings keeps its other
    variants (so variants can be added one invocation at a time)."""
    from raypipe.models.unimp import UniMPConfig
    from raypipe.runtime import init_ray
    from raypipe.train.run import load_run

    init_ray(num_cpus=2)
    base = [f"data.dataset={args.dataset}", "run.stage=pretrain", f"train.seed={args.seed}",
            f"train.valid_users={args.valid_users}", "data.event_attrs=[ratings, reviews]",
            f"train.torch_threads={args.threads}", f"train.cpus_per_worker={args.threads}"]
    unimp = base + ["model.name=unimp", f"model.max_users={args.max_users}",
                    f"model.rows_per_user={args.rows_per_user}", f"train.epochs={args.epochs}",
                    f"train.batch_size={args.batch_size}"]
    res: dict[str, Any] = {"dataset": args.dataset, "max_users": args.max_users, "rows_per_user": args.rows_per_user,
                           "epochs": args.epochs, "eval_users": args.eval_users, "explain_users": args.explain_users,
                           "seed": args.seed, "threads": args.threads, "tasks": list(UniMPConfig().tasks), "runs": {}}
    if previous and all(previous.get(k) == res[k] for k in SETTINGS):
        res["runs"] = {k: v for k, v in previous["runs"].items() if k not in args.variants}
    sas = _run(args, f"s{args.seed}-sasrec", base + ["model.name=sasrec", f"train.epochs={args.sasrec_epochs}"])
    res["runs"]["sasrec"] = {"rec": json.loads((sas / "metrics.json").read_text())["test"]}
    for v in sorted(args.variants, key=lambda x: x in FROM_UNIMP):  # `unimp` before the runs it starts
        init = [f"run.init_from={_run(args, f's{args.seed}-unimp', unimp)}"] if v in FROM_UNIMP else []
        run_dir = _run(args, f"s{args.seed}-{v}", unimp + VARIANTS[v] + init)
        m = json.loads((run_dir / "metrics.json").read_text())
        t0 = time.time()
        res["runs"][v] = {"rec": m["test"], "train_seconds": m["train_seconds"], "train_rows": m["train_rows"],
                          "history": m["history"], "tasks": task_metrics(run_dir, args),
                          "task_eval_seconds": time.time() - t0, "run": str(run_dir)}
        if v not in FROM_UNIMP or v == "last_layer_rec":  # the recommendation analyses: runs trained on it
            model, prep_v, cfg_v = load_run(run_dir)
            res["runs"][v]["robustness"] = robustness(model, prep_v, cfg_v, m["train_domains"], args.dataset,
                                                      args.seed)
            res["runs"][v]["new_users"] = new_user_split(run_dir, prep_v, cfg_v, m["train_domains"], args.seed)
            res["runs"][v]["new_domains"] = new_domains(model, prep_v, cfg_v, m["train_domains"], run_dir)
            del model
        log.info("%s done", v)
    sas_model, prep, sas_cfg = load_run(sas)
    sas_domains = json.loads((sas / "metrics.json").read_text())["train_domains"]
    res["runs"]["sasrec"]["new_domains"] = new_domains(sas_model, prep, sas_cfg, sas_domains, sas)
    res["baselines"] = baselines(prep, sas_domains, args, sas_model)
    return res


def paired(args: argparse.Namespace, quality_result: dict[str, Any], new_domains: bool = False) -> dict[str, Any]:
    """Paired bootstrap of per-user test NDCG@10 (recommendation), ``unimp`` vs every other run that wrote
    the ranks file; with ``new_domains``, on the domains they never trained on (runs judged before that
    evaluation existed, without its ranks file, are left out)."""
    from raypipe.eval.significance import paired_ndcg
    from raypipe.rundir import RANKS_FILE, load_ranks

    name = NEW_DOMAIN_RANKS if new_domains else RANKS_FILE
    ref = load_ranks(Path(args.runs) / f"s{args.seed}-unimp", name)
    others = rank_sets(args, [r for r in quality_result["runs"] if r != "unimp"], name)
    return {other: {d: paired_ndcg(users, ranks.get(d, {}), seed=args.seed).as_dict() for d, users in ref.items()}
            for other, ranks in others.items()}


#: the 2x2 of Table 3's last rows: re-weighting's gain with context reconstruction, and without it
INTERACTION = (("unimp", "wo_reweight"), ("wo_context", "wo_context_reweight"))


def reweight_interaction(ranks: dict[str, dict[str, dict[str, float]]], seed: int) -> dict[str, Any]:
    """Per domain, re-weighting's gain in per-user NDCG@10 with context reconstruction (``unimp`` −
    ``wo_reweight``) and without it (``wo_context`` − ``wo_context_reweight``), each paired-bootstrapped,
    and their difference (the interaction: > 0 when re-weighting matters more with context reconstruction),
    bootstrapped over the users all four runs judged; and context reconstruction's gain without
    re-weighting (``wo_reweight`` − ``wo_context_reweight``: the paper reports it below zero, Table 3).
    ``ranks``: ``{variant: {domain: {user: rank}}}``."""
    from raypipe.eval.metrics import ndcg
    from raypipe.eval.significance import paired_bootstrap

    missing = sorted({v for pair in INTERACTION for v in pair} - set(ranks))
    if missing:
        raise ValueError(f"the re-weighting interaction needs the runs {missing}")
    out: dict[str, Any] = {}
    for d in ranks["unimp"]:
        users = sorted(set.intersection(*(set(ranks[v].get(d, {})) for pair in INTERACTION for v in pair)))
        if not users:
            continue
        n = {v: ndcg(np.array([ranks[v][d][u] for u in users]), 10) for pair in INTERACTION for v in pair}
        (a, b), (c, e) = INTERACTION
        out[d] = {"with_context": paired_bootstrap(n[a], n[b], seed=seed).as_dict(),
                  "without_context": paired_bootstrap(n[c], n[e], seed=seed).as_dict(),
                  "interaction": paired_bootstrap(n[a] - n[b], n[c] - n[e], seed=seed).as_dict(),
                  "context_without_reweight": paired_bootstrap(n[b], n[e], seed=seed).as_dict()}
    return out


# -- serving --------------------------------------------------------------------------------------------


def serving(args: argparse.Namespace) -> dict[str, Any]:
    """The reranker slot's own code (``raypipe.serve``: the model loaded as the ``Reranker`` deployment
    loads it, ``ModelReranker``), timed in-process, without HTTP: rerank of ``--rerank-candidates``
    retrieved candidates and ``/explain`` generation of up to ``--explain-tokens`` tokens."""
    from raypipe.data.registry import resolve_dataset
    from raypipe.serve.artifacts import load_model
    from raypipe.serve.rerank import ModelReranker

    run_dir = Path(args.runs) / f"s{args.seed}-unimp"
    model, index, cfg = load_model(run_dir, events_dataset=resolve_dataset(args.dataset), torch_threads=args.threads)
    rr = ModelReranker(model, index, cfg.data.max_len)
    ids = list(index.item_ids)
    rng = np.random.default_rng(args.seed)
    dom = np.asarray(index.domains)
    pool = [ids[i] for i in np.flatnonzero(dom == dom[0])]

    def pct(xs: list[float]) -> dict[str, float]:
        return {"p50_ms": float(np.percentile(xs, 50) * 1e3), "p99_ms": float(np.percentile(xs, 99) * 1e3),
                "n": len(xs)}

    rerank_s, explain_s, lengths = [], [], []
    for _ in range(args.serve_requests):
        pick = list(rng.choice(pool, 5 + args.rerank_candidates, replace=False))
        t0 = time.time()
        rr.rerank(pick[:5], [{"item_id": i, "domain": dom[0], "score": 0.0} for i in pick[5:]])
        rerank_s.append(time.time() - t0)
    for _ in range(args.explain_requests):
        pick = list(rng.choice(pool, 6, replace=False))
        t0 = time.time()
        out = rr.explain(pick[:5], pick[5], args.explain_tokens)
        explain_s.append(time.time() - t0)
        lengths.append(out["tokens"])
    return {"run": str(run_dir), "threads": args.threads, "rerank_candidates": args.rerank_candidates,
            "rerank": pct(rerank_s), "explain_max_tokens": args.explain_tokens, "explain": pct(explain_s),
            "explain_tokens_mean": float(np.mean(lengths)), "sample": out}


# -- report ---------------------------------------------------------------------------------------------


def _f(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) and math.isfinite(x) else "–"


def domain_bars(q: dict[str, Any]) -> tuple[list[str], int, dict[str, list[float]]]:
    """The bars of :func:`plot_domains`: the domain labels (trained domains, then the new ones), how many
    are trained, and per run judged on new domains its test NDCG@10 in that order (NaN where missing)."""
    runs = [(name, r) for name, r in q["runs"].items() if r.get("new_domains")]
    trained = sorted({d for _, r in runs for d in r["rec"]})
    new = sorted({d for _, r in runs for d in r["new_domains"]})
    vals = {name: [float(r["rec"].get(d, {}).get("ndcg@10", math.nan)) for d in trained]
            + [float(r["new_domains"].get(d, {}).get("ndcg@10", math.nan)) for d in new] for name, r in runs}
    return trained + new, len(trained), vals


def plot_domains(q: dict[str, Any], path: Path) -> bool:
    """Grouped bars of test NDCG@10 per domain and run: the trained domains, then (hatched) the new ones
    judged zero-shot, with each domain's chance level where ``paired`` measured it. Written only when some
    run was judged on new domains; returns whether it was."""
    labels, n_trained, vals = domain_bars(q)
    if not vals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from raypipe.io import save_figure_atomic

    x = np.arange(len(labels))
    w = 0.8 / len(vals)
    fig, ax = plt.subplots(figsize=(1.1 * len(x) + 2, 3.6))
    for i, (name, v) in enumerate(vals.items()):
        bars = ax.bar(x + (i - (len(vals) - 1) / 2) * w, v, w, label=name, color=f"C{i}")
        for b in bars[n_trained:]:
            b.set_hatch("//")
    chance = {**q.get("chance_trained_domains", {}), **q.get("chance_new_domains", {})}
    drawn = False
    for j, d in enumerate(labels):
        if d in chance:
            ax.hlines(chance[d]["ndcg@10"], j - 0.45, j + 0.45, colors="k", linestyles=":",
                      label=None if drawn else "random ranking")
            drawn = True
    ax.axvline(n_trained - 0.5, color="grey", lw=0.8, ls="--")
    ax.set_xticks(x, labels[:n_trained] + [f"{d}\n(new)" for d in labels[n_trained:]])
    ax.set_ylabel("test NDCG@10")
    ax.set_title(f"{q['dataset']}, seed {q['seed']}: trained domains | new domains, zero-shot (hatched)")
    ax.legend(fontsize=8)
    save_figure_atomic(fig, path)
    return True


def markdown(results: dict[str, Any]) -> str:
    lines = ["# UniMP benchmark", ""]
    tp = results.get("throughput")
    if tp:
        lines += ["## Throughput (`throughput`)", "",
                  f"Backbone {tp['backbone']} ({tp['source']}), {tp['threads']} torch thread(s); "
                  f"{tp['parameters']:,} parameters, {tp['trainable_parameters']:,} trained.", "",
                  "| Task | Tokens per row (mean) | Max |", "|---|---:|---:|"]
        lines += [f"| {t} | {v['mean']:.0f} | {v['max']} |" for t, v in tp["tokens_per_row"].items()]
        lines += ["", f"* training (forward + backward): {tp['train_tokens_per_s']:.0f} tokens/s, "
                      f"{tp['train_rows_per_s']:.2f} rows/s",
                  f"* scoring: {tp['score_histories_per_s']:.2f} histories/s against all "
                  f"{tp['score_candidates']} items", f"* explanation decoding (cached): {tp['explain_tokens_per_s']:.1f} tokens/s", ""]
    sv = results.get("serving")
    if sv:
        lines += ["## Reranker slot, in-process (`serving`)", "",
                  f"{sv['threads']} torch thread(s); rerank of {sv['rerank_candidates']} candidates: p50 "
                  f"{sv['rerank']['p50_ms']:.0f} ms, p99 {sv['rerank']['p99_ms']:.0f} ms ({sv['rerank']['n']} requests); "
                  f"explain (at most {sv['explain_max_tokens']} tokens, mean {sv['explain_tokens_mean']:.1f} generated): "
                  f"p50 {sv['explain']['p50_ms']:.0f} ms, p99 {sv['explain']['p99_ms']:.0f} ms "
                  f"({sv['explain']['n']} requests).", ""]
    q = results.get("quality")
    if q:
        lines += ["## Tasks (`quality`)", "",
                  f"{q['dataset']}, source domains, {q['max_users']} training sequences x last {q['rows_per_user']} "
                  f"event(s) x {len(q.get('tasks', range(4)))} tasks, {q['epochs']} epoch(s), seed {q['seed']}; test: up to {q['eval_users']} "
                  f"users per domain ({q['explain_users']} with a review for explanation).", ""]
        doms = sorted(next(iter(q["runs"].values()))["rec"])
        lines += ["### Recommendation (full ranking)", "", "| Method | " + " | ".join(f"{d} N@10" for d in doms) + " |",
                  "|---|" + "---:|" * len(doms)]
        for name, r in q["runs"].items():
            lines.append(f"| {name} | " + " | ".join(_f(r["rec"][d].get("ndcg@10")) for d in doms) + " |")
        if q.get("paired"):
            lines += ["", "Paired bootstrap of per-user NDCG@10, unimp − other (p):", "",
                      "| Other | " + " | ".join(doms) + " |", "|---|" + "---:|" * len(doms)]
            for other, per in q["paired"].items():
                lines.append(f"| {other} | " + " | ".join(
                    f"{per[d]['diff']:+.4f} (p={per[d]['p_value']:.3f})" if d in per else "–" for d in doms) + " |")
        nd = [(name, r["new_domains"]) for name, r in q["runs"].items() if r.get("new_domains")]
        if nd:
            new = sorted({d for _, per in nd for d in per})
            pn = q.get("paired_new_domains", {})
            lines += ["", "### New domains (Table 4b analogue): zero-shot on the domains no run trained on", "",
                      "| Method | " + " | ".join(f"{d} N@10 | {d} HR@10" for d in new)
                      + " | unimp − method (p) | method − random ranking (p) |",
                      "|---|" + "---:|---:|" * len(new) + "---|---|"]
            pc = q.get("paired_chance_new_domains", {})

            def tests(p: dict[str, Any]) -> str:
                return " / ".join(f"{d} {p[d]['diff']:+.4f} (p={p[d]['p_value']:.3f})" for d in new if d in p) or "–"

            for name, per in nd:
                lines.append(f"| {name} | " + " | ".join(
                    f"{_f(per.get(d, {}).get('ndcg@10'))} | {_f(per.get(d, {}).get('hr@10'))}" for d in new)
                    + f" | {tests(pn.get(name, {}))} | {tests(pc.get(name, {}))} |")
            chance = q.get("chance_new_domains")
            if chance:
                draws = next(iter(chance.values()))["draws"]
                lines.append(f"| random ranking (mean of {draws} draws) | " + " | ".join(
                    f"{_f(chance.get(d, {}).get('ndcg@10'))} | {_f(chance.get(d, {}).get('hr@10'))}" for d in new)
                    + " | | |")
        br = q.get("by_repeat")
        if br:
            share = ", ".join(f"{d} {v:.0%}" for d, v in br["repeat_share"].items())
            lines += ["", "Split by repeated targets: the test target is one of the user's history items (seen items "
                      "are excluded from the ranking, the target never is). Share of such users: " + share + ".", "",
                      "| Method | Domain | Repeated targets N@10 (n) | − chance (p) | Other targets N@10 (n) | "
                      "Other: chance level | − chance (p) |", "|---|---|---:|---:|---:|---:|---:|"]

            def vs(g: dict[str, Any]) -> str:
                c = g.get("minus_chance")
                return f"{c['diff']:+.4f} (p={c['p_value']:.3f})" if c else "–"

            for part in ("trained", "new"):
                for name, per in br[part].items():
                    for d, g in per.items():
                        r, o = g["repeat"], g["other"]
                        lines.append(f"| {name} | {d}{' (new)' if part == 'new' else ''} | {_f(r['ndcg@10'])} ({r['n']}) | "
                                     f"{vs(r)} | {_f(o['ndcg@10'])} ({o['n']}) | {_f(o.get('chance'))} | {vs(o)} |")
        if q.get("reweight_interaction"):
            lines += ["", "Re-weighting's gain in per-user NDCG@10 (p), with context reconstruction (unimp − "
                      "wo_reweight), without it (wo_context − wo_context_reweight), their difference; and context "
                      "reconstruction's gain without re-weighting (wo_reweight − wo_context_reweight):", "",
                      "| Domain | Re-weighting, with context | Re-weighting, without context | Difference | "
                      "Context, without re-weighting |", "|---|---:|---:|---:|---:|"]
            for d, r in q["reweight_interaction"].items():
                lines.append(f"| {d} | " + " | ".join(
                    f"{r[k]['diff']:+.4f} (p={r[k]['p_value']:.3f})" for k in
                    ("with_context", "without_context", "interaction", "context_without_reweight")) + " |")
        lines += ["", "### Preference, explanation, search", "",
                  "| Method | Domain | MAE | RMSE | BLEU-4 | ROUGE-L | Search HR@5 | Search MRR@5 |",
                  "|---|---|---:|---:|---:|---:|---:|---:|"]
        for name, r in q["runs"].items():
            for d, t in r.get("tasks", {}).items():
                e = t.get("explanation", {})
                lines.append(f"| {name} | {d} | {_f(t['preference']['mae'])} | {_f(t['preference']['rmse'])} | "
                             f"{_f(e.get('bleu4'))} | {_f(e.get('rougeL'))} | {_f(t['search']['hr@5'])} | "
                             f"{_f(t['search']['mrr@5'])} |")
        for d, b in q.get("baselines", {}).items():
            e = b.get("explanation_retrieval", {})
            lines.append(f"| baselines (item mean / retrieval / category POP) | {d} | "
                         f"{_f(b['preference_item_mean']['mae'])} | {_f(b['preference_item_mean']['rmse'])} | "
                         f"{_f(e.get('bleu4'))} | {_f(e.get('rougeL'))} | {_f(b['search_category_pop']['hr@5'])} | "
                         f"{_f(b['search_category_pop']['mrr@5'])} |")
            lines.append(f"| global mean rating | {d} | {_f(b['preference_global_mean']['mae'])} | "
                         f"{_f(b['preference_global_mean']['rmse'])} | | | | |")
        rob = [(name, r["robustness"], r.get("new_users", {})) for name, r in q["runs"].items() if "robustness" in r]
        if rob:
            lines += ["", "### Robustness (NT: 20% of attributes dropped; NV: 20% of images swapped) and new users, "
                      "recommendation NDCG@10", "",
                      "| Method | Domain | Clean | NT | NV | Trained users (n) | New users (n) |",
                      "|---|---|---:|---:|---:|---:|---:|"]
            for name, rb, nu in rob:
                for d in rb["clean"]:
                    tu, nw = nu.get(d, {}).get("trained_users", {}), nu.get(d, {}).get("new_users", {})
                    lines.append(f"| {name} | {d} | {_f(rb['clean'][d])} | {_f(rb['noisy_text'][d])} | "
                                 f"{_f(rb.get('noisy_images', {}).get(d))} | {_f(tu.get('ndcg@10'))} ({tu.get('n', 0)}) | "
                                 f"{_f(nw.get('ndcg@10'))} ({nw.get('n', 0)}) |")
        sel = [(name, d, t["selection"]) for name, r in q["runs"].items() for d, t in r.get("tasks", {}).items()
               if "selection" in t]
        sel += [(k.removeprefix("selection_"), d, v) for d, b in q.get("baselines", {}).items()
                for k, v in b.items() if k.startswith("selection_")]
        if sel:
            lines += ["", "### Multi-modal selection (1-3 positives among 6 candidates; mean per user)", "",
                      "| Method | Domain | Precision | Recall | F1 | Mean chosen | Empty | Prompts |",
                      "|---|---|---:|---:|---:|---:|---:|---:|"]
            # results written before the chosen-set sizes were recorded show "–" there
            lines += [f"| {n} | {d} | {_f(m['precision'])} | {_f(m['recall'])} | {_f(m['f1'])} | "
                      f"{_f(m.get('mean_chosen'))} | {_f(m.get('empty_share'))} | {m['n']} |" for n, d, m in sel]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("part", choices=["throughput", "quality", "paired", "serving", "report"])
    p.add_argument("--out", default="bench/results/unimp")
    p.add_argument("--dataset", default="builtin:tiny")
    p.add_argument("--runs", default="/tmp/raypipe-bench-unimp")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batches", type=int, default=3)
    p.add_argument("--score-users", type=int, default=16)
    p.add_argument("--variants", default="unimp,wo_vision")
    p.add_argument("--max-users", type=int, default=120)
    p.add_argument("--rows-per-user", type=int, default=1)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--sasrec-epochs", type=int, default=30)
    p.add_argument("--valid-users", type=int, default=60)
    p.add_argument("--eval-users", type=int, default=100)
    p.add_argument("--explain-users", type=int, default=20)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--reuse", action="store_true", help="reuse finished runs in --runs")
    p.add_argument("--serve-requests", type=int, default=30)
    p.add_argument("--rerank-candidates", type=int, default=30)
    p.add_argument("--explain-requests", type=int, default=10)
    p.add_argument("--explain-tokens", type=int, default=16)
    args = p.parse_args(argv)
    args.variants = [v for v in args.variants.split(",") if v]
    bad = [v for v in args.variants if v not in VARIANTS]
    if bad:
        p.error(f"unknown variants {bad}; choose from {sorted(VARIANTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    path = out.with_suffix(".json")
    results = json.loads(path.read_text()) if path.exists() else {}
    if args.part != "report":
        if args.part == "quality":
            results["quality"] = quality(args, results.get("quality"))
        elif args.part == "paired":
            results["quality"]["paired"] = paired(args, results["quality"])
            if (Path(args.runs) / f"s{args.seed}-unimp" / NEW_DOMAIN_RANKS).exists():
                results["quality"]["paired_new_domains"] = paired(args, results["quality"], new_domains=True)
                results["quality"].update(new_domain_analysis(args, results["quality"]))
            if all(v in results["quality"]["runs"] for pair in INTERACTION for v in pair):
                from raypipe.rundir import load_ranks

                results["quality"]["reweight_interaction"] = reweight_interaction(
                    {v: load_ranks(Path(args.runs) / f"s{args.seed}-{v}") for pair in INTERACTION for v in pair},
                    args.seed)
        else:
            results[args.part] = {"throughput": throughput, "serving": serving}[args.part](args)
        write_json_atomic(path, results)
    write_text_atomic(out.with_suffix(".md"), markdown(results))
    if results.get("quality") and plot_domains(results["quality"], out.with_name(out.name + "_domains.png")):
        log.info("plot: %s", out.with_name(out.name + "_domains.png"))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
