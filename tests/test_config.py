"""Typed configs: merge, per-model validation of the ``model:`` section, overrides, the CLI's exit 2."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raypipe.config import ConfigError, ExperimentConfig, deep_merge, load_config, parse_override, plain
from raypipe.models.bert4rec import BERT4RecConfig
from raypipe.models.gru4rec import GRU4RecConfig
from raypipe.models.pop import PopConfig
from raypipe.models.sasrec import SASRecConfig

REPO = Path(__file__).resolve().parents[1]


def test_deep_merge_keeps_every_key_of_a_section() -> None:
    merged = deep_merge(parse_override("model.hidden=32"), parse_override("model.n_layers=3"))
    assert plain(merged) == {"model": {"hidden": 32, "n_layers": 3}}
    cfg = load_config(None, ["model.hidden=32", "model.n_layers=3", "model.dropout=0.1"])
    assert (cfg.model.hidden, cfg.model.n_layers, cfg.model.dropout) == (32, 3, 0.1)


def test_a_string_field_keeps_the_text_as_written(tmp_path: Path) -> None:
    # YAML 1.1 reads 91259_00000 as the integer 9125900000: a Tune trial id used as a run name lost its "_"
    cfg = load_config(None, ["run.name=91259_00000", "data.dataset=2024", "train.lr=1e-3", "model.hidden=0x10"])
    assert (cfg.run.name, cfg.data.dataset, cfg.train.lr, cfg.model.hidden) == ("91259_00000", "2024", 1e-3, 16)
    assert load_config(None, ["run.name=yes"]).run.name == "yes"
    assert load_config(None, ["run.name=1e3"]).run.name == "1e3"
    assert load_config(None, ["run.name=null"]).run.name is None
    path = tmp_path / "c.yaml"
    path.write_text("run:\n  name: 00012_3\ntrain:\n  epochs: 7\n")
    cfg = load_config(path)
    assert (cfg.run.name, cfg.train.epochs) == ("00012_3", 7)
    assert load_config(tmp_path / "c.yaml").to_dict()["run"]["name"] == "00012_3"
    with pytest.raises(ConfigError, match=r"train\.epochs: expected an integer"):
        load_config(None, ["train.epochs=yes"])


def test_model_section_is_the_named_models_own_config() -> None:
    assert isinstance(ExperimentConfig().model, SASRecConfig)
    assert isinstance(load_config(None, ["model.name=gru4rec"]).model, GRU4RecConfig)
    bert = load_config(None, ["model.name=bert4rec", "model.mask_prob=0.3"]).model
    assert isinstance(bert, BERT4RecConfig) and bert.mask_prob == 0.3
    assert load_config(None, ["model.name=pop"]).model == PopConfig()


def test_unknown_model_key_and_wrong_type_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"model\.mask_prob"):  # a BERT4Rec option is not SASRec's
        load_config(None, ["model.mask_prob=0.3"])
    with pytest.raises(ConfigError, match=r"model\.hidden: expected an integer"):
        load_config(None, ["model.hidden=big"])
    with pytest.raises(ConfigError, match=r"model\.loss: 'xent' is not one of"):
        load_config(None, ["model.loss=xent"])
    with pytest.raises(ConfigError, match=r"unknown model 'nope'"):
        load_config(None, ["model.name=nope"])
    with pytest.raises(ConfigError, match=r"train\.optim\.optimizer"):
        load_config(None, ["train.optim.optimizer=sgd"])


def test_switching_model_drops_the_other_models_options(tmp_path: Path) -> None:
    base = load_config(None, ["model.hidden=32", "model.loss=bpr"])
    cfg = load_config(None, ["model.name=gru4rec", "model.n_layers=2"], base=base)
    assert cfg.model == GRU4RecConfig(n_layers=2, max_len=50)  # hidden/loss were SASRec's settings
    kept = load_config(None, ["model.n_heads=4"], base=base)  # same model: its options stay
    assert (kept.model.hidden, kept.model.loss, kept.model.n_heads) == (32, "bpr", 4)
    f = tmp_path / "exp.yaml"
    f.write_text("model: {name: pop}\ntrain: {lr: 0.01}\n")
    assert load_config(f, base=base).model == PopConfig()


def test_model_window_defaults_to_the_data_history_and_round_trips(tmp_path: Path) -> None:
    cfg = load_config(None, ["data.max_len=20"])
    assert cfg.model.max_len == 20
    assert load_config(None, ["data.max_len=20", "model.max_len=10"]).model.max_len == 10
    cfg.save(tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml") == cfg


def test_optim_overrides_the_spec_recipe() -> None:
    from raypipe.models.registry import get_spec

    cfg = load_config(None, ["train.optim.optimizer=adamw", "train.optim.warmup_steps=10", "train.optim.grad_clip=1"])
    r = get_spec("sasrec").recipe.with_overrides(cfg.train.optim)
    assert (r.optimizer, r.warmup_steps, r.grad_clip, r.schedule, r.grad_accum) == ("adamw", 10, 1.0, "constant", 1)


@pytest.mark.parametrize("args,named", [(["--model", "X"], "X"), (["model.X=1"], "model.X"),
                                        (["train.optim.precision=fp8"], "train.optim.precision")])
def test_pretrain_job_exits_2_before_ray_naming_the_key(args: list[str], named: str) -> None:
    p = subprocess.run([sys.executable, str(REPO / "jobs" / "pretrain.py"), *args], capture_output=True, text=True,
                       timeout=120, cwd=REPO)
    assert p.returncode == 2, p.stderr
    assert named in p.stderr
    assert "Ray" not in p.stderr and "ray." not in p.stderr  # rejected before Ray starts
