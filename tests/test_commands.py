"""The ``raypipe`` console command: subcommands listed, defaults in ``--help``, ``--print-config``, every bad
argument rejected with exit 2 naming it before Ray starts; config range checks; ``raypipe data`` into an
existing empty directory."""
from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raypipe import commands
from raypipe.config import ConfigError, load_config

from .scripts import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).parent / "raypipe"  # the console script of this environment
EXPECTED = {"data", "convert", "features", "pretrain", "finetune", "evaluate", "tune", "idp", "benchmark", "serve",
            "bundle"}


def _script(*args: str) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.fail(f"{SCRIPT} is missing: pip install -e . installs the console script")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=600, cwd=REPO)


def _exit_code(argv: list[str]) -> int:
    try:
        return commands.main(argv)
    except SystemExit as e:
        return int(e.code or 0)


def test_help_lists_every_subcommand() -> None:
    p = _script("--help")
    assert p.returncode == 0, p.stderr
    listed = {line.split()[0] for line in p.stdout.split("commands:")[1].splitlines() if line.startswith("  ")}
    assert listed == EXPECTED == set(commands.COMMANDS)


def test_help_imports_neither_ray_nor_torch() -> None:
    code = ("import sys\nfrom raypipe.commands import main\nassert main(['--help']) == 0\n"
            "try:\n    main(['pretrain', '--help'])\nexcept SystemExit as e:\n    assert e.code == 0\n"
            "print('HEAVY', [m for m in ('ray', 'torch') if m in sys.modules])")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0, p.stderr
    assert "HEAVY []" in p.stdout


def test_subcommand_help_shows_defaults() -> None:
    p = _script("pretrain", "--help")
    assert p.returncode == 0, p.stderr
    text = " ".join(p.stdout.split())  # argparse wraps lines
    assert p.stdout.startswith("usage: raypipe pretrain")
    for shown in ("--print-config", "(default: sasrec)", "(default: builtin:small)", "(default: 30)",
                  "(default: 1)", "(default: runs)"):
        assert shown in text, shown


def test_bad_value_exits_2_naming_the_key() -> None:
    p = _script("pretrain", "train.lr=0")
    assert p.returncode == 2, p.stderr
    assert "train.lr" in p.stderr and "Traceback" not in p.stderr


