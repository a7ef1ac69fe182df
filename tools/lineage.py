"""Lineage and run history, read from ML Metadata through its API.

`lineage` answers "which data and code made the model we serve?" by walking
events upstream from a PushedModel: each artifact to the execution that
produced it, and that execution's inputs, back to the ExampleGen and its data
root. Its `chain` is the short answer (PushedModel <- serving Model <-
ModelExporter (decoding) <- trained Model <- Trainer run with its preset <-
TransformGraph <- Examples with split counts <- data root, plus the
evaluation, its baseline and the blessing); `pushed_model` is the whole tree.
`runs` lists pipeline runs with status, WER and whether they pushed. The
graph walks themselves are tools/metadata.py's.
"""

from __future__ import annotations

import json
from typing import Dict, List, Optional

from components.librispeech_example_gen import layout
from tools import metadata

Event = metadata.Event
Execution = metadata.Execution

# Execution properties worth showing per component (the rest is noise).
_SHOWN_EXEC_PROPERTIES = ("input_base", "input_config", "output_config",
                          "custom_config", "train_args", "eval_args",
                          "splits_config", "module_path", "preprocessing_fn",
                          "run_fn", "example_splits", "push_destination",
                          "decode", "export_fn")
_SHOWN_ARTIFACT_PROPERTIES = ("split_names", "blessed", "pushed",
                              "pushed_destination", "pushed_version",
                              "span", "version")


_STATE_NAMES = {v: k.lower() for k, v in Execution.State.items()}


def _describe_execution(store, execution) -> Dict:
    return {"id": execution.id,
            "component": execution.type.split(".")[-1],
            "state": _STATE_NAMES.get(execution.last_known_state, "unknown"),
            "properties": metadata.properties(execution,
                                             _SHOWN_EXEC_PROPERTIES)}


def _describe_artifact(artifact) -> Dict:
    properties = metadata.properties(artifact, _SHOWN_ARTIFACT_PROPERTIES)
    if layout.INGESTION_REPORT_PROPERTY in artifact.custom_properties:
        properties["split_counts"] = metadata.split_counts(artifact)
    return {"id": artifact.id, "type": artifact.type, "uri": artifact.uri,
            "properties": properties}


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
    producer = metadata.producer(store, artifact.id)
    if producer is None:
        return node
    node["produced_by"] = _describe_execution(store, producer)
    inputs = metadata.artifacts_by_key(store, producer.id)
    node["inputs"] = []
    for key in sorted(inputs):
        for a in sorted(inputs[key], key=lambda a: a.id):
            child = upstream(store, a, seen)
            child["input_key"] = key
            node["inputs"].append(child)
    return node


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
    evaluation = (metadata.evaluation_of_model(store, model["id"])
                  if model else {})
    return {"chain": _chain(tree, evaluation), "pushed_model": tree,
            "evaluation": evaluation}


def _chain(tree: Dict, evaluation: Dict) -> Dict:
    """The answer in short: one entry per link of PushedModel <- serving
    Model <- ModelExporter <- trained Model <- Trainer <- TransformGraph <-
    Examples <- data root."""
    def producer(node):
        return (node or {}).get("produced_by") or {}

    model = _link(tree, tree, "model")
    exporter = producer(model)
    trained = _link(tree, model, "model")
    graph = _link(tree, trained, "transform_graph")
    examples = _link(tree, graph, "examples")
    trainer = producer(trained)
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
        "exporter": exporter and {
            "execution": exporter["id"], "state": exporter["state"],
            "decode": exporter["properties"].get("decode"),
            "export_fn": exporter["properties"].get("export_fn")},
        "trained_model": trained and {"id": trained["id"],
                                      "uri": trained["uri"]},
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
    exporter = chain.get("exporter") or {}
    trained = chain.get("trained_model") or {}
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
        f"  <- ModelExporter execution #{exporter.get('execution')} "
        f"({exporter.get('state')}): decode {json.dumps(exporter.get('decode'))}",
        f"  <- trained Model #{trained.get('id')}  {trained.get('uri')}",
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
               "wer": None, "cer": None, "subsets": {}, "blessed": None,
               "pushed": False}
        run_executions = {x.id for x in executions}
        for artifact in store.get_artifacts_by_context(context.id):
            if artifact.type == "ModelEvaluation" and any(
                    e.type == Event.OUTPUT for e in
                    store.get_events_by_artifact_ids([artifact.id])
                    if e.execution_id in run_executions):
                row.update(_evaluation_row(artifact.uri))
            elif artifact.type == "ModelBlessing":
                row["blessed"] = bool(metadata.custom_property(
                    artifact, "blessed", 0))
            elif artifact.type == "PushedModel":
                row["pushed"] = bool(metadata.custom_property(
                    artifact, "pushed", 0))
        rows.append(row)
    return sorted(rows, key=lambda r: r["started"])


def _evaluation_row(evaluation_uri: str) -> Dict:
    """WER/CER overall and per subset of an evaluation, or the reason it
    could not be read (shown in the table, never swallowed)."""
    evaluation = metadata.read_evaluation(evaluation_uri)
    if "error" in evaluation:
        return {"error": evaluation["error"]}
    overall = evaluation["metrics"]
    return {"wer": overall.get("wer"), "cer": overall.get("cer"),
            "subsets": subset_rates(metadata.evaluation_slices(
                evaluation_uri))}


def subset_rates(slices: List[Dict]) -> Dict[str, Dict]:
    """{subset: {wer, cer, examples}} from an evaluation's slices."""
    from models import config
    return {s["slice"][config.SUBSET_KEY]: {
        "wer": s["metrics"].get("wer"), "cer": s["metrics"].get("cer"),
        "examples": s["metrics"].get("example_count")}
        for s in slices if list(s["slice"]) == [config.SUBSET_KEY]}


def format_runs(rows: List[Dict]) -> str:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}%"

    header = (f"{'run':<28} {'status':<10} {'cached':>6} {'WER':>7} "
              f"{'CER':>7} {'blessed':>7} {'pushed':>6}  eval WER by subset")
    lines = [header]
    for r in rows:
        subsets = ", ".join(f"{name} {pct(v['wer'])}" for name, v in
                            sorted(r.get("subsets", {}).items()))
        lines.append(f"{r['run_id']:<28} {r['status']:<10} "
                     f"{r['cached']:>2}/{r['components']:<3} {pct(r['wer']):>7} "
                     f"{pct(r['cer']):>7} {str(r['blessed']):>7} "
                     f"{str(r['pushed']):>6}  {subsets}")
        if r.get("error"):
            lines.append(f"  {r['error']}")
    return "\n".join(lines)
