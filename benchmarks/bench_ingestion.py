"""Ingestion (+ Transform) throughput under LocalDagRunner, 1 vs 2 Beam workers.

    python benchmarks/bench_ingestion.py --quick   # < 1 minute, prints the 2-vs-1 ratio last
    python benchmarks/bench_ingestion.py           # full run, updates BENCHMARKS.md

Runs the pipeline's own LibriSpeechExampleGen (from
`pipeline.create_data_components`, as `create_pipeline` builds it) and, in
the full run, ImportSchemaGen -> Transform with
`models.preprocessing.preprocessing_fn` (configured as `create_pipeline`
configures it) under LocalDagRunner with a fresh SQLite ML Metadata store and
caching off, once per Beam DirectRunner configuration:

    in_memory            --direct_running_mode=in_memory --direct_num_workers=1
                         (1 worker: the pipeline's default, DEFAULT_BEAM_ARGS)
    multi_threading x2   --direct_running_mode=multi_threading --direct_num_workers=2
    multi_processing x1  --direct_running_mode=multi_processing --direct_num_workers=1
    multi_processing x2  --direct_running_mode=multi_processing --direct_num_workers=2
                         (2 workers: the README's "all cores" on this machine)

Each component's time is its ML Metadata execution's wall time (registered
-> published: executor, Beam pipeline and worker start-up included; TFX
imports excluded); throughput is audio-seconds written by ExampleGen per
wall-second of that component (ExampleGen + Transform: per second of both).
The last line is the 2-vs-1 ratio: multi_processing x2 over in_memory, i.e.
what switching the default to 2 worker processes buys; the lines before it
give multi_threading x2 over in_memory and multi_processing x2 over x1 (the
parallel speed-up once worker start-up and data transfer are paid for).

--quick ingests a copy of the first few chapters of the train subset
(ExampleGen only; in_memory, multi_threading x2, multi_processing x2): on so
little audio the worker processes' start-up dominates, so its ratio checks
the mechanics, not the scaling. The full run ingests the whole corpus
(default: the embedded corpus) and replaces its section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import common  # noqa: E402
from models import config  # noqa: E402

EMBEDDED_CORPUS = os.path.join(common.REPO_ROOT, "data", "embedded-corpus")

CONFIGS = {
    "in_memory": ["--direct_running_mode=in_memory", "--direct_num_workers=1"],
    "multi_threading x2": ["--direct_running_mode=multi_threading",
                           "--direct_num_workers=2"],
    "multi_processing x1": ["--direct_running_mode=multi_processing",
                            "--direct_num_workers=1"],
    "multi_processing x2": ["--direct_running_mode=multi_processing",
                            "--direct_num_workers=2"],
}
QUICK_CONFIGS = ("in_memory", "multi_threading x2", "multi_processing x2")
QUICK_CHAPTERS = 4  # chapters of the train subset copied for --quick
# The last line: 2 workers (multi_processing) over 1 worker (the default).
HEADLINE = ("multi_processing x2", "in_memory")


def quick_subset(data_root: str, dest: str, chapters: int = QUICK_CHAPTERS
                 ) -> str:
    """Copies the first `chapters` chapters of the first train* subset."""
    from components.librispeech_example_gen import layout
    [subset] = layout.find_subset_dirs(data_root, "train*")[:1]
    name = os.path.basename(subset)
    chapter_dirs = [c for c in layout.list_subset(subset)
                    if isinstance(c, str)][:chapters]
    for chapter_dir in chapter_dirs:
        rel = os.path.relpath(chapter_dir, data_root)
        shutil.copytree(chapter_dir, os.path.join(dest, rel))
    return name


def _execution_seconds(metadata_path: str, pipeline_name: str) -> dict:
    from pipeline import metadata
    store = metadata.open_store(metadata_path)
    out = {}
    for node, executions in metadata.component_executions(
            store, pipeline_name).items():
        e = max(executions, key=lambda x: x.id)
        out[node] = (e.last_update_time_since_epoch
                     - e.create_time_since_epoch) / 1000.0
    return out


def _ingestion_total(metadata_path: str, pipeline_name: str) -> dict:
    """The ExampleGen output's ingestion report, totals over the splits."""
    from ml_metadata.proto import metadata_store_pb2
    from pipeline import metadata
    store = metadata.open_store(metadata_path)
    [execution] = metadata.component_executions(
        store, pipeline_name)["LibriSpeechExampleGen"]
    [artifact_id] = [
        e.artifact_id for e in store.get_events_by_execution_ids(
            [execution.id]) if e.type == metadata_store_pb2.Event.OUTPUT]
    [examples] = store.get_artifacts_by_id([artifact_id])
    with open(os.path.join(examples.uri, "ingestion_report.json")) as f:
        return json.load(f)["total"]


