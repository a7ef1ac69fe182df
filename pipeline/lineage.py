"""Lineage and run history, read from ML Metadata through its API.

`lineage` answers "which data and code made the model we serve?" by walking
events upstream from a PushedModel: each artifact to the execution that
produced it, and that execution's inputs, back to the ExampleGen and its data
root. Its `chain` is the short answer (PushedModel <- Model <- Trainer run
with its preset <- TransformGraph <- Examples with split counts <- data root,
plus the evaluation, its baseline and the blessing); `pushed_model` is the
whole tree. `runs` lists pipeline runs with status, WER and whether they
pushed.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2

from pipeline import metadata

Event = metadata_store_pb2.Event
BASELINE_MODEL_INPUT = "baseline_model"  # the Evaluator's input key
Execution = metadata_store_pb2.Execution

# Execution properties worth showing per component (the rest is noise).
_SHOWN_EXEC_PROPERTIES = ("input_base", "input_config", "output_config",
                          "custom_config", "train_args", "eval_args",
                          "splits_config", "module_path", "preprocessing_fn",
                          "run_fn", "example_splits", "push_destination")
INGESTION_REPORT_PROPERTY = "ingestion_report"  # set by the ExampleGen
_SHOWN_ARTIFACT_PROPERTIES = ("split_names", "blessed", "pushed",
                              "pushed_destination", "pushed_version",
                              "span", "version")


def _value(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "struct_value":
        from google.protobuf import json_format
        return json_format.MessageToDict(v.struct_value)
    value = getattr(v, kind)
    if isinstance(value, str) and value[:1] in "{[":
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _props(entity, shown) -> Dict:
    out = {}
    for props in (entity.properties, entity.custom_properties):
        for name in shown:
            if name in props:
                out[name] = _value(props[name])
    return out


_STATE_NAMES = {v: k.lower() for k, v in Execution.State.items()}


def _describe_execution(store, execution) -> Dict:
    return {"id": execution.id,
            "component": execution.type.split(".")[-1],
            "state": _STATE_NAMES.get(execution.last_known_state, "unknown"),
            "properties": _props(execution, _SHOWN_EXEC_PROPERTIES)}


def _split_counts(artifact) -> Optional[Dict[str, int]]:
    """Examples written per split, from the ExampleGen's ingestion report
    (an artifact custom property in ML Metadata)."""
    report = metadata.custom_property(artifact, INGESTION_REPORT_PROPERTY)
    if not report:
        return None
    if isinstance(report, str):
        report = json.loads(report)
    return {name: int(split["written"]) for name, split in
            report.get("splits", {}).items() if "written" in split}


def _describe_artifact(artifact) -> Dict:
    properties = _props(artifact, _SHOWN_ARTIFACT_PROPERTIES)
    counts = _split_counts(artifact)
    if counts is not None:
        properties["split_counts"] = counts
    return {"id": artifact.id, "type": artifact.type, "uri": artifact.uri,
            "properties": properties}


def _producer(store, artifact_id: int) -> Optional[Execution]:
    for event in store.get_events_by_artifact_ids([artifact_id]):
        if event.type in (Event.OUTPUT, Event.DECLARED_OUTPUT):
            return store.get_executions_by_id([event.execution_id])[0]
    return None


def upstream(store, artifact, seen=None) -> Dict:
    """The artifact, the execution that made it, and that execution's inputs.

    Each input node names the producer's input key it came in by
    (`input_key`: model, transform_graph, examples, baseline_model, ...); an
    artifact already shown elsewhere in the tree is a stub with `see_above`.
    """
    seen = set() if seen is None else seen
    node = _describe_artifact(artifact)
    if artifact.id in seen:
        node["see_above"] = True
        return node
    seen.add(artifact.id)
    producer = _producer(store, artifact.id)
    if producer is None:
        return node
    node["produced_by"] = _describe_execution(store, producer)
    keys = {e.artifact_id: _input_key(e) for e in
            store.get_events_by_execution_ids([producer.id])
            if e.type in (Event.INPUT, Event.DECLARED_INPUT)}
    node["inputs"] = []
    for a in sorted(store.get_artifacts_by_id(list(keys)),
                    key=lambda a: (keys[a.id], a.id)):
        child = upstream(store, a, seen)
        child["input_key"] = keys[a.id]
        node["inputs"].append(child)
    return node


def _input_key(event) -> str:
    return next((step.key for step in event.path.steps
                 if step.HasField("key")), "")


def _consumers(store, artifact_id: int) -> List[Execution]:
    ids = [e.execution_id for e in store.get_events_by_artifact_ids(
        [artifact_id]) if e.type in (Event.INPUT, Event.DECLARED_INPUT)]
    return store.get_executions_by_id(ids) if ids else []


def _outputs(store, execution_id: int) -> List:
    ids = [e.artifact_id for e in store.get_events_by_execution_ids(
        [execution_id]) if e.type in (Event.OUTPUT, Event.DECLARED_OUTPUT)]
    return store.get_artifacts_by_id(ids) if ids else []


def evaluation_of_model(store, model_id: int) -> Dict:
    """The Evaluator's result and blessing for a trained Model artifact."""
    for execution in _consumers(store, model_id):
        if not execution.type.endswith("Evaluator"):
            continue
        result: Dict = {"evaluator_execution": execution.id,
                        "baseline_model": _baseline_model_id(
                            store, execution.id)}
        for artifact in _outputs(store, execution.id):
            if artifact.type == "ModelEvaluation":
                result["evaluation_uri"] = artifact.uri
                try:
                    result["metrics"] = metadata.evaluation_metrics(
                        artifact.uri)
                    result["validation"] = metadata.evaluation_validation(
                        artifact.uri)
                except Exception as e:  # an unreadable result is reported
                    result["metrics_error"] = str(e)
            elif artifact.type == "ModelBlessing":
                result["blessed"] = bool(
                    metadata.custom_property(artifact, "blessed", 0))
        return result
    return {}


