"""The leaderboard report: ``leaderboard.json``, ``leaderboard.md`` and a self-contained ``leaderboard.html``.

Everything is computed from the benchmark's result files (:mod:`raypipe.benchmark.runner`): means and
standard deviations over seeds, paired bootstraps of per-user NDCG@10 against SASRec (at the budget's
epochs, and trained to early stopping) per seed and domain, the zero-shot rows of the pre-trained methods, the few-shot item groups, missing-modality
robustness, the training curves and the cost of each method.  The HTML embeds its figures as PNG data URIs, so the file opens anywhere.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from raypipe.benchmark.methods import METHODS, REFERENCE

#: the rows every method is paired against: SASRec at the budget's epochs, and SASRec trained to early stopping
PAIRED_AGAINST = (REFERENCE, "sasrec_converged")
from raypipe.benchmark.runner import FEW_SHOT_EDGES, BenchmarkConfig
from raypipe.io import write_json_atomic, write_text_atomic

PROTOCOL_TITLES = {
    "full": "Full ranking of the target catalogue (seen items excluded)",
    "sampled": "Sampled: the target among {n_neg} negatives the user never touched (the same for every method)",
    "rerank": "Rerank: the top-N shortlist of SASRec (same seed) re-scored by each method",
}


@dataclass
class Table:
    title: str
    head: list[str]
    rows: list[list[str]]
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""] + ([self.note, ""] if self.note else [])
        lines += ["| " + " | ".join(self.head) + " |", "|---|" + "---:|" * (len(self.head) - 1)]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines)

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.head)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return f"<h3>{html.escape(self.title)}</h3>{note}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _mean_sd(xs: list[float]) -> str:
    if not xs:
        return "–"
    a = np.asarray(xs, float)
    return f"{a.mean():.4f}" + (f" ± {a.std(ddof=1):.4f}" if len(a) > 1 else "")


def setting_seeds(board: dict[str, Any], setting: str) -> list[int]:
    """The seeds with results in ``setting`` (a setting can have fewer than the seeds asked for)."""
    return board["settings"][setting].get("seeds", board["config"]["seeds"])


def _done(results: dict[str, Any], method: str) -> list[dict[str, Any]]:
    return [r[method] for r in results.values() if method in r and r[method]["status"] == "done"]


def summarise(results: dict[str, dict[str, dict[str, Any]]], cfg: BenchmarkConfig) -> dict[str, Any]:
    """``results[setting][seed][method]`` → the leaderboard's numbers (no per-user values)."""
    from raypipe.eval.significance import paired_bootstrap
    from raypipe.meta import run_meta

    out: dict[str, Any] = {"config": asdict(cfg),
                           "budget": asdict(cfg.plan), "meta": run_meta({"train": None, "split": 0, "eval": 0}),
                           "settings": {}}
    out["config"]["seeds"] = list(cfg.seeds)
    for setting, by_seed in results.items():
        methods = [m for m in METHODS if any(m in r for r in by_seed.values())]
        # the table's order (the JSON file sorts its keys)
        s: dict[str, Any] = {"methods": {}, "paired": {}, "order": methods,  # paired_<ref>: see PAIRED_AGAINST
                             "seeds": sorted(int(k) for k in by_seed)}  # the seeds with results in this setting
        for m in methods:
            done = _done(by_seed, m)
            if not done:
                reasons = {r[m].get("reason") for r in by_seed.values() if m in r}
                s["methods"][m] = {"status": "not_applicable", "reason": "; ".join(sorted(filter(None, reasons)))}
                continue
            row: dict[str, Any] = {"status": "done", "seeds": [r["seed"] for r in done], "protocols": {},
                                   "zero_shot": {}, "few_shot": {}, "description": METHODS[m].description}
            for key, target in (("judged", row["protocols"]), ("zero_shot", row["zero_shot"])):
                for r in done:
                    for proto, per_domain in (r.get(key) or {}).get("protocols", {}).items():
                        for d, v in per_domain.items():
                            for metric, x in v["metrics"].items():
                                target.setdefault(proto, {}).setdefault(d, {}).setdefault(metric, []).append(x)
            for r in done:
                for d, groups in r["judged"].get("few_shot", {}).items():
                    for g, v in groups.items():
                        row["few_shot"].setdefault(d, {}).setdefault(g, []).append(v["ndcg@10"])
            for r in done:  # missing-modality check: {view: {share: {domain: [NDCG@10 per seed]}}}
                a = r.get("absent")
                if a and a.get("views"):
                    row.setdefault("absent", {"protocol": a["protocol"], "views": {}})
                    for view, by_share in a["views"].items():
                        for share, per_domain in by_share.items():
                            for d, v in per_domain.items():
                                row["absent"]["views"].setdefault(view, {}).setdefault(share, {}).setdefault(
                                    d, []).append(v["ndcg@10"])
            costs = [r["cost"] for r in done]
            row["cost"] = {
                "train_seconds": float(np.mean([c["train_seconds"] for c in costs])),
                "samples_per_s": float(np.mean([c["samples_per_s"] for c in costs])) if all(
                    c.get("samples_per_s") is not None for c in costs) and "samples_per_s" in costs[0] else None,
                "peak_rss_mb": max((c["peak_rss_mb"] for c in costs if c.get("peak_rss_mb")), default=None),
                "parameters": done[0]["judged"]["parameters"],
                "trainable_parameters": done[0]["judged"]["trainable_parameters"],
                "eval_seconds": float(np.mean([r["judged"]["eval_seconds"] for r in done]))}
            row["curves"] = done[0]["cost"].get("curves", {})
            s["methods"][m] = row
        # paired bootstrap against the reference (and the converged SASRec), per seed, protocol and domain
        for ref_name in PAIRED_AGAINST:
            key = "paired" if ref_name == REFERENCE else f"paired_{ref_name}"
            for seed, r in by_seed.items():
                ref = r.get(ref_name)
                if not ref or ref["status"] != "done":
                    continue
                for m, res in r.items():
                    if m == ref_name or res["status"] != "done":
                        continue
                    for proto, per_domain in res["judged"]["protocols"].items():
                        for d, v in per_domain.items():
                            rv = ref["judged"]["protocols"].get(proto, {}).get(d)
                            if rv is None:
                                continue
                            a, b = v["per_user_ndcg@10"], rv["per_user_ndcg@10"]
                            users = sorted(set(a) & set(b))
                            if not users:
                                continue
                            t = paired_bootstrap(np.array([a[u] for u in users]), np.array([b[u] for u in users]),
                                                 seed=int(seed)).as_dict()
                            s.setdefault(key, {}).setdefault(proto, {}).setdefault(m, {}).setdefault(d, {})[seed] = t
        out["settings"][setting] = s
    return out


