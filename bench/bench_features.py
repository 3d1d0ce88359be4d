"""Feature extraction: the Ray Data pipeline vs a plain single-process loop, same encoders, same items.

    python bench/bench_features.py                       # builtin small (6,000 items), image + text views
    python bench/bench_features.py --size large --views text --json bench/results/features_text_large.json
    python bench/bench_features.py --chunk-sweep --views image --json bench/results/features_chunk.json

Both sides run the identical code per batch (``prepare_batch`` then ``EncodeBatch``) over the same
items and write a Parquet file of the vectors; timings include loading the encoder and exclude
starting Ray.  The plain loop uses torch's default intra-op threads (all cores); the pipeline runs its
encoder actors beside CPU decode tasks (``raypipe.features.pipeline``), once per ``--layouts`` entry
(``AxT`` = A actors of T torch threads; ``auto`` = the pipeline's default).  ``--chunk-sweep`` measures
the image encoder alone (images per forward pass x torch threads), the figure behind CPU_IMAGE_CHUNK.
Prints a Markdown table of items/s and the ratio, and writes the numbers as JSON.
"""
from __future__ import annotations

import argparse
import io
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
from raypipe.io import AtomicParquetWriter, write_json_atomic

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
                      seed=cfg.seed, text_max_length=cfg.text_max_length, image_chunk=cfg.image_chunk)
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


