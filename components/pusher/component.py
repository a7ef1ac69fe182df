"""Pusher: TFX's Pusher, except that it never pushes the serving model again,
and it ships only the TFLite variants that score like the SavedModel.

A re-run of an unchanged pipeline takes the Trainer's and the ModelExporter's
outputs from the cache, but the Evaluator runs again (its baseline, the latest
blessed model, is now that very model), blesses it, and TFX's Pusher would
copy it to a new serving version. This one compares the candidate with the
newest pushed version first: each version it pushes records the Model
artifact it came from (`SOURCE_FILE`), and a candidate that is that artifact
is not pushed again (`pushed` 0, `already_serving` names the version).

Given the TFLiteEvaluator's `tflite_evaluation`, a pushed version keeps only
the TFLite files within tolerance of the SavedModel's WER; the PushedModel
records each variant's WER and whether it shipped.
"""

from __future__ import annotations

from typing import Optional

from tfx import types
from tfx import v1 as tfx
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts
from tfx.types import standard_component_specs

from components.pusher import executor
from components.artifacts import TFLiteEvaluation


class PusherSpec(standard_component_specs.PusherSpec):
    INPUTS = {
        **standard_component_specs.PusherSpec.INPUTS,
        executor.TFLITE_EVALUATION_KEY: component_spec.ChannelParameter(
            type=TFLiteEvaluation, optional=True),
    }


class Pusher(tfx.components.Pusher):
    """tfx.components.Pusher that pushes a given model at most once in a row
    and gates its TFLite variants."""

    SPEC_CLASS = PusherSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel,
                 model_blessing: types.BaseChannel,
                 push_destination: tfx.proto.PushDestination,
                 tflite_evaluation: Optional[types.BaseChannel] = None):
        base_component.BaseComponent.__init__(self, spec=PusherSpec(
            model=model, model_blessing=model_blessing,
            push_destination=push_destination,
            custom_config="null",  # TFX's Pusher's json of no config
            tflite_evaluation=tflite_evaluation,
            pushed_model=types.Channel(type=standard_artifacts.PushedModel)))
