"""Beam pipeline args of the data steps (ExampleGen, StatisticsGen, Transform,
Evaluator), locally and on Kubeflow.

The runner is always named: Beam's default DirectRunner first tries its
Prism runner, whose binary it downloads from the internet, which on an
air-gapped cluster or an offline machine is a wasted attempt at an outside
address before every data step. Locally that is Beam's portable FnApiRunner,
the runner the DirectRunner falls back on anyway.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

LOCAL_RUNNER = "--runner=FnApiRunner"
# Imported first in each worker process: it registers the run's filesystems.
WORKER_PLUGIN = "--beam_plugin=pipeline.beam_worker"
# In one process: TFT's analyzers and the audio decoding run in-process.
IN_PROCESS_ARGS = (LOCAL_RUNNER, "--direct_running_mode=in_memory",
                   "--direct_num_workers=1")
DEFAULT_LOCAL_ARGS = IN_PROCESS_ARGS
# Every core of the component's pod, one worker process per core.
DEFAULT_KUBEFLOW_ARGS = (LOCAL_RUNNER,
                         "--direct_running_mode=multi_processing",
                         "--direct_num_workers=0", WORKER_PLUGIN)


def worker_args(workers: int) -> List[str]:
    """Local args for `workers` Beam worker processes (1: in this process;
    0: one per core)."""
    if workers == 1:
        return list(IN_PROCESS_ARGS)
    return [LOCAL_RUNNER, "--direct_running_mode=multi_processing",
            f"--direct_num_workers={workers}", WORKER_PLUGIN]


def _with_runner(args: Sequence[str]) -> List[str]:
    """The args, with the local runner named unless they name one."""
    args = list(args)
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, LOCAL_RUNNER)
    return args


def local_args(args: Optional[Sequence[str]] = None) -> List[str]:
    """`run --beam-arg ...` or the local default, runner named."""
    return _with_runner(args or DEFAULT_LOCAL_ARGS)


def kubeflow_args(args: Optional[Sequence[str]] = None) -> List[str]:
    """`compile-kubeflow --beam-arg ...` or the pod default, runner named."""
    return _with_runner(args or DEFAULT_KUBEFLOW_ARGS)
