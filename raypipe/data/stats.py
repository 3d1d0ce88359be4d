"""Per-domain dataset statistics in the form of the papers' dataset tables."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from raypipe.data.dataset import CanonicalDataset


@dataclass(frozen=True)
class DomainStats:
    domain: str
    role: str
    users: int
    items: int  # items with at least one interaction
    catalogue: int  # items listed in items.parquet
    interactions: int
    avg_length: float  # interactions per user
    sparsity: float  # 1 - interactions / (users * items)
    missing_text: int
    missing_image: int


def _count_distinct(col: pa.ChunkedArray) -> int:
    return int(pc.count_distinct(col).as_py())


def dataset_stats(path: str | Path) -> list[DomainStats]:
    """Compute statistics per domain plus an ``all`` row (streams columns, never the images)."""
    ds = CanonicalDataset.open(path)
    inter = ds.interactions(columns=["user_id", "item_id", "domain"])
    item_cols = ["domain", "title", "description"]
    schema_names = pq.read_schema(ds.items_path).names
    img_cols = [c for c in ("image", "image_path") if c in schema_names]
    items = ds.items(columns=item_cols + img_cols)
    roles = {d.name: d.role for d in ds.info.domains}
    rows: list[DomainStats] = []
    domains = sorted(set(inter.column("domain").to_pylist()) | set(roles), key=lambda d: (roles.get(d, "z"), d))
    for dom in domains + ["all"]:
        it = inter if dom == "all" else inter.filter(pc.equal(inter.column("domain"), dom))
        im = items if dom == "all" else items.filter(pc.equal(items.column("domain"), dom))
        users = _count_distinct(it.column("user_id")) if it.num_rows else 0
        n_items = _count_distinct(it.column("item_id")) if it.num_rows else 0
        no_text = pc.and_(pc.is_null(im.column("title")), pc.is_null(im.column("description")))
        if img_cols:
            no_img = pc.is_null(im.column(img_cols[0]))
            for c in img_cols[1:]:
                no_img = pc.and_(no_img, pc.is_null(im.column(c)))
            missing_image = int(pc.sum(no_img).as_py() or 0)
        else:
            missing_image = im.num_rows
        rows.append(
            DomainStats(
                domain=dom,
                role="-" if dom == "all" else roles.get(dom, "?"),
                users=users,
                items=n_items,
                catalogue=im.num_rows,
                interactions=it.num_rows,
                avg_length=it.num_rows / users if users else 0.0,
                sparsity=1.0 - it.num_rows / (users * n_items) if users and n_items else 1.0,
                missing_text=int(pc.sum(no_text).as_py() or 0),
                missing_image=missing_image,
            )
        )
    return rows


def format_stats(rows: list[DomainStats]) -> str:
    """A Markdown table: Domain | Role | #Users | #Items | #Inters | Avg. len | Sparsity | no text | no image."""
    head = "| Domain | Role | #Users | #Items | #Inters. | Avg. n | Sparsity | Items w/o text | Items w/o image |"
    sep = "|---|---|---:|---:|---:|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r.domain} | {r.role} | {r.users:,} | {r.items:,} | {r.interactions:,} | "
            f"{r.avg_length:.2f} | {r.sparsity:.4%} | {r.missing_text:,} | {r.missing_image:,} |"
        )
    return "\n".join(lines)
