"""Reading a run back from ML Metadata: artifacts, blessing, evaluation.

Everything the summary, `lineage` and `runs` commands print comes from the
ML Metadata store through its API, never from globbing the pipeline root.
"""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

INGESTION_REPORT = "ingestion_report.json"


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(
            f"no ML Metadata store at {metadata_path}: run the pipeline first")
    cfg = metadata_store_pb2.ConnectionConfig()
    cfg.sqlite.filename_uri = metadata_path
    cfg.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    return metadata_store.MetadataStore(cfg)


def custom_property(artifact, name: str, default=None):
    if name not in artifact.custom_properties:
        return default
    value = artifact.custom_properties[name]
    kind = value.WhichOneof("value")
    if kind == "struct_value":
        from google.protobuf import json_format
        return json_format.MessageToDict(value.struct_value)
    return getattr(value, kind)


def latest_artifact(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    live = [a for a in artifacts
            if a.state == metadata_store_pb2.Artifact.LIVE] or artifacts
    return max(live, key=lambda a: (a.create_time_since_epoch, a.id),
               default=None)


def component_executions(store, pipeline_name: str) -> Dict[str, List]:
    """Executions of each pipeline node, keyed by node id (e.g. 'Trainer').

    TFX registers one 'node' context per component, named
    '<pipeline name>.<node id>'.
    """
    prefix = pipeline_name + "."
    by_node: Dict[str, List] = {}
    for context in store.get_contexts_by_type("node"):
        if context.name.startswith(prefix):
            by_node[context.name[len(prefix):]] = (
                store.get_executions_by_context(context.id))
    return by_node


def split_counts(examples_artifact) -> Dict[str, int]:
    """Examples written per split, from the ExampleGen's ingestion report."""
    report_path = os.path.join(examples_artifact.uri, INGESTION_REPORT)
    if os.path.exists(report_path):
        with open(report_path) as f:
            report = json.load(f)
        splits = report.get("splits", report)
        return {name: int(s["written"]) for name, s in splits.items()
                if isinstance(s, dict) and "written" in s}
    names = json.loads(custom_property(examples_artifact, "split_names",
                                       None) or examples_artifact.properties[
                                           "split_names"].string_value)
    import tensorflow as tf
    counts = {}
    for name in names:
        files = tf.io.gfile.glob(os.path.join(examples_artifact.uri,
                                              f"Split-{name}", "*"))
        counts[name] = sum(1 for _ in tf.data.TFRecordDataset(
            files, compression_type="GZIP"))
    return counts


def evaluation_metrics(evaluation_uri: str) -> Dict[str, float]:
    """Overall-slice metrics of a ModelEvaluation artifact, by metric name."""
    import tensorflow_model_analysis as tfma
    result = tfma.load_eval_result(evaluation_uri)
    overall: Dict[str, float] = {}
    for slice_key, by_output in result.slicing_metrics:
        if slice_key:
            continue
        for by_class in by_output.values():
            for metric_map in by_class.values():
                for name, value in metric_map.items():
                    if "doubleValue" in value:
                        overall[name] = float(value["doubleValue"])
    return overall


def blessing_of(store) -> Optional[bool]:
    blessing = latest_artifact(store, "ModelBlessing")
    if blessing is None:
        return None
    return bool(custom_property(blessing, "blessed", 0))