def _rows(s: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """``(method, row)`` in the table's order."""
    return [(m, s["methods"][m]) for m in s.get("order", list(s["methods"]))]


def _label(s: dict[str, Any], m: str, row: dict[str, Any]) -> str:
    """The method's name in a table, with its seeds when it has results for fewer than the setting's (a
    benchmark still running, or resumed): its means are over those seeds only."""
    seeds = sorted(row.get("seeds", []))
    return m if not seeds or seeds == sorted(s.get("seeds", seeds)) else f"{m} (seeds {seeds})"


def _domains(s: dict[str, Any], proto: str) -> list[str]:
    return sorted({d for row in s["methods"].values() for d in row.get("protocols", {}).get(proto, {})})


def _mean_over_domains(per_domain: dict[str, Any]) -> float:
    """Mean over domains of the mean over seeds of NDCG@10 (``{domain: {"ndcg@10": [per seed]}}``)."""
    return float(np.mean([np.mean(v["ndcg@10"]) for v in per_domain.values()]))


def _absent(row: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """``(view, {share: {domain: [NDCG@10 per seed]}}, protocol)`` of a row's missing-modality check."""
    a = row.get("absent")
    if not a or a["protocol"] not in row.get("protocols", {}):
        return []
    return [(view, by_share, a["protocol"]) for view, by_share in sorted(a["views"].items())]


def _seed_means(per: dict[str, Any] | None) -> np.ndarray | None:
    """NDCG@10 of each seed, mean over the target domains (``{domain: {"ndcg@10": [per seed]}}``); None
    when there is none or the domains were not judged on the same number of seeds."""
    if not per or len({len(v.get("ndcg@10", [])) for v in per.values()}) != 1:
        return None
    return np.mean([v["ndcg@10"] for v in per.values()], axis=0)


def _per_seed(per: dict[str, Any] | None) -> str:
    """:func:`_seed_means` as ``a / b / c``, or "–"."""
    means = _seed_means(per)
    return "–" if means is None else " / ".join(f"{x:.4f}" for x in means)


def per_seed_table(s: dict[str, Any], setting: str) -> Table:
    """One row per method: NDCG@10 of each of its seeds (mean over the target domains) under every
    protocol, and zero-shot under the method's main protocol: the spread the mean ± sd tables summarise."""
    protos = [p for p in PROTOCOL_TITLES if _domains(s, p)]
    rows = []
    for m, row in _rows(s):
        if row["status"] != "done":
            continue
        zs = row.get("zero_shot") or {}
        main = next(iter(row["protocols"]), None)
        zero = _per_seed(zs.get(main)) if main in zs else "–"
        rows.append([m, ", ".join(map(str, row["seeds"]))] + [_per_seed(row["protocols"].get(p)) for p in protos]
                    + [zero if zero == "–" or main == "full" else f"{zero} ({main})"])
    return Table(f"{setting}: NDCG@10 per seed (mean over the target domains)",
                 ["Method", "Seeds"] + protos + ["zero-shot"], rows,
                 "Values in the order of the Seeds column; zero-shot under the method's main protocol.")


def tables(board: dict[str, Any], setting: str) -> list[Table]:
    s = board["settings"][setting]
    out: list[Table] = []
    for proto, title in PROTOCOL_TITLES.items():
        domains = _domains(s, proto)
        if not domains:
            continue
        rows = []
        for m, row in _rows(s):
            per = row.get("protocols", {}).get(proto)
            if not per:
                continue
            cells = [_mean_sd(per.get(d, {}).get("ndcg@10", [])) for d in domains]
            cells += [_mean_sd(per.get(d, {}).get("recall@10", [])) for d in domains]
            rows.append([_label(s, m, row)] + cells)
        head = ["Method"] + [f"{d} NDCG@10" for d in domains] + [f"{d} Recall@10" for d in domains]
        n = s["methods"].get(REFERENCE, {}).get("protocols", {}).get(proto, {})
        users = ", ".join(f"{d}: {int(np.mean(n[d]['n_users']))}" for d in domains if d in n)
        out.append(Table(f"{setting}: {title.format(n_neg=board['budget']['n_neg'])}", head, rows, f"Mean ± sd over seeds {setting_seeds(board, setting)}; "
                         f"test users per domain: {users or 'see JSON'}."))
    out.append(per_seed_table(s, setting))
    # paired tests against each reference: A − reference (p) per domain, per seed
    for ref_name in PAIRED_AGAINST:
        for proto, per_method in s.get("paired" if ref_name == REFERENCE else f"paired_{ref_name}", {}).items():
            rows = []
            for m, per_domain in sorted(per_method.items(), key=lambda kv: s.get("order", []).index(kv[0])
                                        if kv[0] in s.get("order", []) else len(s.get("order", []))):
                for d, per_seed in sorted(per_domain.items()):
                    cells = [f"{v['diff']:+.4f} ({v['p_value']:.3f})" for _, v in sorted(per_seed.items())]
                    rows.append([m, d, " / ".join(cells), str(sum(v["p_value"] < 0.05 and v["diff"] > 0
                                                                   for v in per_seed.values())),
                                 str(sum(v["p_value"] < 0.05 and v["diff"] < 0 for v in per_seed.values()))])
            out.append(Table(f"{setting}: paired bootstrap of per-user NDCG@10 against {ref_name} ({proto})",
                             ["Method", "Domain", f"A − {ref_name} (p), per seed", "seeds better (p<.05)",
                              "seeds worse (p<.05)"], rows))
    # zero-shot against fine-tuned, on each pre-trained method's main protocol
    rows = []
    for m, row in _rows(s):
        if not row.get("zero_shot"):
            continue
        proto = next(iter(row["protocols"]))
        for d in sorted(row["protocols"][proto]):
            rows.append([_label(s, m, row), proto, d, _mean_sd(row["zero_shot"].get(proto, {}).get(d, {}).get("ndcg@10", [])),
                         _mean_sd(row["protocols"][proto][d]["ndcg@10"])])
    if rows:
        out.append(Table(f"{setting}: zero-shot against fine-tuned (NDCG@10)",
                         ["Method", "Protocol", "Domain", "Zero-shot", "Fine-tuned"], rows))
    # few-shot item groups
    labels = [f"{int(FEW_SHOT_EDGES[g])}–{'' if not np.isfinite(FEW_SHOT_EDGES[g + 1]) else int(FEW_SHOT_EDGES[g + 1]) - 1}"
              for g in range(len(FEW_SHOT_EDGES) - 1)]
    rows = []
    for m, row in _rows(s):
        if row.get("few_shot"):
            vals = [[x for d in row["few_shot"] for x in row["few_shot"][d].get(str(g), [])] for g in range(len(labels))]
            rows.append([_label(s, m, row)] + [f"{np.mean(v):.4f}" if v else "–" for v in vals])
    if rows:
        out.append(Table(f"{setting}: NDCG@10 by the target item's training interactions (few-shot groups)",
                         ["Method"] + labels, rows, "Mean over domains and seeds, each method's main protocol."))
    # missing-modality robustness
    checks = [(m, row, view, by_share, proto) for m, row in _rows(s) for view, by_share, proto in _absent(row)]
    shares = sorted({x for *_, by_share, _ in checks for x in by_share}, key=float)
    rows = []
    for m, row, view, by_share, proto in checks:
        intact = _mean_over_domains(row["protocols"][proto])
        cells = [_label(s, m, row), view, proto, f"{intact:.4f}"]
        for share in shares:
            if share not in by_share:
                cells.append("–")
                continue
            x = _mean_over_domains({d: {"ndcg@10": v} for d, v in by_share[share].items()})
            cells.append(f"{x:.4f} ({(x - intact) / intact:+.0%})" if intact else f"{x:.4f}")
        rows.append(cells)
    if rows:
        out.append(Table(f"{setting}: missing-modality robustness (NDCG@10 with a share of the items missing a view)",
                         ["Method", "View", "Protocol", "All present"] + [f"{float(x):.0%} absent" for x in shares],
                         rows, "The same trained weights, judged with a seeded share of the items' vectors of one "
                         "view removed (flagged absent, as for an item without that feature); mean over target "
                         "domains and seeds; in brackets the change against all present."))
    # cost
    rows = []
    for m, row in _rows(s):
        if row["status"] != "done":
            rows.append([m, "n/a", "", "", "", "", row.get("reason", "")])
            continue
        c = row["cost"]
        rows.append([_label(s, m, row), f"{c['train_seconds']:.0f}", f"{c['eval_seconds']:.0f}",
                     f"{c['samples_per_s']:.1f}" if c.get("samples_per_s") else "–",
                     f"{c['peak_rss_mb']:.0f}" if c.get("peak_rss_mb") else "–",
                     f"{c['parameters'] / 1e6:.2f}M ({c['trainable_parameters'] / 1e6:.2f}M trained)", ""])
    out.append(Table(f"{setting}: cost per method (mean over seeds)",
                     ["Method", "Train s (all stages)", "Judge s", "Samples/s", "Peak worker RSS MiB", "Parameters", "Note"], rows))
    return out


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def figures(board: dict[str, Any], setting: str) -> list[tuple[str, str]]:
    """``(caption, data URI)``: NDCG@10 per method and protocol, training curves, few-shot groups."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = board["settings"][setting]
    out = []
    protos = [p for p in PROTOCOL_TITLES if _domains(s, p)]
    fig, axes = plt.subplots(1, len(protos), figsize=(5 * len(protos), 3.6), squeeze=False)
    for ax, proto in zip(axes[0], protos):
        names, means, sds = [], [], []
        for m, row in _rows(s):
            seed_means = _seed_means(row.get("protocols", {}).get(proto))
            if seed_means is not None:
                names.append(m), means.append(float(np.mean(seed_means)))
                sds.append(float(np.std(seed_means, ddof=1)) if len(seed_means) > 1 else 0.0)
        ax.barh(names, means, xerr=sds, color="#4c72b0")
        ax.invert_yaxis()
        ax.set_title(proto), ax.set_xlabel("NDCG@10 (mean over target domains)")
    out.append((f"{setting}: NDCG@10 per method and protocol (error bars: sd over seeds)", _png(fig)))
    plt.close(fig)
    curves = {m: row["curves"] for m, row in _rows(s) if row.get("curves")}
    if curves:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for m, per_stage in curves.items():
            for stage, ys in per_stage.items():
                ys = [y for y in ys if y is not None]
                if ys:
                    ax.plot(range(len(ys)), ys, marker="o", ms=3, label=f"{m} ({stage})")
        ax.set_xlabel("epoch"), ax.set_ylabel("validation NDCG@10"), ax.legend(fontsize=6, ncol=2)
        out.append((f"{setting}: validation curves of the first seed", _png(fig)))
        plt.close(fig)
    few = {m: row["few_shot"] for m, row in _rows(s) if row.get("few_shot")}
    if few:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        groups = range(len(FEW_SHOT_EDGES) - 1)
        for m, per_domain in few.items():
            ys = [np.mean([x for d in per_domain for x in per_domain[d].get(str(g), [])] or [np.nan]) for g in groups]
            ax.plot(list(groups), ys, marker="o", label=m)
        ax.set_xticks(list(groups), [f"≥{int(FEW_SHOT_EDGES[g])}" for g in groups])
        ax.set_xlabel("training interactions of the target item"), ax.set_ylabel("NDCG@10"), ax.legend(fontsize=6)
        out.append((f"{setting}: few-shot item groups", _png(fig)))
        plt.close(fig)
    lines = [(m, view, by_share, proto) for m, row in _rows(s) for view, by_share, proto in _absent(row)]
    if lines:
        fig, ax = plt.subplots(figsize=(7, 3.6))
        for m, view, by_share, proto in lines:
            shares = sorted(by_share, key=float)
            xs = [0.0] + [float(x) for x in shares]
            ys = [_mean_over_domains(s["methods"][m]["protocols"][proto])] + [
                _mean_over_domains({d: {"ndcg@10": v} for d, v in by_share[x].items()}) for x in shares]
            ax.plot(xs, ys, marker="o", label=f"{m}: {view} ({proto})")
        ax.set_xlabel("share of the items missing the view"), ax.set_ylabel("NDCG@10"), ax.legend(fontsize=6)
        out.append((f"{setting}: missing-modality robustness", _png(fig)))
        plt.close(fig)
    return out


CSS = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}table{border-collapse:collapse;"
       "margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}td:first-child,"
       "th:first-child{text-align:left}img{max-width:100%}")


#: after loading, the page records how many of its tables and decoded images it shows (a browser test reads them)
ONLOAD = ("window.addEventListener('load',()=>{const b=document.body;b.dataset.tables=document.querySelectorAll("
          "'table').length;b.dataset.imagesDecoded=[...document.images].filter(i=>i.complete&&i.naturalWidth>0)"
          ".length;});")


def write_report(board: dict[str, Any], out: Path) -> dict[str, Path]:
    """``<out>.json``, ``<out>.md`` and ``<out>.html`` (atomically); their paths."""
    meta = board["meta"]
    intro = (f"Budget `{board['config']['budget']}`, seeds asked {board['config']['seeds']}, commit "
             f"{(meta.get('git_commit') or 'unknown')[:10]}{' (uncommitted changes)' if meta.get('git_dirty') else ''}, "
             f"{meta['hardware']['cpus']} CPUs, GPUs: {', '.join(meta['hardware']['gpus']) or 'none'}, {meta['time']}.")
    md = ["# Leaderboard", "", intro, ""]
    body = [f"<h1>Leaderboard</h1><p>{html.escape(intro)}</p>"]
    for setting in board["settings"]:
        seeds = f"Seeds with results: {setting_seeds(board, setting)}."
        md += [f"## {setting}", "", seeds, ""]
        body.append(f"<h2>{html.escape(setting)}</h2><p>{html.escape(seeds)}</p>")
        for t in tables(board, setting):
            md += [t.markdown(), ""]
            body.append(t.html())
        for caption, uri in figures(board, setting):
            body.append(f"<figure><img alt='{html.escape(caption)}' src='{uri}'><figcaption>{html.escape(caption)}"
                        "</figcaption></figure>")
    paths = {"json": out.with_suffix(".json"), "md": out.with_suffix(".md"), "html": out.with_suffix(".html")}
    write_json_atomic(paths["json"], board)
    write_text_atomic(paths["md"], "\n".join(md) + "\n")
    write_text_atomic(paths["html"], "<!doctype html><html><head><meta charset='utf-8'><title>raypipe leaderboard"
                      f"</title><style>{CSS}</style></head><body>{''.join(body)}<script>{ONLOAD}</script>"
                      "</body></html>\n")
    return paths


README_START = "<!-- leaderboard:start (generated by python -m raypipe.benchmark.readme; do not edit) -->"
README_END = "<!-- leaderboard:end -->"


def readme_block(board: dict[str, Any], source: str) -> str:
    """The README's leaderboard: NDCG@10 per method, mean over the target domains and seeds, per protocol,
    and zero-shot; generated from ``board`` (the file at ``source``), never typed by hand."""
    lines = [README_START, ""]
    for setting, s in board["settings"].items():
        protos = [p for p in PROTOCOL_TITLES if _domains(s, p)]
        lines += [f"`{setting}`, budget `{board['config']['budget']}`, seeds {setting_seeds(board, setting)}: NDCG@10, mean "
                  f"over the target domains {', '.join(_domains(s, protos[0])) if protos else ''}"
                  f" (`{source}`):", ""]
        lines += ["| Method | " + " | ".join(protos) + " | zero-shot |", "|---|" + "---:|" * (len(protos) + 1)]
        for m, row in _rows(s):
            if row["status"] != "done":
                lines.append(f"| {m} | " + " | ".join("n/a" for _ in protos) + f" | n/a ({row.get('reason', '')}) |")
                continue

            def mean(per: dict[str, Any] | None) -> str:
                return f"{_mean_over_domains(per):.4f}" if per else "–"

            zs = row.get("zero_shot") or {}
            lines.append(f"| {_label(s, m, row)} | " + " | ".join(mean(row["protocols"].get(p)) for p in protos)
                         + f" | {mean(zs.get(next(iter(zs)))) if zs else '–'} |")
        lines.append("")
    lines.append(README_END)
    return "\n".join(lines)


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with the text between the leaderboard markers replaced by ``block``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no leaderboard markers ({README_START!r} … {README_END!r})")
    return readme[:start] + block + readme[end + len(README_END):]
