"""The `moonshine-tfx` command line."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Dict, List, Optional

# Keras 2 for the whole process, decided before TensorFlow is first imported
# (TFT is Keras-2 only).
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# google-cloud packages pulled in by TFX warn about Python 3.10 on every
# import; the pinned stack is 3.10 by design, so the noise helps nobody.
warnings.filterwarnings("ignore", category=FutureWarning, module="google")

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EMBEDDED_CORPUS = os.path.join(REPO_ROOT, "data", "embedded-corpus")


class CliError(Exception):
    """An error the user can fix; printed without a traceback."""


def _split_patterns(values: Optional[List[str]]) -> Optional[Dict[str, str]]:
    if not values:
        return None
    patterns = {}
    for value in values:
        split, sep, pattern = value.partition("=")
        if not sep or not split or not pattern:
            raise CliError(f"--split expects SPLIT=GLOB (e.g. train=train-clean-100), got {value!r}")
        patterns[split] = pattern
    return patterns


def _model_config(preset_name: str, vocabulary: Optional[str] = None,
                  frontend: Optional[str] = None):
    """The preset's model config, with --vocabulary / --frontend if given."""
    import dataclasses

    from models import config

    model_config = config.get_preset(preset_name).model
    if vocabulary:
        model_config = model_config.with_vocabulary(vocabulary)
    if frontend:
        model_config = dataclasses.replace(model_config, frontend=frontend)
    return model_config


def _check_init_from(path: Optional[str], preset_name: str,
                     vocabulary: Optional[str] = None,
                     frontend: Optional[str] = None) -> Optional[str]:
    """--init-from: an absolute path whose weights fit the preset, checked
    now rather than after ingestion and Transform."""
    if not path:
        return None
    from models import moonshine
    from models import weights

    path = path if "://" in path else os.path.abspath(path)
    try:
        weights.plan_import(moonshine.Moonshine(
            _model_config(preset_name, vocabulary, frontend)),
            weights.read_checkpoint(path))
    except weights.CheckpointError as e:
        raise CliError(f"--init-from: {e}") from None
    return path


def cmd_run(args) -> int:
    from pipeline import local_runner
    from pipeline import summary as run_summary

    if not os.path.isdir(args.data_root):
        raise CliError(f"--data-root {args.data_root}: no such directory")
    if args.max_wer_regression < 0:
        raise CliError("--max-wer-regression must be >= 0")
    init_from = _check_init_from(args.init_from, args.preset, args.vocabulary,
                                 args.frontend)
    paths, wall = local_runner.run_local(
        data_root=args.data_root, output_dir=args.output_dir,
        preset_name=args.preset, beam_args=args.beam_arg or None,
        split_patterns=_split_patterns(args.split),
        train_steps=args.train_steps, eval_steps=args.eval_steps,
        wer_upper_bound=args.wer_upper_bound,
        max_audio_seconds=args.max_audio_seconds,
        enable_cache=not args.no_cache, init_from=init_from,
        max_wer_regression=args.max_wer_regression,
        vocabulary=args.vocabulary, frontend=args.frontend,
        beam_width=args.beam_width)
    summary = run_summary.finish_run(paths, args.preset,
                                     os.path.abspath(args.data_root), wall)
    print(run_summary.format_summary(summary))
    print(f"summary: {paths.summary_path}")
    print(f"report: {summary['report']}")
    return 0


def _check_subsets(data_root: str, patterns: Optional[Dict[str, str]]) -> None:
    """Every split's glob matches a subset directory, else a usage error."""
    from components.librispeech_example_gen import layout
    from components.librispeech_example_gen.component import (
        default_input_config)

    for split in default_input_config(patterns).splits:
        try:
            layout.find_subset_dirs(data_root, split.pattern)
        except ValueError as e:
            raise CliError(f"split {split.name}: {e}") from None


def cmd_validate_data(args) -> int:
    from pipeline import validate_data

    if not os.path.isdir(args.data_root):
        raise CliError(f"--data-root {args.data_root}: no such directory")
    if args.max_quarantined < 0 or args.max_anomalies < 0:
        raise CliError("--max-quarantined and --max-anomalies must be >= 0")
    patterns = _split_patterns(args.split)
    _check_subsets(os.path.abspath(args.data_root), patterns)
    try:
        report = validate_data.validate_data(
            data_root=args.data_root, output_dir=args.output_dir,
            report_path=args.report, max_quarantined=args.max_quarantined,
            max_anomalies=args.max_anomalies, beam_args=args.beam_arg or None,
            split_patterns=patterns, max_audio_seconds=args.max_audio_seconds)
    except validate_data.ValidationError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(validate_data.format_report(report))
    print(f"report: {report['report_path']}")
    if report["passed"]:
        print(f"PASS: {report['reason']}")
        return 0
    print(f"FAIL: {report['reason']}", file=sys.stderr)
    return 1


