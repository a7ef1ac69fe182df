"""The run summary: what `moonshine-tfx run` prints and writes to summary.json."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from components.pusher.executor import ALREADY_SERVING_KEY
from models import config
from pipeline import options
from tools import metadata

EXAMPLE_GEN_ID = "LibriSpeechExampleGen"
EXPORTER_ID = "ModelExporter"
TFLITE_EVALUATOR_ID = "TFLiteEvaluator"
N_SAMPLE_TRANSCRIPTS = 5
# What a user must know before trusting the demo model with their own audio.
SYNTHETIC_SPEECH_NOTE = (
    "this model was trained on the embedded corpus, synthetic voices only: "
    "it does not transcribe real recorded speech (it turns it into unrelated "
    "words). For real speech train on LibriSpeech (`run --data-root "
    "/data/LibriSpeech --preset tiny`) or fine-tune the official weights "
    "(`import-weights`, then `run --init-from`); see README.")


def synthetic_corpus(data_root: str) -> bool:
    """Whether data_root is (a copy or subset of) the embedded corpus, which
    says so in the manifest scripts/make_corpus.py writes."""
    manifest = metadata.read_json(data_root, "manifest.json") or {}
    return manifest.get("generator") == "scripts/make_corpus.py"


def _rates(refs: List[str], hyps: List[str]) -> Dict:
    from models import metrics
    return {"examples": len(refs),
            "wer": metrics.word_error_rate(refs, hyps) if refs else None,
            "cer": metrics.char_error_rate(refs, hyps) if refs else None}


def evaluate_split(examples_uri: str, split: str, model,
                   batch_size: int = 8, limit: Optional[int] = None) -> Dict:
    """WER/CER of a loaded serving model on one split of raw ExampleGen
    output, overall and per subset (test-clean, test-other, ...).

    `limit` decodes only the first utterances (for samples).
    """
    import tensorflow as tf
    from models import data
    from models import metrics

    serve = model.signatures["serving_default"]
    keys = (config.TRANSCRIPT_KEY, config.UTTERANCE_ID_KEY, config.SUBSET_KEY)
    spec = {k: tf.io.FixedLenFeature([], tf.string) for k in keys}
    rows: List[tuple] = []
    records = data.split_records(examples_uri, split)
    if limit is not None:
        records = records.take(limit)
    for batch in records.batch(batch_size):
        parsed = tf.io.parse_example(batch, spec)
        out = serve(examples=batch)
        columns = [[t.decode() for t in parsed[k].numpy()] for k in keys]
        hyps = [t.decode() for t in out[config.TEXT_OUTPUT_KEY].numpy()]
        rows += zip(*columns, hyps)
    result = _rates([r[0] for r in rows], [r[3] for r in rows])
    result["subsets"] = {
        subset: _rates([r[0] for r in rows if r[2] == subset],
                       [r[3] for r in rows if r[2] == subset])
        for subset in sorted({r[2] for r in rows})}
    result["samples"] = [
        {"utterance_id": u, "subset": sub, "reference": r, "hypothesis": h,
         "wer": metrics.word_error_rate([r], [h])}
        for r, u, sub, h in rows[:N_SAMPLE_TRANSCRIPTS]]
    return result


def _latest_run_id(store) -> Optional[str]:
    runs = store.get_contexts_by_type("pipeline_run")
    latest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id),
                 default=None)
    return latest.name if latest is not None else None


def build_summary(paths, preset_name: str, data_root: str,
                  wall_seconds: float, test_split: str = "test",
                  eval_split: str = "eval",
                  pipeline_name: str = options.PIPELINE_NAME) -> Dict:
    """The run summary read back from ML Metadata; a run on the embedded
    corpus gets the note that its model has heard synthetic speech only."""
    store = metadata.open_store(paths.metadata_path)
    summary: Dict = {"preset": preset_name, "data_root": data_root,
                     "output_dir": paths.output_dir,
                     "metadata_path": paths.metadata_path,
                     "pipeline_root": paths.pipeline_root,
                     "run_id": _latest_run_id(store)}
    examples = _output_of(store, pipeline_name, EXAMPLE_GEN_ID, "examples")
    summary["examples"] = metadata.split_counts(examples) if examples else {}
    summary["examples_uri"] = examples.uri if examples else None
    summary["ingestion"] = _ingestion(examples) if examples else None
    summary.update(_evaluation(store))
    summary["tflite"] = _tflite_evaluation(store, pipeline_name)
    summary.update(_pushes(store))
    summary.update(_model_dirs(store, pipeline_name))
    scored_dir = summary["pushed_model_dir"] or summary["exported_model_dir"]
    summary["vocabulary"] = (_vocabulary(store, scored_dir, pipeline_name)
                             if scored_dir else None)
    if examples is not None and scored_dir:
        summary.update(_scored_splits(examples, scored_dir, summary["examples"],
                                      test_split, eval_split))
    if synthetic_corpus(data_root):
        summary["note"] = SYNTHETIC_SPEECH_NOTE
    summary["wall_seconds"] = round(wall_seconds, 1)
    return summary


def _output_of(store, pipeline_name: str, node_id: str, key: str):
    """The artifact under `key` of the node's latest execution, or None."""
    execution = metadata.latest_execution(store, pipeline_name, node_id)
    if execution is None:
        return None
    return metadata.artifacts_by_key(store, execution.id,
                                     metadata.OUTPUT_EVENTS)[key][0]


