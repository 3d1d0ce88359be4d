"""Does ``raypipe convert`` stream?  Convert a generated Amazon 2018 category of a given size, measuring memory.

    nice -n 10 python bench/bench_convert.py                      # one ~1 GiB input (default --size-mb 1024)
    nice -n 10 python bench/bench_convert.py --size-mb 100 1024   # two sizes: is peak RSS bounded?

For each size it writes, under a fresh temporary directory (``--tmp``, default the system's), one
category in the **real Amazon 2018 JSON-lines format** -- the full review file ``<Cat>.json`` and the
metadata file ``meta_<Cat>.json`` with the release's field sets (reviews: ``overall, verified,
reviewTime, reviewerID, asin, style, reviewerName, reviewText, summary, unixReviewTime, vote, image``;
metadata: ``category, tech1, description, fit, title, also_buy, tech2, brand, feature, rank,
also_view, details, main_cat, similar_item, date, price, asin, imageURL, imageURLHighRes``), text
lengths drawn log-normally around the release's (reviews ~400 characters on average, a long tail),
deterministic from ``--seed``.  About 1 in 200 metadata rows carries the CSS junk some 2018 ``price``
fields hold, and 1 in 100,000 review lines is cut short (a malformed row the report must name).

It then runs ``raypipe.data.convert.main`` on the two files in a child process and records the child's
peak RSS from ``os.wait4`` (``ru_maxrss``, the kernel's high-water mark) and from polling
``/proc/<pid>`` (a time series), the wall time, MB/s over the input bytes, the rows read and written,
and the child's RSS right after its imports (``--help``: the floor every run starts from).  The
generated input and the converted output are deleted after each size.  Results go to
``bench/results/convert.json`` and ``.md`` (atomically).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TextIO

import psutil
import pyarrow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from raypipe.io import write_json_atomic, write_text_atomic  # noqa: E402

MiB = 1024 ** 2
RESULTS = ROOT / "bench" / "results" / "convert"
CHILD = "import sys; from raypipe.data.convert import main; sys.exit(main(sys.argv[1:]))"

# bytes of one generated (review, share of a metadata row) -- measured on the generator, used only to
# choose how many items and users a size gets so that their ratios stay those of a 2018 category
BYTES_PER_ITEM = 11_000
REVIEWS_PER_USER = 3.5


# --------------------------------------------------------------------------------------------------
# the generator
# --------------------------------------------------------------------------------------------------
class Words:
    """A fixed pseudo-English vocabulary and a pool of sentences drawn from it (fast text of any length)."""

    def __init__(self, rng: random.Random, n_words: int = 6000, n_sentences: int = 40_000) -> None:
        onsets = ["b", "c", "d", "f", "g", "h", "l", "m", "n", "p", "r", "s", "t", "v", "w", "br", "cl", "st",
                  "tr", "sh", "ch", "pl", "gr", "fr", ""]
        vowels = ["a", "e", "i", "o", "u", "ea", "ou", "ai", "io"]
        codas = ["", "n", "r", "s", "t", "l", "nd", "ck", "st", "ng", "m"]
        words: set[str] = {"the", "and", "it", "is", "this", "for", "a", "to", "my", "with", "great", "good"}
        while len(words) < n_words:
            words.add("".join(rng.choice(onsets) + rng.choice(vowels) + rng.choice(codas)
                              for _ in range(rng.choice((1, 1, 2, 2, 3)))))
        self.words = sorted(words)
        weights = [1.0 / (i + 1) ** 0.9 for i in range(len(self.words))]  # Zipf-like word frequencies
        self.sentences = []
        for _ in range(n_sentences):
            ws = rng.choices(self.words, weights, k=rng.randint(4, 18))
            self.sentences.append(" ".join(ws).capitalize() + rng.choice((".", ".", ".", "!", "?")))
        self.rng = rng

    def text(self, n_chars: int) -> str:
        out: list[str] = []
        size = 0
        while size < n_chars:
            s = self.rng.choice(self.sentences)
            out.append(s)
            size += len(s) + 1
        return " ".join(out)

    def phrase(self, k: int) -> str:
        return " ".join(self.rng.choice(self.words) for _ in range(k)).title()


def _asin(i: int) -> str:
    """A distinct ASIN-like id per item index (an affine bijection modulo 36**9, in base 36)."""
    return "B" + _base36((i * 2654435761 + 97531) % 36 ** 9).rjust(9, "0")


def _reviewer(i: int) -> str:
    """A distinct reviewerID-like id per user index."""
    return "A" + _base36((i * 11400714819323198485 + 12345) % 36 ** 13).rjust(13, "0")


def _base36(n: int) -> str:
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    s = ""
    while n:
        n, r = divmod(n, 36)
        s = digits[r] + s
    return s or "0"


def _lognormal_chars(rng: random.Random, median: float, sigma: float, cap: int) -> int:
    return max(1, min(cap, int(rng.lognormvariate(math.log(median), sigma))))


CATEGORIES = [["Beauty & Personal Care", "Skin Care", "Face", "Creams & Moisturizers"],
              ["Beauty & Personal Care", "Hair Care", "Shampoo & Conditioner"],
              ["Beauty & Personal Care", "Makeup", "Lips", "Lipstick"],
              ["Beauty & Personal Care", "Fragrance", "Women's"],
              ["Beauty & Personal Care", "Tools & Accessories", "Bags & Cases"]]
CSS_PRICE = ('.a-box-inner{background-color:#fff}#alohaBuyBoxWidget .selected{background-color:#fffbf3;'
             'border-color:#e77600;box-shadow:0 0 3px rgba(228,121,17,.5)}')


def write_meta(path: Path, n_items: int, words: Words, rng: random.Random) -> int:
    """``meta_<Cat>.json``: one 2018 metadata record per item; returns the rows written."""
    brands = [words.phrase(rng.randint(1, 2)) for _ in range(max(50, n_items // 40))]
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n_items):
            asin = _asin(i)
            img = [f"https://images-na.ssl-images-amazon.com/images/I/{_base36(rng.getrandbits(40))}._SS40_.jpg"
                   for _ in range(rng.randint(0, 4))]
            price: str = f"${rng.lognormvariate(2.7, 0.8):.2f}" if rng.random() < 0.7 else ""
            if rng.random() < 0.005:
                price = CSS_PRICE
            rec = {
                "category": rng.choice(CATEGORIES)[: rng.randint(1, 4)],
                "tech1": "",
                "description": [words.text(_lognormal_chars(rng, 350, 1.0, 8000))] if rng.random() < 0.85 else [],
                "fit": "",
                "title": words.phrase(rng.randint(3, 12)),
                "also_buy": [_asin(rng.randrange(n_items)) for _ in range(rng.choice((0, 0, 5, 20, 60)))],
                "tech2": "",
                "brand": rng.choice(brands),
                "feature": [words.text(_lognormal_chars(rng, 60, 0.6, 400)) for _ in range(rng.randint(0, 5))],
                "rank": f"{rng.randint(1, 900_000):,} in Beauty & Personal Care (",
                "also_view": [_asin(rng.randrange(n_items)) for _ in range(rng.choice((0, 0, 4, 15, 40)))],
                "details": {"\n    Product Dimensions: \n    ": f"{rng.randint(1, 9)} x {rng.randint(1, 9)} x "
                            f"{rng.randint(1, 9)} inches ; {rng.randint(1, 32)} ounces",
                            "Shipping Weight:": f"{rng.randint(1, 40)} ounces",
                            "ASIN: ": asin},
                "main_cat": "All Beauty",
                "similar_item": "",
                "date": "",
                "price": price,
                "asin": asin,
                "imageURL": img,
                "imageURLHighRes": [u.replace("._SS40_", "") for u in img],
            }
            f.write(json.dumps(rec) + "\n")
    return n_items


def write_reviews(path: Path, n_items: int, n_users: int, target_bytes: int, words: Words,
                  rng: random.Random) -> int:
    """``<Cat>.json``: 2018 review records until the file reaches ``target_bytes``; returns the rows."""
    names = [words.phrase(rng.randint(1, 2)) for _ in range(5000)]
    rows = size = 0
    t0, t1 = 946684800, 1538352000  # 2000-01-01 .. 2018-10-01
    with open(path, "w", encoding="utf-8") as f:
        while size < target_bytes:
            item = int(n_items * 0.91 * rng.random() ** 2.2)  # skewed popularity; the last 9% never reviewed
            user = int(n_users * rng.random() ** 1.6)
            ts = rng.randint(t0, t1) // 86400 * 86400
            day = datetime.fromtimestamp(ts, timezone.utc)
            rec: dict[str, Any] = {
                "overall": float(rng.choices((1, 2, 3, 4, 5), (6, 4, 8, 18, 64))[0]),
                "verified": rng.random() < 0.85,
                "reviewTime": f"{day.month:02d} {day.day}, {day.year}",
                "reviewerID": _reviewer(user),
                "asin": _asin(item),
            }
            if rng.random() < 0.4:
                rec["style"] = {"Size:": f" {rng.randint(1, 32)} oz", "Color:": f" {words.phrase(1)}"}
            rec["reviewerName"] = rng.choice(names)
            rec["reviewText"] = words.text(_lognormal_chars(rng, 190, 1.15, 20_000))
            rec["summary"] = words.text(_lognormal_chars(rng, 18, 0.5, 120))
            rec["unixReviewTime"] = ts
            if rng.random() < 0.15:
                rec["vote"] = str(rng.randint(2, 300))
            if rng.random() < 0.02:
                rec["image"] = [f"https://images-na.ssl-images-amazon.com/images/I/{_base36(rng.getrandbits(40))}.jpg"]
            line = json.dumps(rec) + "\n"
            rows += 1
            if rows % 100_000 == 0:  # a cut-short line: the report must name it
                line = line[: len(line) // 2] + "\n"
            f.write(line)
            size += len(line.encode("utf-8"))
    return rows


def generate(workdir: Path, size_mb: float, seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    words = Words(rng)
    target = int(size_mb * MiB)
    n_items = max(100, target // BYTES_PER_ITEM)
    n_users = max(50, int(target / 2100))
    reviews, meta = workdir / "Beauty.json", workdir / "meta_Beauty.json"
    t = time.perf_counter()
    meta_rows = write_meta(meta, n_items, words, rng)
    review_rows = write_reviews(reviews, n_items, n_users, target - meta.stat().st_size, words, rng)
    return {"reviews": reviews, "meta": meta, "review_rows": review_rows, "meta_rows": meta_rows,
            "n_items_generated": n_items, "user_pool": n_users, "generate_s": round(time.perf_counter() - t, 1)}


# --------------------------------------------------------------------------------------------------
# measuring the child
# --------------------------------------------------------------------------------------------------
def run_child(args: list[str], log: TextIO, interval: float = 0.5) -> dict[str, Any]:
    """Run the converter in a child; its peak RSS (wait4), an RSS time series (/proc) and wall time."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    t = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", CHILD, *args], stdout=log, stderr=subprocess.STDOUT, env=env)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def poll() -> None:
        proc = psutil.Process(p.pid)
        while not done.is_set():
            try:
                samples.append((round(time.perf_counter() - t, 2), round(proc.memory_info().rss / MiB, 1)))
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                return
            done.wait(interval)

    th = threading.Thread(target=poll, daemon=True)
    th.start()
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t
    done.set()
    th.join()
    p.returncode = os.waitstatus_to_exitcode(status)
    return {"rc": p.returncode, "wall_s": round(wall, 2), "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
            "polled_peak_rss_mib": max((s[1] for s in samples), default=None), "rss_series_mib": _thin(samples),
            "user_cpu_s": round(usage.ru_utime, 1), "sys_cpu_s": round(usage.ru_stime, 1)}


