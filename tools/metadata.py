"""Reading a run back from ML Metadata: the one module that does.

Everything the summary, the report, `validate-data`, `lineage` and `runs`
print comes from the ML Metadata store through its API (artifacts, their
producers and consumers, custom properties) and from the artifacts it points
to, read through TFX's filesystem layer so that a pipeline root in object
storage reads like a local one; never from globbing the pipeline root.
"""

from __future__ import annotations

import collections
import json
import posixpath
from typing import Dict, List, Optional

from ml_metadata.metadata_store import metadata_store
from ml_metadata.proto import metadata_store_pb2

from components.librispeech_example_gen import layout

Event = metadata_store_pb2.Event
Execution = metadata_store_pb2.Execution
INPUT_EVENTS = (Event.INPUT, Event.DECLARED_INPUT)
OUTPUT_EVENTS = (Event.OUTPUT, Event.DECLARED_OUTPUT)
DONE = (Execution.COMPLETE, Execution.CACHED)
BASELINE_MODEL_INPUT = "baseline_model"  # the Evaluator's input key


def open_store(metadata_path: str) -> metadata_store.MetadataStore:
    import os
    if not os.path.exists(metadata_path):
        raise FileNotFoundError(
            f"no ML Metadata store at {metadata_path}: run the pipeline first")
    cfg = metadata_store_pb2.ConnectionConfig()
    cfg.sqlite.filename_uri = metadata_path
    cfg.sqlite.connection_mode = (
        metadata_store_pb2.SqliteMetadataSourceConfig.READONLY)
    return metadata_store.MetadataStore(cfg)


# --- Properties -----------------------------------------------------------
def property_value(value):
    """A (custom) property's Python value; JSON strings and structs decoded."""
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "struct_value":
        from google.protobuf import json_format
        return json_format.MessageToDict(value.struct_value)
    result = getattr(value, kind)
    if isinstance(result, str) and result[:1] in "{[":
        try:
            return json.loads(result)
        except ValueError:
            pass
    return result


def custom_property(entity, name: str, default=None):
    if name not in entity.custom_properties:
        return default
    return property_value(entity.custom_properties[name])


def properties(entity, names) -> Dict:
    """The named properties and custom properties an entity has."""
    out = {}
    for props in (entity.properties, entity.custom_properties):
        for name in names:
            if name in props:
                out[name] = property_value(props[name])
    return out


# --- Graph walks ----------------------------------------------------------
def latest(entities):
    return max(entities, key=lambda e: (e.create_time_since_epoch, e.id),
               default=None)


def latest_artifact(store, type_name: str):
    artifacts = store.get_artifacts_by_type(type_name)
    live = [a for a in artifacts
            if a.state == metadata_store_pb2.Artifact.LIVE] or artifacts
    return latest(live)


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


def latest_execution(store, pipeline_name: str, node_id: str):
    """The node's newest execution that completed or came from the cache."""
    done = [e for e in component_executions(store, pipeline_name).get(
        node_id, []) if e.last_known_state in DONE]
    return latest(done)


def event_keys(event) -> List[str]:
    """The input/output keys (e.g. 'examples', 'model') an event is under:
    one artifact that is two inputs of an execution (the Evaluator's model
    and baseline_model when they are the same model) is one event."""
    return [step.key for step in event.path.steps if step.HasField("key")]


def producer(store, artifact_id: int):
    """The execution that output the artifact, or None (e.g. imported)."""
    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type in OUTPUT_EVENTS:
            return store.get_executions_by_id([event.execution_id])[0]
    return None


def consumers(store, artifact_id: int) -> List:
    ids = [e.execution_id for e in store.get_events_by_artifact_ids(
        [artifact_id]) if e.type in INPUT_EVENTS]
    return store.get_executions_by_id(ids) if ids else []