def _evaluation(store) -> Dict:
    """The latest evaluation: eval WER/CER, its slices (by speaker, duration
    bucket and subset) and why it was (not) blessed."""
    from tools import lineage

    evaluation = metadata.latest_artifact(store, "ModelEvaluation")
    eval_metrics = (metadata.evaluation_metrics(evaluation.uri)
                    if evaluation else {})
    slices = metadata.evaluation_slices(evaluation.uri) if evaluation else []
    return {"wer": eval_metrics.get("wer"), "cer": eval_metrics.get("cer"),
            "eval_metrics": eval_metrics, "eval_slices": slices,
            "eval_subsets": lineage.subset_rates(slices),
            "validation": (metadata.evaluation_validation(evaluation.uri)
                           if evaluation else None),
            "blessed": metadata.blessing_of(store)}


def _tflite_evaluation(store, pipeline_name: str) -> Optional[Dict]:
    """The TFLiteEvaluator's figures per variant (SavedModel, float32,
    int8: WER, CER, bytes, latency, within tolerance) and which TFLite
    files the Pusher shipped."""
    from components.tflite_evaluator.executor import EVALUATION_FILE

    evaluation = _output_of(store, pipeline_name, TFLITE_EVALUATOR_ID,
                            "evaluation")
    result = (metadata.read_json(evaluation.uri, EVALUATION_FILE)
              if evaluation is not None else None)
    pushed = metadata.latest_artifact(store, "PushedModel")
    if result and pushed is not None and metadata.custom_property(
            pushed, "pushed", 0):
        for variant in config.TFLITE_FILES:
            result["variants"][variant]["pushed"] = bool(
                metadata.custom_property(pushed, f"tflite_{variant}_pushed"))
    return result


def _pushes(store) -> Dict:
    """Whether this run pushed, where, and what serves now (this run's push,
    else the latest earlier one)."""
    pushed = metadata.latest_artifact(store, "PushedModel")
    pushed_dir: Optional[str] = None
    if pushed is not None and metadata.custom_property(pushed, "pushed", 0):
        pushed_dir = metadata.custom_property(pushed, "pushed_destination")
    pushes = metadata.pushed_models(store)
    return {"pushed": pushed_dir is not None, "pushed_model_dir": pushed_dir,
            # Blessed but not pushed: this very model already serves (see
            # Pusher).
            "already_serving": (metadata.custom_property(
                pushed, ALREADY_SERVING_KEY) if pushed is not None else None),
            "serving_model_dir": (metadata.custom_property(
                pushes[-1], "pushed_destination") if pushes else None)}


def _model_dirs(store, pipeline_name: str) -> Dict:
    """The trained and exported SavedModels of the latest export, and the
    training curves beside the trained one."""
    from tfx.dsl.io import fileio
    from models import serving

    exporter = metadata.latest_execution(store, pipeline_name, EXPORTER_ID)
    if exporter is None:
        return {"trained_model_dir": None, "exported_model_dir": None}
    exported = metadata.artifacts_by_key(
        store, exporter.id, metadata.OUTPUT_EVENTS)["exported_model"][0]
    trained = metadata.artifacts_by_key(store, exporter.id)["model"][0]
    dirs = {"trained_model_dir": os.path.join(trained.uri, "Format-Serving"),
            "exported_model_dir": os.path.join(exported.uri, "Format-Serving")}
    for name in (serving.LOSS_CURVE_FILE, serving.HISTORY_FILE):
        path = os.path.join(dirs["trained_model_dir"], name)
        if fileio.exists(path):
            dirs[name.split(".")[0]] = path
    return dirs


def _vocabulary(store, model_dir: str, pipeline_name: str) -> Optional[Dict]:
    """The served model's vocabulary: its name, its ids, and for the learned
    one the pieces file exported beside the model and the Transform graph
    (artifact) that learned it, the ModelExporter's input."""
    from models import serving
    from models import tflite

    preset = tflite.exported_preset(os.path.join(model_dir, "saved_model.pb"))
    if preset is None:
        return None
    name = preset.model.vocabulary
    out: Dict = {"name": name, "size": config.VOCABULARY_SIZES[name]}
    if name == config.LEARNED_VOCABULARY:
        pieces = serving.learned_pieces_in(model_dir)
        out["size"] = len(pieces) if pieces else None
        out["file"] = os.path.join(model_dir, config.LEARNED_VOCABULARY_ASSET)
        exporter = metadata.latest_execution(store, pipeline_name,
                                             EXPORTER_ID)
        graphs = (metadata.artifacts_by_key(store, exporter.id).get(
            "transform_graph", []) if exporter else [])
        out["learned_in"] = graphs[0].uri if graphs else None
    return out


