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


def evaluation_slices(evaluation_uri: str) -> List[Dict]:
    """Every slice's metrics of a ModelEvaluation artifact, overall first.

    [{"slice": {feature: value} ({} for overall), "metrics": {name: value}}];
    with a baseline the metrics are the candidate's, plus `<name>_diff`
    (candidate - baseline). Slices are sorted by feature, then value.
    """
    import tensorflow_model_analysis as tfma
    result = tfma.load_eval_result(evaluation_uri)
    slices = []
    for slice_key, by_output in result.slicing_metrics:
        values: Dict[str, float] = {}
        for by_class in by_output.values():
            for metric_map in by_class.values():
                for name, value in metric_map.items():
                    if "doubleValue" in value:
                        values[name] = float(value["doubleValue"])
        slices.append({"slice": {str(k): v for k, v in slice_key},
                       "metrics": values})
    return sorted(slices, key=lambda s: sorted(
        (k, str(v)) for k, v in s["slice"].items()))


def evaluation_metrics(evaluation_uri: str) -> Dict[str, float]:
    """Overall-slice metrics of a ModelEvaluation artifact, by metric name."""
    for s in evaluation_slices(evaluation_uri):
        if not s["slice"]:
            return s["metrics"]
    return {}


def evaluation_validation(evaluation_uri: str) -> Dict:
    """Why a model was (not) blessed: TFMA's ValidationResult, summarised.

    {"ok": bool, "failures": [{"metric", "is_diff", "value", "threshold",
    "message"}]}; a failure with is_diff true is the no-regression check.
    """
    import tensorflow_model_analysis as tfma
    from google.protobuf import json_format
    result = tfma.load_validation_result(evaluation_uri)
    failures = []
    for per_slice in result.metric_validations_per_slice:
        for f in per_slice.failures:
            value = f.metric_value.double_value.value
            name = f.metric_key.name
            if f.metric_key.is_diff:
                change = f.metric_threshold.change_threshold
                text = (f"{name} is {value:+.4f} vs the baseline (latest "
                        f"blessed model); allowed at most "
                        f"{change.absolute.value:+.4g}")
            else:
                bounds = json_format.MessageToDict(
                    f.metric_threshold.value_threshold)
                text = (f"{name} {value:.4f} is outside the bounds "
                        f"{json.dumps(bounds, sort_keys=True)}")
            failures.append({
                "metric": name, "is_diff": bool(f.metric_key.is_diff),
                "value": value,
                "threshold": json_format.MessageToDict(f.metric_threshold),
                "message": f.message or text})
    return {"ok": bool(result.validation_ok), "failures": failures}


def pushed_models(store) -> List:
    """PushedModel artifacts that were really pushed, oldest first (the last
    one is what serves)."""
    pushed = [a for a in store.get_artifacts_by_type("PushedModel")
              if custom_property(a, "pushed", 0)]
    return sorted(pushed, key=lambda a: (a.create_time_since_epoch, a.id))


def blessing_of(store) -> Optional[bool]:
    blessing = latest_artifact(store, "ModelBlessing")
    if blessing is None:
        return None
    return bool(custom_property(blessing, "blessed", 0))