class CpuSampler:
    """CPU seconds used during a run by every process of the machine, grouped: this driver, the encoder
    actors, other Ray workers (read/decode and write tasks), Ray's own daemons, everything else.

    Cumulative CPU times are sampled every ``interval`` seconds and the last value seen per process is
    kept, so processes that exit during the run (the actors, at its end) are counted up to their last
    sample."""

    def __init__(self, interval: float = 1.0) -> None:
        import threading

        self.interval = interval
        self.start: dict[int, float] = {}
        self.last: dict[int, tuple[str, float]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _group(pid: int, name: str, cmd: str) -> str:
        if pid == os.getpid():
            return "driver"
        if "MapWorker" in name or "MapWorker" in cmd:
            return "encoder actors"
        if name.startswith("ray::") or cmd.startswith("ray::"):
            return "other ray workers"
        if any(k in cmd for k in ("raylet", "gcs_server", "dashboard", "log_monitor", "monitor.py", "runtime_env",
                                  "agent")):
            return "ray daemons"
        return "other"

    def _snapshot(self) -> dict[int, tuple[str, float]]:
        import psutil

        out = {}
        for p in psutil.process_iter(["pid", "name", "cmdline", "cpu_times"]):
            try:
                ct = p.info["cpu_times"]
                cmd = " ".join(p.info["cmdline"] or [])
                out[p.info["pid"]] = (self._group(p.info["pid"], p.info["name"] or "", cmd), ct.user + ct.system)
            except Exception:
                continue
        return out

    def _record(self) -> None:
        for pid, (g, t) in self._snapshot().items():
            prev = self.last.get(pid)
            # a process seen once as an encoder actor stays one (its title changes as it runs)
            self.last[pid] = ("encoder actors" if prev and prev[0] == "encoder actors" else g, t)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._record()

    def __enter__(self) -> "CpuSampler":
        self.start = {pid: t for pid, (_, t) in self._snapshot().items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._record()

    def seconds(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pid, (g, t) in self.last.items():
            out[g] = out.get(g, 0.0) + t - self.start.get(pid, 0.0)
        return {g: round(v, 1) for g, v in sorted(out.items())}


def parse_layout(text: str) -> tuple[int | None, int | None]:
    """``"2x1"`` -> (2 actors, 1 torch thread); ``"auto"`` -> the pipeline's defaults."""
    if text == "auto":
        return None, None
    try:
        a, t = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"layout {text!r}: expected ACTORSxTHREADS (e.g. 2x1) or auto") from None
    if a < 1 or t < 1:
        raise argparse.ArgumentTypeError(f"layout {text!r}: actors and threads must be >= 1")
    return a, t


def chunk_sweep(cfg: FeatureConfig, chunks: list[int], threads: list[int], n: int, repeats: int) -> list[dict]:
    """The image encoder alone on ``n`` decoded catalogue images: items/s per (torch threads, chunk)."""
    import torch

    from raypipe.features.encoders import ImageEncoder

    items = Path(cfg.dataset) / ITEMS_FILE
    pre = image_preprocess_for(parse_image_model(cfg.image_model), cfg.image_size)
    t = pq.read_table(items, columns=["item_id", "image", "image_path"]).slice(0, 4 * n)
    prepared = prepare_batch(t, template=cfg.text_template, uses_text=False, preprocess=pre,
                             base_dir=str(items.parent))
    pixels = prepared["pixels"][prepared["image_status"] == "ok"][:n]
    enc = ImageEncoder(cfg.image_model, device="cpu", image_size=cfg.image_size)
    rows = []
    for th in threads:
        torch.set_num_threads(th)
        enc.encode(pixels[:chunks[0]], batch_size=chunks[0])  # warm-up
        for c in chunks:
            rates = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                enc.encode(pixels, batch_size=c)
                rates.append(len(pixels) / (time.perf_counter() - t0))
            rows.append({"torch_threads": th, "chunk": c, "images": len(pixels),
                         "items_per_s": round(statistics.median(rates), 1), "all": [round(r, 1) for r in rates]})
            log.info("threads %d chunk %d: %.1f images/s", th, c, rows[-1]["items_per_s"])
    return rows


def bench_dataset(path: str | None, size: str) -> Path:
    """``path`` when given, else the builtin catalogue of ``size``, generated once into the temp dir."""
    if path:
        return Path(path)
    from raypipe.data import builtin

    dataset = Path(tempfile.gettempdir()) / f"raypipe-bench-builtin-{size}"
    if not (dataset / ITEMS_FILE).exists():
        builtin.write(dataset, size)
    return dataset


def photo_catalogue(src: Path, side: int, out: Path, seed: int = 0) -> Path:
    """A copy of ``src``'s items whose images are ``side`` px JPEG photos (quality 90): each item's picture
    upscaled, with per-pixel noise so that decoding does the work a real photo needs (a flat synthetic
    image compresses to almost nothing).  The builtin catalogues ship 32 px PNGs, whose decoding is
    nearly free; catalogue photos are hundreds of pixels wide."""
    from PIL import Image

    dst = out / ITEMS_FILE
    if dst.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    t = pq.read_table(src / ITEMS_FILE)
    rng = np.random.default_rng(seed)
    photos = []
    for data in t.column("image").to_pylist():
        if data is None:
            photos.append(None)
            continue
        with Image.open(io.BytesIO(data)) as img:
            big = np.asarray(img.convert("RGB").resize((side, side), Image.Resampling.BILINEAR), dtype=np.int16)
        noisy = np.clip(big + rng.integers(-24, 25, size=big.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="JPEG", quality=90)
        photos.append(buf.getvalue())
    t = t.set_column(t.schema.get_field_index("image"), "image", pa.array(photos, pa.binary()))
    tmp = dst.with_name("." + dst.name)
    pq.write_table(t, tmp)
    tmp.replace(dst)
    log.info("wrote %s: %d items with %d px JPEG photos", out, t.num_rows, side)
    return out


def decode_cost(cfg: FeatureConfig, n: int = 1000) -> dict:
    """Single-core milliseconds per image of reading + decoding + resizing (``prepare_batch``)."""
    items = Path(cfg.dataset) / ITEMS_FILE
    pre = image_preprocess_for(parse_image_model(cfg.image_model), cfg.image_size)
    t = pq.read_table(items, columns=["item_id", "image", "image_path"]).slice(0, n)
    t0 = time.perf_counter()
    out = prepare_batch(t, template=cfg.text_template, uses_text=False, preprocess=pre, base_dir=str(items.parent))
    dt = time.perf_counter() - t0
    ok = int((out["image_status"] == "ok").sum())
    return {"images": ok, "ms_per_image": round(1000 * dt / max(1, ok), 3)}


def run(args: argparse.Namespace) -> dict:
    import torch

    from raypipe.runtime import init_ray

    dataset = bench_dataset(args.dataset, args.size)
    if args.photo_size:
        dataset = photo_catalogue(dataset, args.photo_size, dataset.with_name(f"{dataset.name}-photo{args.photo_size}"))
    n_items = pq.ParquetFile(dataset / ITEMS_FILE).metadata.num_rows
    work = Path(tempfile.mkdtemp(prefix="raypipe-bench-features-"))
    base = FeatureConfig(dataset=str(dataset), out=str(work / "ray"), image_model=args.image_model,
                         text_template=args.text_template, image_size=args.image_size, batch_size=args.batch_size,
                         image_chunk=args.image_chunk, force=True)
    plain_threads = args.plain_threads or torch.get_num_threads()
    common = {"dataset": str(dataset), "n_items": n_items, "batch_size": args.batch_size,
              "image_chunk": args.image_chunk, "text_template": args.text_template, "image_size": args.image_size,
              "repeats": args.repeats, "cpus": os.cpu_count(), "plain_torch_threads": plain_threads,
              "machine": platform.processor() or platform.machine(), "loadavg_before": os.getloadavg()}
    if "image" in args.views:
        common["decode"] = decode_cost(base)
        log.info("decoding: %.2f ms per image on one core", common["decode"]["ms_per_image"])
    if args.chunk_sweep:
        rows = chunk_sweep(base, args.chunks, args.sweep_threads, args.sweep_images, args.repeats)
        return {**common, "chunk_sweep": rows, "image_model": args.image_model, "loadavg_after": os.getloadavg()}
    init_ray(num_cpus=args.num_cpus)
    import ray

    ray.data.DataContext.get_current().enable_progress_bars = False
    rows = []
    for view in args.views:
        plain_s: list[float] = []
        ray_s: dict[str, list[float]] = {lay: [] for lay in args.layouts}
        actors: dict[str, int] = {}
        cpu: dict[str, list[dict[str, float]]] = {lay: [] for lay in args.layouts}
        for rep in range(args.repeats):
            cfg = FeatureConfig(**{**base.__dict__, "views": [view]})
            t0 = time.perf_counter()
            n = plain_loop(cfg, view, work / f"plain-{view}.parquet", plain_threads)
            plain_s.append(time.perf_counter() - t0)
            log.info("%s rep %d: plain %.1fs", view, rep, plain_s[-1])
            for lay in args.layouts:
                n_actors, threads = parse_layout(lay)
                cfg = FeatureConfig(**{**base.__dict__, "views": [view], "num_actors": n_actors,
                                       "torch_threads": threads})
                t0 = time.perf_counter()
                with CpuSampler() as sampler:
                    extract_features(cfg)
                ray_s[lay].append(time.perf_counter() - t0)
                cpu[lay].append(sampler.seconds())
                log.info("%s rep %d: CPU seconds by process group %s", view, rep, cpu[lay][-1])
                log.info("%s rep %d: ray %s %.1fs", view, rep, lay, ray_s[lay][-1])
                check_agree(work, view)
                run_info = FeatureStore.open(work / "ray").info(view)["run"]
                actors[lay] = run_info["actors"]
        assert n == n_items
        info = FeatureStore.open(work / "ray").info(view)
        p = statistics.median(plain_s)
        name = f"MiniLM-L6, {args.text_template} text" if view == "text" else info["encoder"]
        for lay in args.layouts:
            r = statistics.median(ray_s[lay])
            rows.append({"view": view, "encoder": name, "weights": info["weights"], "dim": info["dim"],
                         "n_items": n_items, "layout": lay, "plain_s": round(p, 2), "ray_s": round(r, 2),
                         "plain_items_per_s": round(n_items / p, 1), "ray_items_per_s": round(n_items / r, 1),
                         "ratio": round(p / r, 3), "plain_all_s": [round(x, 2) for x in plain_s],
                         "ray_all_s": [round(x, 2) for x in ray_s[lay]], "ray_actors": actors[lay],
                         "ray_cpu_seconds": cpu[lay]})
    return {**common, "ray_cpus": ray.cluster_resources().get("CPU"), "loadavg_after": os.getloadavg(),
            "rows": rows}


def check_agree(work: Path, view: str) -> None:
    """The two sides run the same encoder code: their vectors must agree."""
    store = FeatureStore.open(work / "ray")
    plain = pq.read_table(work / f"plain-{view}.parquet")
    ids = plain.column("item_id").to_pylist()
    vecs, present = store.aligned(view, ids)
    ref_present = plain.column("present").to_numpy()
    ref = np.zeros_like(vecs)
    ref[ref_present] = np.asarray(plain.column("vector").drop_null().to_pylist(), dtype=np.float32)
    max_diff = float(np.abs(vecs - ref).max())
    if not (present == ref_present).all() or max_diff >= 1e-3:
        raise AssertionError(f"{view}: the Ray pipeline and the plain loop disagree (max |diff| {max_diff})")


def format_table(res: dict) -> str:
    if "chunk_sweep" in res:
        lines = ["| Torch threads | Images per forward pass | Images/s |", "|---:|---:|---:|"]
        lines += [f"| {r['torch_threads']} | {r['chunk']} | {r['items_per_s']:,.1f} |" for r in res["chunk_sweep"]]
        return "\n".join(lines)
    lines = ["| View | Encoder | Items | Ray layout | Plain loop items/s | Ray Data items/s | Ratio |",
             "|---|---|---:|---|---:|---:|---:|"]
    for r in res["rows"]:
        lines.append(f"| {r['view']} | {r['encoder']} ({r['dim']}-d, weights {r['weights']}) | {r['n_items']:,} | "
                     f"{r['layout']} ({r['ray_actors']} actors) | {r['plain_items_per_s']:,.1f} | "
                     f"{r['ray_items_per_s']:,.1f} | {r['ratio']:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=None, help="canonical dataset dir (default: builtin --size, generated)")
    p.add_argument("--size", default="small", help="builtin size when --dataset is not given (small = 9,000 items)")
    p.add_argument("--views", default="image,text")
    p.add_argument("--photo-size", type=int, default=None,
                   help="replace the catalogue's images by JPEG photos of this side (realistic decoding work)")
    p.add_argument("--text-template", default="plain", help="plain (titles) or upsr_finetune (long texts)")
    p.add_argument("--image-model", default="efficientnet_lite0")
    p.add_argument("--image-size", type=int, default=None, help="default: the model's native size (224)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--image-chunk", type=int, default=None, help="images per forward pass (default: the pipeline's)")
    p.add_argument("--layouts", default="auto", help="Ray encoder layouts, comma-separated: auto or ACTORSxTHREADS")
    p.add_argument("--chunk-sweep", action="store_true", help="measure the image encoder alone per chunk x threads")
    p.add_argument("--chunks", default="4,8,16,32,64")
    p.add_argument("--sweep-threads", default="1,2")
    p.add_argument("--sweep-images", type=int, default=256)
    p.add_argument("--num-cpus", type=int, default=None, help="CPUs of the local Ray (default: all)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--plain-threads", type=int, default=None,
                   help="torch threads of the plain loop (default: torch's default, all cores)")
    p.add_argument("--json", default="bench/results/features.json")
    args = p.parse_args(argv)
    args.views = [v for v in args.views.split(",") if v]
    args.layouts = [x for x in args.layouts.split(",") if x]
    for lay in args.layouts:
        try:
            parse_layout(lay)
        except argparse.ArgumentTypeError as e:
            p.error(str(e))
    args.chunks = [int(x) for x in args.chunks.split(",")]
    args.sweep_threads = [int(x) for x in args.sweep_threads.split(",")]
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    res = run(args)
    print(format_table(res))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.json, res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