def measure(size_mb: float, seed: int, tmp: str | None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="bench_convert.", dir=tmp))
    try:
        print(f"[{size_mb} MiB] generating under {work} ...", flush=True)
        gen = generate(work, size_mb, seed)
        in_bytes = gen["reviews"].stat().st_size + gen["meta"].stat().st_size
        print(f"[{size_mb} MiB] {in_bytes / MiB:.1f} MiB generated in {gen['generate_s']} s; converting ...",
              flush=True)
        out = work / "out"
        log_path = work / "convert.log"
        load_before = round(os.getloadavg()[0], 1)
        with open(log_path, "w") as log:
            child = run_child(["--format", "amazon2018", "--reviews", str(gen["reviews"]), "--meta",
                               str(gen["meta"]), "--out", str(out), "--no-progress"], log)
        log_text = log_path.read_text()
        if child["rc"] != 0:
            raise RuntimeError(f"convert exited {child['rc']}:\n{log_text[-4000:]}")
        rejected = json.loads((out / "rejected.json").read_text())
        out_bytes = sum(f.stat().st_size for f in out.iterdir())
        return {
            "size_mb_requested": size_mb,
            "input_bytes": in_bytes, "input_mib": round(in_bytes / MiB, 1),
            "reviews_bytes": gen["reviews"].stat().st_size, "meta_bytes": gen["meta"].stat().st_size,
            "review_rows": gen["review_rows"], "meta_rows": gen["meta_rows"], "user_pool": gen["user_pool"],
            "generate_s": gen["generate_s"],
            **{k: v for k, v in child.items() if k != "rc"},
            "cpu_s": round(child["user_cpu_s"] + child["sys_cpu_s"], 1),
            "mib_per_s": round(in_bytes / MiB / child["wall_s"], 2),
            "mib_per_cpu_s": round(in_bytes / MiB / max(child["user_cpu_s"] + child["sys_cpu_s"], 1e-3), 2),
            "load_average_before": load_before,
            "rows_per_s": round((gen["review_rows"] + gen["meta_rows"]) / child["wall_s"]),
            "n_interactions": rejected["n_interactions"], "n_items": rejected["n_items"],
            "n_rejected": rejected["n_rejected"], "bytes_read": rejected["bytes_read"],
            "notes": rejected["reader"]["notes"], "items_filtered": rejected["reader"]["n_items_filtered"],
            "output_bytes": out_bytes,
            "report_excerpt": [line for line in log_text.splitlines() if not line.startswith("/")][:12],
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)


