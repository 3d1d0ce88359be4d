"""Typed experiment configuration: dataclasses, YAML load, deep merge and dotted overrides (one place).

>>> cfg = load_config(None, ["model.name=sasrec", "train.lr=3e-4"])   # doctest: +SKIP

Every value is checked against its field's type: an unknown key or a value of the wrong type is an
error that names the key, never silently ignored.
"""
from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from raypipe.io import write_text_atomic


class ConfigError(ValueError):
    """A configuration key or value is invalid."""


@dataclass
class DataConfig:
    #: ``builtin:<size>``, ``movielens:<ml-1m|ml-100k>`` or a canonical dataset directory
    dataset: str = "builtin:small"
    #: domains to train on; ``None`` = by stage (pretrain: source domains, finetune: target domains)
    domains: list[str] | None = None
    #: domains to evaluate on after training; ``None`` = the training domains
    eval_domains: list[str] | None = None
    k_core: int = 5
    max_len: int = 50
    #: content vectors for content-based models: a feature store directory (raypipe.features), or a
    #: ``.npy`` array ``[N+1, d]`` aligned to this dataset's item index (row 0 = padding)
    features: str | None = None
    feature_view: str = "text"


@dataclass
class ModelConfig:
    name: str = "sasrec"
    hidden: int = 64
    n_layers: int = 2
    n_heads: int = 2
    dropout: float = 0.2
    #: ``ce`` (softmax over the catalogue) or ``bpr`` (one sampled same-domain negative per position)
    loss: Literal["ce", "bpr"] = "ce"
    #: item input of sequential models: trainable ``id`` embeddings, frozen ``content`` vectors
    #: (projected), or ``id+content``
    item_input: Literal["id", "content", "id+content"] = "id"
    #: how content vectors enter: a trainable ``linear`` projection or ``identity`` (IDP_ID+t adds
    #: PCA-reduced text vectors as they are)
    content_projection: Literal["linear", "identity"] = "linear"
    mask_prob: float = 0.2  # BERT4Rec cloze masking
    extra: dict[str, Any] = field(default_factory=dict)  # model-specific knobs (validated by the model)


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: validation metric for early stopping and checkpoint ranking
    metric: str = "ndcg@10"
    patience: int = 5
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    #: validation users evaluated per epoch (a fixed seeded sample; ``None`` = all)
    valid_users: int | None = 5000
    #: torch intra-op threads per worker (RAY_NOTES: oversubscribing 2 cores is very slow)
    torch_threads: int = 1
    shuffle_buffer: int = 10_000
    #: fault injection for tests of FailureConfig + resume: the worker raises once at this epoch
    inject_failure_at_epoch: int | None = None


@dataclass
class EvalConfigSpec:
    protocol: Literal["full", "sampled"] = "full"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    k_percents: list[float] = field(default_factory=list)
    n_neg: int = 100
    exclude_seen: bool = True


@dataclass
class RunSpec:
    name: str | None = None
    storage_path: str = "runs"
    #: ``pretrain``, ``finetune`` or ``evaluate``
    stage: Literal["pretrain", "finetune", "evaluate"] = "pretrain"
    #: fine-tune / evaluate: the run directory (or checkpoint directory) to start from
    init_from: str | None = None
    #: fine-tune mode: ``zero-shot`` (evaluate only), ``inductive`` (content-based item representations,
    #: no target ID embeddings), ``transductive`` (everything, target ID embeddings included)
    mode: Literal["zero-shot", "inductive", "transductive"] = "transductive"


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfigSpec = field(default_factory=EvalConfigSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, self.to_yaml())


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check/convert ``value`` to the annotated type ``tp``; raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: {value!r} does not fit {tp}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {list(args)}")
        return value
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {tp}")


def _build(cls: type, values: Mapping[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"unknown key(s) {sorted(f'{prefix}{k}' for k in unknown)}; "
                          f"valid keys under '{prefix or '<root>'}': {sorted(names)}")
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name not in values:
            continue
        tp = hints[f.name]
        v = values[f.name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{prefix}{f.name}: expected a mapping")
            kwargs[f.name] = _build(tp, v, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(v, tp, f"{prefix}{f.name}")
    return cls(**kwargs)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) and k != "extra":
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}`` with ``value`` parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    out: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: ExperimentConfig | None = None) -> ExperimentConfig:
    """Defaults (or ``base``) ← YAML file ← dotted overrides, validated into an ExperimentConfig."""
    merged: dict[str, Any] = (base or ExperimentConfig()).to_dict()
    if path is not None:
        p = Path(path)
        try:
            loaded = yaml.safe_load(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: top level must be a mapping")
        merged = deep_merge(merged, loaded)
    for o in overrides:
        merged = deep_merge(merged, parse_override(o))
    return _build(ExperimentConfig, merged, "")
