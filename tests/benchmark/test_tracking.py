"""MLflow and TensorBoard tracking of a Ray Train run (the benchmark's --tracker)."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from raypipe.benchmark.tracking import check_tracker, finish, tracker_callbacks
from raypipe.config import load_config
from raypipe.train.run import run_experiment


def _scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """Every scalar of tensorboardX's event files under ``logdir``: ``{tag: {step: value}}`` (TFRecord
    framing: length u64, its CRC u32, the Event proto, its CRC u32)."""
    from tensorboardX.proto import event_pb2

    out: dict[str, dict[int, float]] = {}
    for f in sorted(logdir.glob("events.out.tfevents.*")):
        data = f.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                out.setdefault(v.tag, {})[event.step] = v.simple_value
    return out


def test_both_trackers_log_every_epoch_of_a_run(ray_local, tiny_dataset: Path, tmp_path: Path) -> None:
    mlflow_cbs = tracker_callbacks("mlflow", tmp_path, "builtin-tiny", "sasrec-s0", {"train.lr": 1e-3})
    tb_cbs = tracker_callbacks("tensorboard", tmp_path, "builtin-tiny", "sasrec-s0")
    cfg = load_config(None, [f"data.dataset={tiny_dataset}", f"run.storage_path={tmp_path / 'runs'}", "run.name=t",
                             "train.epochs=2", "train.patience=10", "model.hidden=32", "train.batch_size=64"])
    res = run_experiment(cfg, callbacks=mlflow_cbs + tb_cbs)
    finish(mlflow_cbs)
    valid = [h["valid/ndcg@10"] for h in res.history]
    # MLflow: one run in the setting's experiment, the metric per epoch, the parameters, finished
    from raypipe.benchmark.tracking import _mlflow_client, mlflow_uri

    client = _mlflow_client(mlflow_uri(tmp_path))
    run = client.get_run(mlflow_cbs[0].run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"train.lr": "0.001"}
    assert client.get_experiment(run.info.experiment_id).name == "builtin-tiny"
    history = client.get_metric_history(run.info.run_id, "valid/ndcg_at_10")
    assert [m.step for m in history] == [0, 1]
    assert [m.value for m in history] == pytest.approx(valid)
    # TensorBoard: the same values as scalars, step = epoch
    scalars = _scalars(tmp_path / "tracking" / "tensorboard" / "builtin-tiny" / "sasrec-s0")
    assert scalars["valid/ndcg_at_10"] == pytest.approx({0: valid[0], 1: valid[1]})
    assert set(scalars["samples_per_s"]) == {0, 1}


def test_none_tracks_nothing_and_a_bad_tracker_is_named() -> None:
    assert tracker_callbacks("none", Path("."), "x", "y") == []
    with pytest.raises(ValueError, match="--tracker: unknown 'wandb'"):
        check_tracker("wandb")


def test_two_reports_in_one_second_keep_both_epochs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """tensorboardX names an event file by the second and truncates it: a second report within the same
    second (Ray Train's controller polls every 0.5 s) must not erase the first epoch's scalars."""
    import time

    from raypipe.benchmark.tracking import TensorBoardCallback

    cb = TensorBoardCallback(str(tmp_path))
    monkeypatch.setattr(time, "time", lambda: 1_796_590_000.25)  # both writers open in the same second
    cb.after_report(None, [{"epoch": 0, "valid/ndcg@10": 0.1}], None)
    cb.after_report(None, [{"epoch": 1, "valid/ndcg@10": 0.2}], None)
    monkeypatch.undo()
    assert _scalars(tmp_path)["valid/ndcg_at_10"] == pytest.approx({0: 0.1, 1: 0.2})
