"""Runs the pipeline with LocalDagRunner and a SQLite ML Metadata store."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import List, Optional, Tuple

from tfx import v1 as tfx

from pipeline import beam
from pipeline import pipeline as pipeline_def
from pipeline.options import RunOptions


@dataclasses.dataclass(frozen=True)
class RunPaths:
    """Where a local run keeps everything: one output dir."""
    output_dir: str

    @property
    def pipeline_root(self) -> str:
        return os.path.join(self.output_dir, "pipeline_root")

    @property
    def metadata_path(self) -> str:
        return os.path.join(self.output_dir, "metadata.sqlite")

    @property
    def serving_model_dir(self) -> str:
        return os.path.join(self.output_dir, "serving_model")

    @property
    def summary_path(self) -> str:
        return os.path.join(self.output_dir, "summary.json")


def metadata_config(paths: RunPaths):
    return tfx.orchestration.metadata.sqlite_metadata_connection_config(
        paths.metadata_path)


def run(p: tfx.dsl.Pipeline) -> float:
    """Runs a pipeline with LocalDagRunner; returns the wall seconds."""
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(p)
    return time.time() - started


def run_local(options: RunOptions, data_root: str, output_dir: str,
              beam_args: Optional[List[str]] = None) -> Tuple[RunPaths, float]:
    """Runs the whole pipeline locally; returns (paths, wall seconds)."""
    paths = RunPaths(os.path.abspath(output_dir))
    os.makedirs(paths.output_dir, exist_ok=True)
    p = pipeline_def.create_pipeline(
        options,
        pipeline_root=paths.pipeline_root,
        data_root=os.path.abspath(data_root),
        serving_model_dir=paths.serving_model_dir,
        metadata_connection_config=metadata_config(paths),
        beam_pipeline_args=beam.local_args(beam_args))
    return paths, run(p)
