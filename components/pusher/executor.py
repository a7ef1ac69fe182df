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

# Beside the SavedModel of every version this Pusher writes.
SOURCE_FILE = "moonshine_source.json"
ALREADY_SERVING_KEY = "already_serving"  # PushedModel custom property


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