def _read_audio(path: str):
    """16 kHz mono float32 samples of any file soundfile reads; other rates
    are resampled (soxr, the resampler librosa uses by default)."""
    import numpy as np
    import soundfile as sf
    import soxr
    from models import config

    if not os.path.exists(path):
        raise CliError(f"{path}: no such file")
    try:
        samples, rate = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises several types for bad files
        raise CliError(f"{path}: cannot read audio ({e})") from None
    samples = samples.mean(axis=1)  # mono: the channels' mean
    if samples.size == 0:
        raise CliError(f"{path}: the file holds no audio samples")
    if not np.all(np.isfinite(samples)):
        bad = int(np.sum(~np.isfinite(samples)))
        raise CliError(f"{path}: audio contains NaN or Inf samples "
                       f"({bad} of {samples.size})")
    if rate != config.SAMPLE_RATE:
        samples = soxr.resample(samples, rate, config.SAMPLE_RATE)
    if samples.size < config.WINDOW_SAMPLES:
        raise CliError(f"{path}: audio is shorter than one "
                       f"{config.WINDOW_SECONDS * 1000:.0f} ms analysis window")
    return samples.astype("float32")


def _transcribe_samples(transcribe, samples, window_seconds: float) -> str:
    """Text of 16 kHz samples: segments of at most window_seconds, cut at
    pauses (models.serving.split_long_audio), batched, texts joined."""
    import numpy as np
    import tensorflow as tf
    from models import config
    from models import serving

    bounds = serving.split_long_audio(samples, window_seconds)
    texts = []
    for i in range(0, len(bounds), config.TRANSCRIBE_BATCH_SEGMENTS):
        chunk = bounds[i:i + config.TRANSCRIBE_BATCH_SEGMENTS]
        lengths = [end - start for start, end in chunk]
        batch = np.zeros([len(chunk), max(lengths)], np.float32)
        for row, (start, end) in enumerate(chunk):
            batch[row, :end - start] = samples[start:end]
        out = transcribe(audio=tf.constant(batch),
                         num_samples=tf.constant(lengths, tf.int64))
        texts += [t.decode() for t in out[config.TEXT_OUTPUT_KEY].numpy()]
    return " ".join(t.strip() for t in texts if t.strip())


def cmd_transcribe(args) -> int:
    import tensorflow as tf
    from models import config
    from pipeline.summary import load_model

    if not args.window_seconds > 2 * config.SPLIT_FRAME_SECONDS:
        raise CliError(f"--window-seconds must be > "
                       f"{2 * config.SPLIT_FRAME_SECONDS} s")
    try:
        model, model_dir = load_model(args.model)
    except (FileNotFoundError, OSError, ValueError) as e:
        raise CliError(f"--model {args.model}: {e}") from None
    if config.TRANSCRIBE_SIGNATURE not in model.signatures:
        raise CliError(f"--model {model_dir}: no "
                       f"{config.TRANSCRIBE_SIGNATURE!r} signature")
    transcribe = model.signatures[config.TRANSCRIBE_SIGNATURE]
    failures = 0
    for path in args.files:
        try:
            samples = _read_audio(path)
            text = _transcribe_samples(transcribe, samples,
                                       args.window_seconds)
        except CliError as e:
            print(f"error: {e}", file=sys.stderr)
            failures += 1
            continue
        except tf.errors.OpError as e:  # the graph's own input checks
            print(f"error: {path}: transcription failed ({e.message})",
                  file=sys.stderr)
            failures += 1
            continue
        print(f"{path}\t{text}" if len(args.files) > 1 else text)
    if failures:
        print(f"{failures} of {len(args.files)} files failed", file=sys.stderr)
    return 1 if failures else 0


