"""`moonshine-tfx validate-data`: ingestion, statistics and validation only.

Runs the data steps of the pipeline (LibriSpeechExampleGen, StatisticsGen,
ImportSchemaGen, ExampleValidator: the very components `create_pipeline`
builds, from `pipeline.pipeline.create_data_components`) with LocalDagRunner and a
SQLite ML Metadata store under the output dir, then reads the run back
through ML Metadata and writes a JSON report:

    {"data_root", "output_dir", "metadata_path", "pipeline_name",
     "examples_uri", "anomalies_uri", "wall_seconds",
     "splits": {split: {found, written, quarantined, quarantined_by_reason,
                        resampled, downmixed, audio_seconds, hours,
                        quarantine_file, quarantined_sample: [{path, reason,
                        message, utterance_id}], quarantined_sample_complete,
                        anomalies: [{feature, severity, short_description,
                        description, reasons: [{type, short_description,
                        description}]}], anomaly_count}},
     "total": {found, written, quarantined, quarantined_by_reason,
               audio_seconds, hours, anomaly_count},
     "thresholds": {max_quarantined, max_anomalies},
     "passed", "reason"}

Counts come from the ExampleGen's `ingestion_report.json`, the sample from
its `quarantine/<split>.jsonl`, the anomalies from the ExampleValidator's
`Split-<split>/SchemaDiff.pb` (tensorflow_metadata Anomalies). The artifacts
are found from the latest ExampleValidator execution of the pipeline and its
lineage (statistics -> StatisticsGen -> examples), so a cached re-run reports
the artifacts it reused.
"""

from __future__ import annotations

import collections
import json
import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

from models import config
from pipeline.options import RunOptions

PIPELINE_NAME = "moonshine-tfx-data-validation"
DEFAULT_OUTPUT_DIR = os.path.join("outputs", "validate")
REPORT_FILE = "data_report.json"
# The report lists every quarantined item of a split when it has fewer than
# this many, else this many, spread over the reasons.
SAMPLE_LIMIT = 100

EXAMPLE_VALIDATOR_NODE = "ExampleValidator"
_ANOMALIES_FILE = "SchemaDiff.pb"  # TFX 1.16 ExampleValidator's file name
_SAMPLE_KEYS = ("path", "reason", "message", "utterance_id")


class ValidationError(Exception):
    """The run's artifacts are missing or inconsistent."""


# --- Running -----------------------------------------------------------------
def run_validation(data_root: str, output_dir: str = DEFAULT_OUTPUT_DIR,
                   options: Optional[RunOptions] = None,
                   beam_args: Optional[List[str]] = None,
                   schema_file: Optional[str] = None):
    """Runs the data-validation pipeline locally; returns (RunPaths, seconds).

    `options` gives the splits, the audio limits and caching (default
    RunOptions for this pipeline's name); `schema_file` defaults to the
    pipeline's curated schema (SCHEMA_FILE).
    """
    from pipeline import beam
    from pipeline import local_runner
    from pipeline import pipeline as pipeline_def

    options = options or RunOptions.resolve(pipeline_name=PIPELINE_NAME)
    paths = local_runner.RunPaths(os.path.abspath(output_dir))
    os.makedirs(paths.output_dir, exist_ok=True)
    p = pipeline_def.create_data_validation_pipeline(
        options, pipeline_root=paths.pipeline_root,
        data_root=os.path.abspath(data_root),
        metadata_connection_config=local_runner.metadata_config(paths),
        beam_pipeline_args=beam.local_args(beam_args),
        schema_file=schema_file or pipeline_def.SCHEMA_FILE)
    return paths, local_runner.run(p)


# --- Reading the run back from ML Metadata -------------------------------------
def find_artifacts(store, pipeline_name: str = PIPELINE_NAME):
    """(Examples, ExampleAnomalies) of the pipeline's latest validation.

    The latest successful (complete or cached) ExampleValidator execution
    gives the anomalies; its statistics' producer gives the examples.
    """
    from tools import metadata

    latest = metadata.latest_execution(store, pipeline_name,
                                       EXAMPLE_VALIDATOR_NODE)
    if latest is None:
        # Not a run of this pipeline: fall back on the newest artifacts.
        examples = metadata.latest_artifact(store, "Examples")
        anomalies = metadata.latest_artifact(store, "ExampleAnomalies")
        if examples is None or anomalies is None:
            raise ValidationError(
                f"no completed {EXAMPLE_VALIDATOR_NODE} execution of pipeline "
                f"{pipeline_name!r} in the ML Metadata store")
        return examples, anomalies
    [anomalies] = metadata.artifacts_by_key(
        store, latest.id, metadata.OUTPUT_EVENTS)["anomalies"]
    [statistics] = metadata.artifacts_by_key(store, latest.id)["statistics"]
    examples = metadata.input_of(store, statistics.id, "examples")
    if examples is None:
        raise ValidationError(f"no producer of statistics {statistics.uri}")
    return examples, anomalies


