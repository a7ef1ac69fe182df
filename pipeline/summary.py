"""The run summary: what `moonshine-tfx run` prints and writes to summary.json."""

from __future__ import annotations

import json
import os
from typing import Dict, List, Optional

from models import config
from pipeline import metadata

EXAMPLE_GEN_ID = "LibriSpeechExampleGen"
N_SAMPLE_TRANSCRIPTS = 5


def _raw_examples_artifact(store):
    candidates = [a for a in store.get_artifacts_by_type("Examples")
                  if f"{os.sep}{EXAMPLE_GEN_ID}{os.sep}" in a.uri]
    return max(candidates, key=lambda a: (a.create_time_since_epoch, a.id),
               default=None)


def load_model(model_dir: str):
    """Loads a SavedModel dir, or the newest version under a Pusher base dir."""
    import tensorflow as tf
    if not tf.io.gfile.exists(os.path.join(model_dir, "saved_model.pb")):
        versions = sorted(
            (d.rstrip("/") for d in tf.io.gfile.listdir(model_dir)
             if d.rstrip("/").isdigit()), key=int) if tf.io.gfile.isdir(
                 model_dir) else []
        if not versions:
            raise FileNotFoundError(
                f"{model_dir}: no saved_model.pb and no pushed model versions")
        model_dir = os.path.join(model_dir, versions[-1])
    return tf.saved_model.load(model_dir), model_dir


def evaluate_split(model_dir: str, examples_uri: str, split: str,
                   batch_size: int = 8, limit: Optional[int] = None,
                   model=None) -> Dict:
    """WER/CER of a served model on one split of raw ExampleGen output.

    `limit` decodes only the first utterances (for samples); `model`, a
    loaded SavedModel, saves loading `model_dir` again.
    """
    import tensorflow as tf
    from models import metrics

    if model is None:
        model, _ = load_model(model_dir)
    serve = model.signatures["serving_default"]
    files = tf.io.gfile.glob(os.path.join(examples_uri, f"Split-{split}", "*"))
    spec = {config.TRANSCRIPT_KEY: tf.io.FixedLenFeature([], tf.string),
            config.UTTERANCE_ID_KEY: tf.io.FixedLenFeature([], tf.string)}
    refs: List[str] = []
    hyps: List[str] = []
    ids: List[str] = []
    records = tf.data.TFRecordDataset(files, compression_type="GZIP")
    if limit is not None:
        records = records.take(limit)
    for batch in records.batch(batch_size):
        parsed = tf.io.parse_example(batch, spec)
        out = serve(examples=batch)
        refs += [t.decode() for t in parsed[config.TRANSCRIPT_KEY].numpy()]
        ids += [t.decode() for t in parsed[config.UTTERANCE_ID_KEY].numpy()]
        hyps += [t.decode() for t in out[config.TEXT_OUTPUT_KEY].numpy()]
    return {
        "examples": len(refs),
        "wer": metrics.word_error_rate(refs, hyps) if refs else None,
        "cer": metrics.char_error_rate(refs, hyps) if refs else None,
        "samples": [{"utterance_id": u, "reference": r, "hypothesis": h,
                     "wer": metrics.word_error_rate([r], [h])}
                    for u, r, h in list(zip(ids, refs, hyps))[
                        :N_SAMPLE_TRANSCRIPTS]],
    }


def _latest_run_id(store) -> Optional[str]:
    runs = store.get_contexts_by_type("pipeline_run")
    latest = max(runs, key=lambda c: (c.create_time_since_epoch, c.id),
                 default=None)
    return latest.name if latest is not None else None