def test_print_config_prints_the_resolved_yaml(no_ray: None, capsys: pytest.CaptureFixture[str]) -> None:
    assert commands.main(["pretrain", "--print-config", "train.lr=0.01", "--dataset", "builtin:tiny"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["train"]["lr"] == 0.01 and cfg["run"]["stage"] == "pretrain"
    assert cfg["data"]["dataset"] == "builtin:tiny" and cfg["model"]["name"] == "sasrec"


@pytest.mark.parametrize("argv,named", [
    (["pretrain", "--model", "nosuchmodel"], "nosuchmodel"),
    (["pretrain", "train.nosuchkey=1"], "train.nosuchkey"),
    (["pretrain", "--nosuchoption"], "--nosuchoption"),
    (["pretrain", "--epochs", "x"], "--epochs"),
    (["pretrain", "data.max_len=0"], "data.max_len"),
    (["pretrain", "--num-workers", "0"], "train.num_workers"),
    (["pretrain", "--dataset", "builtin:huge"], "huge"),
    (["pretrain", "--dataset", "{missing}"], "{missing}"),
    (["finetune", "--init-from", "{missing}"], "{missing}"),
    (["evaluate", "--model", "pop", "eval.n_neg=0"], "eval.n_neg"),
    (["tune", "--space", "tune_spaces/sasrec.yaml", "--dataset", "{missing}"], "{missing}"),
    (["tune", "--space", "tune_spaces/sasrec.yaml", "train.lr=-1"], "train.lr"),
    (["idp", "--dataset", "{missing}"], "{missing}"),
    (["idp", "--finetune", "train.batch_size=0"], "train.batch_size"),
    (["idp", "--storage-path", "{out}", "--shared-from", "nosuchrun"], "shared_from='nosuchrun'"),
    (["features", "--dataset", "{missing}", "--out", "{out}"], "{missing}"),
    (["data", "--size", "huge"], "--size"),
    (["serve", "artifacts={missing}"], "artifacts"),
    (["serve", "artifacts={out}", "nosuchkey=1"], "nosuchkey"),
    (["serve", "--config", "{missing}"], "{missing}"),
    (["bundle", "{missing}", "--out", "{out}/bundle"], "{missing}"),
    (["bundle", "{out}"], "--out"),
    (["bundle", "{out}", "--out", "{out}/b", "--onboarding", "clip"], "--onboarding"),
    (["benchmark", "--methods", "sasrec,nosuchmethod"], "nosuchmethod"),
    (["benchmark", "--budget", "forever"], "--budget"),
    (["nosuchcommand"], "nosuchcommand"),
])
def test_bad_arguments_exit_2_before_ray_naming_them(argv: list[str], named: str, tmp_path: Path, no_ray: None,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    paths = {"missing": str(tmp_path / "no-such-dir"), "out": str(tmp_path)}
    assert _exit_code([a.format(**paths) for a in argv]) == 2
    err = capsys.readouterr().err
    assert named.format(**paths) in err and "Traceback" not in err


def test_serve_config_file_args_are_checked(tmp_path: Path, no_ray: None, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = yaml.safe_load((REPO / "serve_apps" / "recommender.yaml").read_text())
    cfg["applications"][0]["args"]["artifacts"] = str(tmp_path / "no-run")
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(cfg))
    assert _exit_code(["serve", "--config", str(tmp_path / "serve.yaml")]) == 2
    assert f"artifacts: {tmp_path / 'no-run'} does not exist" in capsys.readouterr().err
    assert _exit_code(["serve", "--config", str(tmp_path / "serve.yaml"), "artifacts=runs"]) == 2
    assert "not both" in capsys.readouterr().err


def test_a_subcommand_whose_module_is_absent_fails_clearly(monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setitem(commands.COMMANDS, "convert",
                        commands.Command("raypipe.data.no_such_module", "main", "absent", takes_prog=False))
    assert _exit_code(["convert", "--help"]) == 1
    assert "raypipe convert: not available in this installation (raypipe.data.no_such_module is missing)" \
        in capsys.readouterr().err


@pytest.mark.parametrize("job,module", [("tune", "raypipe.tune.cli"), ("idp", "raypipe.pipelines.idp_cli"),
                                        ("extract_features", "raypipe.features.cli"),
                                        ("benchmark", "raypipe.benchmark.cli")])
def test_jobs_run_the_subcommands_code(job: str, module: str) -> None:
    mod = load_script(f"jobs/{job}.py")
    assert mod.main is importlib.import_module(module).main


@pytest.mark.parametrize("override,key", [
    ("train.lr=0", "train.lr"), ("train.lr=-1e-3", "train.lr"), ("data.max_len=0", "data.max_len"),
    ("train.epochs=0", "train.epochs"), ("train.batch_size=0", "train.batch_size"),
    ("train.num_workers=0", "train.num_workers"), ("eval.n_neg=0", "eval.n_neg"),
    ("train.patience=-1", "train.patience"),
    ("train.weight_decay=-0.1", "train.weight_decay"), ("train.valid_users=0", "train.valid_users"),
    ("train.torch_threads=0", "train.torch_threads"), ("train.cpus_per_worker=0", "train.cpus_per_worker"),
    ("data.k_core=-1", "data.k_core"), ("data.train_fraction=0", "data.train_fraction"),
    ("data.train_fraction=1.5", "data.train_fraction"), ("train.optim.grad_accum=0", "train.optim.grad_accum"),
    ("train.optim.warmup_steps=-1", "train.optim.warmup_steps"), ("eval.ks=[0,10]", "eval.ks"),
    ("eval.k_percents=[0]", "eval.k_percents"),
])
def test_out_of_range_values_name_the_key_and_value(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^{key.replace('.', '[.]')}: expected .*, got "):
        load_config(None, [override])


def test_in_range_edges_are_accepted() -> None:
    cfg = load_config(None, ["train.patience=0", "data.k_core=0", "train.max_failures=-1", "train.lr=1e-9",
                             "data.max_len=1", "data.train_fraction=1", "train.valid_users=null"])
    assert (cfg.train.patience, cfg.data.max_len, cfg.train.max_failures) == (0, 1, -1)


def test_data_writes_into_an_existing_empty_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "empty"
    out.mkdir()
    assert commands.main(["data", "--size", "tiny", "--out", str(out)]) == 0
    assert (out / "dataset.json").is_file() and "| books | source |" in capsys.readouterr().out
    assert commands.main(["data", "--size", "tiny", "--out", str(out)]) == 0  # kept: statistics only
    assert _exit_code(["data", "--size", "small", "--out", str(out)]) == 2  # another size: --force replaces
    assert f"{out} holds builtin-tiny (seed 0), not builtin-small" in capsys.readouterr().err


@pytest.mark.parametrize("force", [[], ["--force"]])
def test_data_refuses_a_directory_holding_something_else(force: list[str], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    assert _exit_code(["data", "--size", "tiny", "--out", str(out), *force]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "holds no dataset" in err and "Traceback" not in err
    assert (out / "notes.txt").read_text() == "keep me" and not (out / "dataset.json").exists()