def read_anomalies(anomalies_uri: str, split: str) -> List[Dict[str, Any]]:
    """The anomalies of one split as dicts; [] when the split has none."""
    import tensorflow as tf
    from tensorflow_metadata.proto.v0 import anomalies_pb2

    path = os.path.join(anomalies_uri, f"Split-{split}", _ANOMALIES_FILE)
    if not tf.io.gfile.exists(path):
        raise ValidationError(f"no anomalies file {path}")
    with tf.io.gfile.GFile(path, "rb") as f:
        proto = anomalies_pb2.Anomalies.FromString(f.read())
    found = [(feature, info) for feature, info in sorted(
        proto.anomaly_info.items())]
    if proto.HasField("dataset_anomaly_info"):
        found.append(("<dataset>", proto.dataset_anomaly_info))
    out = []
    for feature, info in found:
        out.append({
            "feature": feature,
            "severity": anomalies_pb2.AnomalyInfo.Severity.Name(info.severity),
            "short_description": info.short_description,
            "description": info.description,
            "reasons": [{
                "type": anomalies_pb2.AnomalyInfo.Type.Name(r.type),
                "short_description": r.short_description,
                "description": r.description} for r in info.reason],
        })
    return out


def read_quarantine(path: str) -> List[Dict[str, Any]]:
    """The quarantined items of one split (one JSON object per line)."""
    from tfx.dsl.io import fileio
    if not fileio.exists(path):
        return []
    with fileio.open(path) as f:
        return [json.loads(line) for line in f.read().splitlines()
                if line.strip()]


def sample_quarantined(records: Iterable[Dict[str, Any]],
                       limit: int = SAMPLE_LIMIT) -> List[Dict[str, Any]]:
    """All records (sorted by reason, path) if fewer than `limit`, else
    `limit` of them taken round-robin over the reasons."""
    records = sorted(records, key=lambda r: (r["reason"], r["path"]))
    if len(records) < limit:
        chosen = records
    else:
        by_reason: Dict[str, collections.deque] = collections.OrderedDict()
        for r in records:
            by_reason.setdefault(r["reason"], collections.deque()).append(r)
        chosen = []
        while len(chosen) < limit:
            for queue in by_reason.values():
                if queue and len(chosen) < limit:
                    chosen.append(queue.popleft())
        chosen.sort(key=lambda r: (r["reason"], r["path"]))
    return [{k: r.get(k) for k in _SAMPLE_KEYS} for r in chosen]


def _hours(seconds: float) -> float:
    return round(seconds / 3600.0, 4)


def build_report(metadata_path: str, pipeline_name: str = PIPELINE_NAME,
                 sample_limit: int = SAMPLE_LIMIT) -> Dict[str, Any]:
    """The report of the latest validation run in the store (no verdict)."""
    from tools import metadata

    store = metadata.open_store(metadata_path)
    examples, anomalies = find_artifacts(store, pipeline_name)
    ingestion = metadata.ingestion_report(examples)
    if not ingestion:
        raise ValidationError(f"no ingestion report in {examples.uri}")
    anomaly_splits = json.loads(
        anomalies.properties["split_names"].string_value or "[]")

    splits: Dict[str, Dict[str, Any]] = {}
    total_reasons: collections.Counter = collections.Counter()
    totals = {"found": 0, "written": 0, "quarantined": 0,
              "audio_seconds": 0.0, "anomaly_count": 0}
    for split in sorted(ingestion["splits"]):
        s = dict(ingestion["splits"][split])
        quarantine_file = os.path.join(
            examples.uri, ingestion.get("quarantine_files", {}).get(
                split, os.path.join("quarantine", split + ".jsonl")))
        records = read_quarantine(quarantine_file)
        if len(records) != s["quarantined"]:
            raise ValidationError(
                f"{quarantine_file} lists {len(records)} items, the ingestion "
                f"report counts {s['quarantined']} quarantined in {split}")
        found_anomalies = (read_anomalies(anomalies.uri, split)
                           if split in anomaly_splits else [])
        s.update({
            "hours": _hours(s["audio_seconds"]),
            "quarantine_file": quarantine_file,
            "quarantined_sample": sample_quarantined(records, sample_limit),
            "quarantined_sample_complete": len(records) < sample_limit,
            "anomalies": found_anomalies,
            "anomaly_count": len(found_anomalies),
        })
        splits[split] = s
        for key in ("found", "written", "quarantined", "audio_seconds",
                    "anomaly_count"):
            totals[key] += s[key]
        total_reasons.update(s["quarantined_by_reason"])
    totals["audio_seconds"] = round(totals["audio_seconds"], 3)
    totals["hours"] = _hours(totals["audio_seconds"])
    totals["quarantined_by_reason"] = dict(sorted(total_reasons.items()))
    return {
        "pipeline_name": pipeline_name,
        "metadata_path": os.path.abspath(metadata_path),
        "examples_uri": examples.uri,
        "anomalies_uri": anomalies.uri,
        "splits": splits,
        "total": totals,
    }


