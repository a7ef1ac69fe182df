"""The options of one pipeline run, resolved once.

`RunOptions.resolve` turns a preset name and the overrides a user gave (CLI
flags, a test's keywords) into one frozen object: the preset with its
overrides applied, the splits, the step counts, the release gate, caching and
the initial weights. `create_pipeline` reads nothing else; the runners add only
where things live (paths, the ML Metadata store, image, resources, Beam args),
as the TFX taxi template's short runners do. The dotted paths of the code the
components run, and the pipeline's default name, are here too.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Mapping, Optional, Tuple

from models import config

PIPELINE_NAME = "moonshine-tfx"
# Referenced by dotted path, so the same definition compiles for Kubeflow
# (code baked into the image) and runs locally.
PREPROCESSING_FN = "models.preprocessing.preprocessing_fn"
RUN_FN = "models.trainer.run_fn"
EXPORT_FN = "models.serving.export_fn"


@dataclasses.dataclass(frozen=True)
class RunOptions:
    """Everything a run of the pipeline is built from, besides paths."""
    preset: config.Preset  # with --vocabulary/--frontend/--beam-width applied
    # Split name -> glob of LibriSpeech subset dirs; None: train*/dev*/test*.
    split_patterns: Optional[Tuple[Tuple[str, str], ...]] = None
    train_steps: Optional[int] = None  # None: the preset's schedule
    eval_steps: Optional[int] = None
    # Blessing: eval WER and CER at most these (the preset's by default) and,
    # against the latest blessed model, WER at most max_wer_regression above.
    wer_upper_bound: Optional[float] = None
    cer_upper_bound: Optional[float] = None
    max_wer_regression: float = config.MAX_WER_REGRESSION
    max_audio_seconds: float = config.MAX_AUDIO_SECONDS
    enable_cache: bool = True
    init_from: Optional[str] = None  # `import-weights` output or checkpoint
    # Training replicas under MultiWorkerMirroredStrategy (Kubeflow: a
    # TFJob of that many workers, pipeline/tfjob.py); 1 trains in one pod.
    trainer_workers: int = 1
    run_fn: str = RUN_FN
    export_fn: str = EXPORT_FN
    pipeline_name: str = PIPELINE_NAME

    def __post_init__(self):
        # Unset bounds are the preset's: resolved here, read everywhere.
        for name in ("wer_upper_bound", "cer_upper_bound"):
            if getattr(self, name) is None:
                object.__setattr__(self, name, getattr(self.preset, name))
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got "
                                 f"{getattr(self, name)}")
        if self.max_wer_regression < 0:
            raise ValueError("max_wer_regression must be >= 0, got "
                             f"{self.max_wer_regression}")
        if self.trainer_workers < 1:
            raise ValueError(
                f"trainer_workers must be >= 1, got {self.trainer_workers}")
        for name in ("train_steps", "eval_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if not self.max_audio_seconds > config.MIN_AUDIO_SECONDS:
            raise ValueError(
                f"max_audio_seconds must be > {config.MIN_AUDIO_SECONDS} s, "
                f"got {self.max_audio_seconds}")
        if self.split_patterns is not None:
            pairs = tuple(self.split_patterns.items()) if isinstance(
                self.split_patterns, Mapping) else tuple(self.split_patterns)
            if not pairs:
                raise ValueError("split_patterns is empty")
            object.__setattr__(self, "split_patterns", pairs)

    @classmethod
    def resolve(cls, preset: str = config.DEFAULT_PRESET, *,
                vocabulary: Optional[str] = None,
                frontend: Optional[str] = None,
                beam_width: Optional[int] = None,
                decoding: Optional[str] = None,
                **fields) -> "RunOptions":
        """The options of a run of preset `preset` with these overrides;
        `fields` are RunOptions fields (None means the default)."""
        given = {k: v for k, v in fields.items() if v is not None}
        return cls(preset=config.get_preset(preset).with_overrides(
            vocabulary, frontend, beam_width, decoding), **given)

    @property
    def splits(self) -> Optional[Dict[str, str]]:
        return dict(self.split_patterns) if self.split_patterns else None
