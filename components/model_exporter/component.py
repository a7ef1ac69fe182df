"""ModelExporter: builds the serving model from the Trainer's weights.

    exporter = ModelExporter(
        model=trainer.outputs['model'],
        transform_graph=transform.outputs['transform_graph'],
        decode=config.DecodeConfig(beam_width=4),
        export_fn='models.serving.export_fn')

The Trainer saves weights; this component adds what only serving needs (the
Transform layer, the decoding loop with its beam width and length penalty,
detokenisation) and writes a standard Model artifact whose `Format-Serving/`
is the SavedModel the Evaluator scores and the Pusher ships. Decoding
settings are this component's exec properties, not the Trainer's, so
changing them re-exports and re-evaluates without training again.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Optional

from tfx import types
from tfx.dsl.components.base import base_component
from tfx.dsl.components.base import executor_spec
from tfx.types import component_spec
from tfx.types import standard_artifacts

from components.model_exporter import executor
from models import config


class ModelExporterSpec(types.ComponentSpec):
    PARAMETERS = {
        executor.DECODE_KEY: component_spec.ExecutionParameter(type=str),
        executor.EXPORT_FN_KEY: component_spec.ExecutionParameter(type=str),
    }
    INPUTS = {
        executor.MODEL_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.Model),
        executor.TRANSFORM_GRAPH_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.TransformGraph),
    }
    OUTPUTS = {
        executor.OUTPUT_MODEL_KEY: component_spec.ChannelParameter(
            type=standard_artifacts.Model),
    }


class ModelExporter(base_component.BaseComponent):
    """Exports the serving SavedModel of a trained Moonshine model."""

    SPEC_CLASS = ModelExporterSpec
    EXECUTOR_SPEC = executor_spec.ExecutorClassSpec(executor.Executor)

    def __init__(self, model: types.BaseChannel,
                 transform_graph: types.BaseChannel,
                 decode: Optional[config.DecodeConfig] = None,
                 export_fn: str = executor.DEFAULT_EXPORT_FN):
        """Args:
          model: the Trainer's Model (weights and the preset they train).
          transform_graph: Transform's graph, baked into the serving model.
          decode: the serving graph's decoding (default DecodeConfig()).
          export_fn: dotted path of `fn(models.serving.ExportArgs)`.
        """
        decode = decode or config.DecodeConfig()
        super().__init__(spec=ModelExporterSpec(
            model=model, transform_graph=transform_graph,
            decode=json.dumps(dataclasses.asdict(decode), sort_keys=True),
            export_fn=export_fn,
            exported_model=types.Channel(type=standard_artifacts.Model)))