def _baseline_model_id(store, evaluator_execution_id: int) -> Optional[int]:
    """The Model the Evaluator compared against (None on a first run)."""
    for event in store.get_events_by_execution_ids([evaluator_execution_id]):
        if event.type in (Event.INPUT, Event.DECLARED_INPUT) and any(
                step.key == BASELINE_MODEL_INPUT for step in event.path.steps):
            return event.artifact_id
    return None


def lineage(metadata_path: str, pushed_model_id: Optional[int] = None) -> Dict:
    store = metadata.open_store(metadata_path)
    pushed = metadata.pushed_models(store)
    if pushed_model_id is not None:
        pushed = [a for a in pushed if a.id == pushed_model_id]
    if not pushed:
        which = ("no pushed model" if pushed_model_id is None
                 else f"no pushed model with id {pushed_model_id}")
        raise LookupError(f"{metadata_path}: {which}")
    tree = upstream(store, pushed[-1])
    model = _link(tree, tree, "model")
    evaluation = evaluation_of_model(store, model["id"]) if model else {}
    return {"chain": _chain(tree, evaluation), "pushed_model": tree,
            "evaluation": evaluation}


def _chain(tree: Dict, evaluation: Dict) -> Dict:
    """The answer in short: one entry per link of PushedModel <- Model <-
    Trainer <- TransformGraph <- Examples <- data root."""
    def producer(node):
        return (node or {}).get("produced_by") or {}

    model = _link(tree, tree, "model")
    graph = _link(tree, model, "transform_graph")
    examples = _link(tree, graph, "examples")
    trainer = producer(model)
    trainer_config = trainer.get("properties", {}).get("custom_config") or {}
    preset = trainer_config.get("preset") if isinstance(
        trainer_config, dict) else None
    example_gen = producer(examples).get("properties", {})
    props = tree["properties"]
    return {
        "pushed_model": {"id": tree["id"], "uri": tree["uri"],
                         "destination": props.get("pushed_destination"),
                         "version": props.get("pushed_version")},
        "model": model and {"id": model["id"], "uri": model["uri"]},
        "trainer": trainer and {
            "execution": trainer["id"], "state": trainer["state"],
            "run_fn": trainer["properties"].get("run_fn"),
            "train_args": trainer["properties"].get("train_args"),
            "preset": preset},
        "transform_graph": graph and {
            "id": graph["id"], "uri": graph["uri"],
            "preprocessing_fn": producer(graph).get("properties", {}).get(
                "preprocessing_fn")},
        "examples": examples and {
            "id": examples["id"], "uri": examples["uri"],
            "data_root": example_gen.get("input_base"),
            "input_config": example_gen.get("input_config"),
            "split_counts": examples["properties"].get("split_counts")},
        "evaluation": {k: evaluation.get(k) for k in (
            "evaluator_execution", "baseline_model", "metrics", "validation")},
        "blessed": evaluation.get("blessed"),
    }


def _link(tree: Dict, node: Optional[Dict], input_key: str) -> Optional[Dict]:
    """The input `input_key` of the execution that produced `node`, expanded
    (a `see_above` stub is replaced by its full node elsewhere in `tree`)."""
    child = next((c for c in (node or {}).get("inputs", [])
                  if c.get("input_key") == input_key), None)
    if child is None or not child.get("see_above"):
        return child
    return _expanded(tree, child["id"])


def _expanded(node: Dict, artifact_id: int) -> Optional[Dict]:
    if node["id"] == artifact_id and not node.get("see_above"):
        return node
    for child in node.get("inputs", []):
        found = _expanded(child, artifact_id)
        if found:
            return found
    return None