def run_once(data_root: str, work_dir: str, beam_args, split_patterns,
             with_transform: bool) -> dict:
    """One pipeline run; returns component seconds and audio seconds."""
    from tfx import v1 as tfx
    from pipeline import pipeline as pipeline_def

    name = "bench-ingestion"
    data = pipeline_def.create_data_components(
        os.path.abspath(data_root), split_patterns)
    components = [data.example_gen]
    if with_transform:
        transform = tfx.components.Transform(
            examples=data.example_gen.outputs["examples"],
            schema=data.schema_gen.outputs["schema"],
            preprocessing_fn=pipeline_def.PREPROCESSING_FN,
            splits_config=tfx.proto.SplitsConfig(
                analyze=["train"], transform=list(split_patterns)),
            disable_statistics=True,
            custom_config={"preset": "demo"})
        components += [data.schema_gen, transform]
    metadata_path = os.path.join(work_dir, "metadata.sqlite")
    p = tfx.dsl.Pipeline(
        pipeline_name=name, pipeline_root=os.path.join(work_dir, "root"),
        components=components, enable_cache=False,
        metadata_connection_config=(
            tfx.orchestration.metadata.sqlite_metadata_connection_config(
                metadata_path)),
        beam_pipeline_args=list(beam_args))
    started = time.perf_counter()
    tfx.orchestration.LocalDagRunner().run(p)
    wall = time.perf_counter() - started
    seconds = _execution_seconds(metadata_path, name)
    report = _ingestion_total(metadata_path, name)
    return {"run_wall": wall, "components": seconds,
            "audio_seconds": report["audio_seconds"],
            "written": report["written"], "quarantined": report["quarantined"]}


def run(data_root: str, configs, split_patterns, with_transform: bool
        ) -> dict:
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench_ingestion_") as tmp:
        for i, label in enumerate(configs):
            r = run_once(data_root, os.path.join(tmp, str(i)), CONFIGS[label],
                         split_patterns, with_transform)
            eg = r["components"]["LibriSpeechExampleGen"]
            r["example_gen_audio_s_per_s"] = r["audio_seconds"] / eg
            if with_transform:
                tr = r["components"]["Transform"]
                r["transform_audio_s_per_s"] = r["audio_seconds"] / tr
                r["both_audio_s_per_s"] = r["audio_seconds"] / (eg + tr)
            results[label] = r
            print(f"{label}: ExampleGen {eg:.1f} s "
                  f"({r['example_gen_audio_s_per_s']:.1f} audio-s/s)"
                  + (f", Transform {r['components']['Transform']:.1f} s "
                     f"({r['transform_audio_s_per_s']:.1f} audio-s/s)"
                     if with_transform else "")
                  + f", {r['written']} utterances, {r['audio_seconds']:.0f} "
                  f"audio-s, run {r['run_wall']:.1f} s", flush=True)
    return results


def _ratios(results: dict, key: str) -> dict:
    """Throughput ratios of the measured pairs; HEADLINE last."""
    pairs = [("multi_threading x2", "in_memory"),
             ("multi_processing x2", "multi_processing x1"), HEADLINE]
    return {(a, b): results[a][key] / results[b][key] for a, b in pairs
            if a in results and b in results}


def _versions() -> str:
    import apache_beam
    import tensorflow as tf
    import tensorflow_transform as tft
    from tfx import version
    return (f"Python {platform.python_version()}, TFX {version.__version__}, "
            f"TFT {tft.__version__}, Beam {apache_beam.__version__}, "
            f"TensorFlow {tf.__version__}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="a few chapters, ExampleGen only (< 1 minute)")
    parser.add_argument("--data-root", default=EMBEDDED_CORPUS)
    parser.add_argument("--no-transform", action="store_true",
                        help="full run: measure ExampleGen alone")
    args = parser.parse_args(argv)

    if args.quick:
        with tempfile.TemporaryDirectory(prefix="bench_quick_") as data:
            subset = quick_subset(args.data_root, data)
            results = run(data, QUICK_CONFIGS, {"train": subset}, False)
        key = "example_gen_audio_s_per_s"
    else:
        patterns = {split: prefix + "*" for prefix, split
                    in config.SUBSET_PREFIX_TO_SPLIT.items()}
        with_transform = not args.no_transform
        results = run(args.data_root, list(CONFIGS), patterns, with_transform)
        key = "both_audio_s_per_s" if with_transform else (
            "example_gen_audio_s_per_s")
        first = next(iter(results.values()))
        rows = [("corpus", f"{os.path.relpath(args.data_root, common.REPO_ROOT)}"
                 f": {first['written']} utterances, "
                 f"{first['audio_seconds'] / 3600:.3f} h"),
                ("versions", _versions())]
        for label, r in results.items():
            c = r["components"]
            rows.append((f"{label}: LibriSpeechExampleGen",
                         f"{c['LibriSpeechExampleGen']:.1f} s, "
                         f"{r['example_gen_audio_s_per_s']:.1f} audio-s/s"))
            if with_transform:
                rows.append((f"{label}: Transform",
                             f"{c['Transform']:.1f} s, "
                             f"{r['transform_audio_s_per_s']:.1f} audio-s/s"))
                rows.append((f"{label}: ExampleGen + Transform",
                             f"{r['both_audio_s_per_s']:.1f} audio-s/s"))
            rows.append((f"{label}: whole LocalDagRunner run",
                         f"{r['run_wall']:.1f} s"))
        for (a, b), value in _ratios(results, key).items():
            rows.append((f"{a} vs {b}", f"{value:.2f}x"))
        common.update_benchmarks_md(
            "Ingestion throughput (LocalDagRunner, Beam DirectRunner)",
            "python benchmarks/bench_ingestion.py", rows)
    what = "ExampleGen + Transform" if key == "both_audio_s_per_s" else (
        "ExampleGen")
    for (a, b), value in _ratios(results, key).items():
        print(f"{what} throughput, {a} vs {b}: {value:.2f}x")
    print(f"{_ratios(results, key)[HEADLINE]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
