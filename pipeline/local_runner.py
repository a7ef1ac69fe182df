"""Runs the pipeline with LocalDagRunner and a SQLite ML Metadata store."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Dict, List, Optional, Tuple

from tfx import v1 as tfx

from models import config
from pipeline import pipeline as pipeline_def

# DirectRunner in one process: TFT's analyzers and the audio decoding run
# in-process. Pass --beam-arg to use --direct_running_mode=multi_processing,
# Dataflow, Flink or Spark instead (see README).
DEFAULT_BEAM_ARGS = ("--direct_running_mode=in_memory",
                     "--direct_num_workers=1")


@dataclasses.dataclass(frozen=True)
class RunPaths:
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


def run_local(
    data_root: str,
    output_dir: str,
    preset_name: str = "demo",
    pipeline_name: str = "moonshine-tfx",
    beam_args: Optional[List[str]] = None,
    split_patterns: Optional[Dict[str, str]] = None,
    train_steps: Optional[int] = None,
    eval_steps: Optional[int] = None,
    wer_upper_bound: Optional[float] = None,
    max_audio_seconds: float = config.MAX_AUDIO_SECONDS,
    enable_cache: bool = True,
    init_from: Optional[str] = None,
    max_wer_regression: float = config.MAX_WER_REGRESSION,
    run_fn: str = pipeline_def.RUN_FN,
    vocabulary: Optional[str] = None,
    frontend: Optional[str] = None,
    beam_width: Optional[int] = None,
) -> Tuple[RunPaths, float]:
    """Runs the whole pipeline locally; returns (paths, wall seconds).

    `vocabulary`, `frontend` and `beam_width` replace the preset's (see
    pipeline.with_model_options).
    """
    paths = RunPaths(os.path.abspath(output_dir))
    os.makedirs(paths.output_dir, exist_ok=True)
    preset = pipeline_def.with_model_options(
        config.get_preset(preset_name), vocabulary, frontend, beam_width)
    metadata = tfx.orchestration.metadata.sqlite_metadata_connection_config(
        paths.metadata_path)
    p = pipeline_def.create_pipeline(
        pipeline_name=pipeline_name,
        pipeline_root=paths.pipeline_root,
        data_root=os.path.abspath(data_root),
        serving_model_dir=paths.serving_model_dir,
        preset=preset,
        metadata_connection_config=metadata,
        beam_pipeline_args=list(beam_args or DEFAULT_BEAM_ARGS),
        split_patterns=split_patterns,
        train_steps=train_steps,
        eval_steps=eval_steps,
        wer_upper_bound=wer_upper_bound,
        max_audio_seconds=max_audio_seconds,
        enable_cache=enable_cache,
        max_wer_regression=max_wer_regression,
        run_fn=run_fn,
        # The Trainer's initial weights (`run --init-from`), only when given.
        **({"init_from": init_from} if init_from else {}))
    started = time.time()
    tfx.orchestration.LocalDagRunner().run(p)
    return paths, time.time() - started