def import_floor() -> float:
    """Peak RSS of the child that only imports the converter and prints its help."""
    with open(os.devnull, "w") as devnull:
        return run_child(["--help"], devnull)["peak_rss_mib"]


def to_markdown(res: dict[str, Any]) -> str:
    lines = [
        "# `raypipe convert` memory: generated Amazon 2018 category (reviews + metadata JSON lines)",
        "",
        f"{res['when']}, {res['machine']}. Peak RSS of the converter process (`ru_maxrss` from `wait4`); "
        f"the process after its imports alone peaks at {res['import_floor_rss_mib']} MiB.",
        "",
        "| Input | Review rows | Meta rows | Interactions | Items | Rejected | Load before | Wall (s) | CPU (s) "
        "| MiB/s wall | MiB/s CPU | Peak RSS (MiB) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res["runs"]:
        lines.append(f"| {r['input_mib']:,} MiB | {r['review_rows']:,} | {r['meta_rows']:,} | {r['n_interactions']:,} "
                     f"| {r['n_items']:,} | {r['n_rejected']} | {r['load_average_before']} | {r['wall_s']} "
                     f"| {r['cpu_s']} | {r['mib_per_s']} | {r['mib_per_cpu_s']} | {r['peak_rss_mib']} |")
    lines += ["", "The converter ran under `nice -n 10` on a machine shared with other benchmarks: wall time "
              "depends on that load, CPU time (user + system, from `wait4`) much less.",
              "", f"Raw figures, the RSS time series and the converter's report: `{res['json']}`.", ""]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    path = path.absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _thin(samples: list[tuple[float, float]], keep: int = 240) -> list[tuple[float, float]]:
    """At most ``keep`` samples, evenly spaced, the highest one always kept."""
    if len(samples) <= keep:
        return samples
    step = len(samples) / keep
    picked = {int(i * step) for i in range(keep)} | {max(range(len(samples)), key=lambda i: samples[i][1])}
    return [samples[i] for i in sorted(picked)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-mb", type=float, nargs="+", default=[1024.0], metavar="MB",
                   help="input size(s) in MiB, one run each (default 1024)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tmp", help="where inputs are generated (default: the system temporary directory)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results path without suffix")
    args = p.parse_args(argv)
    if any(s <= 0 for s in args.size_mb):
        p.error("--size-mb must be positive")
    floor = import_floor()
    runs = []
    for size in args.size_mb:
        r = measure(size, args.seed, args.tmp)
        print(f"[{size} MiB] {r['input_mib']} MiB in {r['wall_s']} s ({r['mib_per_s']} MiB/s), "
              f"peak RSS {r['peak_rss_mib']} MiB", flush=True)
        runs.append(r)
    res = {
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} CPUs, {psutil.virtual_memory().total / 1024 ** 3:.0f} GiB RAM, "
                   f"load average {os.getloadavg()[0]:.1f} at the end (shared with other benchmarks)",
        "python": platform.python_version(), "pyarrow": pyarrow.__version__, "seed": args.seed,
        "import_floor_rss_mib": floor, "runs": runs,
        "json": _shown(args.out.with_suffix(".json")),
    }
    write_json_atomic(args.out.with_suffix(".json"), res)
    write_text_atomic(args.out.with_suffix(".md"), to_markdown(res))
    print(to_markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
