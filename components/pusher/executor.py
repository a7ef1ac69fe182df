"""Executor of the Pusher: TFX's, skipping the model that already serves."""

from __future__ import annotations

import json
import posixpath
from typing import Any, Dict, List, Optional

from absl import logging
from tfx import types
from tfx.components.pusher import executor as tfx_pusher
from tfx.dsl.io import fileio
from tfx.proto import pusher_pb2
from tfx.types import artifact_utils
from tfx.types import standard_component_specs as specs
from tfx.utils import proto_utils

from models import config

# Beside the SavedModel of every version this Pusher writes.
SOURCE_FILE = "moonshine_source.json"
ALREADY_SERVING_KEY = "already_serving"  # PushedModel custom property
TFLITE_EVALUATION_KEY = "tflite_evaluation"  # the TFLiteEvaluator's, optional


def newest_version(base_directory: str) -> Optional[str]:
    """The newest numbered version dir under a push destination, or None."""
    if not fileio.isdir(base_directory):
        return None
    versions = [name.rstrip("/") for name in fileio.listdir(base_directory)]
    versions = [v for v in versions if v.isdigit()]
    if not versions:
        return None
    return posixpath.join(base_directory, max(versions, key=int))


def source_of(version_dir: str) -> Optional[str]:
    """The Model artifact URI a pushed version came from, if recorded."""
    path = posixpath.join(version_dir, SOURCE_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.load(f).get("model_uri")


class Executor(tfx_pusher.Executor):

    def Do(self, input_dict: Dict[str, List[types.Artifact]],
           output_dict: Dict[str, List[types.Artifact]],
           exec_properties: Dict[str, Any]) -> None:
        model = artifact_utils.get_single_instance(input_dict[specs.MODEL_KEY])
        model_push = artifact_utils.get_single_instance(
            output_dict[specs.PUSHED_MODEL_KEY])
        destination = pusher_pb2.PushDestination()
        proto_utils.json_to_proto(exec_properties[specs.PUSH_DESTINATION_KEY],
                                  destination)
        base = destination.filesystem.base_directory
        serving = newest_version(base) if base else None
        if serving and source_of(serving) == model.uri:
            logging.info("Pusher: %s already serves %s; not pushing it again",
                         serving, model.uri)
            self._MarkNotPushed(model_push)
            model_push.set_string_custom_property(ALREADY_SERVING_KEY, serving)
            return
        super().Do(input_dict, output_dict, exec_properties)
        pushed_dir = model_push.get_string_custom_property(
            "pushed_destination")
        if pushed_dir:
            with fileio.open(posixpath.join(pushed_dir, SOURCE_FILE), "w") as f:
                f.write(json.dumps({"model_uri": model.uri}))
            evaluation = input_dict.get(TFLITE_EVALUATION_KEY)
            if evaluation:
                gate_tflite_variants(evaluation[0].uri, pushed_dir, model_push)


def gate_tflite_variants(evaluation_uri: str, pushed_dir: str,
                         model_push: types.Artifact) -> None:
    """Removes from a pushed version the TFLite files of the variants the
    TFLiteEvaluator found out of tolerance; records each variant's WER and
    whether it shipped on the PushedModel."""
    from components.tflite_evaluator.executor import EVALUATION_FILE

    with fileio.open(posixpath.join(evaluation_uri, EVALUATION_FILE)) as f:
        variants = json.loads(f.read())["variants"]
    for variant, name in config.TFLITE_FILES.items():
        figures = variants.get(variant)
        shipped = bool(figures and figures["within_tolerance"])
        path = posixpath.join(pushed_dir, name)
        if not shipped and fileio.exists(path):
            logging.warning(
                "Pusher: not shipping %s: its WER is %s above the "
                "SavedModel's (tolerance %s)", name,
                figures and round(figures["wer_increase"], 4),
                config.TFLITE_MAX_WER_INCREASE[variant])
            fileio.remove(path)
        model_push.set_int_custom_property(f"tflite_{variant}_pushed",
                                           int(shipped))
        if figures:
            model_push.set_float_custom_property(f"tflite_{variant}_wer",
                                                 float(figures["wer"]))