def cmd_import_weights(args) -> int:
    from models import config
    from models import weights

    model_config = _model_config(
        args.preset, config.MOONSHINE_BPE_VOCABULARY
        if args.vocab == "official" else None, args.frontend)
    try:
        report = weights.import_weights(args.source, model_config,
                                        args.output_dir)
    except weights.CheckpointError as e:
        raise CliError(str(e)) from None
    print(report.summary())
    options = "".join(
        f" --{name} {value}" for name, value in (
            ("vocabulary", model_config.vocabulary if args.vocab == "official"
             else None), ("frontend", args.frontend)) if value)
    print(f"wrote {os.path.join(args.output_dir, weights.HF_WEIGHTS_FILE)}; "
          f"fine-tune with: moonshine-tfx run --preset {args.preset}"
          f"{options} --init-from {args.output_dir}")
    return 0


def _metadata_path(args) -> str:
    if args.metadata:
        return args.metadata
    from pipeline.local_runner import RunPaths
    return RunPaths(os.path.abspath(args.output_dir)).metadata_path


def cmd_lineage(args) -> int:
    import json
    from pipeline import lineage

    try:
        result = lineage.lineage(_metadata_path(args), args.pushed_model_id)
    except (FileNotFoundError, LookupError) as e:
        raise CliError(str(e)) from None
    print(json.dumps(result, indent=2, default=str) if args.json
          else lineage.format_lineage(result))
    return 0


def cmd_runs(args) -> int:
    import json
    from pipeline import lineage

    try:
        rows = lineage.runs(_metadata_path(args))
    except FileNotFoundError as e:
        raise CliError(str(e)) from None
    print(json.dumps(rows, indent=2) if args.json else lineage.format_runs(rows))
    return 0


def cmd_compile_kubeflow(args) -> int:
    from pipeline import kubeflow_runner

    try:
        path = kubeflow_runner.compile_kubeflow(
            image=args.image, pipeline_root=args.pipeline_root,
            output=args.output, data_root=args.data_root,
            preset_name=args.preset, pipeline_name=args.pipeline_name,
            gpus=args.gpus, gpu_type=args.gpu_type,
            trainer_cpu=args.trainer_cpu, trainer_memory=args.trainer_memory,
            beam_args=args.beam_arg or None,
            baseline_model_uri=args.baseline_model,
            serving_model_dir=args.serving_model_dir,
            schema_file=args.schema_file,
            split_patterns=_split_patterns(args.split),
            train_steps=args.train_steps, eval_steps=args.eval_steps,
            wer_upper_bound=args.wer_upper_bound,
            max_audio_seconds=args.max_audio_seconds,
            enable_cache=not args.no_cache, vocabulary=args.vocabulary,
            frontend=args.frontend, beam_width=args.beam_width)
    except kubeflow_runner.KubeflowConfigError as e:
        raise CliError(str(e)) from None
    for note in kubeflow_runner.storage_notes(
            args.pipeline_root, args.data_root, args.serving_model_dir,
            args.baseline_model):
        print(f"note: {note}", file=sys.stderr)
    print(f"compiled Kubeflow pipeline: {path}")
    return 0


def _add_store_args(p) -> None:
    p.add_argument("--output-dir", default="outputs/demo",
                   help="a run's output dir (its metadata.sqlite is read)")
    p.add_argument("--metadata", help="path of a SQLite ML Metadata store")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive integer")
    return value


def _add_model_args(p) -> None:
    from models import config

    p.add_argument("--vocabulary", choices=sorted(config.VOCABULARY_SIZES),
                   help="the model's output vocabulary, replacing the "
                   f"preset's ({config.CHARACTER_VOCABULARY}): "
                   f"{config.MOONSHINE_BPE_VOCABULARY} is the official "
                   "model's 32k BPE, whose embedding --init-from imports")
    p.add_argument("--frontend", choices=("log_mel", "waveform"),
                   help="the encoder's front end, replacing the preset's "
                   "(log_mel): 'waveform' is the paper's conv stem over raw "
                   "audio, whose weights --init-from imports")
    p.add_argument("--beam-width", type=_positive_int, metavar="N",
                   help="beam width of the exported model's decoding, "
                   "replacing the preset's (demo: "
                   f"{config.get_preset('demo').decode.beam_width}); 1 is "
                   "greedy, the fastest")