# --- Verdict, output -----------------------------------------------------------
def verdict(report: Dict[str, Any], max_quarantined: int,
            max_anomalies: int) -> Tuple[bool, str]:
    """(passed, one-line reason) against the two thresholds."""
    total = report["total"]
    q, a = total["quarantined"], total["anomaly_count"]
    problems = []
    if q > max_quarantined:
        by = ", ".join(f"{k}={v}" for k, v in
                       total["quarantined_by_reason"].items())
        problems.append(f"{q} quarantined item(s) > --max-quarantined "
                        f"{max_quarantined} ({by})")
    if a > max_anomalies:
        where = ", ".join(f"{split}: {', '.join(x['feature'] for x in s['anomalies'])}"
                          for split, s in report["splits"].items()
                          if s["anomalies"])
        problems.append(f"{a} schema anomaly(ies) > --max-anomalies "
                        f"{max_anomalies} ({where})")
    if problems:
        return False, "; ".join(problems)
    return True, (f"{q} quarantined <= {max_quarantined}, "
                  f"{a} anomalies <= {max_anomalies}")


def write_report(report: Dict[str, Any], path: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(report, f, indent=2, sort_keys=True)
        f.write("\n")


def format_report(report: Dict[str, Any], max_lines: int = 20) -> str:
    """A readable summary: per-split table, reasons, sample, anomalies."""
    lines = [f"data: {report.get('data_root')}"]
    header = (f"{'split':<8} {'found':>7} {'written':>8} {'quarantined':>12} "
              f"{'hours':>8} {'anomalies':>10}")
    lines += [header, "-" * len(header)]
    rows = list(report["splits"].items()) + [("total", report["total"])]
    for name, s in rows:
        lines.append(f"{name:<8} {s['found']:>7} {s['written']:>8} "
                     f"{s['quarantined']:>12} {s['hours']:>8.3f} "
                     f"{s['anomaly_count']:>10}")
    for name, s in report["splits"].items():
        extras = []
        if s.get("resampled"):
            extras.append(f"{s['resampled']} resampled to "
                          f"{config.SAMPLE_RATE} Hz")
        if s.get("downmixed"):
            extras.append(f"{s['downmixed']} downmixed to mono")
        if extras:
            lines.append(f"{name}: kept " + ", ".join(extras))
    if report["total"]["quarantined"]:
        lines.append("quarantined by reason:")
        for name, s in report["splits"].items():
            if s["quarantined_by_reason"]:
                lines.append(f"  {name}: " + ", ".join(
                    f"{k}={v}" for k, v in s["quarantined_by_reason"].items()))
        sample = [(name, q) for name, s in report["splits"].items()
                  for q in s["quarantined_sample"]]
        lines.append(f"quarantined items ({min(len(sample), max_lines)} of "
                     f"{report['total']['quarantined']}; all in the report "
                     f"and in each split's quarantine file):")
        for name, q in sample[:max_lines]:
            lines.append(f"  [{name}] {q['reason']}: {q['message']}")
    if report["total"]["anomaly_count"]:
        lines.append("schema anomalies (ExampleValidator):")
        for name, s in report["splits"].items():
            for a in s["anomalies"]:
                lines.append(f"  [{name}] {a['feature']} ({a['severity']}): "
                             f"{a['short_description']}: {a['description']}")
    else:
        lines.append("schema anomalies (ExampleValidator): none")
    return "\n".join(lines)


def validate_data(
    data_root: str,
    output_dir: str = DEFAULT_OUTPUT_DIR,
    report_path: Optional[str] = None,
    max_quarantined: int = 0,
    max_anomalies: int = 0,
    options: Optional[RunOptions] = None,
    beam_args: Optional[List[str]] = None,
    schema_file: Optional[str] = None,
) -> Dict[str, Any]:
    """Runs the data steps, writes the report, returns it (with the verdict).

    The report's `passed` and `reason` say whether quarantined items and
    anomalies are within the thresholds; `report_path` defaults to
    `<output_dir>/data_report.json`.
    """
    options = options or RunOptions.resolve(pipeline_name=PIPELINE_NAME)
    paths, wall = run_validation(data_root, output_dir, options, beam_args,
                                 schema_file)
    report = build_report(paths.metadata_path, options.pipeline_name)
    report["data_root"] = os.path.abspath(data_root)
    report["output_dir"] = paths.output_dir
    report["wall_seconds"] = round(wall, 1)
    report["thresholds"] = {"max_quarantined": max_quarantined,
                            "max_anomalies": max_anomalies}
    report["passed"], report["reason"] = verdict(report, max_quarantined,
                                                 max_anomalies)
    report["report_path"] = os.path.abspath(
        report_path or os.path.join(paths.output_dir, REPORT_FILE))
    write_report(report, report["report_path"])
    return report
