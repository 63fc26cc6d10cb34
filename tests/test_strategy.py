"""Strategy selection logic, and two MultiWorkerMirroredStrategy workers on 127.0.0.1."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from animerec.errors import ConfigError
from animerec.strategy import decide, make_strategy, trainer_for
from tests.conftest import PROJECT_ROOT


@pytest.mark.parametrize("requested, tpu, gpus, tf_config, kind", [
    ("auto", True, 2, None, "tpu"),
    ("auto", False, 2, None, "mirrored"),
    ("auto", False, 1, None, "one_gpu"),
    ("auto", False, 0, None, "cpu"),
    ("cpu", True, 4, None, "cpu"),
    ("gpu", False, 3, None, "mirrored"),
    ("gpu", False, 1, None, "one_gpu"),
    ("tpu", True, 0, None, "tpu"),
    ("multi_worker", False, 0, '{"cluster": {}}', "multi_worker"),
])
def test_decide(requested, tpu, gpus, tf_config, kind):
    assert decide(requested, tpu_found=tpu, num_gpus=gpus, tf_config=tf_config).kind == kind


@pytest.mark.parametrize("requested, tpu, gpus, tf_config, message", [
    ("gpu", False, 0, None, "no GPU"),
    ("tpu", False, 0, None, "no TPU cluster resolved"),
    ("multi_worker", False, 0, None, "TF_CONFIG"),
])
def test_decide_errors(requested, tpu, gpus, tf_config, message):
    with pytest.raises(ConfigError, match=message):
        decide(requested, tpu_found=tpu, num_gpus=gpus, tf_config=tf_config)


def test_auto_picks_this_hosts_device_and_trainer_fallback():
    import tensorflow as tf

    strategy, decision = make_strategy("auto")
    gpus = len(tf.config.list_physical_devices("GPU"))
    # the right answer on any host: CPU here and in CI, a GPU strategy where one or more are visible
    assert decision.kind == {0: "cpu", 1: "one_gpu"}.get(gpus, "mirrored")
    assert (strategy is None) == (gpus == 0)
    assert trainer_for("lazy", None, decision) == "lazy"
    from animerec.strategy import Decision

    assert trainer_for("lazy", None, Decision("tpu", "test")) == "distributed"
    assert trainer_for("keras", None, Decision("tpu", "test")) == "distributed"
    assert trainer_for("keras", None, decision) == "keras"


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


SMALL = ("model.embedding_size=8 model.batch_size=64 model.epochs=1 model.patience=5 model.lr.schedule=constant "
         "model.lr.min_lr=1e-2 model.lr.max_lr=1e-2")
WORKER = r"""
import json, os, sys
import numpy as np
from animerec.strategy import make_strategy, trainer_for
from animerec.model import build_model
from animerec.trainer import fit
from animerec.training.sampling import TrainData
import keras
keras.utils.set_random_seed(7)
strategy, decision = make_strategy("multi_worker")
trainer = trainer_for("lazy", strategy, decision)
from animerec.pipeline import compose_config
cfg = compose_config(sys.argv[2].split(), sys.argv[3]).model
rng = np.random.default_rng(0)
data = TrainData(rng.integers(0, 30, 1024), rng.integers(0, 20, 1024), rng.random(1024).astype("float32"))
with strategy.scope():
    model = build_model(cfg, 30, 20)
np.savez(sys.argv[1] + "_init.npz", *model.get_weights())
history = fit(model, data, None, cfg, trainer=trainer, strategy=strategy, verbose=0)
np.savez(sys.argv[1] + "_trained.npz", *model.get_weights())
print("LOSSES", [round(row["loss"], 6) for row in history.epochs])
print("TRAINER", trainer, decision.kind)
"""


def test_two_multi_worker_workers_train_the_same_model(tmp_path):
    ports = _free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    procs = []
    for index in range(2):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}),
               "CUDA_VISIBLE_DEVICES": ""}
        procs.append(subprocess.Popen([sys.executable, str(script), str(tmp_path / f"w{index}"), SMALL, str(PROJECT_ROOT)], env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    for p, out in zip(procs, outputs):
        assert p.returncode == 0, out[-3000:]
        assert "TRAINER distributed multi_worker" in out
    trained = [_weights(tmp_path / f"w{i}_trained.npz") for i in range(2)]
    for a, b in zip(*trained):
        np.testing.assert_array_equal(a, b)  # mirrored variables: bit-identical on both workers
    # The same 16 global batches on one device with plain model.fit and Keras' Adam: the two-worker
    # loop (each worker half of every batch, gradients summed) must reach the same weights. One
    # epoch, because model.fit draws one extra pass of the shuffled dataset while building, so
    # its later epochs see the batches in another order.
    import keras

    from animerec.model import build_model
    from animerec.pipeline import compose_config
    from animerec.trainer import fit
    from animerec.training.sampling import TrainData

    cfg = compose_config(SMALL.split(), PROJECT_ROOT).model
    rng = np.random.default_rng(0)
    data = TrainData(rng.integers(0, 30, 1024), rng.integers(0, 20, 1024), rng.random(1024).astype("float32"))
    reference = build_model(cfg, 30, 20)
    initial = _weights(tmp_path / "w0_init.npz")
    reference.set_weights(initial)
    keras.utils.set_random_seed(7)
    fit(reference, data, None, cfg, trainer="keras", verbose=0)
    moved = [np.abs(t - i).max() for t, i in zip(trained[0], initial)]
    assert max(moved) > 1e-3, "training did not change the weights"
    for got, want in zip(trained[0], reference.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _weights(path):
    with np.load(path) as arrays:
        return [arrays[f"arr_{i}"] for i in range(len(arrays.files))]