def build_summary(paths, preset_name: str, data_root: str,
                  wall_seconds: float, test_split: str = "test",
                  eval_split: str = "eval") -> Dict:
    store = metadata.open_store(paths.metadata_path)
    summary: Dict = {"preset": preset_name, "data_root": data_root,
                     "output_dir": paths.output_dir,
                     "metadata_path": paths.metadata_path,
                     "pipeline_root": paths.pipeline_root,
                     "run_id": _latest_run_id(store)}

    examples = _raw_examples_artifact(store)
    summary["examples"] = metadata.split_counts(examples) if examples else {}

    evaluation = metadata.latest_artifact(store, "ModelEvaluation")
    eval_metrics = (metadata.evaluation_metrics(evaluation.uri)
                    if evaluation else {})
    summary["wer"] = eval_metrics.get("wer")
    summary["cer"] = eval_metrics.get("cer")
    summary["eval_metrics"] = eval_metrics
    # WER/CER by speaker and duration bucket, and why (not) blessed.
    summary["eval_slices"] = (metadata.evaluation_slices(evaluation.uri)
                              if evaluation else [])
    summary["validation"] = (metadata.evaluation_validation(evaluation.uri)
                             if evaluation else None)
    summary["blessed"] = metadata.blessing_of(store)

    pushed = metadata.latest_artifact(store, "PushedModel")
    pushed_dir: Optional[str] = None
    if pushed is not None and metadata.custom_property(pushed, "pushed", 0):
        pushed_dir = metadata.custom_property(pushed, "pushed_destination")
    summary["pushed"] = pushed_dir is not None
    summary["pushed_model_dir"] = pushed_dir
    # What serves now: this run's push, else the latest earlier one.
    serving = metadata.pushed_models(store)
    summary["serving_model_dir"] = (metadata.custom_property(
        serving[-1], "pushed_destination") if serving else None)

    model = metadata.latest_artifact(store, "Model")
    trained_dir = os.path.join(model.uri, "Format-Serving") if model else None
    summary["trained_model_dir"] = trained_dir
    if trained_dir:
        for name in ("loss_curve.png", "history.json"):
            path = os.path.join(trained_dir, name)
            if os.path.exists(path):
                summary[name.split(".")[0]] = path
    scored_dir = pushed_dir or trained_dir
    if examples is not None and scored_dir:
        loaded = None
        if test_split in summary["examples"]:
            loaded, _ = load_model(scored_dir)
            summary[test_split] = evaluate_split(scored_dir, examples.uri,
                                                 test_split, model=loaded)
        if eval_split in summary["examples"]:
            # A handful of eval utterances for the report (the eval split's
            # rates are TFMA's, above).
            summary["eval_samples"] = evaluate_split(
                scored_dir, examples.uri, eval_split,
                limit=N_SAMPLE_TRANSCRIPTS, model=loaded)["samples"]
    summary["wall_seconds"] = round(wall_seconds, 1)
    return summary


def finish_run(paths, preset_name: str, data_root: str,
               wall_seconds: float) -> Dict:
    """After a run: the summary, its HTML report, summary.json (names the report)."""
    from pipeline import report

    summary = build_summary(paths, preset_name, data_root, wall_seconds)
    summary["report"] = report.write_report(summary, paths.output_dir)
    write_summary(summary, paths.summary_path)
    return summary


def format_summary(summary: Dict) -> str:
    def pct(x):
        return "n/a" if x is None else f"{100 * x:.1f}%"

    lines = ["", "moonshine-tfx run summary", "-" * 25,
             "examples: " + ", ".join(f"{k}={v}" for k, v in sorted(
                 summary.get("examples", {}).items())),
             f"eval WER {pct(summary.get('wer'))}, "
             f"CER {pct(summary.get('cer'))}  (TFMA, eval split)"]
    test = summary.get("test")
    if test:
        lines.append(f"test WER {pct(test['wer'])}, CER {pct(test['cer'])}"
                     f"  ({test['examples']} held-out utterances)")
    lines.append(f"blessed: {summary.get('blessed')}")
    for failure in (summary.get("validation") or {}).get("failures", []):
        lines.append(f"  failed: {failure['message'] or failure['metric']}")
    lines.append("pushed model: " + (summary.get("pushed_model_dir")
                                     or "not pushed (not blessed)"))
    if not summary.get("pushed_model_dir"):
        lines.append("serving model (unchanged): "
                     + (summary.get("serving_model_dir") or "none yet"))
    lines.append(f"ML Metadata store: {summary.get('metadata_path')}")
    if summary.get("loss_curve"):
        lines.append(f"loss curve: {summary['loss_curve']}")
    lines.append(f"wall time: {summary.get('wall_seconds')} s")
    return "\n".join(lines)


def write_summary(summary: Dict, path: str) -> None:
    with open(path, "w") as f:
        json.dump(summary, f, indent=2, sort_keys=True)
