"""Where and how the Trainer computes (models/distribution.py): decisions
from the host's GPUs and TF_CONFIG, forced here on a CPU."""

import json

import pytest

from models import config, distribution


def test_precision_and_xla_follow_the_hardware():
    auto = config.TrainConfig()
    assert distribution.resolve_precision(auto, []) == "float32"
    assert distribution.resolve_precision(auto, [(8, 0), (9, 0)]) == "mixed_bfloat16"
    assert distribution.resolve_precision(auto, [(7, 5)]) == "mixed_float16"
    forced = config.TrainConfig(precision="mixed_bfloat16", jit_compile=False)
    assert distribution.resolve_precision(forced, []) == "mixed_bfloat16"
    assert not distribution.resolve_jit_compile(auto, [])
    assert distribution.resolve_jit_compile(auto, [(8, 0)])
    assert not distribution.resolve_jit_compile(forced, [(8, 0)])
    # This CI machine has no GPU: float32, no XLA.
    assert distribution.resolve_precision(auto) == "float32"
    with pytest.raises(ValueError, match="unknown precision 'fp8'"):
        config.TrainConfig(precision="fp8")


def test_strategy_follows_tf_config_and_local_gpus():
    assert distribution.strategy_kind(None, 0) == "default"
    assert distribution.strategy_kind(None, 1) == "default"
    assert distribution.strategy_kind(None, 4) == "mirrored"
    two_workers = json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                              "task": {"type": "worker", "index": 1}})
    assert distribution.strategy_kind(two_workers, 8) == "multi_worker"
    assert not distribution.is_chief(two_workers)
    assert distribution.is_chief(two_workers.replace('"index": 1', '"index": 0'))
    with_chief = json.dumps({"cluster": {"chief": ["c:1"], "worker": ["a:1"]},
                             "task": {"type": "worker", "index": 0}})
    assert distribution.strategy_kind(with_chief, 0) == "multi_worker"
    assert not distribution.is_chief(with_chief)
    assert distribution.is_chief(None)


def test_cluster_size_and_task_names_from_tf_config():
    cluster = {"worker": ["localhost:1", "localhost:2", "localhost:3"]}
    third = json.dumps({"cluster": cluster,
                        "task": {"type": "worker", "index": 2}})
    assert distribution.cluster_size(third) == 3
    assert distribution.task_name(third) == "worker-2"
    assert distribution.cluster_size(None) == 1
    assert distribution.task_name(None) == "chief-0"
    distribution.check_cluster_size(third, 3)
    distribution.check_cluster_size(None, None)
    with pytest.raises(ValueError, match="compiled for 2 workers but "
                       "TF_CONFIG names 3"):
        distribution.check_cluster_size(third, 2)


def test_run_fn_refuses_a_cluster_other_than_the_compiled_one(monkeypatch):
    """A Trainer compiled for 2 workers (compile-kubeflow --workers 2) but
    started without TF_CONFIG fails before building anything."""
    import types

    from models import trainer

    monkeypatch.delenv("TF_CONFIG", raising=False)
    args = types.SimpleNamespace(custom_config={
        config.TRAINER_WORKERS_KEY: 2, "preset": "ci"})
    with pytest.raises(ValueError, match="compiled for 2 workers but "
                       "TF_CONFIG names 1"):
        trainer.run_fn(args)
