"""Choosing where to train: TPU, GPUs, CPU, or several workers.

:func:`decide` is the pure selection logic (tested directly); :func:`make_strategy` builds the
``tf.distribute`` strategy it names. ``auto`` picks a TPU if a TPU cluster resolves, else all
visible GPUs, else the CPU. The lazy trainer runs where there is a single replica (CPU, one
GPU); under TPU or multi-replica strategies the step falls back to Keras' Adam in a
``strategy.run`` loop and says so.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass

from animerec.console import native_stderr_quiet
from animerec.errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Decision:
    kind: str  # tpu | mirrored | one_gpu | cpu | multi_worker
    reason: str


def decide(requested: str, *, tpu_found: bool, num_gpus: int, tf_config: str | None) -> Decision:
    """Which strategy to build for ``train.strategy``, given what the machine has."""
    if requested == "multi_worker":
        if not tf_config:
            raise ConfigError(
                "train.strategy=multi_worker needs the TF_CONFIG environment variable (cluster and task) on every worker."
            )
        return Decision("multi_worker", "TF_CONFIG is set")
    if requested == "tpu":
        if not tpu_found:
            raise ConfigError("train.strategy=tpu, but no TPU cluster resolved; set train.tpu_address or use auto.")
        return Decision("tpu", "requested")
    if requested == "gpu":
        if num_gpus == 0:
            raise ConfigError("train.strategy=gpu, but TensorFlow sees no GPU; use auto or cpu, or check CUDA.")
        return Decision("mirrored" if num_gpus > 1 else "one_gpu", f"{num_gpus} GPU(s) visible")
    if requested == "cpu":
        return Decision("cpu", "requested")
    if tpu_found:
        return Decision("tpu", "auto: a TPU cluster resolved")
    if num_gpus:
        return Decision("mirrored" if num_gpus > 1 else "one_gpu", f"auto: {num_gpus} GPU(s) visible")
    return Decision("cpu", "auto: no TPU or GPU found")


def _resolve_tpu(address: str | None):
    import tensorflow as tf

    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=address or "")
        resolver.cluster_spec()  # raises when nothing resolves
        return resolver
    except (ValueError, RuntimeError, tf.errors.NotFoundError, KeyError, ImportError):
        return None
    except Exception as err:  # environments without TPU support raise assorted errors
        logger.debug("No TPU: %s", err)
        return None


def make_strategy(requested: str = "auto", tpu_address: str | None = None):
    """Returns ``(strategy, decision)``; the strategy is ``None`` for the plain CPU path."""
    import tensorflow as tf

    probe_tpu = requested in ("auto", "tpu")
    resolver = _resolve_tpu(tpu_address) if probe_tpu and (tpu_address or requested == "tpu" or os.environ.get("TPU_NAME")) else None
    with native_stderr_quiet():  # CUDA's probing ("failed call to cuInit") on a machine without a GPU
        gpus = tf.config.list_physical_devices("GPU")
    decision = decide(requested, tpu_found=resolver is not None, num_gpus=len(gpus), tf_config=os.environ.get("TF_CONFIG"))
    if decision.kind == "tpu":
        # TensorFlow's documented sequence: resolver, connect, initialize, strategy.
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif decision.kind == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif decision.kind == "one_gpu":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0")
    elif decision.kind == "multi_worker":
        task = json.loads(os.environ["TF_CONFIG"]).get("task", {})
        logger.info("Multi-worker training as %s %s", task.get("type"), task.get("index"))
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    else:
        strategy = None
    logger.info("Strategy: %s (%s)", decision.kind, decision.reason)
    return strategy, decision


def trainer_for(requested_trainer: str, strategy, decision: Decision) -> str:
    """The trainer that can run under the strategy.

    ``lazy`` (row-wise Adam) needs one replica and dynamic shapes; ``keras`` (``model.fit``) fails
    under several replicas in Keras 3.15. Both fall back to ``distributed``, a ``strategy.run``
    loop with Keras' Adam, on a TPU or when the strategy has more than one replica.
    """
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    if decision.kind == "tpu" or replicas > 1:
        why = "a TPU needs static shapes" if decision.kind == "tpu" else f"{replicas} replicas"
        if requested_trainer == "lazy":
            logger.warning(
                "The lazy row-wise Adam cannot run under the %s strategy (%s); falling back to the Keras Adam "
                "optimizer in a strategy.run loop, which updates whole embedding tables every step.",
                decision.kind, why,
            )
        else:
            logger.warning("Keras model.fit cannot train this model under the %s strategy (%s); using the "
                           "strategy.run loop with the same Keras Adam instead.", decision.kind, why)
        return "distributed"
    return requested_trainer
