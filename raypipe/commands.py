"""The ``raypipe`` console command: one subcommand per job, each running the same code as ``jobs/*.py``
(which stay as they are for ``ray job submit -- python jobs/X.py``).

    raypipe --help                        # the subcommands (imports none of them, starts no Ray)
    raypipe pretrain --help               # a subcommand's options and their defaults
    raypipe pretrain --print-config --model sasrec train.lr=3e-4
    raypipe data --size tiny --out data/builtin-tiny

A subcommand is imported only when it runs.  Every bad argument or config value is rejected by the
subcommand with exit code 2 and a message naming it, before Ray starts.
"""
from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from typing import Callable, Sequence

PROG = "raypipe"


@dataclass(frozen=True)
class Command:
    """A subcommand: ``module.function(argv, prog=...)`` (or ``function(stage, None, argv, prog=...)`` for
    the experiment stages of :mod:`raypipe.cli`) returning the exit code."""

    module: str
    function: str
    help: str
    stage: str | None = None
    #: whether the function takes ``prog=`` (the name its usage line shows)
    takes_prog: bool = True


COMMANDS: dict[str, Command] = {
    "data": Command("raypipe.data.builtin", "main", "generate the embedded benchmark (builtin:<tiny|small|large>) "
                                                    "into a dataset directory and print its statistics"),
    "convert": Command("raypipe.data.convert", "main", "convert a dataset in a real-world format into a canonical "
                                                       "dataset directory", takes_prog=False),
    "features": Command("raypipe.features.cli", "main", "extract text / image / cross-modal item features with "
                                                        "Ray Data into a feature store (jobs/extract_features.py)"),
    "pretrain": Command("raypipe.cli", "main", "pre-train a registered model on the source domains with Ray Train "
                                               "(jobs/pretrain.py)", stage="pretrain"),
    "finetune": Command("raypipe.cli", "main", "fine-tune on the target domains: zero-shot, inductive or "
                                               "transductive (jobs/finetune.py)", stage="finetune"),
    "evaluate": Command("raypipe.cli", "main", "evaluate a trained run or a non-learned baseline, no training "
                                               "(jobs/evaluate.py)", stage="evaluate"),
    "tune": Command("raypipe.tune.cli", "main", "sweep a paper's published grid with Ray Tune (jobs/tune.py)"),
    "idp": Command("raypipe.pipelines.idp_cli", "main", "the whole IDP pipeline: features, pre-training, CDIM, "
                                                        "transfer, fine-tuning, evaluation (jobs/idp.py)"),
    "benchmark": Command("raypipe.benchmark.cli", "main", "the leaderboard: every method and baseline on one protocol, "
                                                         "one report (jobs/benchmark.py)", takes_prog=False),
    "serve": Command("raypipe.serve.launch", "main", "serve a trained run or IDP pipeline over HTTP with Ray Serve "
                                                     "(serve run serve_apps/recommender.yaml)"),
    "bundle": Command("raypipe.serve.bundle", "main", "export a trained run or IDP pipeline as a serving bundle: "
                                                      "the model, item vectors, popularity and attributes, no dataset"),
}


def usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = [f"usage: {PROG} [-h] [--version] <command> [options]", "",
             (__doc__ or "").split("\n")[0].replace("``", ""), "", "commands:"]
    lines += [f"  {name:<{width}}  {c.help}" for name, c in COMMANDS.items()]
    lines += ["", f"{PROG} <command> --help shows a command's options and their defaults."]
    return "\n".join(lines) + "\n"


def load(name: str) -> Callable[..., int | None]:
    """The entry function of a subcommand, imported now; ``SystemExit`` with a clear message when its
    module is not part of this installation."""
    c = COMMANDS[name]
    try:
        module = importlib.import_module(c.module)
    except ModuleNotFoundError as e:
        if e.name != c.module:  # a dependency of the module is missing: that is its own error
            raise
        print(f"{PROG} {name}: not available in this installation ({c.module} is missing)", file=sys.stderr)
        raise SystemExit(1) from None
    return getattr(module, c.function)


def run(name: str, argv: Sequence[str]) -> int:
    """Run the subcommand ``name`` on ``argv``; its exit code."""
    c = COMMANDS[name]
    fn = load(name)
    prog = f"{PROG} {name}"
    if c.stage is not None:
        code = fn(c.stage, None, list(argv), prog=prog)
    elif c.takes_prog:
        code = fn(list(argv), prog=prog)
    else:
        code = fn(list(argv))
    return int(code or 0)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as pkg_version

    try:
        return pkg_version("raypipe")
    except PackageNotFoundError:
        return "unknown (not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        sys.stderr.write(usage())
        return 2
    first, rest = args[0], args[1:]
    if first in ("-h", "--help"):
        sys.stdout.write(usage())
        return 0
    if first == "--version":
        print(f"{PROG} {version()}")
        return 0
    if first not in COMMANDS:
        sys.stderr.write(usage())
        print(f"{PROG}: error: unknown command {first!r}; choose from {', '.join(COMMANDS)}", file=sys.stderr)
        return 2
    return run(first, rest)


if __name__ == "__main__":
    sys.exit(main())
