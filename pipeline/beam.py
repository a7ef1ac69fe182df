"""Beam pipeline args of the data steps (ExampleGen, StatisticsGen, Transform,
Evaluator), locally and on Kubeflow.

The runner is always named: Beam's default DirectRunner first tries its
Prism runner, whose binary it downloads from the internet, which on an
air-gapped cluster or an offline machine is a wasted attempt at an outside
address before every data step. Locally that is Beam's portable FnApiRunner,
the runner the DirectRunner falls back on anyway, by default with one warm
worker process per core (pipeline/beam_pool.py).
"""

from __future__ import annotations

from typing import List, Optional, Sequence

LOCAL_RUNNER = "--runner=FnApiRunner"
# The same runner with warm worker processes (pipeline/beam_pool.py): Beam's
# own multi_processing mode re-imports TensorFlow in every worker of every step.
POOL_RUNNER = "--runner=pipeline.beam_pool.LocalRunner"
# TFX builds an sdist of its own install for every Beam step whose args name
# no SDK environment (dependency_utils.make_beam_dependency_flags: ~5 s and
# 49 MB left under /tmp each time), for remote workers to install. Our local
# runners' workers run in this very environment and stage nothing, so the
# args name it; a user's own --beam-arg flags replace these.
LOCAL_ENVIRONMENT = "--sdk_container_image=local"
# Imported first in each worker process: it registers the run's filesystems.
WORKER_PLUGIN = "--beam_plugin=pipeline.beam_worker"
# In one process: TFT's analyzers and the audio decoding run in-process.
IN_PROCESS_ARGS = (LOCAL_RUNNER, "--direct_running_mode=in_memory",
                   "--direct_num_workers=1", LOCAL_ENVIRONMENT)
# Every core of the machine (or of the component's pod), one warm worker
# process per core: 1.2-1.3x one in-process worker on 2 cores (BENCHMARKS.md).
EVERY_CORE_ARGS = (POOL_RUNNER, "--direct_running_mode=multi_processing",
                   "--direct_num_workers=0", WORKER_PLUGIN, LOCAL_ENVIRONMENT)
DEFAULT_LOCAL_ARGS = EVERY_CORE_ARGS
DEFAULT_KUBEFLOW_ARGS = EVERY_CORE_ARGS


def worker_args(workers: int) -> List[str]:
    """Local args for `workers` Beam worker processes (1: in this process;
    0: one per core)."""
    if workers == 1:
        return list(IN_PROCESS_ARGS)
    return [POOL_RUNNER, "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}", WORKER_PLUGIN,
            LOCAL_ENVIRONMENT]


def _with_runner(args: Sequence[str]) -> List[str]:
    """The args, with the local runner named unless they name one (the pool
    runner: it is the FnApiRunner unless they ask for several processes)."""
    args = list(args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, POOL_RUNNER)
    return args


def local_args(args: Optional[Sequence[str]] = None) -> List[str]:
    """`run --beam-arg ...` or the local default, runner named."""
    return _with_runner(args or DEFAULT_LOCAL_ARGS)


def kubeflow_args(args: Optional[Sequence[str]] = None) -> List[str]:
    """`compile-kubeflow --beam-arg ...` or the pod default, runner named."""
    return _with_runner(args or DEFAULT_KUBEFLOW_ARGS)


def uses_worker_pool(args: Sequence[str]) -> bool:
    """Whether a run with these args starts pipeline.beam_pool's workers."""
    args = list(args or ())
    return (POOL_RUNNER in args
            and "--direct_running_mode=multi_processing" in args
            and "--direct_num_workers=1" not in args)
