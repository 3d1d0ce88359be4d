"""The derived cross view's heads: fitted once per run, saved in the run directory, reused as saved."""
from __future__ import annotations

import numpy as np
import torch

from raypipe.data.catalogue import FeatureView
from raypipe.features.aligned import ALIGNER_FILE, AlignConfig, CrossAligner, align_cross_modal, fit_cross_aligner, \
    run_aligner


def _views(n: int = 80, seed: int = 0) -> tuple[FeatureView, FeatureView]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n + 1, 6))  # shared factors: text and image of an item agree
    text = np.c_[z, rng.normal(size=(n + 1, 4))].astype(np.float32) @ rng.normal(size=(10, 12)).astype(np.float32)
    image = np.c_[z, rng.normal(size=(n + 1, 4))].astype(np.float32) @ rng.normal(size=(10, 9)).astype(np.float32)
    tp, ip = np.r_[False, np.ones(n, bool)], np.r_[False, np.ones(n, bool)]
    tp[3], ip[5], tp[7], ip[7] = False, False, False, False  # no text; no image; neither
    for arr, p in ((text, tp), (image, ip)):
        arr[~p] = 0
    return FeatureView(text, tp), FeatureView(image, ip)


def test_aligned_heads_learn_and_round_trip_through_the_run_directory(tmp_path) -> None:
    text, image = _views()
    cfg = AlignConfig(dim=8, epochs=100, batch_size=32, lr=1e-2)
    aligner = fit_cross_aligner(text, image, cfg)
    s = aligner.summary
    assert s["pairs"] == 77 and s["text_to_image_top1_after"] > s["text_to_image_top1_before"] + 0.2
    view = aligner.view(text, image)
    assert view.vectors.shape == (81, 8) and view.present.tolist() == (text.present | image.present).tolist()
    assert not view.present[7] and not view.vectors[7].any() and view.present[3] and view.present[5]
    np.testing.assert_allclose(np.linalg.norm(view.vectors[view.present], axis=1), 1.0, atol=1e-5)
    # the same seed gives the same heads; the legacy helper returns the same view
    legacy, summary = align_cross_modal(text, image, cfg)
    np.testing.assert_array_equal(legacy.vectors, view.vectors)
    loaded = CrossAligner.load(aligner.save(tmp_path / ALIGNER_FILE))
    np.testing.assert_array_equal(loaded.view(text, image).vectors, view.vectors)
    assert loaded.summary == aligner.summary and loaded.cfg == cfg


def test_runs_reuse_saved_heads_and_keep_a_copy(tmp_path) -> None:
    text, image = _views()
    pre, fine = tmp_path / "pre", tmp_path / "fine"
    fitted = run_aligner(text, image, seed=3, look_in=[None], save_to=pre)
    assert (pre / ALIGNER_FILE).is_file()
    # a later run with another seed, starting from ``pre``, reads the saved heads and keeps a copy
    other_text, other_image = _views(seed=1)
    reused = run_aligner(other_text, other_image, seed=4, look_in=[fine, pre], save_to=fine)
    assert (fine / ALIGNER_FILE).is_file()
    for a, b in zip(fitted.state_dict().values(), reused.state_dict().values()):
        assert torch.equal(a, b)
    assert not torch.equal(run_aligner(text, image, seed=4).head_t.weight, fitted.head_t.weight)
