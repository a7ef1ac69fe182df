"""TFLiteEvaluator: the TFLite variants scored on the eval split like the SavedModel.

    tflite_evaluator = TFLiteEvaluator(
        examples=example_gen.outputs['examples'],
        model=exporter.outputs['exported_model'])

TFMA scores the SavedModel; its TFLite files (config.TFLITE_FILES, written
beside it by the ModelExporter) decode with a loop in the host, which no TFMA
extractor runs. This component decodes the same split with the SavedModel and
with each variant, one utterance at a time as a device does, and scores them
with the Evaluator's WER/CER definition (models/metrics.py). Its
`evaluation` artifact holds WER, CER, bytes and latency per variant and
whether each variant is within config.TFLITE_MAX_WER_INCREASE of the
SavedModel's WER; the Pusher ships only the variants that are.
"""

from __future__ import annotations

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.artifacts import TFLiteEvaluation
from components.tflite_evaluator import executor


class TFLiteEvaluatorSpec(types.ComponentSpec):
    PARAMETERS = {
        executor.SPLIT_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.EXAMPLES_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.Examples),
        executor.MODEL_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.Model),
    }
    OUTPUTS = {
        executor.EVALUATION_KEY: component_spec.ChannelParameter(
            type=TFLiteEvaluation),
    }


class TFLiteEvaluator(base_component.BaseComponent):
    """Scores the exported model's TFLite variants against its SavedModel."""

    SPEC_CLASS = TFLiteEvaluatorSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, examples: types.BaseChannel, model: types.BaseChannel,
                 split: str = "eval"):
        """Args:
          examples: the raw ExampleGen examples.
          model: the ModelExporter's Model (SavedModel and TFLite files).
          split: the split scored (the Evaluator's).
        """
        super().__init__(spec=TFLiteEvaluatorSpec(
            examples=examples, model=model, split=split,
            evaluation=types.Channel(type=TFLiteEvaluation)))
