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


@dataclass(frozen=True)
class Scalar:
    """A plain YAML scalar that YAML reads as something other than a string, with the text it was written
    as.  The field's type decides: a ``str`` field takes the text as written (``run.name=91259_00000`` stays
    ``'91259_00000'`` instead of the YAML 1.1 integer 9125900000; ``yes`` stays ``'yes'``), any other field
    takes YAML's value."""

    text: str
    value: Any


class _Loader(yaml.SafeLoader):
    """``yaml.SafeLoader`` whose non-string plain scalars come back as :class:`Scalar`."""


for _tag in ("int", "float", "bool", "null", "timestamp"):
    _tag = f"tag:yaml.org,2002:{_tag}"
    _Loader.add_constructor(_tag, lambda loader, node, _base=yaml.SafeLoader.yaml_constructors[_tag]:
                            Scalar(node.value, _base(loader, node)))
del _tag


def _load_yaml(text: str) -> Any:
    loaded = yaml.load(text, Loader=_Loader)  # noqa: S506 -- a SafeLoader subclass
    return None if isinstance(loaded, Scalar) and loaded.value is None else loaded


def plain(value: Any) -> Any:
    """``value`` with every :class:`Scalar` replaced by YAML's reading of it (recursively)."""
    if isinstance(value, Scalar):
        return value.value
    if isinstance(value, Mapping):
        return {plain(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def _check(key: str, value: Any, ok: bool, expected: str) -> None:
    """Raise :class:`ConfigError` naming ``key`` and ``value`` unless ``ok`` (range checks of the sections)."""
    if not ok:
        raise ConfigError(f"{key}: expected {expected}, got {value!r}")


@dataclass
class DataConfig:
    #: ``builtin:<size>``, ``movielens:<ml-1m|ml-100k>`` or a canonical dataset directory
    dataset: str = "builtin:small"
    #: domains to train on; ``None`` = by stage (pretrain: source domains, finetune: target domains)
    domains: list[str] | None = None
    #: domains to evaluate on after training; ``None`` = the training domains
    eval_domains: list[str] | None = None
    k_core: int = 5
    #: the domain roles the k-core applies to (IDP k-cores its pre-training data only: ``[source]``);
    #: domains without a declared role are always k-cored
    k_core_roles: list[Literal["source", "target"]] = field(default_factory=lambda: ["source", "target"])
    #: users with fewer interactions (per domain; overall for mixed flows) are dropped first; 0 = keep all
    min_user_interactions: int = 0
    #: ``leave_one_out`` (last item test, second-to-last validation) or ``user_433`` (PreRec: users split
    #: 4:3:3 into train/validation/test, each held-out user's last item is the target)
    split: Literal["leave_one_out", "user_433"] = "leave_one_out"
    split_seed: int = 0
    #: ``user_433`` only: the share of each domain's training users kept (incremental fine-tuning, PreRec
    #: Fig. 3); the others' sequences are dropped from the data altogether (training, popularity
    #: statistics), validation and test users are unchanged; seeded by ``split_seed`` and nested (a
    #: smaller share's users are among a larger one's)
    train_fraction: float = 1.0
    #: ``domain``: one sequence per user and domain; ``mixed``: one cross-domain flow per user (each
    #: target's history is all of the user's earlier events in any domain), evaluated per target domain
    flow: Literal["domain", "mixed"] = "domain"
    #: the history window handed to models at evaluation (seen items are always the whole history)
    max_len: int = 50
    #: content vectors for content-based models: a feature store directory (raypipe.features), or a
    #: ``.npy`` array ``[N+1, d]`` aligned to this dataset's item index (row 0 = padding)
    features: str | None = None
    #: the views of the feature store a model may read (each becomes a named view of the ItemCatalogue)
    feature_views: list[str] = field(default_factory=lambda: ["text"])
    #: per-event attributes the sequences carry besides items and times: ``ratings``, ``reviews``
    #: (UniMP's preference and explanation tasks); ``[]`` reads neither
    event_attrs: list[Literal["ratings", "reviews"]] = field(default_factory=list)

    def __post_init__(self) -> None:
        _check("data.k_core", self.k_core, self.k_core >= 0, "an integer >= 0 (0 or 1: no k-core)")
        _check("data.min_user_interactions", self.min_user_interactions, self.min_user_interactions >= 0,
               "an integer >= 0")
        _check("data.train_fraction", self.train_fraction, 0 < self.train_fraction <= 1, "a share in (0, 1]")
        _check("data.max_len", self.max_len, self.max_len >= 1, "an integer >= 1")


@dataclass
class ModelConfig:
    """Base of every model's own typed config (one per model file, see :mod:`raypipe.models.spec`).

    The YAML ``model:`` section is validated against the config class of the model it names: unknown
    keys and values of the wrong type are rejected, naming the key.
    """

    name: str = "sasrec"


@dataclass
class UnregisteredModelConfig(ModelConfig):
    """The ``model:`` section of a model that is not in the registry yet (only tune spaces of papers
    whose model is not built load this way); its keys are kept, not validated."""

    options: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, key: str) -> Any:
        options = self.__dict__.get("options", {})
        if key in options:
            return options[key]
        raise AttributeError(key)


@dataclass
class OptimConfig:
    """Per-run overrides of the model's optimisation recipe (``None`` = the model spec's own value)."""

    optimizer: Literal["adam", "adamw"] | None = None
    #: learning-rate schedule after warm-up: ``constant``, ``linear`` decay to 0 or ``cosine`` decay to 0
    schedule: Literal["constant", "linear", "cosine"] | None = None
    warmup_steps: int | None = None
    #: max global gradient norm; 0 = no clipping
    grad_clip: float | None = None
    #: optimiser step every N batches (the loss is averaged over them)
    grad_accum: int | None = None
    #: ``bf16`` = autocast to bfloat16 on GPU workers (CPU workers always run fp32)
    precision: Literal["fp32", "bf16"] | None = None

    def __post_init__(self) -> None:
        _check("train.optim.warmup_steps", self.warmup_steps, self.warmup_steps is None or self.warmup_steps >= 0,
               "an integer >= 0 or null")
        _check("train.optim.grad_clip", self.grad_clip, self.grad_clip is None or self.grad_clip >= 0,
               "a number >= 0 (0: no clipping) or null")
        _check("train.optim.grad_accum", self.grad_accum, self.grad_accum is None or self.grad_accum >= 1,
               "an integer >= 1 or null")


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.0
    #: validation metric for early stopping and checkpoint ranking
    metric: str = "ndcg@10"
    #: the validation value of a metric over several domains: ``users`` pools their users, ``domains``
    #: averages the per-domain values (PreRec: the mean r-NDCG@K% over domains)
    valid_average: Literal["users", "domains"] = "users"
    patience: int = 5
    seed: int = 0
    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 1.0
    max_failures: int = 0
    #: the ranking protocol of the per-epoch validation: ``full`` ranking of the domain's catalogue or
    #: ``sampled`` candidates (``eval.n_neg`` negatives); ``auto`` = the model's own (full for every
    #: model but those that score candidates one by one, e.g. UPSR: sampled, as its paper)
    valid_protocol: Literal["auto", "full", "sampled"] = "auto"
    #: validation users evaluated per epoch (a fixed seeded sample; ``None`` = all)
    valid_users: int | None = 5000
    #: training rows per epoch: a fixed sample seeded by ``train.seed`` (models whose rows cost seconds each
    #: on a CPU, e.g. UPSR, within a benchmark budget); ``None`` = every row
    max_rows: int | None = None
    #: torch intra-op threads per worker (RAY_NOTES: oversubscribing 2 cores is very slow)
    torch_threads: int = 1
    shuffle_buffer: int = 10_000
    optim: OptimConfig = field(default_factory=OptimConfig)
    #: fault injection for tests of FailureConfig + resume: the worker raises once at this epoch
    inject_failure_at_epoch: int | None = None

    def __post_init__(self) -> None:
        _check("train.epochs", self.epochs, self.epochs >= 1, "an integer >= 1")
        _check("train.batch_size", self.batch_size, self.batch_size >= 1, "an integer >= 1")
        _check("train.lr", self.lr, self.lr > 0, "a learning rate > 0")
        _check("train.weight_decay", self.weight_decay, self.weight_decay >= 0, "a number >= 0")
        _check("train.patience", self.patience, self.patience >= 0, "an integer >= 0")
        _check("train.num_workers", self.num_workers, self.num_workers >= 1, "an integer >= 1")
        _check("train.cpus_per_worker", self.cpus_per_worker, self.cpus_per_worker > 0, "a number > 0")
        _check("train.max_failures", self.max_failures, self.max_failures >= -1,
               "an integer >= 0, or -1 (retry forever)")
        _check("train.valid_users", self.valid_users, self.valid_users is None or self.valid_users >= 1,
               "a positive number of users or null")
        _check("train.max_rows", self.max_rows, self.max_rows is None or self.max_rows >= 1,
               "a positive number of rows or null")
        _check("train.torch_threads", self.torch_threads, self.torch_threads >= 1, "an integer >= 1")
        _check("train.shuffle_buffer", self.shuffle_buffer, self.shuffle_buffer >= 1, "an integer >= 1")
        _check("train.inject_failure_at_epoch", self.inject_failure_at_epoch,
               self.inject_failure_at_epoch is None or self.inject_failure_at_epoch >= 0, "an epoch >= 0 or null")


@dataclass
class EvalConfigSpec:
    #: ``full`` ranking, ``sampled`` candidates, or ``auto``: the model's own protocol (see
    #: ``train.valid_protocol``)
    protocol: Literal["auto", "full", "sampled"] = "auto"
    ks: list[int] = field(default_factory=lambda: [1, 5, 10, 20])
    k_percents: list[float] = field(default_factory=list)
    n_neg: int = 100
    exclude_seen: bool = True
    #: test users judged per domain: a fixed sample (seeded by ``data.split_seed``, the same users for
    #: every run and training seed), for models whose scoring is costly (UPSR, UniMP); ``None`` = all
    test_users: int | None = None

    def __post_init__(self) -> None:
        _check("eval.test_users", self.test_users, self.test_users is None or self.test_users >= 1,
               "a positive number of users or null")
        _check("eval.ks", self.ks, all(k >= 1 for k in self.ks), "cut-offs >= 1")
        _check("eval.k_percents", self.k_percents, all(0 < k <= 100 for k in self.k_percents),
               "percentages in (0, 100]")
        _check("eval.n_neg", self.n_neg, self.n_neg >= 1, "an integer >= 1")


@dataclass
class RunSpec:
    name: str | None = None
    #: where run directories go: a local (or shared) path, or a URI of a ``pyarrow.fs`` filesystem
    #: (``s3://bucket/runs``, ``gs://...``, ``file:///...``): Ray Train's checkpoints go straight there and
    #: raypipe's run files are published when the run finished (:mod:`raypipe.storage`)
    storage_path: str = "runs"
    #: ``pretrain``, ``finetune`` or ``evaluate``
    stage: Literal["pretrain", "finetune", "evaluate"] = "pretrain"
    #: fine-tune / evaluate: the run directory (or checkpoint directory) to start from
    init_from: str | None = None
    #: fine-tune mode: ``zero-shot`` (evaluate only), ``inductive`` (content-based item representations,
    #: no target ID embeddings), ``transductive`` (everything, target ID embeddings included)
    mode: Literal["zero-shot", "inductive", "transductive"] = "transductive"

    def __post_init__(self) -> None:
        from raypipe.storage import StorageError, check_scheme

        for key, value in (("run.storage_path", self.storage_path), ("run.init_from", self.init_from)):
            try:
                if value is not None:
                    check_scheme(value)  # the scheme only: the filesystem is built by the CLIs (raypipe.cli)
            except StorageError as e:
                raise ConfigError(f"{key}: {e}") from None


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=lambda: model_config_class("sasrec")())
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfigSpec = field(default_factory=EvalConfigSpec)
    run: RunSpec = field(default_factory=RunSpec)

    def __post_init__(self) -> None:
        # sequence models' own window defaults to the data's history length
        if getattr(self.model, "max_len", 0) is None:
            self.model.max_len = self.data.max_len

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
        return plain(value)
    if origin in (typing.Union, types.UnionType):
        if plain(value) is None and type(None) in args:
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
    if isinstance(value, Scalar):
        if tp is str and value.value is not None:
            return value.text
        if origin is Literal and value.text in args and value.value not in args:
            return value.text
        value = value.value
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
        return plain(value)
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
        if tp is ModelConfig:
            if not isinstance(v, Mapping):
                raise ConfigError(f"{prefix}{f.name}: expected a mapping")
            kwargs[f.name] = _build_model(v, f"{prefix}{f.name}.")
        elif dataclasses.is_dataclass(tp):
            if not isinstance(v, Mapping):
                raise ConfigError(f"{prefix}{f.name}: expected a mapping")
            kwargs[f.name] = _build(tp, v, f"{prefix}{f.name}.")
        else:
            kwargs[f.name] = _coerce(v, tp, f"{prefix}{f.name}")
    return cls(**kwargs)