def build_parser() -> argparse.ArgumentParser:
    from models import config

    parser = argparse.ArgumentParser(
        prog="moonshine-tfx",
        description="Train, evaluate and ship Moonshine ASR with TFX.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the whole pipeline locally "
                         "(LocalDagRunner, SQLite ML Metadata)")
    run.add_argument("--data-root", default=EMBEDDED_CORPUS,
                     help="LibriSpeech-layout root (default: the embedded corpus)")
    run.add_argument("--output-dir", default="outputs/run",
                     help="pipeline root, metadata store, pushed model, summary")
    run.add_argument("--preset", default="demo", choices=sorted(config.PRESETS))
    run.add_argument("--beam-arg", action="append", metavar="ARG",
                     help="Beam pipeline arg, repeatable (e.g. "
                     "--beam-arg=--runner=FlinkRunner)")
    run.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                     help="subset glob per split, repeatable (default: "
                     "train*->train, dev*->eval, test*->test)")
    run.add_argument("--train-steps", type=int, default=None)
    run.add_argument("--eval-steps", type=int, default=None)
    run.add_argument("--wer-upper-bound", type=float, default=None,
                     help="bless only below this eval WER (default: preset's)")
    run.add_argument("--max-wer-regression", type=float,
                     default=config.MAX_WER_REGRESSION, metavar="DELTA",
                     help="bless only if eval WER is at most DELTA above the "
                     "latest blessed model's (absolute; default %(default)s; "
                     "a first run is judged on --wer-upper-bound alone)")
    run.add_argument("--max-audio-seconds", type=float,
                     default=config.MAX_AUDIO_SECONDS)
    run.add_argument("--no-cache", action="store_true",
                     help="re-execute every component")
    run.add_argument("--init-from", metavar="PATH",
                     help="start training from these weights: an "
                     "`import-weights` output dir, or an official checkpoint "
                     "(dir of .weights.h5 files or model.safetensors)")
    _add_model_args(run)
    run.set_defaults(func=cmd_run)

    from pipeline import validate_data as vd  # constants only, no TFX
    va = sub.add_parser(
        "validate-data", help="ingest, compute statistics and validate a "
        "LibriSpeech-layout corpus against the schema (no training); "
        "exit 1 when quarantined items or anomalies exceed the thresholds")
    va.add_argument("--data-root", required=True,
                    help="LibriSpeech-layout root")
    va.add_argument("--output-dir", default=vd.DEFAULT_OUTPUT_DIR,
                    help="pipeline root and metadata store")
    va.add_argument("--report", metavar="PATH",
                    help=f"JSON report (default: <output-dir>/{vd.REPORT_FILE})")
    va.add_argument("--max-quarantined", type=int, default=0, metavar="N",
                    help="fail when more items are quarantined (default 0)")
    va.add_argument("--max-anomalies", type=int, default=0, metavar="N",
                    help="fail when ExampleValidator finds more schema "
                    "anomalies (default 0)")
    va.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                    help="subset glob per split, repeatable (default: "
                    "train*->train, dev*->eval, test*->test)")
    va.add_argument("--max-audio-seconds", type=float,
                    default=config.MAX_AUDIO_SECONDS)
    va.add_argument("--beam-arg", action="append", metavar="ARG",
                    help="Beam pipeline arg, repeatable")
    va.set_defaults(func=cmd_validate_data)

    tr = sub.add_parser("transcribe", help="transcribe audio files with a "
                        "pushed SavedModel")
    tr.add_argument("--model", required=True,
                    help="SavedModel dir or the Pusher's base dir (newest version)")
    tr.add_argument("--window-seconds", type=float,
                    default=config.TRANSCRIBE_WINDOW_SECONDS,
                    help="longer audio is split at pauses into segments of "
                    "at most this length and the texts joined (default "
                    "%(default)s)")
    tr.add_argument("files", nargs="+", metavar="FILE")
    tr.set_defaults(func=cmd_transcribe)

    from models import weights as mw  # constants only, no TensorFlow
    im = sub.add_parser(
        "import-weights", help="convert an official Moonshine checkpoint "
        "(useful-moonshine .weights.h5 files or Hugging Face "
        "model.safetensors) for a preset, for `run --init-from`")
    im.add_argument("source", help="dir of the official "
                    f"{', '.join(mw.KERAS_WEIGHTS_FILES)}, or a "
                    f"{mw.HF_WEIGHTS_FILE} file or dir")
    im.add_argument("--preset", default="tiny", choices=sorted(config.PRESETS))
    im.add_argument("--output-dir", required=True,
                    help=f"gets {mw.HF_WEIGHTS_FILE} and "
                    f"{mw.IMPORT_REPORT_FILE}")
    im.add_argument("--frontend", choices=("log_mel", "waveform"),
                    help="override the preset's front end (the official "
                    "model's is 'waveform'; pass the same to `run`)")
    im.add_argument("--vocab", choices=("characters", "official"),
                    default="characters",
                    help="'characters': everything but the token embedding "
                    "(and output layer, tied to it) is imported; 'official': "
                    "the 32k BPE embedding too, for `run --vocabulary "
                    f"{config.MOONSHINE_BPE_VOCABULARY}`")
    im.set_defaults(func=cmd_import_weights)

    li = sub.add_parser("lineage", help="trace a pushed model back to its "
                        "data, code and evaluation (ML Metadata)")
    _add_store_args(li)
    li.add_argument("--pushed-model-id", type=int,
                    help="ML Metadata id of a PushedModel (default: the latest)")
    li.set_defaults(func=cmd_lineage)

    ru = sub.add_parser("runs", help="list pipeline runs: status, WER, pushed")
    _add_store_args(ru)
    ru.set_defaults(func=cmd_runs)

    from pipeline import kubeflow_runner as kfr  # constants only, no TFX
    kf = sub.add_parser(
        "compile-kubeflow", help="compile the pipeline for Kubeflow Pipelines "
        "v2 / Vertex AI (KubeflowV2DagRunner); does not submit")
    kf.add_argument("--image", required=True,
                    help="the pipeline image built from the Dockerfile "
                    "(REGISTRY/moonshine-tfx:TAG); every component runs it")
    kf.add_argument("--pipeline-root", required=True, metavar="URI",
                    help="gs://... or s3://... root of every artifact")
    kf.add_argument("--output", default="pipeline.json",
                    help="pipeline.json: PipelineJob (Vertex AI); "
                    "pipeline.yaml: PipelineSpec (KFP UI / kfp client)")
    kf.add_argument("--data-root", metavar="URI",
                    help="LibriSpeech-layout root (gs://, s3://, or an "
                    "absolute path in the image; default: the image's "
                    f"embedded corpus, {kfr.IMAGE_EMBEDDED_CORPUS})")
    kf.add_argument("--preset", default=kfr.DEFAULT_PRESET,
                    choices=sorted(config.PRESETS))
    kf.add_argument("--pipeline-name", default=kfr.DEFAULT_PIPELINE_NAME)
    kf.add_argument("--gpus", type=int, default=1,
                    help="GPUs for the Trainer (0: train on CPU)")
    kf.add_argument("--gpu-type", default=kfr.DEFAULT_GPU_TYPE,
                    help="accelerator resource: nvidia.com/gpu on open-source "
                    "KFP, e.g. NVIDIA_TESLA_A100 on Vertex AI")
    kf.add_argument("--trainer-cpu", default=kfr.DEFAULT_TRAINER_CPU,
                    help="Trainer CPU limit (8, 7.5, 500m)")
    kf.add_argument("--trainer-memory", default=kfr.DEFAULT_TRAINER_MEMORY,
                    help="Trainer memory limit (32G, 32Gi, 512Mi)")
    kf.add_argument("--beam-arg", action="append", metavar="ARG",
                    help="Beam arg of ExampleGen, StatisticsGen, Transform and "
                    "Evaluator, repeatable (default: "
                    f"{' '.join(kfr.DEFAULT_BEAM_ARGS)})")
    kf.add_argument("--baseline-model", metavar="URI",
                    help="Trainer model artifact (holding Format-Serving/) "
                    "imported as the Evaluator's no-regression baseline; "
                    "without it only the absolute WER bound gates")
    kf.add_argument("--serving-model-dir", metavar="URI",
                    help="Pusher destination (default: "
                    "<pipeline-root>/<pipeline-name>/serving_model)")
    kf.add_argument("--schema-file", default=kfr.IMAGE_SCHEMA_FILE,
                    help="the curated schema as the pods see it")
    kf.add_argument("--split", action="append", metavar="SPLIT=GLOB",
                    help="subset glob per split, repeatable")
    kf.add_argument("--train-steps", type=int, default=None)
    kf.add_argument("--eval-steps", type=int, default=None)
    kf.add_argument("--wer-upper-bound", type=float, default=None)
    kf.add_argument("--max-audio-seconds", type=float,
                    default=config.MAX_AUDIO_SECONDS)
    kf.add_argument("--no-cache", action="store_true",
                    help="disable KFP's execution caching")
    _add_model_args(kf)
    kf.set_defaults(func=cmd_compile_kubeflow)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
