"""Training survives a kill: end-of-epoch checkpoints, resume to the same weights, nothing half-written."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from animerec.checkpoint import EpochCheckpoint, TrainingState
from tests.conftest import PROJECT_ROOT


def test_checkpoint_round_trip_and_stale_temporary_files(tmp_path):
    path = tmp_path / "ckpt" / "train.npz"
    checkpoint = EpochCheckpoint(path)
    assert checkpoint.load() is None
    state = TrainingState(3, [np.arange(6.0).reshape(2, 3)], [np.array(7), np.ones(3)], 0.25, 2,
                          [np.zeros((2, 3))], 1, [{"epoch": 1, "loss": 0.5}], False)
    checkpoint.save(state)
    loaded = checkpoint.load()
    assert (loaded.epochs_done, loaded.best, loaded.best_epoch, loaded.waited, loaded.history) == (3, 0.25, 2, 1, state.history)
    np.testing.assert_array_equal(loaded.weights[0], state.weights[0])
    np.testing.assert_array_equal(loaded.best_weights[0], state.best_weights[0])
    (path.parent / f".{path.name}.abc.tmp").write_bytes(b"half")  # a writer killed mid-save
    EpochCheckpoint(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["train.npz"]
    checkpoint.clear()
    assert checkpoint.load() is None


def _train_command(store: Path) -> list[str]:
    overrides = [f"main.artifact_root={store}", "wandb.mode=disabled", "model.embedding_size=16", "model.batch_size=32",
                 "model.epochs=4", "model.patience=4", "model.lr.schedule=cosine", "train.verbose=0"]
    return [sys.executable, str(PROJECT_ROOT / "components" / "train" / "run.py"), "--overrides", " ".join(overrides)]


def _weights(store: Path) -> dict[str, np.ndarray]:
    from animerec.artifacts import ArtifactStore

    version = ArtifactStore(store).resolve("model:latest")
    with np.load(version.file("scorer.npz")) as scorer:
        arrays = {f"scorer.{k}": scorer[k] for k in scorer.files}
    for name in ("user_embeddings.npy", "anime_embeddings.npy"):
        arrays[name] = np.load(version.file(name))
    return arrays


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_reaches_the_same_weights(trained, tmp_path):
    cfg, _, _ = trained
    uninterrupted, killed = tmp_path / "a", tmp_path / "b"
    ignore = shutil.ignore_patterns("model", "similar_*", "rating_recs", ".checkpoints")
    shutil.copytree(cfg.main.artifact_root, uninterrupted, ignore=ignore)
    shutil.copytree(cfg.main.artifact_root, killed, ignore=ignore)
    env = {**os.environ, "WANDB_MODE": "disabled"}

    process = subprocess.Popen(_train_command(killed), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 300
    checkpoints = killed / ".checkpoints"
    while not list(checkpoints.glob("train-*.npz")):  # the first epoch is done and saved
        assert process.poll() is None, process.stderr.read()[-3000:]
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)
    # Killed as soon as epoch 1's checkpoint exists (it appears complete: written, then renamed), so the
    # process is inside epoch 2 or saving it; no sleep that a fast machine could outrun.
    assert process.poll() is None, "training ended before it could be killed; make its epochs longer"
    process.send_signal(signal.SIGKILL)
    process.wait()
    saved = EpochCheckpoint(next(checkpoints.glob("train-*.npz"))).load()
    assert 1 <= saved.epochs_done < 4  # a complete checkpoint of a finished epoch, not of the killed one
    assert not list((killed / "model").glob("v*")) if (killed / "model").exists() else True

    resumed = subprocess.run(_train_command(killed), env=env, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from the checkpoint after epoch {saved.epochs_done} of 4" in resumed.stderr
    straight = subprocess.run(_train_command(uninterrupted), env=env, capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]
    assert "Resumed" not in straight.stderr

    a, b = _weights(uninterrupted), _weights(killed)
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    # nothing half-written: no staging folder, no checkpoint (cleared once the model was stored), no temp file
    leftovers = [p for p in killed.rglob("*") if p.name.startswith((".staging-", ".train-")) or p.suffix == ".tmp"]
    assert leftovers == [] and list(checkpoints.iterdir()) == []


def test_a_checkpoint_that_does_not_fit_is_an_error_and_resume_false_starts_over(trained, tmp_path, capsys):
    from animerec.artifacts import ArtifactStore
    from animerec.pipeline import compose_config, step_main
    from animerec.steps.train import epoch_checkpoint

    cfg, _, _ = trained
    store = tmp_path / "store"
    shutil.copytree(cfg.main.artifact_root, store,
                    ignore=shutil.ignore_patterns("model", "similar_*", "rating_recs", ".checkpoints"))
    overrides = f"main.artifact_root={store} wandb.mode=disabled model.embedding_size=8 model.epochs=1 train.verbose=0"
    composed = compose_config(overrides.split(), PROJECT_ROOT)
    pre = ArtifactStore(store).resolve("preprocessed:latest")
    checkpoint = epoch_checkpoint(ArtifactStore(store), pre, composed, "lazy")
    checkpoint.save(TrainingState(1, [np.zeros(3)], [np.zeros(1)]))  # the key of this run, another model's shapes

    assert step_main("train", PROJECT_ROOT, ["--overrides", overrides]) == 2
    assert "does not fit this model" in capsys.readouterr().err and not (store / "model").exists()
    assert step_main("train", PROJECT_ROOT, ["--overrides", overrides + " train.resume=false"]) == 0
    assert ArtifactStore(store).versions("model") == [1] and checkpoint.load() is None
