"""Encoders without Ray: spec parsing, offline weights, seeded random init, decoding, cross-modal fusion."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from raypipe.features.encoders import (
    CrossModalEncoder,
    ImageDecodeError,
    ImageEncoder,
    ImagePreprocess,
    ModelSpec,
    EFFICIENTNET_LITE0_ARCH,
    build_timm,
    build_torchvision,
    file_hash,
    open_clip_tokenizer,
    parse_cross_model,
    parse_image_model,
    weights_id,
)

from .conftest import CORRUPT_PNG


def _png(size=(32, 32), colour=(10, 200, 30)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_specs():
    assert parse_image_model("resnet50") == ModelSpec("torchvision", "resnet50", None)
    assert parse_image_model("timm:convnext_atto:/c/x.pth") == ModelSpec("timm", "convnext_atto", "/c/x.pth")
    lite = parse_image_model("efficientnet_lite0")
    assert lite.family == "timm" and lite.arch == EFFICIENTNET_LITE0_ARCH and lite.checkpoint.endswith(".pth")
    assert parse_image_model("resnet50:/ck/r50.pth") == ModelSpec("torchvision", "resnet50", "/ck/r50.pth")
    assert parse_image_model("open_clip:ViT-B-32") == ModelSpec("open_clip", "ViT-B-32", None)
    assert parse_image_model("open_clip:RN50:/a/b.pt").checkpoint == "/a/b.pt"
    assert parse_cross_model("ViT-B-32:/c/clip.pt") == ModelSpec("open_clip", "ViT-B-32", "/c/clip.pt")
    assert parse_cross_model("open_clip:local-dir:/m").arch == "local-dir:/m"
    with pytest.raises(ValueError, match="hf-hub"):
        parse_cross_model("hf-hub:laion/CLIP")


def test_missing_checkpoint_fails_instead_of_downloading(tmp_path):
    with pytest.raises(FileNotFoundError, match="never downloads"):
        ImageEncoder(f"resnet18:{tmp_path}/absent.pth", device="cpu", image_size=32)
    with pytest.raises(FileNotFoundError):
        CrossModalEncoder(f"ViT-B-32:{tmp_path}/absent.pt", device="cpu")


def test_random_init_is_seeded_flagged_and_leaves_global_rng(caplog):
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    images = np.random.default_rng(0).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    with caplog.at_level("WARNING"):
        a = ImageEncoder("resnet18", device="cpu", image_size=32, seed=0)
    assert torch.rand(1) == before  # building the model did not consume the caller's RNG
    assert a.weights == "random" and "RANDOM" in caplog.text
    b = ImageEncoder("resnet18", device="cpu", image_size=32, seed=0)
    c = ImageEncoder("resnet18", device="cpu", image_size=32, seed=1)
    va, vb, vc = a.encode(images), b.encode(images), c.encode(images)
    assert va.shape == (4, 512) and va.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(va, vb)
    assert not np.allclose(va, vc)


def test_torchvision_checkpoint_is_loaded_and_hashed(tmp_path):
    src = build_torchvision(parse_image_model("resnet18"), seed=7)
    ckpt = tmp_path / "r18.pth"
    sd = src.state_dict()
    sd["fc.weight"] = torch.zeros(1000, 512)  # a full classifier checkpoint: the head is dropped
    sd["fc.bias"] = torch.zeros(1000)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items()}}, ckpt)
    enc = ImageEncoder(f"resnet18:{ckpt}", device="cpu", image_size=32)
    assert enc.weights == file_hash(ckpt) == weights_id(parse_image_model(f"resnet18:{ckpt}"))
    images = np.random.default_rng(1).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        ref = torch.nn.functional.normalize(src(enc._pixels(images)), dim=-1).numpy()
    np.testing.assert_allclose(enc.encode(images), ref, atol=1e-5)
    assert not np.allclose(enc.encode(images), ImageEncoder("resnet18", device="cpu", image_size=32).encode(images))


def test_resnet50_penultimate_is_2048d():
    assert ImageEncoder("resnet50", device="cpu", image_size=32).dim == 2048


def test_open_clip_image_tower(tiny_clip_dir):
    enc = ImageEncoder(f"open_clip:local-dir:{tiny_clip_dir}", device="cpu")
    assert enc.dim == 32 and enc.preprocess.size == 32 and enc.weights == "random"
    assert enc.encode(np.zeros((2, 32, 32, 3), np.uint8)).shape == (2, 32)


def test_default_clip_tokenizer_works_offline():
    tok = open_clip_tokenizer(parse_cross_model("ViT-B-32"))
    assert tuple(tok(["a red mug"]).shape) == (1, 77)


def test_cross_modal_fusion(tiny_clip_dir):
    enc = CrossModalEncoder(f"local-dir:{tiny_clip_dir}", device="cpu")
    images = np.random.default_rng(2).integers(0, 255, (4, 32, 32, 3), dtype=np.uint8)
    texts = ["ocean mug", "forest book", None, None]
    has_image = np.array([True, False, True, False])
    vecs, present = enc.encode_items(texts, images, has_image)
    assert present.tolist() == [True, True, True, False]
    assert not vecs[3].any()  # zero AND flagged absent: never a fake vector
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-5)
    t = enc.encode_texts(["ocean mug", "forest book"])
    i = enc.encode_images(images[[0, 2]])
    both = (t[0] + i[0]) / np.linalg.norm(t[0] + i[0])
    np.testing.assert_allclose(vecs[0], both, atol=1e-5)  # both modalities: the mean direction
    np.testing.assert_allclose(vecs[1], t[1], atol=1e-5)  # text only
    np.testing.assert_allclose(vecs[2], i[1], atol=1e-5)  # image only
    again, _ = CrossModalEncoder(f"local-dir:{tiny_clip_dir}", device="cpu").encode_items(texts, images, has_image)
    np.testing.assert_array_equal(vecs, again)  # seeded random init: deterministic


def test_image_preprocess(tmp_path):
    pre = ImagePreprocess(16)
    out = pre(_png((40, 20)))
    assert out.shape == (16, 16, 3) and out.dtype == np.uint8
    assert abs(int(out[8, 8, 1]) - 200) <= 2
    (tmp_path / "a.png").write_bytes(_png())
    assert pre(path=tmp_path / "a.png").shape == (16, 16, 3)
    for bad in (dict(data=CORRUPT_PNG), dict(data=b"not an image"), dict(path=tmp_path / "absent.png"), {}):
        with pytest.raises(ImageDecodeError):
            pre(**bad)


def _photo(name: str) -> bytes:
    from skimage import data  # real photographs that ship with scikit-image

    buf = io.BytesIO()
    Image.fromarray(getattr(data, name)()).save(buf, format="PNG")
    return buf.getvalue()


def test_default_image_encoder_is_the_real_imagenet_efficientnet_lite0():
    enc = ImageEncoder(device="cpu")  # the default: packaged EfficientNet-Lite0 at its native 224 px
    assert enc.name == f"timm:{EFFICIENTNET_LITE0_ARCH}" and enc.dim == 1280 and enc.preprocess.size == 224
    # the hash recorded in the manifest; the file's published name carries its first 8 hex digits
    assert enc.weights == file_hash(enc.spec.checkpoint) and enc.weights.startswith("57934424")
    classifier = build_timm(enc.spec, keep_head=True)
    photos = np.stack([enc.preprocess(_photo("chelsea")), enc.preprocess(_photo("coffee"))])
    with torch.inference_mode():
        probs = classifier(enc._pixels(photos)).softmax(-1)
    assert 281 <= int(probs[0].argmax()) <= 285 and float(probs[0, 281:286].sum()) > 0.8  # a cat (ImageNet 281-285)
    assert int(probs[1].argmax()) == 967 and float(probs[1, 967]) > 0.9  # espresso
    feats = enc.encode(photos)
    assert feats.shape == (2, 1280) and np.allclose(np.linalg.norm(feats, axis=1), 1.0, atol=1e-5)
    assert float(feats[0] @ feats[1]) < 0.9  # different photos, different features


def test_a_checkpoint_of_another_architecture_is_refused_naming_the_tensor(tmp_path):
    state = build_timm(parse_image_model(f"timm:{EFFICIENTNET_LITE0_ARCH}"), keep_head=True).state_dict()
    first = next(iter(state))
    bad = {f"x.{k}": (v[:1] if k == first else v) for k, v in state.items()}
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match=r"x\.conv_stem\.weight .* does not fit conv_stem\.weight"):
        ImageEncoder(f"timm:{EFFICIENTNET_LITE0_ARCH}:{tmp_path}/bad.pth", device="cpu")
    torch.save(dict(list(state.items())[:-2]), tmp_path / "short.pth")
    with pytest.raises(ValueError, match="not this architecture"):
        ImageEncoder(f"timm:{EFFICIENTNET_LITE0_ARCH}:{tmp_path}/short.pth", device="cpu")


def test_region_grid_features_pool_to_the_image_vector():
    pooled = ImageEncoder(device="cpu")
    photos = np.stack([pooled.preprocess(_photo("chelsea")), pooled.preprocess(_photo("coffee"))])
    grid = ImageEncoder(device="cpu", grid=7)  # the 7x7 feature map itself, region by region
    assert grid.dim == 49 * 1280
    regions = grid.encode(photos).reshape(2, 49, 1280)
    mean = regions.mean(1)
    mean /= np.linalg.norm(mean, axis=1, keepdims=True)
    assert np.allclose(mean, pooled.encode(photos), atol=1e-4)  # global average pooling = mean of regions
    assert regions[0].std(0).mean() > 0.05  # regions differ
    three = ImageEncoder(device="cpu", grid=3).encode(photos[:1])
    assert three.shape == (1, 9 * 1280)
    with pytest.raises(ValueError, match="timm image model"):
        ImageEncoder("resnet50", device="cpu", grid=3)


def test_forward_chunks_change_speed_not_vectors():
    """The CPU encodes images in chunks of CPU_IMAGE_CHUNK (cache-sized activations): the vectors must be
    those of one whole-batch forward pass."""
    from raypipe.features.encoders import CPU_IMAGE_CHUNK
    from raypipe.features.pipeline import EncodeBatch, FeatureConfig

    enc = EncodeBatch("image", "efficientnet_lite0", num_gpus=0, torch_threads=1, image_size=64, seed=0,
                      text_max_length=16)
    assert enc.image_chunk == CPU_IMAGE_CHUNK == 8
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(11, 64, 64, 3), dtype=np.uint8)
    whole = enc.encoder.encode(pixels, batch_size=len(pixels))
    status = np.array(["ok"] * 10 + ["missing"], dtype=object)
    table = enc({"item_id": np.array([f"i{k}" for k in range(11)], dtype=object), "pixels": pixels,
                 "image_status": status, "error": np.array([""] * 11, dtype=object)})
    got = np.asarray(table.column("vector").to_pylist()[:10], dtype=np.float32)
    assert np.allclose(got, whole[:10], atol=1e-5) and table.column("vector")[10].as_py() is None
    assert np.allclose(enc.encoder.encode(pixels, batch_size=3), whole, atol=1e-5)
    with pytest.raises(ValueError, match="image_chunk must be >= 1"):
        FeatureConfig(dataset=".", out=".", image_chunk=0).validate()
