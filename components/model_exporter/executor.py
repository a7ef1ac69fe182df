"""Executor of the ModelExporter: calls the export function by dotted path."""

from __future__ import annotations

import json
from typing import Any, Dict, List

from tfx import types
from tfx.dsl.components.base import base_executor
from tfx.types import artifact_utils
from tfx.utils import import_utils
from tfx.utils import path_utils

from models import config

MODEL_KEY = "model"
TRANSFORM_GRAPH_KEY = "transform_graph"
OUTPUT_MODEL_KEY = "exported_model"
DECODE_KEY = "decode"
EXPORT_FN_KEY = "export_fn"
DEFAULT_EXPORT_FN = "models.serving.export_fn"


class Executor(base_executor.BaseExecutor):
    """Runs `export_fn(ExportArgs)` into the output Model's Format-Serving."""

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        from models import serving  # TensorFlow: only when executing

        trained = artifact_utils.get_single_instance(input_dict[MODEL_KEY])
        graph = artifact_utils.get_single_instance(
            input_dict[TRANSFORM_GRAPH_KEY])
        exported = artifact_utils.get_single_instance(
            output_dict[OUTPUT_MODEL_KEY])
        module, _, name = exec_properties[EXPORT_FN_KEY].rpartition(".")
        export_fn = import_utils.import_func_from_module(module, name)
        export_fn(serving.ExportArgs(
            trained_model_dir=path_utils.serving_model_path(
                trained.uri, path_utils.is_old_model_artifact(trained)),
            transform_output=graph.uri,
            serving_model_dir=path_utils.serving_model_path(exported.uri),
            decode=config.DecodeConfig(
                **json.loads(exec_properties[DECODE_KEY]))))