def model_config_class(name: str) -> type[ModelConfig]:
    """The config class of a registered model (the registry is imported on first use)."""
    from raypipe.models.registry import SPECS

    try:
        return SPECS[name].config
    except KeyError:
        raise ConfigError(f"model.name: unknown model {name!r}; registered: {sorted(SPECS)}") from None


def _build_model(values: Mapping[str, Any], prefix: str) -> ModelConfig:
    name = plain(values.get("name", ModelConfig.name))
    if not isinstance(name, str):
        raise ConfigError(f"{prefix}name: expected a string, got {name!r}")
    if values.get("_unregistered"):
        return UnregisteredModelConfig(name=name, options=plain({k: v for k, v in values.items()
                                                                 if k not in ("name", "_unregistered", "options")}
                                                                | dict(values.get("options") or {})))
    return _build(model_config_class(name), values, prefix)


def deep_merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """``update`` merged into ``base``, recursively for mappings (every key of both is kept)."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_override(text: str) -> dict[str, Any]:
    """``a.b.c=value`` → ``{"a": {"b": {"c": value}}}`` with ``value`` parsed as YAML (a non-string scalar
    as a :class:`Scalar` that keeps its text, for string fields)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like section.key=value")
    key, raw = text.split("=", 1)
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override {text!r} has an empty key part")
    try:
        value = _load_yaml(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({e})") from e
    out: dict[str, Any] = {parts[-1]: value}
    for p in reversed(parts[:-1]):
        out = {p: out}
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: ExperimentConfig | None = None, allow_unregistered: bool = False) -> ExperimentConfig:
    """Defaults (or ``base``) ← YAML file ← dotted overrides, validated into an ExperimentConfig.

    The ``model:`` keys are validated against the config class of the model named by the result. When
    the file or the overrides switch to another model, the base's model options are dropped (they
    belong to the other model). ``allow_unregistered`` keeps the options of a model that is not in the
    registry unvalidated (tune spaces of models not built yet).
    """
    base_cfg = base or ExperimentConfig()
    merged: dict[str, Any] = base_cfg.to_dict()
    if base is None:  # the model's own defaults, before data-dependent ones (max_len) are filled in
        merged["model"] = dataclasses.asdict(type(base_cfg.model)())
    user: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        try:
            loaded = _load_yaml(p.read_text()) or {}
        except OSError as e:
            raise ConfigError(f"cannot read config {p}: {e}") from e
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: invalid YAML: {e}") from e
        if not isinstance(loaded, Mapping):
            raise ConfigError(f"{p}: top level must be a mapping")
        user = deep_merge(user, loaded)
    for o in overrides:
        user = deep_merge(user, parse_override(o))
    if base is None:  # the named model's experiment defaults (its spec's), under the user's values
        name = user.get("model", {}).get("name", base_cfg.model.name) if isinstance(user.get("model"), Mapping) \
            else base_cfg.model.name
        for o in _experiment_defaults(name):
            merged = deep_merge(merged, parse_override(o))
    merged = deep_merge(merged, user)
    model_user = user.get("model")
    if isinstance(model_user, Mapping) and model_user.get("name", base_cfg.model.name) != base_cfg.model.name:
        merged["model"] = dict(model_user)
    if allow_unregistered and isinstance(merged.get("model"), Mapping):
        from raypipe.models.registry import SPECS

        if merged["model"].get("name") not in SPECS:
            merged["model"] = {**merged["model"], "_unregistered": True}
    return _build(ExperimentConfig, merged, "")


def _experiment_defaults(model_name: Any) -> tuple[str, ...]:
    """The dotted experiment defaults of a registered model's spec (``()`` for an unknown name, which
    :func:`_build` rejects with its own message)."""
    from raypipe.models.registry import SPECS

    spec = SPECS.get(str(model_name))
    return tuple(spec.experiment_defaults) if spec is not None else ()


def with_overrides(obj: Any, overrides: list[str] | tuple[str, ...], where: str = "") -> Any:
    """A copy of the config dataclass ``obj`` with dotted ``overrides`` (``key=value`` relative to it),
    validated like :func:`load_config` (an ExperimentConfig goes through :func:`load_config` itself, so
    its model section is checked against the named model)."""
    if isinstance(obj, ExperimentConfig):
        return load_config(None, overrides, base=obj)
    merged: dict[str, Any] = dataclasses.asdict(obj)
    for o in overrides:
        merged = deep_merge(merged, parse_override(o))
    return _build(type(obj), merged, f"{where}." if where else "")
