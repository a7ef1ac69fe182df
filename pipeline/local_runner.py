"""Runs the pipeline with LocalDagRunner and a SQLite ML Metadata store."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import List, Optional, Tuple

from tfx import v1 as tfx

from pipeline import beam
from pipeline import pipeline as pipeline_def
from pipeline import storage
from pipeline.options import RunOptions


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a local run keeps everything: one output dir, unless the
    artifacts (`pipeline_root_uri`) or the pushed models
    (`serving_model_uri`) go elsewhere, e.g. to a bucket. The ML Metadata
    store, the summary and the reports stay in the local output dir."""
    output_dir: str
    pipeline_root_uri: Optional[str] = None
    serving_model_uri: Optional[str] = None

    @property
    def pipeline_root(self) -> str:
        return self.pipeline_root_uri or os.path.join(self.output_dir,
                                                      "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return self.serving_model_uri or os.path.join(self.output_dir,
                                                      "serving_model")

    @property
    def summary_path(self) -> str:
        return os.path.join(self.output_dir, "summary.json")


def metadata_config(paths: RunPaths):
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(
        paths.metadata_path)


def run(p: tfx.dsl.Pipeline) -> float:
    """Runs a pipeline with LocalDagRunner; returns the wall seconds."""
    started = time.time()
    if beam.uses_worker_pool(p.beam_pipeline_args):
        # The pool's forkserver imports TF and friends (~15 s of one core)
        # while the first components run, not when the first Beam step waits.
        from pipeline import beam_pool  # pylint: disable=import-outside-toplevel
        beam_pool.pool_address()
    tfx.orchestration.LocalDagRunner().run(p)
    return time.time() - started


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(path)


def run_local(options: RunOptions, data_root: str, output_dir: str,
              beam_args: Optional[List[str]] = None,
              pipeline_root: Optional[str] = None,
              serving_model_dir: Optional[str] = None
              ) -> Tuple[RunPaths, float]:
    """Runs the whole pipeline locally; returns (paths, wall seconds).

    `data_root`, `pipeline_root` and `serving_model_dir` may be gs:// or
    s3:// URIs (see README, "Object storage").
    """
    paths = RunPaths(os.path.abspath(output_dir),
                     pipeline_root and _absolute(pipeline_root),
                     serving_model_dir and _absolute(serving_model_dir))
    os.makedirs(paths.output_dir, exist_ok=True)
    # LocalDagRunner runs every component in this process: one registration
    # serves them all.
    storage.register_filesystems(data_root, paths.pipeline_root,
                                 paths.serving_model_dir)
    p = pipeline_def.create_pipeline(
        options,
        pipeline_root=paths.pipeline_root,
        data_root=_absolute(data_root),
        serving_model_dir=paths.serving_model_dir,
        metadata_connection_config=metadata_config(paths),
        beam_pipeline_args=beam.local_args(beam_args))
    return paths, run(p)