def _scored_splits(examples, model_dir: str, split_counts: Dict,
                   test_split: str, eval_split: str) -> Dict:
    """The test split scored once by the served (else exported) model, and
    a handful of eval utterances for the report (the eval split's rates are
    TFMA's, above)."""
    from tools import transcribe

    loaded, _ = transcribe.load_saved_model(model_dir)
    scored: Dict = {}
    if test_split in split_counts:
        scored[test_split] = evaluate_split(examples.uri, test_split, loaded)
    if eval_split in split_counts:
        scored["eval_samples"] = evaluate_split(
            examples.uri, eval_split, loaded,
            limit=N_SAMPLE_TRANSCRIPTS)["samples"]
    return scored


def _ingestion(examples) -> Optional[Dict]:
    """What ExampleGen found, wrote and quarantined (its report's totals),
    and where that report and the quarantine files are."""
    import json
    from tfx.dsl.io import fileio
    from components.librispeech_example_gen import layout

    path = os.path.join(examples.uri, layout.INGESTION_REPORT_FILE)
    if not fileio.exists(path):
        return None
    with fileio.open(path, "r") as f:
        report = json.loads(f.read())
    return {**{key: report["total"][key] for key in (
        "found", "written", "quarantined", "quarantined_by_reason",
        "requantized")},
            "report": path,
            "quarantine_files": {
                split: os.path.join(examples.uri, rel)
                for split, rel in report["quarantine_files"].items()}}


def finish_run(paths, preset_name: str, data_root: str,
               wall_seconds: float,
               pipeline_name: str = options.PIPELINE_NAME) -> Dict:
    """After a run: the summary, its HTML report, summary.json (names the report)."""
    from tools import report

    summary = build_summary(paths, preset_name, data_root, wall_seconds,
                            pipeline_name=pipeline_name)
    summary["report"] = report.write_report(summary, paths.output_dir)
    write_summary(summary, paths.summary_path)
    return summary


def format_summary(summary: Dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    def by_subset(rates: Dict) -> str:
        return "; ".join(f"{name} WER {pct(r['wer'])}, CER {pct(r['cer'])}"
                         for name, r in sorted(rates.items()))

    lines = ["", "moonshine-tfx run summary", "-" * 25,
             "examples: " + ", ".join(f"{k}={v}" for k, v in sorted(
                 summary.get("examples", {}).items())),
             f"eval WER {pct(summary.get('wer'))}, "
             f"CER {pct(summary.get('cer'))}  (TFMA, eval split)"]
    if len(summary.get("eval_subsets") or {}) > 1:
        lines.append("  " + by_subset(summary["eval_subsets"]))
    test = summary.get("test")
    if test:
        lines.append(f"test WER {pct(test['wer'])}, CER {pct(test['cer'])}"
                     f"  ({test['examples']} held-out utterances)")
        if len(test.get("subsets") or {}) > 1:
            lines.append("  " + by_subset(test["subsets"]))
    tflite = summary.get("tflite")
    if tflite:
        variants = tflite["variants"]
        lines.append("on-device, " + tflite["split"] + " split: " + "; ".join(
            f"{variant} WER {pct(v['wer'])}, {v['bytes'] / 1e6:.2f} MB, "
            f"{v['ms_per_token']:.2f} ms/token" for variant, v in (
                (name, variants[name]) for name in config.VARIANTS
                if name in variants)))
    lines.append(f"blessed: {summary.get('blessed')}")
    for failure in (summary.get("validation") or {}).get("failures", []):
        lines.append(f"  failed: {failure['message'] or failure['metric']}")
    if summary.get("pushed_model_dir"):
        lines.append(f"pushed model: {summary['pushed_model_dir']}")
    elif summary.get("already_serving"):
        lines.append("pushed model: not pushed (this model already serves "
                     f"as {summary['already_serving']})")
    else:
        lines.append("pushed model: not pushed (not blessed)")
        lines.append("serving model (unchanged): "
                     + (summary.get("serving_model_dir") or "none yet"))
    lines.append(f"ML Metadata store: {summary.get('metadata_path')}")
    if summary.get("loss_curve"):
        lines.append(f"loss curve: {summary['loss_curve']}")
    lines.append(f"wall time: {summary.get('wall_seconds')} s")
    if summary.get("note"):
        lines.append(f"note: {summary['note']}")
    return "\n".join(lines)


def write_summary(summary: Dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