def artifacts_by_key(store, execution_id: int,
                     event_types=INPUT_EVENTS) -> Dict[str, List]:
    """{input or output key: [artifacts]} of one execution."""
    events = [e for e in store.get_events_by_execution_ids([execution_id])
              if e.type in event_types]
    artifacts = {a.id: a for a in store.get_artifacts_by_id(
        sorted({e.artifact_id for e in events}))} if events else {}
    by_key: Dict[str, List] = collections.defaultdict(list)
    for e in events:
        for key in event_keys(e):
            by_key[key].append(artifacts[e.artifact_id])
    return dict(by_key)


def input_of(store, artifact_id: int, key: str):
    """The input `key` of the artifact's producer (e.g. the Examples a
    TransformGraph was made from), or None."""
    execution = producer(store, artifact_id)
    if execution is None:
        return None
    found = artifacts_by_key(store, execution.id).get(key, [])
    return found[0] if found else None


# --- Artifact contents ------------------------------------------------------
def read_json(uri: str, name: str) -> Optional[Dict]:
    """A JSON file inside an artifact (any TFX filesystem), or None."""
    from tfx.dsl.io import fileio

    path = posixpath.join(uri, name)
    if not fileio.exists(path):
        return None
    with fileio.open(path) as f:
        return json.loads(f.read())


def ingestion_report(examples_artifact) -> Optional[Dict]:
    """The LibriSpeech ExampleGen's ingestion report of an Examples artifact:
    the file beside the splits (exact counts), else the custom property (a
    protobuf struct, whose numbers come back as floats)."""
    return read_json(examples_artifact.uri, layout.INGESTION_REPORT_FILE) or (
        custom_property(examples_artifact, layout.INGESTION_REPORT_PROPERTY))


def split_counts(examples_artifact) -> Dict[str, int]:
    """Examples written per split, from the ingestion report."""
    report = ingestion_report(examples_artifact) or {}
    return {name: int(s["written"])
            for name, s in report.get("splits", {}).items()
            if isinstance(s, dict) and "written" in s}


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


def read_evaluation(evaluation_uri: str) -> Dict:
    """{"metrics", "validation"} of a ModelEvaluation, or {"error"} naming
    why it could not be read (a run killed mid-write leaves a partial one)."""
    import tensorflow as tf
    try:
        return {"metrics": evaluation_metrics(evaluation_uri),
                "validation": evaluation_validation(evaluation_uri)}
    except (OSError, ValueError, tf.errors.OpError) as e:
        return {"error": f"{evaluation_uri}: cannot read the evaluation "
                         f"({type(e).__name__}: {e})"}


# --- Models, blessing, pushes ----------------------------------------------
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


def baseline_model_id(store, evaluator_execution_id: int) -> Optional[int]:
    """The Model the Evaluator compared against (None on a first run)."""
    found = artifacts_by_key(store, evaluator_execution_id).get(
        BASELINE_MODEL_INPUT, [])
    return found[0].id if found else None


def evaluation_of_model(store, model_id: int) -> Dict:
    """The latest Evaluator result and blessing of a (serving) Model, as
    the candidate (not as another candidate's baseline)."""
    evaluators = [e for e in consumers(store, model_id)
                  # TFMA's Evaluator, not the TFLiteEvaluator beside it
                  if e.type.rsplit(".", 1)[-1] == "Evaluator" and model_id in {
                      a.id for a in artifacts_by_key(store, e.id).get(
                          "model", [])}]
    execution = latest(evaluators)
    if execution is None:
        return {}
    result: Dict = {"evaluator_execution": execution.id,
                    "baseline_model": baseline_model_id(store, execution.id)}
    outputs = artifacts_by_key(store, execution.id, OUTPUT_EVENTS)
    for artifact in outputs.get("evaluation", []):
        result["evaluation_uri"] = artifact.uri
        evaluation = read_evaluation(artifact.uri)
        result.update(evaluation if "error" not in evaluation
                      else {"metrics_error": evaluation["error"]})
    for artifact in outputs.get("blessing", []):
        result["blessed"] = bool(custom_property(artifact, "blessed", 0))
    return result
