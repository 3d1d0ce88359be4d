"""Feature extraction: the Ray Data pipeline vs a plain single-process loop, same encoders, same items.

    python bench/bench_features.py                       # builtin small (9,000 items), text + image views
    python bench/bench_features.py --views text --repeats 3 --json bench/results/features.json

Both sides run the identical code per batch (``prepare_batch`` then ``EncodeBatch``) over the same
items and write a Parquet file of the vectors; timings include loading the encoder and exclude
starting Ray.  The plain loop uses torch's default intra-op threads (all cores); the pipeline runs
single-threaded encoder actors beside CPU decode tasks (``raypipe.features.pipeline``).  Prints a
Markdown table of items/s and the ratio, and writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from raypipe.data.schema import ITEMS_FILE
from raypipe.features.encoders import image_preprocess_for, parse_image_model
from raypipe.features.pipeline import EncodeBatch, FeatureConfig, extract_features, prepare_batch
from raypipe.features.store import FeatureStore
from raypipe.features.text import resolve_text_model
from raypipe.io import AtomicParquetWriter

log = logging.getLogger("bench_features")


def plain_loop(cfg: FeatureConfig, view: str, out_file: Path, threads: int) -> int:
    """The reference: one process, read → prepare → encode → write, batch after batch."""
    items = Path(cfg.dataset) / ITEMS_FILE
    if view == "text":
        model, pre, cols = resolve_text_model(cfg.text_model), None, ["item_id", "title", "category", "brand",
                                                                      "description", "price"]
    else:
        model = cfg.image_model
        pre = image_preprocess_for(parse_image_model(model), cfg.image_size)
        cols = ["item_id", "image", "image_path"]
    enc = EncodeBatch(view, model, num_gpus=0, torch_threads=threads, image_size=cfg.image_size,
                      seed=cfg.seed, text_max_length=cfg.text_max_length)
    n = 0
    writer = None
    for rb in pq.ParquetFile(items).iter_batches(batch_size=cfg.batch_size, columns=cols):
        prepared = prepare_batch(pa.Table.from_batches([rb]), template=cfg.text_template,
                                 uses_text=view == "text", preprocess=pre, base_dir=str(items.parent))
        table = enc(prepared)
        if writer is None:
            writer = AtomicParquetWriter(out_file, table.schema)
        writer.write_batch(table)
        n += table.num_rows
    if writer is not None:
        writer.close()
    return n


def run(args: argparse.Namespace) -> dict:
    import torch

    from raypipe.runtime import init_ray

    if args.dataset:
        dataset = Path(args.dataset)
    else:
        from raypipe.data import builtin

        dataset = Path(tempfile.gettempdir()) / f"raypipe-bench-builtin-{args.size}"
        if not (dataset / ITEMS_FILE).exists():
            builtin.write(dataset, args.size)
    n_items = pq.ParquetFile(dataset / ITEMS_FILE).metadata.num_rows
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-features-"))
    base = FeatureConfig(dataset=str(dataset), out=str(work / "ray"), image_model=args.image_model,
                         text_template=args.text_template,
                         image_size=args.image_size, batch_size=args.batch_size, num_actors=args.num_actors,
                         force=True)
    plain_threads = args.plain_threads or torch.get_num_threads()
    init_ray(num_cpus=args.num_cpus)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    load_before = os.getloadavg()
    for view in args.views:
        cfg = FeatureConfig(**{**base.__dict__, "views": [view]})
        plain_s, ray_s = [], []
        for rep in range(args.repeats):
            t0 = time.perf_counter()
            n = plain_loop(cfg, view, work / f"plain-{view}.parquet", plain_threads)
            plain_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            extract_features(cfg)
            ray_s.append(time.perf_counter() - t0)
            log.info("%s rep %d: plain %.1fs, ray %.1fs", view, rep, plain_s[-1], ray_s[-1])
        assert n == n_items
        # the two sides must agree on the vectors (they run the same encoder code)
        store = FeatureStore.open(work / "ray")
        plain = pq.read_table(work / f"plain-{view}.parquet")
        ids = plain.column("item_id").to_pylist()
        vecs, present = store.aligned(view, ids)
        ref_present = plain.column("present").to_numpy()
        ref = np.zeros_like(vecs)
        valid = np.asarray(plain.column("vector").drop_null().to_pylist(), dtype=np.float32)
        ref[ref_present] = valid
        max_diff = float(np.abs(vecs - ref).max())
        assert (present == ref_present).all() and max_diff < 1e-3, f"{view}: pipelines disagree ({max_diff})"
        info = store.info(view)
        p, r = statistics.median(plain_s), statistics.median(ray_s)
        name = f"MiniLM-L6, {args.text_template} text" if view == "text" else info["encoder"]
        rows.append({"view": view, "encoder": name,
                     "weights": info["weights"], "dim": info["dim"], "n_items": n_items,
                     "plain_s": round(p, 2), "ray_s": round(r, 2),
                     "plain_items_per_s": round(n_items / p, 1), "ray_items_per_s": round(n_items / r, 1),
                     "ratio": round(p / r, 3), "max_abs_diff": max_diff,
                     "plain_all_s": [round(x, 2) for x in plain_s], "ray_all_s": [round(x, 2) for x in ray_s],
                     "ray_actors": info["run"]["actors"]})
    return {"dataset": str(dataset), "n_items": n_items, "batch_size": args.batch_size,
            "text_template": args.text_template, "loadavg_before": load_before, "loadavg_after": os.getloadavg(),
            "image_size": args.image_size, "repeats": args.repeats, "cpus": os.cpu_count(),
            "ray_cpus": ray.cluster_resources().get("CPU"), "plain_torch_threads": plain_threads,
            "machine": platform.processor() or platform.machine(), "rows": rows}


def format_table(res: dict) -> str:
    lines = ["| View | Encoder | Items | Plain loop items/s | Ray Data items/s | Ratio |",
             "|---|---|---:|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['view']} | {r['encoder']} ({r['dim']}-d, weights {r['weights']}) | {r['n_items']:,} | "
                     f"{r['plain_items_per_s']:,.1f} | {r['ray_items_per_s']:,.1f} | {r['ratio']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="canonical dataset dir (default: builtin --size, generated)")
    p.add_argument("--size", default="small", help="builtin size when --dataset is not given (small = 9,000 items)")
    p.add_argument("--views", default="text,image")
    p.add_argument("--text-template", default="plain", help="plain (titles) or upsr_finetune (long texts)")
    p.add_argument("--image-model", default="resnet18")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--num-actors", type=int, default=None)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--plain-threads", type=int, default=None,
                   help="torch threads of the plain loop (default: torch's default, all cores)")
    p.add_argument("--json", default="bench/results/features.json")
    args = p.parse_args(argv)
    args.views = [v for v in args.views.split(",") if v]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run(args)
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
