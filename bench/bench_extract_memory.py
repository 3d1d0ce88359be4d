"""Does feature extraction stream?  Extract a large catalogue with the object store capped, sampling memory.

    python bench/bench_extract_memory.py                         # builtin large (150,000 items), 1 GiB store
    python bench/bench_extract_memory.py --size small --views text --out bench/results/extract_memory_small

Starts a local Ray with ``--object-store-mb`` of object store, runs :func:`extract_features` in a thread
and samples, every ``--interval`` seconds, the memory of the whole process tree (this driver, the raylet,
GCS, every worker): the sum of PSS (shared pages such as the object store's counted once), the largest
single-process RSS, and the items written so far (rows of the part files in the store's work directory).
The decoded pixels alone of the catalogue (``n_items x S x S x 3`` bytes) are recorded beside the peak:
a peak far below them is what streaming means.  Writes ``<out>.json`` (peaks + the time series) and
``<out>.png`` (memory and progress over time).
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_features import bench_dataset  # noqa: E402

from raypipe.data.schema import ITEMS_FILE  # noqa: E402
from raypipe.features.pipeline import WORK_DIR, FeatureConfig, extract_features  # noqa: E402
from raypipe.io import save_figure_atomic, write_json_atomic  # noqa: E402

log = logging.getLogger("bench_extract_memory")
MiB = 1024 ** 2


def tree_memory(root: psutil.Process) -> tuple[float, float, int]:
    """(sum of PSS, largest RSS, process count) over ``root`` and its descendants, in MiB."""
    pss, rss_max, n = 0.0, 0.0, 0
    for p in [root] + root.children(recursive=True):
        try:
            m = p.memory_full_info()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
        pss += m.pss / MiB
        rss_max = max(rss_max, m.rss / MiB)
        n += 1
    return pss, rss_max, n


def items_written(store: Path) -> int:
    """Rows in the part files written so far, over every view's work directory (footers only)."""
    total = 0
    for f in (store / WORK_DIR).glob("*/*.parquet"):
        if f.name.startswith("."):
            continue
        try:
            total += pq.ParquetFile(f).metadata.num_rows
        except Exception:  # a part file being written
            continue
    return total


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = res["samples"]
    t = [x["t"] for x in s]
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot(t, [x["pss_mib"] / 1024 for x in s], label="process tree PSS (GiB)")
    ax.plot(t, [x["rss_max_mib"] / 1024 for x in s], label="largest process RSS (GiB)")
    ax.axhline(res["object_store_mb"] / 1024, ls="--", c="grey", label="object store cap")
    ax.set_xlabel("seconds")
    ax.set_ylabel("GiB")
    ax2 = ax.twinx()
    ax2.plot(t, [x["items_written"] for x in s], c="k", lw=1, label="rows written (view in progress)")
    ax2.set_ylabel("rows written")
    fig.legend(loc="lower right", fontsize=8, bbox_to_anchor=(0.88, 0.18))
    ax.set_title(f"Feature extraction of {res['n_items']:,} items ({', '.join(res['views'])})")
    save_figure_atomic(fig, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="canonical dataset dir (default: builtin --size, generated)")
    p.add_argument("--size", default="large")
    p.add_argument("--views", default="text,image")
    p.add_argument("--object-store-mb", type=int, default=1024)
    p.add_argument("--num-cpus", type=int, default=None)
    p.add_argument("--interval", type=float, default=2.0)
    p.add_argument("--store", default=None, help="feature store directory (default: a temporary one)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "extract_memory_large")
    p.add_argument("--replot", action="store_true", help="only redraw <out>.png from <out>.json")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(args.out.with_suffix(".json").read_text()), args.out.with_suffix(".png"))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    dataset = bench_dataset(args.dataset, args.size)
    store = Path(args.store or tempfile.mkdtemp(prefix="raypipe-bench-memory-"))
    cfg = FeatureConfig(dataset=str(dataset), out=str(store), views=args.views.split(","), force=True)
    cfg.validate()
    n_items = pq.ParquetFile(dataset / ITEMS_FILE).metadata.num_rows

    from raypipe.runtime import init_ray

    init_ray(num_cpus=args.num_cpus, object_store_mb=args.object_store_mb)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    me = psutil.Process()
    samples: list[dict[str, Any]] = []
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["results"] = extract_features(cfg)
        except BaseException as e:  # reported after the sampling loop
            outcome["error"] = e

    t0 = time.time()
    th = threading.Thread(target=work, daemon=True)
    th.start()
    while th.is_alive():
        pss, rss_max, n = tree_memory(me)
        samples.append({"t": round(time.time() - t0, 1), "pss_mib": round(pss, 1), "rss_max_mib": round(rss_max, 1),
                        "processes": n, "items_written": items_written(store)})
        if len(samples) % 30 == 1:
            log.info("t=%.0fs: tree PSS %.0f MiB, largest RSS %.0f MiB, %d rows written",
                     samples[-1]["t"], pss, rss_max, samples[-1]["items_written"])
        th.join(args.interval)
    if "error" in outcome:
        raise outcome["error"]
    wall = time.time() - t0
    from raypipe.features.encoders import image_preprocess_for, parse_image_model

    side = image_preprocess_for(parse_image_model(cfg.image_model), cfg.image_size).size
    res = {"dataset": str(dataset), "n_items": n_items, "views": cfg.views, "object_store_mb": args.object_store_mb,
           "cpus": os.cpu_count(), "ray_cpus": ray.cluster_resources().get("CPU"), "wall_seconds": round(wall, 1),
           "items_per_s": round(n_items * len(cfg.views) / wall, 1),
           "peak_tree_pss_mib": max(s["pss_mib"] for s in samples),
           "peak_process_rss_mib": max(s["rss_max_mib"] for s in samples),
           "decoded_pixels_mib": round(n_items * side * side * 3 / MiB, 1), "image_side": side,
           "views_done": [{"view": r.view, "status": r.status, "encoder": r.encoder, "weights": r.weights,
                           "n_with_vector": r.n_with_vector, "seconds": r.seconds, "items_per_s": r.items_per_s}
                          for r in outcome["results"]],
           "samples": samples}
    write_json_atomic(args.out.with_suffix(".json"), res)
    plot(res, args.out.with_suffix(".png"))
    print({k: v for k, v in res.items() if k != "samples"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