def format_chain(chain: Dict) -> List[str]:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    pushed, model = chain["pushed_model"], chain.get("model") or {}
    trainer = chain.get("trainer") or {}
    graph = chain.get("transform_graph") or {}
    examples = chain.get("examples") or {}
    evaluation = chain.get("evaluation") or {}
    metrics_ = evaluation.get("metrics") or {}
    preset = trainer.get("preset")
    preset_name = preset.get("name") if isinstance(preset, dict) else preset
    baseline = evaluation.get("baseline_model")
    return [
        f"served model: {pushed['destination']} (PushedModel #{pushed['id']})",
        f"  <- Model #{model.get('id')}  {model.get('uri')}",
        f"  <- Trainer execution #{trainer.get('execution')} "
        f"({trainer.get('state')}): preset {preset_name}, "
        f"run_fn {trainer.get('run_fn')}",
        f"  <- TransformGraph #{graph.get('id')} "
        f"({graph.get('preprocessing_fn')})",
        f"  <- Examples #{examples.get('id')}: "
        + ", ".join(f"{k}={v}" for k, v in sorted(
            (examples.get("split_counts") or {}).items())),
        f"  <- data root {examples.get('data_root')}",
        f"evaluation: WER {pct(metrics_.get('wer'))}, "
        f"CER {pct(metrics_.get('cer'))} "
        + (f"vs baseline Model #{baseline}" if baseline
           else "(no baseline: absolute bound only)")
        + f"; blessed: {chain.get('blessed')}",
        "",
    ]


def format_lineage(result: Dict) -> str:
    lines: List[str] = format_chain(result["chain"]) if "chain" in result else []

    def walk(node: Dict, depth: int) -> None:
        pad = "  " * depth
        props = ", ".join(f"{k}={v}" for k, v in node["properties"].items())
        role = f" ({node['input_key']})" if node.get("input_key") else ""
        lines.append(f"{pad}{node['type']} #{node['id']}{role}  {node['uri']}"
                     + (f"  [{props}]" if props else ""))
        if node.get("see_above"):
            return
        producer = node.get("produced_by")
        if producer:
            lines.append(f"{pad}  <- {producer['component']} execution "
                         f"#{producer['id']} ({producer['state']})")
            for key, value in producer["properties"].items():
                text = json.dumps(value) if not isinstance(value, str) else value
                lines.append(f"{pad}     {key}: {text}")
        for child in node.get("inputs", []):
            walk(child, depth + 2)

    walk(result["pushed_model"], 0)
    evaluation = result.get("evaluation") or {}
    if evaluation:
        lines.append("evaluation: " + json.dumps(
            {k: v for k, v in evaluation.items() if k != "evaluation_uri"}))
    return "\n".join(lines)


def runs(metadata_path: str) -> List[Dict]:
    """One row per pipeline run, oldest first."""
    store = metadata.open_store(metadata_path)
    rows = []
    for context in store.get_contexts_by_type("pipeline_run"):
        executions = store.get_executions_by_context(context.id)
        states = {e.last_known_state for e in executions}
        if Execution.FAILED in states:
            status = "failed"
        elif states & {Execution.RUNNING, Execution.NEW, Execution.UNKNOWN}:
            status = "incomplete"
        else:
            status = "complete"
        row = {"run_id": context.name, "started": min(
            (e.create_time_since_epoch for e in executions), default=0),
               "status": status, "components": len(executions),
               "cached": sum(e.last_known_state == Execution.CACHED
                             for e in executions),
               "wer": None, "cer": None, "blessed": None, "pushed": False}
        for artifact in store.get_artifacts_by_context(context.id):
            if artifact.type == "ModelEvaluation" and any(
                    e.type == Event.OUTPUT for e in
                    store.get_events_by_artifact_ids([artifact.id])
                    if e.execution_id in {x.id for x in executions}):
                try:
                    m = metadata.evaluation_metrics(artifact.uri)
                    row["wer"], row["cer"] = m.get("wer"), m.get("cer")
                except Exception:
                    pass
            elif artifact.type == "ModelBlessing":
                row["blessed"] = bool(metadata.custom_property(
                    artifact, "blessed", 0))
            elif artifact.type == "PushedModel":
                row["pushed"] = bool(metadata.custom_property(
                    artifact, "pushed", 0))
        rows.append(row)
    return sorted(rows, key=lambda r: r["started"])


def format_runs(rows: List[Dict]) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    header = f"{'run':<28} {'status':<10} {'cached':>6} {'WER':>7} {'CER':>7} {'blessed':>7} {'pushed':>6}"
    lines = [header]
    for r in rows:
        lines.append(f"{r['run_id']:<28} {r['status']:<10} "
                     f"{r['cached']:>2}/{r['components']:<3} {pct(r['wer']):>7} "
                     f"{pct(r['cer']):>7} {str(r['blessed']):>7} "
                     f"{str(r['pushed']):>6}")
    return "\n".join(lines)
