"""Where and how the Trainer computes: strategy, precision, XLA, the chief.

Decisions only (which strategy, which dtype policy, whether to compile),
each a function of the host's GPUs and TF_CONFIG so that tests can force
them on a CPU; models/trainer.py applies them.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import List, Optional, Tuple

import tensorflow as tf
import tf_keras as keras

from models import config


def _parsed(tf_config: Optional[str]) -> dict:
    return json.loads(tf_config or "{}")


def cluster_size(tf_config: Optional[str]) -> int:
    """Training replicas (chief and workers) TF_CONFIG names; 1 without
    one."""
    cluster = _parsed(tf_config).get("cluster", {})
    return max(1, sum(len(cluster.get(k, [])) for k in ("chief", "worker")))


def task_name(tf_config: Optional[str]) -> str:
    """This replica as '<type>-<index>' ('worker-1'); 'chief-0' without
    TF_CONFIG."""
    task = _parsed(tf_config).get("task") or {"type": "chief"}
    return f"{task.get('type', 'worker')}-{int(task.get('index', 0))}"


def check_cluster_size(tf_config: Optional[str],
                       workers: Optional[int]) -> None:
    """Fails when TF_CONFIG's cluster is not the `workers` replicas the job
    was compiled for (config.TRAINER_WORKERS_KEY; None: any size)."""
    if workers is None:
        return
    found = cluster_size(tf_config)
    if found != int(workers):
        raise ValueError(
            f"the Trainer was compiled for {workers} workers but TF_CONFIG "
            f"names {found}; run it as a {workers}-replica TFJob (or Vertex "
            "worker pool), which sets TF_CONFIG on each replica")


def strategy_kind(tf_config: Optional[str], n_gpus: int) -> str:
    """'multi_worker' when TF_CONFIG names several workers (the TFX Trainer
    on Vertex AI or a TFJob sets it per replica), 'mirrored' over several
    local GPUs, else 'default'."""
    if cluster_size(tf_config) > 1:
        return "multi_worker"
    return "mirrored" if n_gpus > 1 else "default"


def is_chief(tf_config: Optional[str]) -> bool:
    """Whether this replica writes the model (the chief, or worker 0 of a
    cluster without one); every other replica exports to a scratch dir."""
    parsed = _parsed(tf_config)
    task = parsed.get("task", {})
    if not task:
        return True
    if task.get("type") == "chief":
        return True
    return (task.get("type") == "worker" and int(task.get("index", 0)) == 0
            and "chief" not in parsed.get("cluster", {}))


def barrier(strategy: tf.distribute.Strategy) -> None:
    """Returns once every replica of `strategy` got here (an all-reduce)."""
    done = strategy.run(lambda: tf.distribute.get_replica_context(
    ).all_reduce(tf.distribute.ReduceOp.SUM, tf.constant(1.0)))
    for value in strategy.experimental_local_results(done):
        value.numpy()  # waits for the collective


def make_strategy() -> tf.distribute.Strategy:
    """The strategy for this host and TF_CONFIG (see strategy_kind); must be
    created before any other TensorFlow op runs (MultiWorkerMirrored)."""
    kind = strategy_kind(os.environ.get("TF_CONFIG"),
                         len(tf.config.list_physical_devices("GPU")))
    if kind == "multi_worker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if kind == "mirrored":
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def gpu_capabilities() -> List[Tuple[int, int]]:
    """CUDA compute capability of each local GPU ([] on a CPU host)."""
    return [tuple(tf.config.experimental.get_device_details(g).get(
        "compute_capability", (0, 0)))
        for g in tf.config.list_physical_devices("GPU")]


def resolve_precision(train_config: config.TrainConfig,
                      capabilities: Optional[List[Tuple[int, int]]] = None
                      ) -> str:
    """The Keras dtype policy TrainConfig.precision asks for on this host
    (capabilities: gpu_capabilities(), by default queried)."""
    if train_config.precision != "auto":
        return train_config.precision
    if capabilities is None:
        capabilities = gpu_capabilities()
    if not capabilities:
        return "float32"
    # bfloat16 needs Ampere (8.0) or newer, and no loss scaling.
    return ("mixed_bfloat16" if min(capabilities) >= (8, 0)
            else "mixed_float16")


def resolve_jit_compile(train_config: config.TrainConfig,
                        capabilities: Optional[List[Tuple[int, int]]] = None
                        ) -> bool:
    """TrainConfig.jit_compile, or XLA exactly when there is a GPU."""
    if train_config.jit_compile is not None:
        return train_config.jit_compile
    if capabilities is None:
        capabilities = gpu_capabilities()
    return bool(capabilities)


@contextlib.contextmanager
def dtype_policy(name: str):
    """Keras' global dtype policy set to `name` inside the block only:
    layers take the policy in force when they are constructed."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)
