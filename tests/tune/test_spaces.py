"""Every tune_spaces file parses, validates, and holds exactly the grid its paper publishes."""
from __future__ import annotations

from pathlib import Path

import pytest

from raypipe.tune.spaces import SPACES_DIR, SpaceError, load_space
from raypipe.tune.sweep import restrict

# The published values, transcribed from ../shared/papers (section named in each file's `source`).
IDP_LR = [1e-3, 3e-4, 1e-4, 3e-5]
PUBLISHED = {
    "idp.yaml": ("sasrec", {"train.lr": IDP_LR}, {"model.hidden": 64, "train.batch_size": 256, "model.loss": "bpr"}, 20),
    "sasrec.yaml": ("sasrec", {"train.lr": IDP_LR}, {"model.hidden": 64, "train.batch_size": 256, "model.loss": "bpr"}, 20),
    "gru4rec.yaml": ("gru4rec", {"train.lr": IDP_LR}, {"model.hidden": 64, "train.batch_size": 256, "model.loss": "bpr"}, 20),
    "bert4rec.yaml": ("bert4rec", {"train.lr": IDP_LR}, {"model.hidden": 64, "train.batch_size": 256}, 20),
    "unim2rec.yaml": ("unim2rec", {"train.lr": [3e-4, 1e-3, 3e-3, 1e-2], "model.hidden": [64, 128]},
                      {"train.batch_size": 2048, "train.epochs": 300, "model.n_experts": 8,
                       "model.css_weight": 1e-3}, 10),
    "prerec.yaml": ("prerec", {
        "train.lr": [3e-5, 3e-4, 3e-3, 3e-2], "train.batch_size": [32, 64, 128, 256, 512],
        "model.n_neg": [64, 128, 256, 512], "model.gru_layers": [1, 2, 3, 4, 6, 8, 12],
        "model.n_layers": [1, 2, 3, 4, 6, 8, 12], "model.n_heads": [1, 2, 3, 4, 6, 8, 12],
        "model.hidden": [64, 128, 256, 512, 1024], "model.lambda_d": [0.03, 0.3, 3, 30, 300]},
        {"model.lambda_v": 100}, None),
    "unimp.yaml": ("unimp", {"train.lr": [2e-4, 1e-4, 1e-5]},
                   {"train.epochs": 10, "train.batch_size": 24, "train.optim.grad_accum": 2}, None),
    "upsr.yaml": ("upsr", {"model.backbone": ["t5-small", "t5-base"]},
                  {"train.lr": 3e-4, "train.batch_size": 16, "train.optim.grad_accum": 8, "train.epochs": 20,
                   "model.mask_ratio": 0.1, "model.item_tokens": 40, "model.max_tokens": 512}, None),
}


def test_every_space_file_is_covered():
    assert sorted(p.name for p in SPACES_DIR.glob("*.yaml")) == sorted(PUBLISHED)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_space_matches_its_paper(name):
    model, grid, fixed, patience = PUBLISHED[name]
    space = load_space(SPACES_DIR / name)
    assert space.model == model
    assert space.grid.keys() == grid.keys()
    for k, values in grid.items():
        assert space.grid[k] == pytest.approx(values) if isinstance(values[0], float) else space.grid[k] == values
    for k, v in fixed.items():
        assert space.fixed[k] == pytest.approx(v)
    if patience is not None:
        assert space.patience == patience
    assert space.paper and ("§" in space.source or "Appendix" in space.source)
    # every grid point builds a typed ExperimentConfig with the point's values
    cfg = space.config(space.points()[-1])
    assert cfg.model.name == model and cfg.train.patience == space.patience


def test_prerec_grid_is_the_whole_table_4():
    space = load_space(SPACES_DIR / "prerec.yaml")
    assert space.n_trials == 4 * 5 * 4 * 7 * 7 * 7 * 5 * 5 == 686_000
    assert space.selected["train.lr"] == pytest.approx(3e-4)  # also stated in PreRec §5 "Training"


def test_every_stored_space_names_a_built_model():
    for path in sorted(SPACES_DIR.glob("*.yaml")):
        load_space(path).require_built()


def test_unbuilt_models_load_but_are_refused(tmp_path):
    space = load_space(_write(tmp_path, "model: recformer\npaper: Recformer\nsource: Appendix B\n"
                                        "grid: {train.lr: [0.001]}\n"))
    with pytest.raises(SpaceError, match="model 'recformer'.*not built yet"):
        space.require_built()


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "space.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text,match", [
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lr: []}\n", "non-empty lists"),
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lrr: [0.1]}\n", "train.lrr"),
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lr: [fast]}\n", "grid.train.lr value 'fast'"),
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lr: [0.1]}\nfixed: {train.lr: 0.2}\n", "both fixed and swept"),
    ("model: sasrec\npaper: X\ngrid: {train.lr: [0.1]}\n", "missing required key 'source'"),
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lr: [0.1]}\nselected: {train.lr: 0.3}\n", "not a value of"),
    ("model: sasrec\npaper: X\nsource: Y\ngrid: {train.lr: [0.1]}\nscheduler: {type: pbt}\n", "asha"),
    ("model: [\n", "not valid YAML"),
])
def test_bad_space_files_name_the_problem(tmp_path, text, match):
    with pytest.raises(SpaceError, match=match):
        load_space(_write(tmp_path, text))


def test_restrict_keeps_only_published_values():
    space = load_space(SPACES_DIR / "idp.yaml")
    small = restrict(space, {"train.lr": [1e-3, 3e-5]})
    assert small.n_trials == 2 and [p["train.lr"] for p in small.points()] == [1e-3, 3e-5]
    with pytest.raises(SpaceError, match="not in the published grid"):
        restrict(space, {"train.lr": [0.5]})
